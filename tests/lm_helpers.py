"""Shared builders for the speech-LM tests (tests/test_lm_*.py): a real tiny JepaSpeechTokenizer, random codes."""

from __future__ import annotations

import functools

import torch

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world this is a small speech test",
    "a bird in the hand is worth two in the bush",
    "every cloud has a silver lining they said",
] * 10


@functools.lru_cache(maxsize=4)
def speech_tokenizer(seed: int = 0):
    """The real `JepaSpeechTokenizer` on a seeded tiny codec (cached: tests must not mutate it)."""
    from jepatok import JepaCodecConfig
    from jepatok.tokenizer.modeling import JepaCodecModel
    from jepatok.tokenizer.tokenization import JepaSpeechTokenizer

    torch.manual_seed(seed)
    codec = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    return JepaSpeechTokenizer.from_codec(codec, texts=TEXTS)


def random_codes(tokenizer, n_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random valid packed codes [n_frames, G] (each slot within its size)."""
    sizes = torch.tensor(tokenizer.slot_sizes, dtype=torch.long)
    u = torch.rand(n_frames, len(sizes), generator=generator)
    return (u * sizes).long().clamp_max(sizes - 1)


def tiny_lm(tokenizer, seed: int = 0, **overrides):
    from jepatok.lm.modeling import build_lm

    return build_lm("tiny", tokenizer, seed=seed, **overrides)
