"""Codec2 and Opus baselines: round-trip length and rate, bitstream size near the nominal bitrate."""

from __future__ import annotations

import numpy as np
import pytest
from test_eval_metrics import speak

from jepatok.eval.baselines import (
    DEFAULT_BASELINES,
    Codec2Baseline,
    OpusBaseline,
    get_baseline,
    parse_baselines,
)
from jepatok.eval.metrics import mel_distance


@pytest.fixture(scope="module")
def clip():
    return speak("Glue the sheet to the dark blue background.", 22050)  # an odd input rate on purpose


@pytest.mark.parametrize("name", DEFAULT_BASELINES)
def test_roundtrip_keeps_length_and_rate(name, clip):
    codec = get_baseline(name)
    if codec.unavailable_reason():
        pytest.skip(codec.unavailable_reason())
    out = codec.roundtrip(clip, 22050)
    assert out.audio.shape == clip.shape and out.audio.dtype == np.float32
    assert np.isfinite(out.audio).all() and np.abs(out.audio).max() > 0.01
    seconds = clip.size / 22050
    measured = out.encoded_bytes * 8 / seconds
    # Codec2 pads each frame to whole bytes (700C: 28 bits -> 4 bytes); Ogg adds container overhead.
    assert 0.8 * codec.bitrate < measured < (1.2 if name.startswith("codec2") else 1.6) * codec.bitrate
    assert out.encode_seconds > 0 and out.decode_seconds > 0
    # it is a reconstruction of the input, far closer than silence
    assert mel_distance(clip, out.audio, 22050) < mel_distance(clip, np.zeros_like(clip) + 1e-4, 22050)


def test_higher_codec2_rate_is_closer(clip):
    if Codec2Baseline("700C").unavailable_reason():
        pytest.skip("codec2 missing")
    low = get_baseline("codec2-700C").roundtrip(clip, 22050).audio
    high = get_baseline("codec2-3200").roundtrip(clip, 22050).audio
    assert mel_distance(clip, high, 22050) < mel_distance(clip, low, 22050)


def test_names_and_errors():
    assert [b.name for b in parse_baselines(None)] == list(DEFAULT_BASELINES)
    assert parse_baselines("none") == [] and parse_baselines("") == []
    assert [b.name for b in parse_baselines("opus-12k, codec2-1200,codec2-1200")] == [
        "opus-12k",
        "codec2-1200",
    ]
    assert isinstance(get_baseline("CODEC2-700c"), Codec2Baseline)
    assert isinstance(get_baseline("opus-6k"), OpusBaseline) and get_baseline("opus-6k").bitrate == 6000
    with pytest.raises(ValueError, match="unknown baseline"):
        get_baseline("mp3-128k")
    with pytest.raises(ValueError, match="Codec2 mode"):
        get_baseline("codec2-9999")
    with pytest.raises(ValueError, match="non-empty"):
        get_baseline("opus-6k").roundtrip(np.zeros(0), 16000)
