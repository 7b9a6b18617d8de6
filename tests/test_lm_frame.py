"""Frame-level speech LM (backbone per frame + depth head): step conversion, loss, overfit, generation, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from lm_helpers import random_codes, single_thread, speech_tokenizer  # noqa: F401  (autouse fixture)

from jepatok.lm.data import IGNORE_INDEX, build_examples
from jepatok.lm.frame_compare import compare
from jepatok.lm.frame_model import FrameLevelSpeechLM, build_frame_lm_config, collate_frames, to_frame_example


@pytest.fixture(scope="module")
def tok():
    return speech_tokenizer()


@pytest.fixture(scope="module")
def examples(tok):
    g = torch.Generator().manual_seed(0)
    codes = [random_codes(tok, n, g).tolist() for n in (2, 3)]
    return build_examples(codes, ["hello world", ""], tok, "both", block_size=256)[0]


def _model(tok, seed=0):
    torch.manual_seed(seed)
    return FrameLevelSpeechLM(build_frame_lm_config("tiny", tok))


def test_flat_sequence_to_frame_steps(tok, examples):
    tts = examples[0]  # <bos> <text> hello world <audio> 2 frames <eos>
    fe = to_frame_example(tts, tok)
    a = tts.input_ids.index(tok.audio_token_id)
    assert fe.prompt_ids == tts.input_ids[: a + 1] and fe.ended and fe.num_steps == a + 1 + 2
    audio = [t - tok.audio_offset for t in tts.input_ids[a + 1 : -1]]
    b = collate_frames([fe, to_frame_example(examples[1], tok)], tok.pad_token_id)
    assert b.input_ids[0, : a + 1].tolist() == tts.input_ids[: a + 1]
    assert b.frame_codes[0, a + 1].tolist() == audio[:19] and b.frame_codes[0, a + 2].tolist() == audio[19:]
    assert b.target_codes[0, a].tolist() == audio[:19] and b.target_codes[0, a + 1].tolist() == audio[19:]
    assert b.target_codes[0, a + 2].tolist() == [-1] * 19 and b.target_codes[0, 0].tolist() == [-1] * 19
    assert (
        b.stop_labels[0, a : a + 3].tolist() == [0, 0, 1]
        and b.stop_labels[0, :a].tolist() == [IGNORE_INDEX] * a
    )
    # the shorter second row (<bos> <audio> 2 frames <eos>) is padded with no targets and fresh positions
    assert b.stop_labels[1].tolist()[:4] == [IGNORE_INDEX, 0, 0, 1]
    assert (b.stop_labels[1, 4:] == IGNORE_INDEX).all() and (b.target_codes[1, 4:] == -1).all()
    assert b.position_ids[1].tolist()[:4] == [0, 1, 2, 3] and b.position_ids[1, 4] == 0
    assert b.num_targets() == (2 + 2) * 19 + 3 + 3


def _overfit(model, tok, example, steps: int = 25) -> list[float]:
    """AdamW on one example's mean loss per predicted value; the losses."""
    one = collate_frames([to_frame_example(example, tok)], tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(steps):
        out = model(one)
        loss = (out.frame_nll + out.stop_nll) / (out.frames * 19 + out.stops)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_initial_loss_and_overfit(tok, examples):
    model = _model(tok)
    batch = collate_frames([to_frame_example(e, tok) for e in examples], tok.pad_token_id)
    with torch.no_grad():
        out = model(batch)
    per_frame = float(out.frame_nll) / out.frames
    uniform = sum(math.log(s) for s in tok.slot_sizes)  # 18 x ln 16384 + ln 16
    assert abs(per_frame - uniform) / uniform < 0.02, (per_frame, uniform)
    # TTS (2 frames) + continuation (2) + continuation (3): one stop decision before each frame and one at the end.
    assert out.frames == 2 + 2 + 3 and out.stops == 7 + 3
    losses = _overfit(model, tok, examples[1])
    assert losses[0] > 8.0 and losses[-1] < 1.0, (losses[0], losses[-1])


def test_generation_is_valid_and_decodes(tok, tmp_path):
    model = _model(tok).eval()
    # The KV-cached slot sampler follows the teacher-forced depth logits (greedy, so exactly).
    h = torch.randn(3, model.config.backbone["hidden_size"])
    greedy = model._sample_frame(h, temperature=1e-6, top_k=0)
    with torch.no_grad():
        assert torch.equal(model.depth_logits(h, greedy[:, :-1]).argmax(-1), greedy)
    prompts = [tok.build_tts_prompt_ids("hello world"), [tok.bos_token_id, tok.audio_token_id]]
    torch.manual_seed(0)
    codes = model.generate_frames(prompts, max_frames=3, min_frames=1, temperature=1.0, top_k=0)
    sizes = torch.tensor(tok.slot_sizes)
    hop = round(tok.sampling_rate / tok.frame_rate)
    for c in codes:
        assert 1 <= c.shape[0] <= 3 and c.shape[1] == 19
        assert ((c >= 0) & (c < sizes)).all()
        audio, sr = tok.decode_audio(tok.codes_to_ids(c))
        assert sr == tok.sampling_rate and audio.shape == (c.shape[0] * hop,)
    fixed = model.generate_frames(prompts[:1], max_frames=2, min_frames=2)
    assert fixed[0].shape == (2, 19)
    model.save_pretrained(tmp_path)
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is FrameLevelSpeechLM
    # slot_valid is a non-persistent buffer: from_pretrained must rebuild it, not leave it uninitialised.
    assert torch.equal(loaded.slot_valid, model.slot_valid)
    batch = collate_frames(
        [
            to_frame_example(e, tok)
            for e in build_examples([c.tolist() for c in codes], ["a", "b"], tok, "tts", 256)[0]
        ],
        tok.pad_token_id,
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).frame_nll, model(batch).frame_nll)


