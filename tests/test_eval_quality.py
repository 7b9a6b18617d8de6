"""Speaker similarity and model-based quality scorers (weights shipped in their wheels, offline)."""

from __future__ import annotations

import numpy as np
import pytest
from test_eval_metrics import speak

TEXT = "Glue the sheet to the dark blue background."


@pytest.fixture(scope="module")
def voices():
    a = speak(TEXT, 16000, voice="en-us")
    b = speak("It is easy to tell the depth of a well.", 16000, voice="en-us")  # same voice, other words
    c = speak(TEXT, 16000, voice="en-us+f4", speed=150)  # other voice, same words
    return a, b, c


@pytest.mark.slow  # ~6 CPU-s: librosa/numba warm-up inside resemblyzer on first use
def test_speaker_similarity_same_voice_beats_other_voice(voices):
    pytest.importorskip("resemblyzer")
    from jepatok.eval.quality import SpeakerSimilarity

    sim = SpeakerSimilarity()
    a, b, c = voices
    assert sim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert sim(a, b) > sim(a, c)


@pytest.mark.slow
def test_visqol_identical_beats_noisy(voices):
    pytest.importorskip("visqol")
    from jepatok.eval.quality import VisqolSpeech

    a = voices[0]
    noisy = a + 0.05 * np.random.default_rng(0).standard_normal(a.size).astype(np.float32)
    v = VisqolSpeech()
    same = v(a, a)
    assert same > 4.0 and v(a, noisy) < same - 1.0


@pytest.mark.slow
def test_distillmos_and_dnsmos_score_in_range(voices):
    pytest.importorskip("distillmos")
    pytest.importorskip("speechmos")
    from jepatok.eval.quality import DistillMos, Dnsmos

    a = voices[0]
    noisy = a + 0.3 * np.random.default_rng(0).standard_normal(a.size).astype(np.float32)
    for scorer in (DistillMos(), Dnsmos()):
        clean, bad = scorer(a), scorer(noisy)
        assert 1.0 <= clean <= 5.0 and 1.0 <= bad <= 5.0
    assert Dnsmos()(a) > Dnsmos()(noisy)
