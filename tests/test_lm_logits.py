"""Frame-grammar LogitsProcessor: exact allowed sets per slot, <eos> rules, max duration, sampled sequences."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lm_helpers import random_codes, single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)
from transformers import LogitsProcessorList

from jepatok.lm.generation import tts_prompt_ids
from jepatok.lm.logits import FrameGrammar, FrameGrammarLogitsProcessor, check_frame_grammar


@pytest.fixture(scope="module")
def tok():
    return speech_tokenizer()


@pytest.fixture(scope="module")
def grammar(tok):
    return FrameGrammar.from_tokenizer(tok)


def _allowed(processor, ids, vocab):
    scores = processor(torch.tensor([ids]), torch.zeros(1, vocab))
    return set(torch.isfinite(scores[0]).nonzero().flatten().tolist())


def test_allowed_sets_follow_the_frame(tok, grammar):
    G, off, eos = grammar.tokens_per_frame, tok.audio_offset, tok.eos_token_id
    proc = FrameGrammarLogitsProcessor(grammar, max_seconds=None)
    prompt = tts_prompt_ids(tok, "hello world")
    frame = [off + int(v) for v in random_codes(tok, 1, torch.Generator().manual_seed(0))[0]]
    # Right after <audio>: slot 0 values only, no <eos> (min_frames=1).
    assert _allowed(proc, prompt, len(tok)) == set(range(off, off + tok.slot_sizes[0]))
    # Slot 18 (the 19th): only its 16 values.
    assert _allowed(proc, prompt + frame[:18], len(tok)) == set(range(off, off + tok.slot_sizes[18]))
    assert tok.slot_sizes[18] == 16
    # After a whole frame: the next frame's slot 0 or <eos>.
    assert _allowed(proc, prompt + frame, len(tok)) == set(range(off, off + tok.slot_sizes[0])) | {eos}
    # Mid-frame, never <eos>.
    for k in range(1, G):
        assert eos not in _allowed(proc, prompt + frame[:k], len(tok))
    # Before <audio> (text part): any non-audio id.
    before = _allowed(proc, [tok.bos_token_id, tok.text_token_id], len(tok))
    assert before == set(range(len(tok))) - set(range(off, off + max(tok.slot_sizes)))
    # Finished row: <eos> only (never an all -inf row).
    assert _allowed(proc, prompt + frame + [eos, tok.pad_token_id], len(tok)) == {eos}


def test_max_seconds_forces_eos(tok, grammar):
    G, off = grammar.tokens_per_frame, tok.audio_offset
    one_frame = 1.0 / grammar.frame_rate
    proc = FrameGrammarLogitsProcessor(grammar, max_seconds=2 * one_frame)
    assert proc.max_frames == 2
    prompt = [tok.bos_token_id, tok.audio_token_id]
    codes = random_codes(tok, 2, torch.Generator().manual_seed(1))
    frames = [off + int(v) for v in codes.flatten()]
    assert _allowed(proc, prompt + frames[:G], len(tok)) == set(range(off, off + tok.slot_sizes[0])) | {
        tok.eos_token_id
    }
    assert _allowed(proc, prompt + frames, len(tok)) == {tok.eos_token_id}
    with pytest.raises(ValueError, match="max_seconds"):
        FrameGrammarLogitsProcessor(grammar, max_seconds=0)
    with pytest.raises(ValueError, match="min_frames"):
        FrameGrammarLogitsProcessor(grammar, max_seconds=one_frame, min_frames=3)


def test_batched_rows_are_independent(tok, grammar):
    proc = FrameGrammarLogitsProcessor(grammar)
    off = tok.audio_offset
    a = [tok.pad_token_id, tok.bos_token_id, tok.audio_token_id] + [off] * 18  # slot 18 next
    b = [tok.bos_token_id, tok.audio_token_id] + [off] * 19  # frame boundary
    scores = proc(torch.tensor([a, b]), torch.zeros(2, len(tok)))
    assert torch.isfinite(scores[0]).sum() == 16
    assert torch.isfinite(scores[1]).sum() == tok.slot_sizes[0] + 1


def test_check_frame_grammar_finds_violations(tok, grammar):
    off, eos = tok.audio_offset, tok.eos_token_id
    good = [tok.bos_token_id, tok.audio_token_id] + [off] * 19 + [eos]
    assert check_frame_grammar(good, grammar, require_eos=True) == []
    assert "multiple of 19" in " ".join(check_frame_grammar(good[:-2] + [eos], grammar))
    bad_slot = good[:20] + [off + 16, eos]  # slot 18 holds only 16 values
    assert "slot 18" in " ".join(check_frame_grammar(bad_slot, grammar))
    assert check_frame_grammar(good[:-1], grammar, require_eos=True) == ["audio part does not end with <eos>"]
    assert check_frame_grammar([1, 2, 3], grammar) == ["no <audio> token"]


@pytest.fixture(scope="module")
def lm(tok):
    return tiny_lm(tok).eval()


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), max_frames=st.integers(1, 3), temperature=st.sampled_from([0.7, 1.0, 1.5])
)
def test_sampled_sequences_obey_the_grammar(tok, grammar, lm, seed, max_frames, temperature):
    """An untrained LM puts mass everywhere: only the processor keeps its samples legal."""
    proc = FrameGrammarLogitsProcessor(grammar, max_seconds=max_frames / grammar.frame_rate)
    prompts = [tts_prompt_ids(tok, "hello world"), [tok.bos_token_id, tok.audio_token_id]]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    torch.manual_seed(seed)
    out = lm.generate(
        input_ids=ids,
        attention_mask=mask,
        logits_processor=LogitsProcessorList([proc]),
        do_sample=True,
        temperature=temperature,
        top_k=0,
        max_new_tokens=max_frames * 19 + 1,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    for row in out:
        new = row[width:].tolist()
        assert check_frame_grammar(prompts[0] + new, grammar, require_eos=True) == [], new
        assert new.index(tok.eos_token_id) % 19 == 0
        assert 1 <= new.index(tok.eos_token_id) // 19 <= max_frames


def test_grammar_validates_layout(tok):
    with pytest.raises(ValueError, match="do not fit"):
        FrameGrammar(tok.audio_offset, tuple(tok.slot_sizes), tok.audio_token_id, tok.eos_token_id, 100, 2.5)
    with pytest.raises(ValueError, match="frame_rate"):
        FrameGrammar(
            tok.audio_offset, tuple(tok.slot_sizes), tok.audio_token_id, tok.eos_token_id, len(tok), 0.0
        )
    assert FrameGrammar.from_tokenizer(tok).max_frames(1.0) == math.floor(tok.frame_rate)