def test_compare_reports_both_modes(tok, examples):
    result = compare(
        tok, examples, examples, preset="tiny", steps=2, batch_size=2, gen_seconds=2 / tok.frame_rate
    )
    assert result.flat["lm_steps_per_audio_second"] == 19 * tok.frame_rate
    assert result.frame["lm_steps_per_audio_second"] == tok.frame_rate
    for mode in (result.flat, result.frame):
        assert mode["eval_nats_per_audio_second"] > 0 and mode["generation_audio_seconds_per_second"] > 0


def test_pipeline_drives_the_frame_lm(tok, tmp_path):
    """SpeechGenerationPipeline with a FrameLevelSpeechLM: TTS and continuation through `pipeline()` from a saved
    directory, seeded reproducibility, frame limits counting the prompt's frames, and guidance plumbing."""
    import numpy as np
    from transformers import pipeline

    from jepatok.lm.generation import SpeechGenerationPipeline
    from jepatok.lm.logits import FrameGrammar, check_frame_grammar

    model = _model(tok).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    pipe = pipeline("text-to-speech", model=str(tmp_path))
    assert isinstance(pipe, SpeechGenerationPipeline) and type(pipe.model) is FrameLevelSpeechLM
    hop = round(tok.sampling_rate / tok.frame_rate)
    grammar = FrameGrammar.from_tokenizer(tok)
    max_frames = 4
    outs = pipe(["hello world", "good day"], max_seconds=max_frames / tok.frame_rate, seed=0)
    for out in outs:
        ids = out["ids"]
        assert ids[-1] == tok.eos_token_id and check_frame_grammar([tok.audio_token_id] + ids, grammar) == []
        n = (len(ids) - 1) // 19
        assert 1 <= n <= max_frames and out["audio"].shape == (n * hop,) and np.isfinite(out["audio"]).all()
    again = pipe(["hello world", "good day"], max_seconds=max_frames / tok.frame_rate, seed=0)
    assert [o["ids"] for o in again] == [o["ids"] for o in outs]
    # continuation: the prompt's 2 frames count toward max_seconds; min_frames forbids an early stop
    prompt_codes = random_codes(tok, 2, torch.Generator().manual_seed(1))
    wave, sr = tok.decode_audio(tok.codes_to_ids(prompt_codes))
    cont = pipe(
        {"audio": wave, "sampling_rate": sr},
        max_seconds=5 / tok.frame_rate,
        min_frames=5,
        seed=0,
        include_prompt_audio=True,
    )
    assert len(cont["ids"]) == 3 * 19 + 1 and cont["audio"].shape == (5 * hop,)
    with pytest.raises(ValueError, match="raise max_seconds"):
        pipe({"audio": wave, "sampling_rate": sr}, max_seconds=2 / tok.frame_rate)
    # guidance whose unconditional prompt equals the conditional one is no guidance at all (greedy)
    prompt = tok.build_tts_prompt_ids("hello world")
    plain = model.generate_frames([prompt], max_frames=3, min_frames=3, do_sample=False)
    same = model.generate_frames(
        [prompt], max_frames=3, min_frames=3, do_sample=False, guidance_scale=3.0, unconditional_ids=[prompt]
    )
    assert torch.equal(plain[0], same[0])
    # and the first guided slot is the argmax of uncond + w * (cond - uncond) of the first slot's logits
    guided = model.generate_frames([prompt], max_frames=1, min_frames=1, do_sample=False, guidance_scale=3.0)
    with torch.no_grad():
        states = []
        for p in (prompt, [tok.bos_token_id, tok.audio_token_id]):
            h = model.backbone(input_ids=torch.tensor([p])).last_hidden_state[:, -1]
            states.append(model.depth_logits(h, torch.zeros(1, 0, dtype=torch.long))[0, 0])
    expected = (states[1] + 3.0 * (states[0] - states[1])).masked_fill(~model.slot_valid[0], float("-inf"))
    assert int(guided[0][0, 0]) == int(expected.argmax())
    assert (
        pipe("hello world", max_seconds=2 / tok.frame_rate, seed=0, guidance_scale=2.0)["ids"][-1]
        == tok.eos_token_id
    )


