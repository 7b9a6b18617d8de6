"""A 2-process `accelerate launch` run on CPU (DDP over gloo) ends with identical weights on both processes.

The default case is stage 2 (two prepared models, a separate discriminator optimizer, gradient accumulation
with the explicit all-reduce); stage 1 runs the same check under the `slow` marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_utils import FAST, make_audio_folder

from jepatok.tokenizer.train_common import recipes_dir


@pytest.mark.parametrize("stage", ["stage2", pytest.param("stage1", marks=pytest.mark.slow)])
def test_two_process_cpu_run_keeps_processes_identical(tmp_path, tiny_codec_config, stage):
    data = make_audio_folder(tmp_path / "wavs", n=4)
    out = tmp_path / "run"
    options, extra = [], []  # options before the key=value overrides (argparse takes one positional run)
    if stage == "stage2":
        from jepatok import JepaCodecModel

        torch.manual_seed(0)
        JepaCodecModel(tiny_codec_config()).save_pretrained(str(tmp_path / "s1"))
        options = ["--stage1", str(tmp_path / "s1")]
        extra = ["disc_start_step=1", "sample_every=0"]
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate), "launch", "--config_file", str(recipes_dir() / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port", "0", "-m", "jepatok.cli", f"train-{stage}", "--recipe", "tiny",
        "--data", str(data), "--output-dir", str(out), "--max-steps", "2", *options, *FAST, *extra,
        "save_every=2", "grad_accum=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prints = json.loads((out / "process_fingerprints.json").read_text())["fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    ckpt = out / "checkpoints" / "step_2"
    assert (ckpt / "rng_state_0.safetensors").is_file() and (ckpt / "rng_state_1.safetensors").is_file()
    assert (ckpt / "rng_state_0.json").is_file() and (ckpt / "rng_state_1.json").is_file()
    assert not [p.name for p in ckpt.iterdir() if p.suffix not in {".json", ".safetensors"}], (
        "pickles written"
    )
    state = json.loads((ckpt / "trainer_state.json").read_text())
    # 2 steps x 2 micro-batches x 2 clips x 2 processes of <= 0.1 s audio
    assert state["micro_batches"] == 4 and 0 < state["audio_seconds"] <= 1.6 + 1e-6
    assert (out / "final" / "model.safetensors").is_file()
