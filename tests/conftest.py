"""Shared fixtures: tiny configs, seeded generators and short synthetic waveforms (CPU, fast)."""

from __future__ import annotations

import math

import pytest
import torch

# One thread: the tiny models gain nothing from more, and on a busy 2-core machine two threads were
# measured 5-30x slower than one (thread contention). Tests that need more set it themselves.
torch.set_num_threads(1)


@pytest.fixture
def tiny_codec_config():
    """Factory for the tiny codec config; keyword overrides as in `JepaCodecConfig.from_preset`."""
    from jepatok import JepaCodecConfig

    def make(**overrides):
        return JepaCodecConfig.from_preset("tiny", **overrides)

    return make


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


def sine(seconds: float, sampling_rate: int, freq: float = 220.0, amplitude: float = 0.5) -> torch.Tensor:
    """A mono sine [L] (float32)."""
    n = max(1, int(round(seconds * sampling_rate)))
    t = torch.arange(n, dtype=torch.float32) / sampling_rate
    return amplitude * torch.sin(2 * math.pi * freq * t)


@pytest.fixture
def make_sine():
    return sine