def test_value_split_is_the_same_likelihood_factorised(tok, examples, tmp_path):
    """value_split=S: p(v) = p(v // S) p(v % S | v // S) over legal values only; forward's NLL is that of
    depth_logits' log-probabilities, which normalise; the greedy sampler takes the likeliest hi, then lo."""
    torch.manual_seed(0)
    model = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, value_split=128)).eval()
    assert not hasattr(model, "depth_head") and model.depth_head_hi.out_features == 128
    batch = collate_frames([to_frame_example(e, tok) for e in examples], tok.pad_token_id)
    with torch.no_grad():
        out = model(batch)
        emb = model.embed_steps(batch.input_ids, batch.frame_codes)
        h = model.backbone(inputs_embeds=emb, position_ids=batch.position_ids).last_hidden_state
        has = batch.target_codes[..., 0] >= 0
        tgt = batch.target_codes[has]
        lp = model.depth_logits(h[has], tgt[:, :-1])  # [N, 19, V]
    torch.testing.assert_close(torch.logsumexp(lp, -1), torch.zeros(lp.shape[:2]), atol=1e-4, rtol=0)
    assert torch.isinf(lp[:, -1, 16:]).all()  # the last slot has 16 legal values
    torch.testing.assert_close(-lp.gather(-1, tgt[..., None]).sum(), out.frame_nll, rtol=1e-5, atol=1e-3)
    h0 = torch.randn(3, model.config.backbone["hidden_size"])
    greedy = model._sample_frame(h0, 1.0, 0, do_sample=False)
    assert (greedy[:, -1] < 16).all()
    with torch.no_grad():
        lp0 = model.depth_logits(h0, greedy[:, :-1])  # [3, 19, V]
    hi_marginal = torch.logsumexp(lp0.unflatten(-1, (-1, 128)), -1)  # [3, 19, 128]
    assert torch.equal(hi_marginal.argmax(-1), greedy // 128)
    given_hi = lp0.unflatten(-1, (-1, 128)).gather(2, (greedy // 128)[..., None, None].expand(-1, -1, 1, 128))
    assert torch.equal(given_hi[:, :, 0].argmax(-1), greedy % 128)
    model.save_pretrained(tmp_path)
    from jepatok.lm.modeling import load_speech_lm

    loaded = load_speech_lm(str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).frame_nll, out.frame_nll)
    with pytest.raises(ValueError, match="value_split"):
        build_frame_lm_config("tiny", tok, value_split=1)


def test_value_radix_predicts_fsq_digits_with_an_exact_likelihood(tok, examples, tmp_path):
    """value_radix=4: frames enter as one-hot base-4 digits and each slot value is predicted digit by digit. The
    untrained model is uniform over each slot's legal values; depth_logits' log-probabilities normalise and give
    forward's NLL; the greedy sampler takes the likeliest digit given the earlier ones; a few steps overfit; the
    model saves and loads."""
    torch.manual_seed(0)
    model = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, value_radix=4)).eval()
    assert model.n_digits == 7 and not hasattr(model, "value_embed") and not hasattr(model, "depth_head")
    batch = collate_frames([to_frame_example(e, tok) for e in examples], tok.pad_token_id)
    with torch.no_grad():
        out = model(batch)
    uniform = sum(math.log(s) for s in tok.slot_sizes)
    assert abs(float(out.frame_nll) / out.frames - uniform) / uniform < 0.02
    torch.nn.init.normal_(model.digit_pair, std=0.5)  # earlier-digit biases in play
    with torch.no_grad():
        per_frame, _ = model.score(batch)
        emb = model.embed_steps(batch.input_ids, batch.frame_codes)
        h = model.backbone(inputs_embeds=emb, position_ids=batch.position_ids).last_hidden_state
        has = batch.target_codes[..., 0] >= 0
        hs, tgt = h[has][:2], batch.target_codes[has][:2]
        lp = model.depth_logits(hs, tgt[:, :-1])  # [2, 19, V]
    torch.testing.assert_close(torch.logsumexp(lp, -1), torch.zeros(lp.shape[:2]), atol=1e-4, rtol=0)
    assert torch.isinf(lp[:, -1, 16:]).all() and torch.isfinite(lp[:, -1, :16]).all()
    torch.testing.assert_close(
        -lp.gather(-1, tgt[..., None])[..., 0].sum(-1), per_frame[:2], rtol=1e-5, atol=1e-3
    )
    h0 = torch.randn(2, model.config.backbone["hidden_size"])
    greedy = model._sample_frame(h0, 1.0, 0, do_sample=False)
    sampled = model._sample_frame(h0, 1.0, 0)
    assert (greedy[:, -1] < 16).all() and (sampled[:, -1] < 16).all() and (sampled < 16384).all()
    with torch.no_grad():
        lp0 = model.depth_logits(h0, greedy[:, :-1])
    for slot in (0, 18):  # digit j of the greedy value maximises p(d_j | its earlier digits)
        for row in range(2):
            v = int(greedy[row, slot])
            for j, place in enumerate(4 ** torch.arange(6, -1, -1)):
                prefix = v // int(place * 4)
                block = lp0[row, slot, prefix * int(place) * 4 : (prefix + 1) * int(place) * 4]
                if torch.isinf(block).all():
                    continue
                by_digit = torch.logsumexp(block.view(4, -1), -1)
                assert int(by_digit.argmax()) == (v // int(place)) % 4, (slot, row, j)
    model.train()
    losses = _overfit(model, tok, examples[1])
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
    model.eval().save_pretrained(tmp_path)
    from jepatok.lm.modeling import load_speech_lm

    loaded = load_speech_lm(str(tmp_path)).eval()
    assert loaded.config.value_radix == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).frame_nll, model(batch).frame_nll)
    with pytest.raises(ValueError, match="exclusive"):
        build_frame_lm_config("tiny", tok, value_radix=4, value_split=128)
    with pytest.raises(ValueError, match="value_radix"):
        build_frame_lm_config("tiny", tok, value_radix=1)


