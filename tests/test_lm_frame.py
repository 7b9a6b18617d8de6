"""Frame-level speech LM (backbone per frame + depth head): step conversion, loss, overfit, generation, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from lm_helpers import random_codes, single_thread, speech_tokenizer  # noqa: F401  (autouse fixture)

from jepatok.lm.data import IGNORE_INDEX, build_examples
from jepatok.lm.frame_compare import collate_frames, compare, to_frame_example
from jepatok.lm.frame_model import FrameLevelSpeechLM, build_frame_lm_config


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
    assert len(fe.input_ids) == a + 1 + 2 and fe.input_ids[: a + 1] == tts.input_ids[: a + 1]
    audio = [t - tok.audio_offset for t in tts.input_ids[a + 1 : -1]]
    assert fe.frame_codes[a + 1] == audio[:19] and fe.frame_codes[a + 2] == audio[19:]
    assert fe.target_codes[a] == audio[:19] and fe.target_codes[a + 1] == audio[19:]
    assert fe.target_codes[a + 2] == [-1] * 19 and fe.target_codes[0] == [-1] * 19
    assert fe.stop_labels[a : a + 3] == [0, 0, 1] and fe.stop_labels[:a] == [IGNORE_INDEX] * a


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
    one = collate_frames([to_frame_example(examples[1], tok)], tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        out = model(one)
        loss = (out.frame_nll + out.stop_nll) / (out.frames * 19 + out.stops)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
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
