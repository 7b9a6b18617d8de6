"""Scoring of one reconstruction against its reference with every available metric.

`Scorers` builds the optional model-based scorers once (ASR, speaker encoder, ViSQOL, DistillMOS,
DNSMOS); one that cannot be built is recorded in `unavailable` with its reason and never produces a
number. `score_pair` returns the values that could be computed and the reasons for those that could not.
Signals are compared at `EVAL_SAMPLING_RATE` after compensating a constant delay (`metrics.align`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .metrics import (
    EVAL_SAMPLING_RATE,
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

#: Keys of a MEANS block in metrics.json (rate keys are filled by the caller).
SIGNAL_KEYS = ("stoi", "pesq_wb", "pesq_nb", "si_sdr", "mel_distance", "mcd", "f0_gpe", "vde")
MODEL_KEYS = ("speaker_sim", "visqol", "distillmos", "dnsmos")
ASR_KEYS = ("wer", "cer")
RATE_KEYS = ("bitrate", "tokens_per_second", "frame_rate", "encode_rtf", "decode_rtf")
MEAN_KEYS = SIGNAL_KEYS + ASR_KEYS + MODEL_KEYS + RATE_KEYS
#: Names accepted by `--skip`: metric keys, plus "asr" for wer+cer.
SKIPPABLE = set(SIGNAL_KEYS + MODEL_KEYS + ASR_KEYS) | {"asr"}

_SIGNAL_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "stoi": lambda r, e, sr: stoi_score(r, e, sr),
    "pesq_wb": lambda r, e, sr: pesq_score(r, e, sr, "wb"),
    "pesq_nb": lambda r, e, sr: pesq_score(r, e, sr, "nb"),
    "si_sdr": lambda r, e, sr: si_sdr(r, e),
    "mel_distance": lambda r, e, sr: mel_distance(r, e, sr),
    "mcd": lambda r, e, sr: mel_cepstral_distortion(r, e, sr),
    "f0_gpe": lambda r, e, sr: pitch_errors(r, e, sr)[0],
    "vde": lambda r, e, sr: voicing_error(r, e, sr),
}


@dataclass
class PairScores:
    """Metrics of one reconstruction (values) and why the others are missing (skipped)."""

    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    transcript: str | None = None


class Scorers:
    """Builds the optional scorers once.

    Args:
        asr: ASR model name/path (None = bundled Whisper tiny.en; "none" disables ASR).
        skip: metric keys (or "asr") not to compute.
        device: torch device for the speaker encoder and DistillMOS.
        cpu_threads: threads for the ASR.
    """

    def __init__(
        self, asr: str | None = None, skip: Iterable[str] = (), device: str = "cpu", cpu_threads: int = 2
    ):
        skip = {s.strip() for s in skip if s.strip()}
        unknown = skip - SKIPPABLE
        if unknown:
            raise ValueError(
                f"unknown metric(s) to skip {sorted(unknown)}; expected some of {sorted(SKIPPABLE)}"
            )
        if "asr" in skip or (asr is not None and asr.lower() == "none"):
            skip |= {"wer", "cer"}
        self.unavailable: dict[str, str] = {k: "disabled on the command line" for k in skip if k != "asr"}
        if asr is not None and asr.lower() == "none":
            self.unavailable.update(wer="ASR disabled (--asr none)", cer="ASR disabled (--asr none)")
        self.signal = [k for k in SIGNAL_KEYS if k not in skip]
        self.asr = self._build("wer", skip, lambda: _recognizer(asr, device, cpu_threads), extra=("cer",))
        self.speaker = self._build("speaker_sim", skip, lambda: _quality("SpeakerSimilarity", device))
        self.visqol = self._build("visqol", skip, lambda: _quality("VisqolSpeech"))
        self.distillmos = self._build("distillmos", skip, lambda: _quality("DistillMos", device))
        self.dnsmos = self._build("dnsmos", skip, lambda: _quality("Dnsmos"))

    def _build(self, key: str, skip: set[str], factory, extra: tuple[str, ...] = ()):
        if key in skip:
            return None
        try:
            return factory()
        except MetricUnavailable as err:
            for k in (key, *extra):
                self.unavailable[k] = str(err)
            return None

    @property
    def asr_name(self) -> str | None:
        return None if self.asr is None else self.asr.name

    def transcribe(self, audio: np.ndarray) -> str | None:
        return None if self.asr is None else self.asr.transcribe(audio, EVAL_SAMPLING_RATE)

    def no_reference(self, audio: np.ndarray) -> PairScores:
        """No-reference scores of one signal (the original, for context): DistillMOS, DNSMOS, transcript."""
        out = PairScores()
        for key, fn in (("distillmos", self.distillmos), ("dnsmos", self.dnsmos)):
            if fn is not None:
                _try(out, key, lambda fn=fn: fn(audio))
        out.transcript = self.transcribe(audio)
        return out

    def score_pair(self, reference: np.ndarray, estimate: np.ndarray) -> PairScores:
        """All metrics of `estimate` against `reference` ([L] at EVAL_SAMPLING_RATE, same length)."""
        sr = EVAL_SAMPLING_RATE
        out = PairScores()
        ref, est = align(reference, estimate, sr)
        for key in self.signal:
            _try(out, key, lambda key=key: _SIGNAL_FUNCS[key](ref, est, sr))
        if self.speaker is not None:
            _try(out, "speaker_sim", lambda: self.speaker(reference, estimate, sr))
        if self.visqol is not None:
            _try(out, "visqol", lambda: self.visqol(ref, est, sr))
        if self.distillmos is not None:
            _try(out, "distillmos", lambda: self.distillmos(estimate, sr))
        if self.dnsmos is not None:
            _try(out, "dnsmos", lambda: self.dnsmos(estimate, sr))
        out.transcript = self.transcribe(estimate)
        return out


def _try(out: PairScores, key: str, fn) -> None:
    try:
        value = float(fn())
    except MetricUnavailable as err:
        out.skipped[key] = str(err)
        return
    if not np.isfinite(value):
        out.skipped[key] = f"{key} returned a non-finite value ({value})"
        return
    out.values[key] = value


def _recognizer(asr, device, cpu_threads):
    from .asr import SpeechRecognizer

    compute_type = "int8" if device == "cpu" else "float16"
    return SpeechRecognizer(
        asr, device=device.split(":")[0], compute_type=compute_type, cpu_threads=cpu_threads
    )


def _quality(name: str, *args):
    from . import quality

    return getattr(quality, name)(*args)
