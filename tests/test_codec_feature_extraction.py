"""JepaCodecFeatureExtractor: input types, PCM scaling, downmix, resampling, padding, errors, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jepatok import JepaCodecConfig, JepaCodecFeatureExtractor


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread avoids OpenMP stalls on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fe():
    return JepaCodecFeatureExtractor.from_codec_config(JepaCodecConfig.from_preset("tiny"))


def test_from_codec_config_matches_codec():
    cfg = JepaCodecConfig.from_preset("small")
    fe = JepaCodecFeatureExtractor.from_codec_config(cfg)
    assert (fe.sampling_rate, fe.hop_length) == (cfg.sampling_rate, cfg.hop_length) == (16000, 6400)


def test_single_clip_numpy_and_torch_agree(fe):
    clip = np.sin(np.arange(100) / 7.0).astype(np.float32) * 0.5
    a = fe(clip, sampling_rate=8000)
    b = fe(torch.from_numpy(clip), sampling_rate=8000)
    assert a["input_values"].shape == (1, 1, 112) and a["input_values"].dtype == torch.float32
    assert a["padding_mask"].dtype == torch.long and int(a["padding_mask"].sum()) == 100
    assert torch.equal(a["input_values"], b["input_values"])
    assert torch.equal(a["input_values"][0, 0, :100], torch.from_numpy(clip))
    assert torch.count_nonzero(a["input_values"][0, 0, 100:]) == 0


def test_integer_pcm_is_scaled(fe):
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    out = fe(pcm, sampling_rate=8000)["input_values"][0, 0, :4]
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, -1.0, 32767 / 32768]))
    out8 = fe(np.array([128, 255, 0], dtype=np.uint8), sampling_rate=8000)["input_values"][0, 0, :3]
    torch.testing.assert_close(out8, torch.tensor([0.0, 127 / 128, -1.0]))
    out32 = fe(torch.tensor([2**30], dtype=torch.int32), sampling_rate=8000)["input_values"][0, 0, :1]
    torch.testing.assert_close(out32, torch.tensor([0.5]))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_multichannel_is_downmixed(fe, layout):
    left = np.linspace(-0.5, 0.5, 40, dtype=np.float32)
    right = np.full(40, 0.25, dtype=np.float32)
    stereo = np.stack([left, right]) if layout == "channels_first" else np.stack([left, right], axis=1)
    out = fe(stereo, sampling_rate=8000)
    assert int(out["padding_mask"].sum()) == 40
    torch.testing.assert_close(out["input_values"][0, 0, :40], torch.from_numpy((left + right) / 2))


def test_list_of_clips_pads_to_longest_multiple_of_hop(fe):
    clips = [np.ones(5, np.float32), np.ones(40, np.float32) * 0.1, np.ones(16, np.float32)]
    out = fe(clips, sampling_rate=8000)
    assert out["input_values"].shape == (3, 1, 48)
    assert out["padding_mask"].sum(dim=1).tolist() == [5, 40, 16]
    out = fe(clips, sampling_rate=8000, max_length=70)
    assert out["input_values"].shape == (3, 1, 80)
    as_np = fe(clips, sampling_rate=8000, return_tensors="np")
    assert isinstance(as_np["input_values"], np.ndarray) and as_np["input_values"].dtype == np.float32


@settings(deadline=None, max_examples=15, derandomize=True)
@given(rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), seconds=st.floats(0.01, 0.3))
def test_resampling_length(fe, rate, seconds):
    n = max(1, int(seconds * rate))
    t = np.arange(n) / rate
    out = fe(np.sin(2 * np.pi * 200 * t).astype(np.float32), sampling_rate=rate)
    expected = math.ceil(n * 8000 / rate)
    assert abs(int(out["padding_mask"].sum()) - expected) <= 1
    assert out["input_values"].shape[-1] % 16 == 0


def test_resampling_preserves_a_tone(fe):
    rate = 16000
    t = np.arange(rate // 4) / rate
    out = fe(np.sin(2 * np.pi * 440 * t).astype(np.float32), sampling_rate=rate)["input_values"][0, 0, :2000]
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(np.argmax(spectrum) * 8000 / 2000 - 440) <= 4


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0, np.float32), "empty"),
        ([], "empty list"),
        (np.array([0.1, np.nan], np.float32), "NaN/inf"),
        (np.full(10, np.inf, np.float32), "NaN/inf"),
        ("speech.wav", "expected a numpy array"),
        ({"array": [0.1]}, "expected a numpy array"),
        (np.ones(10, dtype=bool), "dtype bool"),
        (np.ones(10, dtype=np.complex64), "dtype complex64"),
        (torch.ones(10, dtype=torch.int64), "ambiguous"),
        (np.ones((2, 3, 4), np.float32), "shape"),
        (np.ones((40, 50), np.float32), "list of clips"),
        ([np.ones(3, np.float32), np.zeros(0, np.float32)], "clip 1 is empty"),
    ],
)
def test_bad_audio_raises(fe, audio, message):
    with pytest.raises(ValueError, match=message):
        fe(audio, sampling_rate=8000)


@pytest.mark.parametrize("rate", ["16000", -8000, 0, 16000.5, True, complex(8000), [8000]])
def test_bad_sampling_rate_raises(fe, rate):
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer"):
        fe(np.zeros(10, np.float32), sampling_rate=rate)


def test_integer_valued_float_rate_is_accepted(fe):
    assert fe(np.zeros(10, np.float32), sampling_rate=8000.0)["input_values"].shape == (1, 1, 16)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hop_length"):
        JepaCodecFeatureExtractor(hop_length=0)
    with pytest.raises(ValueError, match="sampling_rate"):
        JepaCodecFeatureExtractor(sampling_rate="24k")


def test_save_load_round_trip(fe, tmp_path):
    fe.save_pretrained(tmp_path)
    loaded = JepaCodecFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    clip = np.random.default_rng(0).standard_normal(77).astype(np.float32) * 0.1
    assert torch.equal(
        loaded(clip, sampling_rate=8000)["input_values"], fe(clip, sampling_rate=8000)["input_values"]
    )
