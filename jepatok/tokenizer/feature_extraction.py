"""`JepaCodecFeatureExtractor`: any audio -> mono float32 at the codec rate, padded to the hop, with a padding mask.

Accepts numpy arrays or torch tensors (float or integer PCM), mono `[L]` or multi-channel 2-D clips
(downmixed by averaging), a single clip or a list of clips; resamples from any rate to the codec rate with
torchaudio; right-pads the batch to a multiple of the hop (and to the longest clip) and returns
`padding_mask` (1 = real sample). Bad input raises a `ValueError` saying what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Full-scale values of integer PCM types.
_INT_SCALE = {np.dtype(np.int8): 128.0, np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}
_MAX_CHANNELS = 16


def _check_rate(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer() and value > 0:
            return int(value)
        raise ValueError(
            f"{name} must be a positive integer number of Hz, got {value!r} ({type(value).__name__})"
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {value}")
    return int(value)


def _to_float_array(clip: Any, index: int) -> np.ndarray:
    """One clip (numpy / torch / list of numbers) -> float32 numpy array [L] or [C, L] in [-1, 1] scale."""
    where = f"audio clip {index}"
    if torch.is_tensor(clip):
        clip = clip.detach().cpu()
        clip = clip.float().numpy() if clip.dtype in (torch.bfloat16, torch.float16) else clip.numpy()
    elif isinstance(clip, (list, tuple)):
        try:
            clip = np.asarray(clip)
        except ValueError as err:
            raise ValueError(f"{where} is a ragged nested list; give one array per clip") from err
    if not isinstance(clip, np.ndarray):
        raise ValueError(
            f"{where} has type {type(clip).__name__}; expected a numpy array, a torch tensor or a list of numbers"
        )
    if clip.dtype == np.bool_ or clip.dtype.kind in "cOUSV":
        raise ValueError(f"{where} has dtype {clip.dtype}; expected float or integer PCM samples")
    if clip.dtype.kind == "u":
        if clip.dtype != np.uint8:
            raise ValueError(f"{where} has dtype {clip.dtype}; unsigned PCM is only supported as uint8")
        clip = (clip.astype(np.float32) - 128.0) / 128.0
    elif clip.dtype.kind == "i":
        if clip.dtype not in _INT_SCALE:
            raise ValueError(
                f"{where} has dtype {clip.dtype}, whose PCM full scale is ambiguous; "
                "give int8/int16/int32 PCM or float samples in [-1, 1]"
            )
        clip = clip.astype(np.float32) / _INT_SCALE[clip.dtype]
    else:
        clip = clip.astype(np.float32, copy=False)
    if clip.ndim == 0 or clip.ndim > 2:
        raise ValueError(f"{where} has shape {clip.shape}; expected [samples] or [channels, samples]")
    if clip.size == 0:
        raise ValueError(f"{where} is empty (shape {clip.shape}); every clip needs at least one sample")
    if not np.isfinite(clip).all():
        bad = int((~np.isfinite(clip)).sum())
        raise ValueError(f"{where} contains {bad} NaN/inf sample(s) out of {clip.size}")
    return clip


def _downmix(clip: np.ndarray) -> np.ndarray:
    """[L] or 2-D -> mono [L]. A 2-D clip's channel axis is the shorter one (so [C, L] and soundfile's [L, C]
    both work); it must have at most 16 channels."""
    if clip.ndim == 1:
        return clip
    channel_axis = 0 if clip.shape[0] <= clip.shape[1] else 1
    if clip.shape[channel_axis] > _MAX_CHANNELS:
        raise ValueError(
            f"2-D audio of shape {clip.shape} has no axis with <= {_MAX_CHANNELS} channels; "
            "pass a batch as a list of clips, not a 2-D array"
        )
    return clip.mean(axis=channel_axis)


class JepaCodecFeatureExtractor(SequenceFeatureExtractor):
    r"""Prepares raw audio for [`JepaCodecModel`].

    Args:
        feature_size (`int`, defaults to 1): Channels of the model input (mono).
        sampling_rate (`int`, defaults to 24000): The codec's sampling rate.
        padding_value (`float`, defaults to 0.0): Value of padded samples.
        hop_length (`int`, defaults to 9600): The codec's hop; outputs are padded to a multiple of it.
    """

    model_input_names = ["input_values", "padding_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 24000,
        padding_value: float = 0.0,
        hop_length: int = 9600,
        **kwargs,
    ):
        sampling_rate = _check_rate(sampling_rate, "sampling_rate")
        if isinstance(hop_length, bool) or not isinstance(hop_length, int) or hop_length <= 0:
            raise ValueError(f"hop_length must be a positive integer, got {hop_length!r}")
        kwargs.setdefault("return_attention_mask", False)
        super().__init__(
            feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        self.hop_length = hop_length

    @classmethod
    def from_codec_config(cls, config, **kwargs) -> JepaCodecFeatureExtractor:
        """The feature extractor matching a `JepaCodecConfig` (its sampling rate and hop)."""
        return cls(sampling_rate=config.sampling_rate, hop_length=config.hop_length, **kwargs)

    def _split_clips(self, raw_audio: Any) -> tuple[list[Any], bool]:
        """-> (list of clips, whether the input was a batch)."""
        if isinstance(raw_audio, (list, tuple)):
            if len(raw_audio) == 0:
                raise ValueError("raw_audio is an empty list; give at least one clip")
            if all(isinstance(c, (int, float, np.number)) and not isinstance(c, bool) for c in raw_audio):
                return [np.asarray(raw_audio, dtype=np.float32)], False  # one clip as a list of numbers
            return list(raw_audio), True
        return [raw_audio], False

    def __call__(
        self,
        raw_audio: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        padding: bool = True,
        max_length: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Convert audio to model inputs.

        Args:
            raw_audio: A clip ([L] or multi-channel 2-D; numpy, torch or a list of numbers) or a list of clips.
                Integer PCM (int8/int16/int32/uint8) is scaled to [-1, 1]; multi-channel audio is averaged.
            sampling_rate (`int`, *optional*): Rate of `raw_audio`; resampled to the codec rate when different.
                `None` assumes the codec rate (with a warning).
            return_tensors (`str`, *optional*, defaults to `"pt"`): `"pt"`, `"np"` or `None` (lists of arrays).
            padding (`bool`, defaults to `True`): Pad to the longest clip rounded up to a multiple of the hop.
                With `False` every clip must already have the same length.
            max_length (`int`, *optional*): Pad to at least this many samples (rounded up to the hop).

        Returns:
            `BatchFeature` with `input_values` [B, 1, L_pad] float32 and `padding_mask` [B, L_pad] long.
        """
        if kwargs:
            logger.warning(f"JepaCodecFeatureExtractor ignores unknown arguments {sorted(kwargs)}")
        if sampling_rate is None:
            logger.warning(
                f"no sampling_rate given to JepaCodecFeatureExtractor; assuming the codec rate {self.sampling_rate} Hz"
            )
            sampling_rate = self.sampling_rate
        sampling_rate = _check_rate(sampling_rate, "sampling_rate")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        clips, _ = self._split_clips(raw_audio)
        mono = []
        for i, clip in enumerate(clips):
            audio = _downmix(_to_float_array(clip, i))
            if sampling_rate != self.sampling_rate:
                audio = AF.resample(
                    torch.from_numpy(np.ascontiguousarray(audio)), sampling_rate, self.sampling_rate
                )
                audio = audio.numpy()
            mono.append(np.ascontiguousarray(audio, dtype=np.float32))
        lengths = [len(a) for a in mono]
        if not padding and len(set(lengths)) > 1:
            raise ValueError(f"padding=False needs clips of equal length, got lengths {lengths}")
        target = max(lengths + [max_length or 0])
        target = max(self.hop_length, math.ceil(target / self.hop_length) * self.hop_length)
        values = np.full((len(mono), 1, target), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(mono), target), dtype=np.int64)
        for i, audio in enumerate(mono):
            values[i, 0, : len(audio)] = audio
            mask[i, : len(audio)] = 1
        data = {"input_values": values, "padding_mask": mask}
        return BatchFeature(data=data, tensor_type=return_tensors)
