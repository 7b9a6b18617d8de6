"""`python -m jepatok.lm.bench`: flat and frame-level LMs measured in the same run, with their ratios."""

from __future__ import annotations

import json

from lm_helpers import single_thread  # noqa: F401  (autouse fixture)

from jepatok.lm.bench import main


def test_bench_both_architectures_reports_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--lm-preset", "tiny", "--codec-preset", "tiny", "--seconds", "0.01", "--batch-sizes", "1", "2"]
    argv += [
        "--train-block-size",
        "57",
        "--train-batch-size",
        "2",
        "--architecture",
        "both",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == data
    flat, frame = data["flat"], data["frame"]
    assert flat["architecture"] == "flat" and frame["architecture"] == "frame"
    assert flat["lm_steps_per_audio_second"] == 19 * frame["lm_steps_per_audio_second"]
    for run in (flat, frame):
        assert [g["batch_size"] for g in run["generation"]] == [1, 2]
        assert all(g["audio_seconds"] > 0 and g["audio_seconds_per_second_lm"] > 0 for g in run["generation"])
        assert run["training"]["audio_seconds_per_second"] > 0
    # both trained on the same audio per step: 2 rows of 57 // 19 = 3 frames
    assert flat["training"]["tokens_per_second"] > 0
    ratios = data["frame_over_flat"]
    assert set(ratios) == {
        "generation_batch_1_audio_s_per_s",
        "generation_batch_2_audio_s_per_s",
        "training_audio_s_per_s",
    }
    assert all(r > 0 for r in ratios.values())
