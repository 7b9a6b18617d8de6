"""`jepatok bench` smoke test (tiny preset, no Mimi: the real benchmark is a command, not a test)."""

from __future__ import annotations

import json

import pytest
import torch

from jepatok.cli import main
from jepatok.eval.bench import BenchResult, format_table


def test_bench_tiny_writes_table_and_json(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--presets",
        "tiny",
        "--duration",
        "0.05",
        "--repeats",
        "1",
        "--no-mimi",
        "--threads",
        "1",
    ]
    try:
        assert main([*args, "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    table = capsys.readouterr().out
    assert "| jepatok tiny | 8 kHz | 500 |" in table
    (row,) = json.loads(out.read_text())
    assert row["name"] == "jepatok tiny" and row["encode_s_per_s"] > 0 and row["decode_s_per_s"] > 0
    assert row["encode_ratio"] is None


def test_format_table_ratios():
    ours = BenchResult("jepatok x", 24000, 2.5, 10.0, 0.5, 1.0, encode_ratio=2.0, decode_ratio=4.0)
    ref = BenchResult("HF Mimi", 24000, 12.5, 79.3, 0.25, 0.25)
    text = format_table([ours, ref], seconds=5, repeats=3, threads=1)
    assert "| 2.00x | 4.00x |" in text and "| — | — |" in text and "median of 3 runs" in text


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--presets", "tiny", "--duration", "0", "--no-mimi"]) == 2
    assert "--duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--repeats", "x"])
