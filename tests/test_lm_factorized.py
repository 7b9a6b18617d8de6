"""Digit-factorized audio embeddings (`jepatok.lm.factorized`, `train-lm ... audio_digit_radix=4`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_helpers import make_pretokenized, single_thread, speech_tokenizer, tiny_lm  # noqa: F401

import jepatok.lm.train as lm_train
from jepatok.lm.args import LMTrainArgs
from jepatok.lm.factorized import AudioDigitFactors, add_audio_digit_factors, digit_count, materialize


def test_digit_vectors_are_added_by_digit_and_fold_into_a_plain_model():
    tok = speech_tokenizer()
    model = tiny_lm(tok).eval()
    ids = torch.tensor([[1, tok.audio_offset + 5, tok.audio_offset + 16383, 2]])
    with torch.no_grad():
        plain = model(ids).logits
        add_audio_digit_factors(model, tok.audio_offset, tok.codebook_size, 4)
        torch.testing.assert_close(model(ids).logits, plain)  # zero vectors: the LM is unchanged
        emb = model.get_input_embeddings()
        factors = emb.parametrizations.weight[0].factors
        assert factors.shape == (7, 4, emb.weight.shape[1])
        factors.normal_()
        original = emb.parametrizations.weight.original
        v = 1 + 2 * 4 + 3 * 4**6  # digits (1, 2, 0, 0, 0, 0, 3), least significant first
        digits = [1, 2, 0, 0, 0, 0, 3]
        expected = original[tok.audio_offset + v] + sum(factors[j, d] for j, d in enumerate(digits))
        torch.testing.assert_close(emb.weight[tok.audio_offset + v], expected)
        torch.testing.assert_close(emb.weight[:307], original[:307])  # text rows untouched
        model.get_output_embeddings().parametrizations.weight[0].factors.normal_()
        factored = model(ids).logits
        assert not torch.allclose(factored, plain, atol=1e-3)
        materialize(model)
        assert not any("parametrizations" in k for k in model.state_dict())
        torch.testing.assert_close(model(ids).logits, factored)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="not a power of audio_digit_radix=3"):
        digit_count(16384, 3)
    with pytest.raises(ValueError, match=">= 2"):
        AudioDigitFactors(8, 0, 16, 1)
    tok = speech_tokenizer()
    tied = tiny_lm(tok, tie_word_embeddings=True)
    with pytest.raises(ValueError, match="untied"):
        add_audio_digit_factors(tied, tok.audio_offset, tok.codebook_size, 4)
    with pytest.raises(ValueError, match="LoRA"):
        LMTrainArgs.from_recipe("tiny", audio_digit_radix=4, lora="4,8,q_proj")
    with pytest.raises(ValueError, match="audio_digit_radix must be 0"):
        LMTrainArgs.from_recipe("tiny", audio_digit_radix=1)


def test_factorized_run_resumes_exactly_and_saves_a_plain_llama(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tok = speech_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    make_pretokenized(tok, tmp_path / "data")
    fast = dict(block_size=96, per_device_batch_size=1, warmup_steps=1, logging_steps=1, eval_steps=3)
    fast.update(save_steps=2, max_eval_blocks=2, max_steps=3, report_to="none", audio_digit_radix=4)

    def args(out):
        return LMTrainArgs.from_recipe(
            "tiny", data=str(tmp_path / "data"), tokenizer=str(tmp_path / "tok"), output_dir=str(out), **fast
        )

    full = lm_train.train(args(tmp_path / "full"))
    ckpt = load_file(lm_train.list_checkpoints(tmp_path / "full")[-1] / "model.safetensors")
    factor_keys = [k for k in ckpt if k.endswith("factors")]
    assert len(factor_keys) == 2  # input embedding and output projection
    assert all(ckpt[k].abs().sum() > 0 for k in factor_keys)  # the digit vectors trained

    def crash(step):
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_train, "_after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        lm_train.train(args(tmp_path / "crash"))
    monkeypatch.setattr(lm_train, "_after_step", lambda step: None)
    resumed = lm_train.train(args(tmp_path / "crash"), resume=True)
    a = load_file(Path(full.final_dir) / "model.safetensors")
    b = load_file(Path(resumed.final_dir) / "model.safetensors")
    assert not any("parametrizations" in k or k.endswith("factors") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = AutoModelForCausalLM.from_pretrained(full.final_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
