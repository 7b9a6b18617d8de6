"""Speech-LM builders: presets, tokenizer compatibility, initial loss, overfitting, packed attention boundaries."""

from __future__ import annotations

import math

import pytest
import torch
from lm_helpers import random_codes, single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)

from jepatok.lm.data import LMBatch, PackedDataset, build_examples
from jepatok.lm.modeling import LM_PRESETS, build_lm_config, check_lm_tokenizer
from jepatok.lm.train import batch_nll


@pytest.fixture(scope="module")
def tok():
    return speech_tokenizer()


@pytest.mark.parametrize("preset", sorted(LM_PRESETS))
def test_presets_match_tokenizer(tok, preset):
    cfg = build_lm_config(preset, tok)
    assert cfg.vocab_size == len(tok)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert cfg.jepatok["audio_offset"] == tok.audio_offset
    assert cfg.jepatok["codec_weights_hash"] == tok.codec_identity["weights_hash"]
    assert cfg.hidden_size % cfg.num_attention_heads == 0


def test_bad_presets(tok):
    with pytest.raises(ValueError, match="unknown LM preset"):
        build_lm_config("huge", tok)
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        build_lm_config("tiny", tok, hidden_size=66)


def test_checks_tokenizer_compatibility(tok):
    model = tiny_lm(tok)
    check_lm_tokenizer(model, tok)
    other = speech_tokenizer(seed=1)  # same layout, codec with other weights
    with pytest.raises(ValueError, match="codec_codes_hash"):
        check_lm_tokenizer(model, other)
    # An LM recorded before codes_hash existed: the whole codec's weights must match.
    del model.config.jepatok["codec_codes_hash"]
    with pytest.raises(ValueError, match="codec_weights_hash"):
        check_lm_tokenizer(model, other)
    check_lm_tokenizer(model, tok)
    model.config.vocab_size += 1
    with pytest.raises(ValueError, match="vocab_size"):
        check_lm_tokenizer(model, tok)


def _batch(tok, n_frames=(6, 9), seed=0, mode="both"):
    g = torch.Generator().manual_seed(seed)
    codes = [random_codes(tok, n, g).tolist() for n in n_frames]
    examples, _ = build_examples(
        codes, ["hello world", "the quick brown fox"][: len(codes)], tok, mode, block_size=512
    )
    block = max(len(e.input_ids) for e in examples)  # one sequence per row, no padding waste
    packed = PackedDataset(examples, block, tok.pad_token_id)
    return packed.collate(list(range(len(packed))))


def test_initial_loss_is_ln_vocab(tok):
    model = tiny_lm(tok)
    with torch.no_grad():
        nll, targets = batch_nll(model, _batch(tok))
    loss = float(nll.sum() / (targets != -100).sum())
    assert abs(loss - math.log(len(tok))) < 0.15, (loss, math.log(len(tok)))


def test_tiny_lm_overfits_one_batch(tok):
    torch.manual_seed(0)
    model = tiny_lm(tok)
    batch = _batch(tok, n_frames=(1,), mode="continuation")  # 19 random audio tokens + <eos> to memorise
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        nll, targets = batch_nll(model, batch)
        loss = nll.sum() / (targets != -100).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 9.0 and losses[-1] < 1.0, (losses[0], losses[-1])


def test_packed_sequences_do_not_attend_across_boundaries(tok):
    """Logits of a sequence packed after another equal its logits alone (block-diagonal attention)."""
    model = tiny_lm(tok).eval()
    g = torch.Generator().manual_seed(3)
    codes = [random_codes(tok, 5, g).tolist(), random_codes(tok, 4, g).tolist()]
    examples, _ = build_examples(codes, ["", ""], tok, "continuation", block_size=256)
    packed = PackedDataset(examples, 256, tok.pad_token_id, blocks=[[0, 1]])
    batch = packed.collate([0])
    n0, n1 = len(examples[0].input_ids), len(examples[1].input_ids)
    alone = PackedDataset(examples[1:], n1, tok.pad_token_id).collate([0])
    leaky_batch = LMBatch(batch.input_ids, batch.labels, torch.arange(256).expand(1, -1))
    with torch.no_grad():
        together, _ = batch_nll(model, batch)  # the training path
        single, _ = batch_nll(model, alone)
        leaky, _ = batch_nll(model, leaky_batch)  # no position reset: attends to the first sequence
    # nll[i] scores token i+1; the second sequence's targets sit at n0 .. n0+n1-2.
    torch.testing.assert_close(together[0, n0 : n0 + n1 - 1], single[0], atol=1e-4, rtol=1e-4)
    assert single[0].abs().sum() > 0
    assert (leaky[0, n0 : n0 + n1 - 1] - single[0]).abs().max() > 1e-3


def test_save_and_load_with_auto_class(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_lm(tok).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[tok.bos_token_id, tok.audio_token_id, tok.audio_offset + 7]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert loaded.config.jepatok == model.config.jepatok
    check_lm_tokenizer(loaded, tok)
