"""Classifier-free guidance toward the text for jepatok speech LMs (text-to-speech).

The LM trains on TTS sequences (`<bos> <text> text-ids <audio> audio-ids <eos>`) and on continuation sequences
without text (`<bos> <audio> audio-ids <eos>`), so it models both p(audio | text) and p(audio). Guidance samples
from logits

    log p_uncond + w * (log p_cond - log p_uncond)

where the conditional pass is the normal one and the unconditional pass sees the same audio without the text
(`<bos> <audio>` + any voice-prompt audio + the audio generated so far). w = 1 is plain sampling; w > 1 pushes
the speech toward what the text explains and away from what any speech would do next (the trick of
classifier-free guidance in diffusion and in audio LMs such as AudioGen/MusicGen). It costs a second forward
pass per step, on its own KV cache.

transformers ships `UnbatchedClassifierFreeGuidanceLogitsProcessor`, but its unconditional pass takes no
position ids, so left-padded batches of unconditional prompts of different lengths (voice prompts) would be
read at shifted positions; this processor left-pads them itself and tracks each row's positions.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor


def unconditional_prompt(input_ids: list[int], bos_token_id: int, audio_token_id: int) -> list[int]:
    """The prompt without its text: `<bos>` + everything from the last `<audio>` token on.

    A continuation prompt (no text) comes back unchanged, so guidance leaves it as it is.

    Args:
        input_ids: a TTS or continuation prompt (must contain `<audio>`).
        bos_token_id / audio_token_id: the tokenizer's `<bos>` and `<audio>` ids.
    """
    if audio_token_id not in input_ids:
        raise ValueError("a prompt for guidance must contain the <audio> token")
    start = len(input_ids) - 1 - input_ids[::-1].index(audio_token_id)
    return [bos_token_id] + [int(i) for i in input_ids[start:]]


def check_guidance_scale(scale: float) -> float:
    """`scale` as a float; raises for a negative or non-finite one (0 samples the unconditional LM, 1 is off)."""
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {scale}")
    return scale


class TextGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance for `model.generate` (module docstring). Use a new instance per `generate` call.

    Args:
        model: the causal LM (its forward takes `input_ids`, `attention_mask`, `position_ids`,
            `past_key_values`, `use_cache`).
        unconditional_ids: per batch row, its prompt without the text (`unconditional_prompt`), in the same row
            order as the conditional batch.
        pad_token_id: id used to left-pad the unconditional prompts.
        guidance_scale: w above (>= 0; 1 returns the scores unchanged).
    """

    def __init__(self, model, unconditional_ids: list[list[int]], pad_token_id: int, guidance_scale: float):
        if not unconditional_ids or not all(unconditional_ids):
            raise ValueError("unconditional_ids needs one non-empty prompt per batch row")
        self.model = model
        self.guidance_scale = check_guidance_scale(guidance_scale)
        width = max(len(p) for p in unconditional_ids)
        ids = torch.full((len(unconditional_ids), width), int(pad_token_id), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(unconditional_ids):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        self._prompt, self._mask = ids, mask
        self._cache = None
        self._next_position: torch.Tensor | None = None
        self._consumed = 0  # length of the conditional input_ids already mirrored

    def _unconditional_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        device = input_ids.device
        if self._cache is None:  # first step: the whole unconditional prompt
            ids, mask = self._prompt.to(device), self._mask.to(device)
            self._mask = mask
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            self._next_position = mask.sum(-1, keepdim=True)
        else:  # later steps: the token sampled last (the conditional batch's newest column)
            if input_ids.shape[1] != self._consumed + 1:
                raise RuntimeError(
                    "TextGuidanceLogitsProcessor saw the sequence grow by "
                    f"{input_ids.shape[1] - self._consumed} tokens in one step; use one instance per generate call"
                )
            ids = input_ids[:, -1:]
            self._mask = torch.cat([self._mask, torch.ones_like(ids)], dim=1)
            mask, positions = self._mask, self._next_position
            self._next_position = self._next_position + 1
        self._consumed = input_ids.shape[1]
        if ids.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"guidance has {ids.shape[0]} unconditional prompts for a batch of {input_ids.shape[0]} rows"
            )
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        if out.past_key_values is None:
            raise RuntimeError("the LM returned no KV cache; guidance needs use_cache support")
        self._cache = out.past_key_values
        return out.logits[:, -1].float()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.guidance_scale == 1.0:
            return scores
        uncond = torch.log_softmax(self._unconditional_logits(input_ids), dim=-1)
        cond = torch.log_softmax(scores.float(), dim=-1)
        guided = uncond + self.guidance_scale * (cond - uncond)
        # An id the conditional pass rules out stays out (-inf - -inf would be nan).
        guided = torch.where(torch.isfinite(cond), guided, torch.full_like(guided, -math.inf))
        return guided.to(scores.dtype)