def _tts_and_continuation_batch(tok, text: str):
    """A TTS row (6 frames, `text`) and the continuation rows of both clips (6 and 4 frames)."""
    g = torch.Generator().manual_seed(0)
    codes = [random_codes(tok, n, g).tolist() for n in (6, 4)]
    rows = build_examples(codes, [text, ""], tok, "both", 512)[0]
    return collate_frames([to_frame_example(e, tok) for e in rows], tok.pad_token_id)


def _optimise_aid(model, batch, aid: str, steps: int) -> tuple[float, float]:
    """Adam on one training aid's mean loss alone (`aid`: "align" or "ctc"); its (first, last) values."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(steps):
        out = model(batch)
        loss = getattr(out, f"{aid}_sum") / getattr(out, f"{aid}_count")
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
    return values[0], values[-1]


def test_frame_dropout_masks_tts_frame_inputs_in_training_only(tok):
    """frame_dropout=p: in training, frame inputs of TTS rows (never of continuation rows, never text) are
    replaced by the mask vector with probability p; in eval mode the model equals one without dropout."""
    batch = _tts_and_continuation_batch(tok, "hello world, this is a longer text")
    torch.manual_seed(0)
    model = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, value_radix=4, frame_dropout=0.5))
    plain = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, value_radix=4))
    state = {k: v for k, v in model.state_dict().items() if k != "frame_mask_embed"}
    plain.load_state_dict(state)
    is_frame = batch.frame_codes[..., 0] >= 0
    drops = torch.stack([model._dropped_frames(batch) for _ in range(200)]).float().mean(0)  # [B, S]
    tts_frames = is_frame[0]
    assert (drops[1:] == 0).all() and (drops[0][~tts_frames] == 0).all()  # continuation rows, text: never
    assert ((drops[0][tts_frames] - 0.5).abs() < 0.15).all()
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch).frame_nll, plain(batch).frame_nll)
        torch.manual_seed(1)
        model.train()
        assert not torch.allclose(model(batch).frame_nll, plain(batch).frame_nll)
    with pytest.raises(ValueError, match="frame_dropout"):
        build_frame_lm_config("tiny", tok, frame_dropout=1.0)


def test_guided_attention_loss_pulls_a_head_to_the_diagonal(tok):
    """align_layer: TTS rows get a guided-attention loss on the chosen head (continuation rows none); optimising
    it alone raises the attention mass near the text-speech diagonal; the NLL terms do not change with it."""
    batch = _tts_and_continuation_batch(tok, "hello world, this is a longer text")
    torch.manual_seed(0)
    model = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, align_layer=1))
    plain = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok))
    plain.load_state_dict(model.state_dict())
    out = model(batch)
    assert out.align_count == 6  # one head x the 6 frames of the single TTS row
    with torch.no_grad():
        torch.testing.assert_close(plain(batch).frame_nll, out.frame_nll, rtol=1e-4, atol=1e-3)
    assert plain(batch).align_count == 0
    first, last = _optimise_aid(model, batch, "align", 30)
    assert last < 0.5 * first, (first, last)
    with pytest.raises(ValueError, match="align_layer"):
        FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, align_layer=5))


def test_ctc_head_learns_the_text_from_the_speech(tok):
    """ctc_substeps: TTS rows get a CTC loss of their text ids from the states after their frames (continuation
    rows none); it is finite, counts the text tokens, and falls when optimised; NLL terms are unaffected."""
    batch = _tts_and_continuation_batch(tok, "hello world")
    torch.manual_seed(0)
    model = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, ctc_substeps=4))
    out = model(batch)
    n_text = len(tok.build_tts_prompt_ids("hello world")) - 3  # minus <bos> <text> ... <audio>
    assert out.ctc_count == n_text and torch.isfinite(out.ctc_sum)
    plain = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok))
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(plain(batch).frame_nll, out.frame_nll)
    first, last = _optimise_aid(model, batch, "ctc", 40)
    assert last < 0.5 * first, (first, last)
