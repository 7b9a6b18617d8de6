"""Speaker similarity and model-based quality: Resemblyzer, ViSQOL (speech mode), DistillMOS and DNSMOS.

Every scorer loads its model lazily from weights shipped inside its PyPI package (nothing is
downloaded) and raises `MetricUnavailable` with the reason when its package is missing. Inputs are
mono float waveforms at 16 kHz (`EVAL_SAMPLING_RATE`), resampled otherwise.

- Speaker similarity: cosine between Resemblyzer d-vectors of the reference and the reconstruction.
- ViSQOL v3 speech mode (full reference, MOS-LQO 1..5): `visqol-python` with `ai-edge-litert`.
- DistillMOS (no reference, MOS 1..5): `distillmos`; its checkpoint is read with
  `torch.load(weights_only=True)` by that package.
- DNSMOS P.835 overall (no reference): `speechmos`; input is clipped to [-1, 1]. It hardly reacts to
  codec artefacts, so it is reported but should not be leaned on.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from ..data.audio import resample
from .metrics import EVAL_SAMPLING_RATE, MetricUnavailable


def _mono16k(audio, sampling_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise ValueError("expected a non-empty waveform")
    return resample(audio, sampling_rate, EVAL_SAMPLING_RATE)


class SpeakerSimilarity:
    """Cosine similarity of Resemblyzer speaker embeddings (1.0 = same voice print).

    Args:
        device: torch device for the encoder.
    """

    def __init__(self, device: str = "cpu"):
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as err:
            raise MetricUnavailable(
                f"package `resemblyzer` (with webrtcvad-wheels) is not installed ({err}); run `make install`"
            ) from err
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a load message
            self._encoder = VoiceEncoder(device)

    def embed(self, audio, sampling_rate: int = EVAL_SAMPLING_RATE) -> np.ndarray:
        """[256] unit-norm embedding; silence is trimmed with Resemblyzer's VAD unless that leaves < 0.5 s."""
        from resemblyzer import preprocess_wav

        wav = _mono16k(audio, sampling_rate)
        trimmed = preprocess_wav(wav, source_sr=EVAL_SAMPLING_RATE)
        if trimmed.size >= EVAL_SAMPLING_RATE // 2:
            wav = trimmed
        return np.asarray(self._encoder.embed_utterance(wav.astype(np.float32)), dtype=np.float64)

    def __call__(self, reference, estimate, sampling_rate: int = EVAL_SAMPLING_RATE) -> float:
        a = self.embed(reference, sampling_rate)
        b = self.embed(estimate, sampling_rate)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class VisqolSpeech:
    """ViSQOL v3 in speech mode (16 kHz, MOS-LQO 1..5; identical audio ~4.5)."""

    def __init__(self):
        try:
            from visqol import VisqolApi
        except ImportError as err:
            raise MetricUnavailable(
                f"package `visqol-python` is not installed ({err}); install jepatok[eval]"
            ) from err
        try:
            self._api = VisqolApi()
            self._api.create(mode="speech")
        except ImportError as err:
            raise MetricUnavailable(f"ViSQOL speech mode needs `ai-edge-litert` ({err})") from err

    def __call__(self, reference, estimate, sampling_rate: int = EVAL_SAMPLING_RATE) -> float:
        ref = _mono16k(reference, sampling_rate).astype(np.float64)
        est = _mono16k(estimate, sampling_rate).astype(np.float64)
        n = min(ref.size, est.size)
        try:
            return float(self._api.measure_from_arrays(ref[:n], est[:n], EVAL_SAMPLING_RATE).moslqo)
        except Exception as err:  # visqol raises ValueError/RuntimeError for too-short or silent input
            raise MetricUnavailable(f"ViSQOL could not score this clip: {type(err).__name__}: {err}") from err


class DistillMos:
    """DistillMOS (no-reference MOS 1..5) with the weights shipped in the `distillmos` wheel.

    Args:
        device: torch device.
    """

    def __init__(self, device: str = "cpu"):
        try:
            import distillmos
        except ImportError as err:
            raise MetricUnavailable(
                f"package `distillmos` is not installed ({err}); install jepatok[eval]"
            ) from err
        with contextlib.redirect_stdout(io.StringIO()):
            self._model = distillmos.ConvTransformerSQAModel().eval().to(device)
        self.device = device

    def __call__(self, audio, sampling_rate: int = EVAL_SAMPLING_RATE) -> float:
        import torch

        wav = torch.from_numpy(_mono16k(audio, sampling_rate))[None].to(self.device)
        with torch.inference_mode():
            return float(self._model(wav).reshape(-1)[0])


class Dnsmos:
    """DNSMOS P.835 overall MOS (`speechmos`, ONNX models in the wheel)."""

    def __init__(self):
        try:
            from speechmos import dnsmos
        except ImportError as err:
            raise MetricUnavailable(
                f"package `speechmos` is not installed ({err}); install jepatok[eval]"
            ) from err
        self._dnsmos = dnsmos

    def __call__(self, audio, sampling_rate: int = EVAL_SAMPLING_RATE) -> float:
        wav = np.clip(_mono16k(audio, sampling_rate), -1.0, 1.0).astype(np.float64)
        if wav.size < EVAL_SAMPLING_RATE:  # its models need >= 1 s of input
            wav = np.pad(wav, (0, EVAL_SAMPLING_RATE - wav.size))
        return float(self._dnsmos.run(wav, EVAL_SAMPLING_RATE)["ovrl_mos"])
