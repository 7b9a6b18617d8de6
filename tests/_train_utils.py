"""Helpers of the codec-training tests: a tiny audio folder and fast tiny run configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

FAST = [
    "crop_seconds=0.1",
    "batch_size=2",
    "warmup_steps=1",
    "log_every=1",
    "tracker=none",
    "keep_checkpoints=0",
]


def make_audio_folder(root: Path, n: int = 4, sampling_rate: int = 8000, seconds: float = 0.15) -> Path:
    """n short noisy sines (some in a sub-folder) at `sampling_rate`."""
    rng = np.random.default_rng(0)
    for i in range(n):
        length = int(sampling_rate * (seconds + 0.02 * i))
        t = np.arange(length) / sampling_rate
        x = 0.4 * np.sin(2 * np.pi * (180 + 60 * i) * t) + 0.02 * rng.standard_normal(length)
        path = root / ("sub" if i % 2 else "") / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), x.astype(np.float32), sampling_rate)
    return root


def load_weights(path: Path) -> dict:
    return load_file(str(path))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert bool((a[k] == b[k]).all()), f"tensor {k} differs"


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests run single-threaded: on a shared 2-core machine, 2 OpenMP threads are often 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
