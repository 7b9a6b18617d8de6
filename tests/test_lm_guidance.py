"""Classifier-free guidance toward the text (`jepatok.lm.guidance`): prompts, the cached unconditional pass
against a full recomputation (left-padded rows of different lengths), and the pipeline / CLI settings."""

from __future__ import annotations

import pytest
import torch
from lm_helpers import random_codes, single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)

from jepatok.lm.generation import SpeechGenerationPipeline, tts_prompt_ids
from jepatok.lm.guidance import TextGuidanceLogitsProcessor, check_guidance_scale, unconditional_prompt


def test_unconditional_prompt_drops_the_text_only():
    tok = speech_tokenizer()
    bos, audio = tok.bos_token_id, tok.audio_token_id
    tts = tts_prompt_ids(tok, "hello world")
    assert tok.text_token_id in tts
    assert unconditional_prompt(tts, bos, audio) == [bos, audio]
    voice = list(tok.codes_to_ids(random_codes(tok, 2, torch.Generator().manual_seed(0))))
    assert unconditional_prompt(tts + voice, bos, audio) == [bos, audio] + voice
    continuation = [bos, audio] + voice
    assert unconditional_prompt(continuation, bos, audio) == continuation
    with pytest.raises(ValueError, match="<audio>"):
        unconditional_prompt([bos, tok.text_token_id, 50], bos, audio)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_guidance_scale_checked(bad):
    with pytest.raises(ValueError, match="guidance_scale"):
        check_guidance_scale(bad)
    assert check_guidance_scale(0) == 0.0 and check_guidance_scale("2") == 2.0


def test_cached_unconditional_pass_matches_full_recomputation():
    tok = speech_tokenizer()
    lm = tiny_lm(tok).eval()
    g = torch.Generator().manual_seed(3)
    voice = list(tok.codes_to_ids(random_codes(tok, 1, g)))
    uncond = [[tok.bos_token_id, tok.audio_token_id], [tok.bos_token_id, tok.audio_token_id] + voice]
    scale = 2.5
    proc = TextGuidanceLogitsProcessor(lm, uncond, tok.pad_token_id, scale)
    cond_ids = torch.randint(7, 300, (2, 9), generator=g)  # stands in for the (padded) conditional batch
    grown = [list(p) for p in uncond]
    with torch.no_grad():
        for _step in range(4):
            scores = torch.randn(2, lm.config.vocab_size, generator=g)
            scores[:, 5] = -float("inf")  # an id the conditional side ruled out stays out
            out = proc(cond_ids, scores)
            for row in range(2):  # each row alone, unpadded, no cache
                logits = lm(input_ids=torch.tensor([grown[row]])).logits[0, -1]
                u = torch.log_softmax(logits, -1)
                c = torch.log_softmax(scores[row], -1)
                expected = u + scale * (c - u)
                finite = torch.isfinite(c)
                torch.testing.assert_close(out[row][finite], expected[finite], atol=2e-4, rtol=1e-4)
                assert torch.isneginf(out[row, 5])
            new = torch.randint(tok.audio_offset, tok.audio_offset + 16, (2, 1), generator=g)
            cond_ids = torch.cat([cond_ids, new], dim=1)
            for row in range(2):
                grown[row].append(int(new[row]))
    with pytest.raises(RuntimeError, match="one instance per generate call"):
        proc(torch.cat([cond_ids, cond_ids], dim=1), scores)


def test_scale_one_returns_scores_unchanged_and_batch_size_checked():
    tok = speech_tokenizer()
    lm = tiny_lm(tok)
    scores = torch.randn(1, lm.config.vocab_size)
    off = TextGuidanceLogitsProcessor(lm, [[tok.bos_token_id, tok.audio_token_id]], tok.pad_token_id, 1.0)
    assert off(torch.zeros(1, 3, dtype=torch.long), scores) is scores
    on = TextGuidanceLogitsProcessor(lm, [[tok.bos_token_id, tok.audio_token_id]], tok.pad_token_id, 2.0)
    with pytest.raises(ValueError, match="1 unconditional prompts for a batch of 2"):
        on(torch.zeros(2, 3, dtype=torch.long), torch.randn(2, lm.config.vocab_size))


def test_pipeline_guidance_changes_tts_and_keeps_grammar():
    tok = speech_tokenizer()
    pipe = SpeechGenerationPipeline(model=tiny_lm(tok), tokenizer=tok)
    voice = tok.decode_audio(tok.codes_to_ids(random_codes(tok, 2, torch.Generator().manual_seed(1))))[0]
    inputs = [
        "hello world",
        {"text": "a bird in the hand", "audio": voice, "sampling_rate": tok.sampling_rate},
    ]
    kw = dict(max_seconds=4 / tok.frame_rate, seed=0, batch_size=2)
    plain = pipe(inputs, **kw)
    assert [o["ids"] for o in pipe(inputs, guidance_scale=1.0, **kw)] == [o["ids"] for o in plain]
    guided = pipe(inputs, guidance_scale=4.0, **kw)  # postprocess checks the frame grammar of every row
    assert [o["ids"] for o in guided] != [o["ids"] for o in plain]
    for o in guided:
        assert (
            o["audio"].size > 0
            and (len(o["ids"]) - (o["ids"][-1] == tok.eos_token_id)) % tok.tokens_per_frame == 0
        )
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe("hello", guidance_scale=-1.0)
