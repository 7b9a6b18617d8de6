"""`JepaSpeechProcessor`: the codec feature extractor + `JepaSpeechTokenizer` as one HF processor (arXiv 2512.07168).

`processor(text=..., audio=..., sampling_rate=...)` runs the feature extractor (resampling, mono, padding
mask), the codec, then the tokenizer's templates. Saved folders carry a tiny loader module
(`jepatok_remote.py`) named by `auto_map`, so `AutoTokenizer`/`AutoProcessor.from_pretrained(dir,
trust_remote_code=True)` work in a process that never imported jepatok (jepatok must be installed).
"""

from __future__ import annotations

import os
from typing import Any

from transformers import BatchEncoding, ProcessorMixin

REMOTE_MODULE = "jepatok_remote"

_REMOTE_SOURCE = '''"""Loader shim written by jepatok's save_pretrained.

`auto_map` in tokenizer_config.json / processor_config.json points here so that
`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)` and `AutoProcessor...` work where the
`jepatok` package is installed but was never imported. The classes are the installed package's own.
"""

import jepatok  # noqa: F401  (registers the Auto classes)
from jepatok.tokenizer.processing import JepaSpeechProcessor
from jepatok.tokenizer.tokenization import JepaSpeechTokenizer

__all__ = ["JepaSpeechProcessor", "JepaSpeechTokenizer"]
'''


def write_remote_module(save_directory: str | os.PathLike) -> str:
    """Write `jepatok_remote.py` (the `auto_map` target) into `save_directory` atomically; returns its path."""
    path = os.path.join(str(save_directory), f"{REMOTE_MODULE}.py")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_REMOTE_SOURCE)
    os.replace(tmp, path)
    return path


class JepaSpeechProcessor(ProcessorMixin):
    r"""Feature extractor + speech tokenizer.

    Args:
        feature_extractor (`JepaCodecFeatureExtractor`): Turns any audio into codec-rate mono + padding mask.
        tokenizer (`JepaSpeechTokenizer`): Joint text/audio vocabulary with the codec attached.
    """

    def __init__(self, feature_extractor, tokenizer, **kwargs):
        super().__init__(feature_extractor, tokenizer, **kwargs)
        fe_rate = getattr(feature_extractor, "sampling_rate", None)
        if fe_rate is not None and int(fe_rate) != tokenizer.sampling_rate:
            raise ValueError(
                f"feature extractor rate {fe_rate} Hz differs from the tokenizer's codec rate {tokenizer.sampling_rate} Hz"
            )
        self.auto_map = {"AutoProcessor": f"{REMOTE_MODULE}.JepaSpeechProcessor"}

    @classmethod
    def from_codec(cls, codec: Any, texts=None, text_vocab_size: int = 4000, **kwargs) -> JepaSpeechProcessor:
        """Build the tokenizer (`JepaSpeechTokenizer.from_codec`) and the matching feature extractor."""
        from .feature_extraction import JepaCodecFeatureExtractor
        from .tokenization import JepaSpeechTokenizer

        tokenizer = JepaSpeechTokenizer.from_codec(
            codec, texts=texts, text_vocab_size=text_vocab_size, **kwargs
        )
        return cls(JepaCodecFeatureExtractor.from_codec_config(tokenizer.codec.config), tokenizer)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """No-op: the `auto_map` shim is written by jepatok itself (see module docstring)."""

    def encode_audio_codes(self, audio: Any, sampling_rate: int | None = None, batch_size: int = 8) -> list:
        """Waveform or list of waveforms -> packed codes [T_i, G] each, through this processor's feature extractor."""
        batched = isinstance(audio, (list, tuple)) and len(audio) > 0 and hasattr(audio[0], "__len__")
        clips = list(audio) if batched else [audio]
        return self.tokenizer.audio_to_codes(
            clips, sampling_rate, batch_size=batch_size, feature_extractor=self.feature_extractor
        )

    def __call__(
        self,
        text: Any = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        **kwargs,
    ) -> BatchEncoding:
        """Same arguments as `JepaSpeechTokenizer.__call__`; audio goes through `self.feature_extractor`."""
        if audio is not None:
            if kwargs.get("audio_codes") is not None:
                raise ValueError("pass either audio (waveforms) or audio_codes, not both")
            batched = isinstance(audio, (list, tuple)) and len(audio) > 0 and hasattr(audio[0], "__len__")
            codes = self.encode_audio_codes(audio, sampling_rate)
            kwargs["audio_codes"] = codes if batched else codes[0]
        return self.tokenizer(text=text, **kwargs)

    def decode_audio(self, ids: Any):
        """Forwarded to `JepaSpeechTokenizer.decode_audio`."""
        return self.tokenizer.decode_audio(ids)

    def batch_decode_audio(self, sequences: Any, batch_size: int = 8):
        """Forwarded to `JepaSpeechTokenizer.batch_decode_audio`."""
        return self.tokenizer.batch_decode_audio(sequences, batch_size=batch_size)

    @property
    def model_input_names(self) -> list[str]:
        return list(self.tokenizer.model_input_names)


__all__ = ["JepaSpeechProcessor", "write_remote_module"]
