"""LoRA through peft: spec parsing, audio-token embeddings and head really train, merge into a plain model."""

from __future__ import annotations

import pytest
import torch
from lm_helpers import random_codes, single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)

from jepatok.lm.data import PackedDataset, build_examples
from jepatok.lm.lora import DEFAULT_TARGETS, LoraSpec, apply_lora, merge_and_save, parse_lora_spec
from jepatok.lm.train import batch_nll


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("8,16", LoraSpec(8, 16.0, DEFAULT_TARGETS)),
        ("4,8,q_proj,v_proj", LoraSpec(4, 8.0, ("q_proj", "v_proj"))),
        ("4, 8.5, q_proj+k_proj", LoraSpec(4, 8.5, ("q_proj", "k_proj"))),
    ],
)
def test_parse_lora_spec(spec, expected):
    assert parse_lora_spec(spec) == expected


@pytest.mark.parametrize("bad", ["8", "x,16", "0,16", "8,-1"])
def test_parse_lora_spec_rejects(bad):
    with pytest.raises(ValueError, match="--lora"):
        parse_lora_spec(bad)


def test_unknown_target_is_an_error():
    with pytest.raises(ValueError, match="not modules"):
        apply_lora(tiny_lm(speech_tokenizer()), "4,8,qkv")


def test_lora_trains_audio_embeddings_and_merges(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    tok = speech_tokenizer()
    base = tiny_lm(tok)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, "4,8,q_proj,v_proj")
    assert isinstance(model, PeftModel)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)
    assert not any("mlp" in n for n in trainable)

    g = torch.Generator().manual_seed(0)
    codes = [random_codes(tok, 2, g).tolist()]
    examples, _ = build_examples(codes, ["hello world"], tok, "tts", block_size=128)
    batch = PackedDataset(examples, len(examples[0].input_ids), tok.pad_token_id).collate([0])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        nll, targets = batch_nll(model, batch)
        loss = nll.sum() / (targets != -100).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        adapted = batch_nll(model.eval(), batch)[0]

    merged = merge_and_save(model, tmp_path)
    assert type(merged) is LlamaForCausalLM
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(batch_nll(reloaded, batch)[0], adapted, atol=1e-4, rtol=1e-4)
    after = reloaded.state_dict()
    assert set(after) == set(before)
    used = sorted(set(batch.input_ids[0].tolist()) & set(range(tok.audio_offset, len(tok))))
    assert used, "the batch holds audio tokens"
    emb = "model.embed_tokens.weight"
    assert not torch.equal(after[emb][used], before[emb][used]), "audio-token embedding rows did not change"
    assert not torch.equal(
        after["lm_head.weight"][tok.audio_offset :], before["lm_head.weight"][tok.audio_offset :]
    )
    q = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(after[q], before[q])
    for frozen in (
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.norm.weight",
    ):
        assert torch.equal(after[frozen], before[frozen]), frozen
