"""LM sequence templates of `JepaSpeechTokenizer` (arXiv 2512.07168 tokens in a causal LM): building, labels, padding.

    TTS           <bos> <text> text ids <audio> audio ids <eos>
    TTS prompt    <bos> <text> text ids <audio>                 (what generation starts from)
    continuation  <bos> <audio> audio ids

`tokenizer(text=..., audio=..., sampling_rate=...)` picks the template from what it is given, encodes
waveforms through the codec (or takes ready `audio_codes`), pads a batch and returns `attention_mask` and,
on request, `labels` with the prompt part (everything up to and including `<audio>`) set to -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchEncoding

IGNORE_INDEX = -100
TEMPLATES = ("tts", "tts_prompt", "continuation")


def _is_codes_batch(codes: Any) -> bool:
    """A single [T, G] codes matrix, or a batch of them ([B, T, G] tensor or list of [T, G])."""
    if isinstance(codes, (torch.Tensor, np.ndarray)):
        if codes.ndim == 3:
            return True
        if codes.ndim == 2:
            return False
        raise ValueError(f"audio_codes must be [T, G] or [B, T, G], got shape {tuple(codes.shape)}")
    if isinstance(codes, (list, tuple)):
        if len(codes) == 0:
            return True
        first = codes[0]
        if isinstance(first, (torch.Tensor, np.ndarray)):
            return first.ndim == 2
        return bool(first) and isinstance(first[0], (list, tuple, torch.Tensor, np.ndarray))
    raise ValueError(f"audio_codes must be a tensor, an array or nested lists, got {type(codes).__name__}")


def _is_audio_batch(audio: Any) -> bool:
    """A list of clips is a batch; one array/tensor (mono or [channels, samples]) or a list of floats is one clip."""
    if isinstance(audio, (torch.Tensor, np.ndarray)):
        return False
    if isinstance(audio, (list, tuple)):
        return len(audio) > 0 and isinstance(audio[0], (torch.Tensor, np.ndarray, list, tuple))
    raise ValueError(
        f"audio must be a waveform (numpy/torch) or a list of waveforms, got {type(audio).__name__}"
    )


class TemplateMixin:
    """Template building for `JepaSpeechTokenizer` (uses its special ids, `encode` and `codes_to_ids`)."""

    def _text_ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        # Special-token strings inside a transcript are text, never control tokens.
        return self.encode(text, add_special_tokens=False, split_special_tokens=True)

    def build_tts_prompt_ids(self, text: str) -> list[int]:
        """`<bos> <text> text-ids <audio>`: the prompt a TTS generation continues."""
        return [self.bos_token_id, self.text_token_id, *self._text_ids(text), self.audio_token_id]

    def build_tts_ids(self, text: str, codes: Any) -> list[int]:
        """`<bos> <text> text-ids <audio> audio-ids <eos>` (codes: packed [T, G])."""
        return [*self.build_tts_prompt_ids(text), *self.codes_to_ids(codes), self.eos_token_id]

    def build_continuation_ids(self, codes: Any) -> list[int]:
        """`<bos> <audio> audio-ids` (codes: packed [T, G])."""
        return [self.bos_token_id, self.audio_token_id, *self.codes_to_ids(codes)]

    def template_labels(self, ids: list[int], mask_prompt: bool = True) -> list[int]:
        """Labels for `ids`: a copy with the prompt (up to and including the first `<audio>`) set to -100."""
        labels = list(ids)
        if mask_prompt:
            try:
                cut = ids.index(self.audio_token_id) + 1
            except ValueError:
                cut = len(ids)  # no audio part: nothing to learn in a speech-only objective
            labels[:cut] = [IGNORE_INDEX] * cut
        return labels

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        *,
        audio_codes: Any = None,
        template: str | None = None,
        return_labels: bool = False,
        mask_text_labels: bool = True,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool = True,
        return_tensors: str | None = None,
        batch_size: int = 8,
        **kwargs,
    ) -> BatchEncoding:
        """Build LM inputs. With only `text` (and no `template`) this is the plain HF text call.

        Args:
            text: Transcript(s).
            audio: Waveform(s) (numpy/torch, any rate given by `sampling_rate`); encoded with the codec.
            sampling_rate: Rate of `audio`.
            audio_codes: Packed codes instead of `audio`: [T, G], [B, T, G] or a list of [T, G].
            template: `"tts"`, `"tts_prompt"` or `"continuation"`; inferred when omitted (text + audio ->
                tts, audio only -> continuation).
            return_labels: Add `labels` (padding -> -100).
            mask_text_labels: Set the prompt part of `labels` (up to and including `<audio>`) to -100.
            padding: `True`/`"longest"`, `"max_length"` (needs `max_length`) or `False`.
            max_length: Target length for `padding="max_length"`; longer sequences raise (a frame is never cut).
            pad_to_multiple_of: Round the padded length up to a multiple of this.
            return_attention_mask: Add `attention_mask`.
            return_tensors: `"pt"`, `"np"` or `None` (lists).
            batch_size: Clips per codec call when encoding `audio`.
        """
        if audio is not None and audio_codes is not None:
            raise ValueError("pass either audio (waveforms) or audio_codes, not both")
        if template is None and audio is None and audio_codes is None:
            if text is None:
                raise ValueError("nothing to tokenize: pass text, audio or audio_codes")
            return super().__call__(
                text, padding=padding, max_length=max_length, return_tensors=return_tensors, **kwargs
            )
        if kwargs:
            raise ValueError(f"unexpected arguments for a speech template call: {sorted(kwargs)}")
        if template is None:
            template = "tts" if text is not None else "continuation"
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")

        batched = False
        texts: list[str] | None = None
        if text is not None:
            batched = isinstance(text, (list, tuple))
            texts = list(text) if batched else [text]
        codes: list[Any] | None = None
        if audio is not None:
            audio_batched = _is_audio_batch(audio)
            clips = list(audio) if audio_batched else [audio]
            codes = self.audio_to_codes(clips, sampling_rate, batch_size=batch_size)
            batched = batched or audio_batched
        elif audio_codes is not None:
            codes_batched = _is_codes_batch(audio_codes)
            codes = list(audio_codes) if codes_batched else [audio_codes]
            batched = batched or codes_batched
        if texts is not None and codes is not None and len(texts) != len(codes):
            raise ValueError(f"got {len(texts)} texts but {len(codes)} audio clips; they must pair up")

        if template == "tts":
            if texts is None or codes is None:
                raise ValueError("the tts template needs both text and audio (or audio_codes)")
            sequences = [self.build_tts_ids(t, c) for t, c in zip(texts, codes)]
        elif template == "tts_prompt":
            if texts is None or codes is not None:
                raise ValueError("the tts_prompt template takes text only")
            sequences = [self.build_tts_prompt_ids(t) for t in texts]
        else:
            if codes is None or texts is not None:
                raise ValueError("the continuation template takes audio (or audio_codes) only, no text")
            sequences = [self.build_continuation_ids(c) for c in codes]

        data = self._pad_sequences(
            sequences,
            return_labels=return_labels,
            mask_text_labels=mask_text_labels,
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=return_attention_mask,
        )
        if not batched:
            data = {k: v[0] for k, v in data.items()}
            if return_tensors is not None:
                data = {k: [v] for k, v in data.items()}  # keep a batch axis of 1 for tensors
        return BatchEncoding(data, tensor_type=return_tensors)

    def _pad_sequences(
        self,
        sequences: list[list[int]],
        return_labels: bool,
        mask_text_labels: bool,
        padding: bool | str,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        return_attention_mask: bool,
    ) -> dict[str, list[list[int]]]:
        longest = max(len(s) for s in sequences)
        if padding in (True, "longest"):
            target = longest
        elif padding == "max_length":
            if max_length is None:
                raise ValueError('padding="max_length" needs max_length')
            target = max_length
        elif padding in (False, "do_not_pad"):
            target = None
        else:
            raise ValueError(f"padding must be True/'longest', 'max_length' or False, got {padding!r}")
        if max_length is not None and longest > max_length:
            raise ValueError(
                f"a sequence has {longest} ids > max_length={max_length}; templates are never truncated "
                "(that would cut a frame): split the audio or raise max_length"
            )
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        out: dict[str, list[list[int]]] = {"input_ids": []}
        if return_attention_mask:
            out["attention_mask"] = []
        if return_labels:
            out["labels"] = []
        for ids in sequences:
            labels = self.template_labels(ids, mask_prompt=mask_text_labels)
            n_pad = 0 if target is None else target - len(ids)
            left = self.padding_side == "left"

            def pad(values: list[int], fill: int, n_pad: int = n_pad, left: bool = left) -> list[int]:
                return [fill] * n_pad + values if left else values + [fill] * n_pad

            out["input_ids"].append(pad(ids, self.pad_token_id))
            if return_attention_mask:
                out["attention_mask"].append(pad([1] * len(ids), 0))
            if return_labels:
                out["labels"].append(pad(labels, IGNORE_INDEX))
        return out
