"""Audio ids of `JepaSpeechTokenizer` (arXiv 2512.07168): ids <-> packed codes, lazy codec, waveforms <-> ids.

`codes_to_ids` / `ids_to_codes` check frame completeness and that slot k holds < slot_sizes[k] values.

The codec loads on first use from the tokenizer's `codec/` folder and must match the identity recorded at
build time (config hash and weights hash). Encoding sorts clips by length and batches them (the codec's
padding never changes codes); decoding batches only sequences of equal length, since zero-padded frames
would leak into the decoder's receptive field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def as_int_list(ids: Any) -> list[int]:
    """ids (list, tensor, array or one int) -> list of Python ints; ValueError on non-integers."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().reshape(-1).tolist()
    elif isinstance(ids, np.ndarray):
        ids = ids.reshape(-1).tolist()
    elif isinstance(ids, int):
        ids = [ids]
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"ids must be integers, got {type(i).__name__} ({i!r})")
        out.append(int(i))
    return out


class CodecAudioMixin:
    """Audio ids <-> codes, codec access and waveform encode/decode for `JepaSpeechTokenizer` (which provides
    `audio_offset`, `tokens_per_frame`, `slot_sizes`, `is_audio_id` and `len`)."""

    # --- audio ids <-> codes ----------------------------------------------------------------------
    def codes_to_ids(self, codes: Any) -> list[int]:
        """Packed codec tokens [T, G] (tensor, array or nested list) -> audio ids (row-major, audio_offset + value)."""
        codes = torch.as_tensor(np.asarray(codes) if isinstance(codes, list) else codes)
        if codes.dim() != 2 or codes.shape[-1] != self.tokens_per_frame:
            raise ValueError(
                f"codes must have shape [frames, {self.tokens_per_frame}] (one row per frame), got {tuple(codes.shape)}"
            )
        if codes.is_floating_point():
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        self._check_slots(codes.long())
        return (codes.long() + self.audio_offset).reshape(-1).tolist()

    def ids_to_codes(self, ids: Any, strict: bool = False) -> torch.Tensor:
        """Audio ids -> packed codes LongTensor [T, G]; checks frame completeness and slot ranges.

        Args:
            ids: Token ids (list, 1-D tensor or array). Non-audio ids (special/text) are dropped unless `strict`.
            strict: Raise on any non-audio id instead of dropping it.
        """
        ids = as_int_list(ids)
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range: this tokenizer has ids 0..{len(self) - 1}")
        audio = [i for i in ids if self.is_audio_id(i)]
        if strict and len(audio) != len(ids):
            other = next(i for i in ids if not self.is_audio_id(i))
            raise ValueError(f"id {other} ({self._convert_id_to_token(other)!r}) is not an audio token")
        g = self.tokens_per_frame
        if len(audio) % g:
            raise ValueError(
                f"{len(audio)} audio tokens are not whole frames ({len(audio) // g} frames + {len(audio) % g} "
                f"tokens); each frame has {g} tokens: truncated frame?"
            )
        codes = torch.tensor(audio, dtype=torch.long).view(-1, g) - self.audio_offset
        self._check_slots(codes)
        return codes

    def _check_slots(self, codes: torch.Tensor) -> None:
        sizes = torch.tensor(self.slot_sizes, dtype=torch.long)
        bad = (codes < 0) | (codes >= sizes)
        if bool(bad.any()):
            frame, slot = (int(x) for x in bad.nonzero()[0])
            raise ValueError(
                f"audio value {int(codes[frame, slot])} at frame {frame}, slot {slot} is out of range: "
                f"slot {slot} holds 0..{self.slot_sizes[slot] - 1}"
            )

    # --- codec ------------------------------------------------------------------------------------
    @property
    def codec(self):
        """The `JepaCodecModel` (loaded from the `codec/` subfolder on first use, identity-checked)."""
        if self._codec is None:
            if self._codec_dir is None or not os.path.isfile(os.path.join(self._codec_dir, "config.json")):
                raise ValueError(
                    "this tokenizer has no codec attached (no codec/ folder next to it); audio encode/decode "
                    "needs one: build it with JepaSpeechTokenizer.from_codec(codec, ...)"
                )
            from .modeling import JepaCodecModel, codec_identity

            codec = JepaCodecModel.from_pretrained(self._codec_dir).eval()
            found = codec_identity(codec)
            for key in ("config_hash", "weights_hash"):
                if found.get(key) != self.codec_identity.get(key):
                    raise ValueError(
                        f"the codec in {self._codec_dir!r} does not match this tokenizer: {key} "
                        f"{found.get(key)} != {self.codec_identity.get(key)} recorded at tokenizer build time"
                    )
            self._codec = codec
        return self._codec

    @property
    def feature_extractor(self):
        """`JepaCodecFeatureExtractor` matching the codec (resampling, padding, padding mask)."""
        if self._feature_extractor is None:
            from .feature_extraction import JepaCodecFeatureExtractor

            self._feature_extractor = JepaCodecFeatureExtractor.from_codec_config(self.codec.config)
        return self._feature_extractor

    # --- audio <-> ids through the codec ----------------------------------------------------------
    def encode_audio(
        self, waveform: Any, sampling_rate: int | None = None, chunk_length_s: float | None = None
    ) -> list[int]:
        """One waveform (numpy/torch, mono or [channels, samples], any rate) -> audio ids."""
        return self.batch_encode_audio([waveform], sampling_rate, chunk_length_s=chunk_length_s)[0]

    def batch_encode_audio(
        self,
        waveforms: Sequence[Any],
        sampling_rate: int | None = None,
        batch_size: int = 8,
        chunk_length_s: float | None = None,
    ) -> list[list[int]]:
        """Several waveforms -> audio ids each; encoded `batch_size` at a time (padding never changes codes)."""
        return [
            self.codes_to_ids(c)
            for c in self.audio_to_codes(waveforms, sampling_rate, batch_size, chunk_length_s)
        ]

    @torch.inference_mode()
    def audio_to_codes(
        self,
        waveforms: Sequence[Any],
        sampling_rate: int | None = None,
        batch_size: int = 8,
        chunk_length_s: float | None = None,
        feature_extractor: Any = None,
    ) -> list[torch.Tensor]:
        """Waveforms -> packed codes [T_i, G] each (CPU LongTensors), batched by similar length.

        Args:
            waveforms: List of clips (numpy/torch/list; mono [L] or [channels, L]).
            sampling_rate: Rate of the clips (resampled to the codec rate).
            batch_size: Clips per codec call.
            chunk_length_s: Encode long clips in windows of this many seconds.
            feature_extractor: Use this one instead of the codec's default (the processor passes its own).
        """
        if isinstance(waveforms, (np.ndarray, torch.Tensor)) or not isinstance(waveforms, Sequence):
            raise ValueError("audio_to_codes expects a list of waveforms")
        if len(waveforms) == 0:
            return []
        for i, w in enumerate(waveforms):
            if not isinstance(w, (np.ndarray, torch.Tensor, list, tuple)):
                raise ValueError(
                    f"waveform {i} must be a numpy array, torch tensor or list, got {type(w).__name__}"
                )
            shape = tuple(w.shape) if hasattr(w, "shape") else np.asarray(w).shape
            if len(shape) not in (1, 2):
                raise ValueError(f"waveform {i} must be [samples] or [channels, samples], got shape {shape}")
            if shape[-1] == 0 or 0 in shape:
                raise ValueError(f"waveform {i} is empty: audio must hold at least one sample")
        fe, codec = feature_extractor or self.feature_extractor, self.codec
        device = next(codec.parameters()).device
        lengths = [(w.shape if hasattr(w, "shape") else np.asarray(w).shape)[-1] for w in waveforms]
        order = sorted(range(len(waveforms)), key=lambda i: lengths[i])
        out: list[torch.Tensor | None] = [None] * len(waveforms)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            feats = fe([waveforms[i] for i in idx], sampling_rate=sampling_rate, return_tensors="pt")
            enc = codec.encode(
                feats["input_values"].to(device),
                feats["padding_mask"].to(device),
                chunk_length_s=chunk_length_s,
            )
            for row, i in enumerate(idx):
                out[i] = enc.audio_codes[row][enc.frame_mask[row].bool()].long().cpu()
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def decode_audio(self, ids: Any) -> tuple[np.ndarray, int]:
        """Ids (non-audio ids are dropped) -> (waveform float32 [T * hop], sampling_rate)."""
        return self.batch_decode_audio([ids])[0]

    @torch.inference_mode()
    def batch_decode_audio(
        self, sequences: Sequence[Any], batch_size: int = 8
    ) -> list[tuple[np.ndarray, int]]:
        """Several id sequences -> [(waveform float32 [T_i * hop], sampling_rate)].

        Sequences with the same number of frames are decoded together (`batch_size` at a time); lengths are
        never mixed in one call, since zero-padded frames would leak into the decoder's receptive field.
        """
        codes = [self.ids_to_codes(s) for s in sequences]
        for i, c in enumerate(codes):
            if c.shape[0] == 0:
                raise ValueError(f"sequence {i} holds no audio tokens to decode")
        codec = self.codec
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(codes):
            by_length.setdefault(int(c.shape[0]), []).append(i)
        out: list[tuple[np.ndarray, int] | None] = [None] * len(codes)
        for idx in by_length.values():
            for start in range(0, len(idx), batch_size):
                group = idx[start : start + batch_size]
                batch = torch.stack([codes[i] for i in group])  # [b, T, G]
                audio = codec.decode(batch).audio_values  # [b, 1, T * hop]
                for row, i in enumerate(group):
                    out[i] = (audio[row, 0].float().cpu().numpy(), self.sampling_rate)
        return out  # type: ignore[return-value]
