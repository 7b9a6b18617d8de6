"""Signal metrics, WER/CER and token statistics on known signals (identical audio scores perfectly, added
noise lowers the scores), plus the `evaluate` modules loading offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from jepatok.data.audio import load_audio
from jepatok.eval.metrics import (
    MetricUnavailable,
    align,
    mel_cepstral_distortion,
    mel_distance,
    pesq_score,
    pitch_errors,
    si_sdr,
    stoi_score,
    voicing_error,
)
from jepatok.eval.tokens import slot_statistics

SR = 16000
SENTENCE = "The birch canoe slid on the smooth planks."


def speak(text: str, sampling_rate: int = SR, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng speech as a float32 waveform at `sampling_rate` (skips the test when espeak-ng is missing)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (system-packages.txt)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text], check=True, capture_output=True
        )
        audio, _ = load_audio(path, sampling_rate)
    return audio


@pytest.fixture(scope="module")
def speech():
    return speak(SENTENCE)


@pytest.fixture(scope="module")
def noisy(speech):
    rng = np.random.default_rng(0)
    return speech + 0.05 * rng.standard_normal(speech.size).astype(np.float32)


def test_si_sdr_identical_scaled_and_noisy(speech, noisy):
    assert si_sdr(speech, speech) > 100
    assert si_sdr(speech, 0.3 * speech) > 100  # scale invariant
    value = si_sdr(speech, noisy)
    assert 0 < value < 30
    with pytest.raises(MetricUnavailable):
        si_sdr(np.zeros(1000), np.ones(1000))


def test_pesq_identical_near_max_and_noise_lowers(speech, noisy):
    pytest.importorskip("pesq")
    wb = pesq_score(speech, speech, SR, "wb")
    nb = pesq_score(speech, speech, SR, "nb")
    assert wb == pytest.approx(4.64, abs=0.05)
    assert nb == pytest.approx(4.55, abs=0.05)
    assert pesq_score(speech, noisy, SR, "wb") < wb - 2
    with pytest.raises(ValueError, match="mode"):
        pesq_score(speech, speech, SR, "xx")
    with pytest.raises(MetricUnavailable, match="PESQ"):  # silence has no utterance
        pesq_score(np.zeros(SR), np.zeros(SR), SR, "wb")


def test_stoi_identical_is_one_and_noise_lowers(speech, noisy):
    pytest.importorskip("pystoi")
    assert stoi_score(speech, speech, SR) == pytest.approx(1.0, abs=1e-6)
    assert stoi_score(speech, noisy, SR) < 0.97
    heavy = speech + 0.5 * np.random.default_rng(1).standard_normal(speech.size).astype(np.float32)
    assert stoi_score(speech, heavy, SR) < stoi_score(speech, noisy, SR)


def test_mel_distance_and_mcd(speech, noisy):
    assert mel_distance(speech, speech, SR) == pytest.approx(0.0, abs=1e-6)
    assert mel_cepstral_distortion(speech, speech, SR) == pytest.approx(0.0, abs=1e-6)
    d1, m1 = mel_distance(speech, noisy, SR), mel_cepstral_distortion(speech, noisy, SR)
    heavy = speech + 0.3 * np.random.default_rng(2).standard_normal(speech.size).astype(np.float32)
    assert 0 < d1 < mel_distance(speech, heavy, SR)
    assert 0 < m1 < mel_cepstral_distortion(speech, heavy, SR)
    assert 1 < m1 < 30  # dB, a plausible range


def test_pitch_errors_of_speech_a_transposed_copy_and_noise(speech):
    gpe, vde = pitch_errors(speech, speech, SR)
    assert gpe == 0.0 and vde == 0.0
    # speech resampled to 2/3 of its length plays a fifth higher: every voiced frame is more than 20 % off
    fifth = np.interp(np.arange(0, speech.size, 1.5), np.arange(speech.size), speech).astype(np.float32)
    n = fifth.size
    gpe, _ = pitch_errors(speech[:n], fifth, SR)
    assert gpe > 0.6
    rng = np.random.default_rng(0)
    noise = 0.1 * rng.standard_normal(speech.size).astype(np.float32)
    assert voicing_error(speech, noise, SR) > 0.3
    with pytest.raises(MetricUnavailable, match="no frame is voiced in both"):
        pitch_errors(speech, noise, SR)
    with pytest.raises(MetricUnavailable, match="too short"):
        pitch_errors(speech[:100], speech[:100], SR)


def test_align_recovers_a_constant_delay(speech):
    delay = 160  # 10 ms
    late = np.concatenate([np.zeros(delay, np.float32), speech])[: speech.size]
    assert si_sdr(speech, late) < 5
    ref, est = align(speech, late, SR)
    assert ref.size == est.size == speech.size - delay
    assert si_sdr(ref, est) > 60


@pytest.mark.parametrize("bad", [np.zeros(0), np.full(10, np.nan), np.zeros((2, 10))])
def test_metrics_reject_bad_input(bad):
    with pytest.raises(ValueError):
        si_sdr(bad, np.ones(10))


def test_error_rates_normalise_and_count():
    pytest.importorskip("jiwer")
    pytest.importorskip("whisper_normalizer")
    from jepatok.eval.asr import error_rates, normalize_text

    assert normalize_text("Hello, World!") == "hello world"
    same = error_rates(["Mr. Smith paid $20."], ["mister smith paid twenty dollars"])
    assert same.wer == 0.0 and same.cer == 0.0
    r = error_rates(["the cat sat on the mat", "a b"], ["the cat sat on a hat", "a b"])
    assert r.wer == pytest.approx(2 / 8)
    assert r.words == 8
    assert 0 < r.cer < r.wer
    with pytest.raises(ValueError, match="equal counts"):
        error_rates(["a"], [])
    with pytest.raises(MetricUnavailable):
        error_rates([" , "], ["x"])


def test_slot_statistics_usage_and_entropy():
    codes = [np.array([[0, 0], [1, 0], [2, 0], [3, 1]]), np.array([[0, 1], [1, 1], [2, 1], [3, 0]])]
    stats = slot_statistics(codes, [4, 16])
    assert stats.frames == 8
    assert stats.usage == [1.0, 2 / 16]
    assert stats.entropy_bits[0] == pytest.approx(2.0)
    assert stats.entropy_bits[1] == pytest.approx(1.0)
    assert stats.entropy_bitrate(2.5) == pytest.approx(7.5)
    d = stats.to_dict(2.5)
    assert d["max_entropy_bits"] == [2.0, 4.0]
    with pytest.raises(ValueError, match="outside"):
        slot_statistics([np.array([[4, 0]])], [4, 16])
    with pytest.raises(ValueError, match="shape"):
        slot_statistics([np.zeros((3, 3), int)], [4, 16])


def test_evaluate_modules_load_offline(speech, noisy, monkeypatch):
    pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from jepatok.eval.hf_metrics import MODULES, load, module_path

    assert all(os.path.isfile(module_path(m)) for m in MODULES)
    short, short_noisy = speech[: SR // 2], noisy[: SR // 2]
    sdr = load("jepatok_si_sdr").compute(predictions=[short, short_noisy], references=[short, short])
    assert sdr["scores"][0] > 100 and sdr["scores"][1] < 30
    mel = load("mel_distance").compute(predictions=[short_noisy], references=[short], sampling_rate=SR)
    assert mel["mel_distance"] > 0
    wer = load("wer").compute(predictions=["the cat sat"], references=["The cat sat!"])
    assert wer["wer"] == 0.0
    with pytest.raises(ValueError, match="unknown jepatok evaluate module"):
        module_path("bleu")


def test_missing_packages_are_skipped_with_a_reason(speech, noisy, monkeypatch):
    import sys

    from jepatok.eval.scoring import Scorers

    monkeypatch.setitem(sys.modules, "pesq", None)  # import pesq -> ImportError
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    scorers = Scorers(skip=["visqol", "distillmos", "dnsmos", "mcd"])
    assert (
        "faster-whisper" in scorers.unavailable["wer"]
        and scorers.unavailable["cer"] == scorers.unavailable["wer"]
    )
    assert "resemblyzer" in scorers.unavailable["speaker_sim"]
    assert scorers.unavailable["mcd"] == "disabled on the command line"
    scores = scorers.score_pair(speech, noisy)
    assert "pesq" in scores.skipped["pesq_wb"] and "pesq_wb" not in scores.values
    assert {"stoi", "si_sdr", "mel_distance"} <= set(scores.values) and "mcd" not in scores.values
    assert scores.transcript is None
    with pytest.raises(ValueError, match="unknown metric"):
        Scorers(skip=["bleu"])
