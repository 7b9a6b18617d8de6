"""LM sequences and run config: templates and label masks, long-clip windows, packing, sharding, recipes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lm_helpers import random_codes, single_thread, speech_tokenizer  # noqa: F401  (autouse fixture)

from jepatok.lm.args import LMTrainArgs, load_recipe
from jepatok.lm.data import IGNORE_INDEX, PackedDataset, build_examples, epoch_batches, pack_examples


@pytest.fixture(scope="module")
def tok():
    return speech_tokenizer()


def _codes(tok, *frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [random_codes(tok, n, g).tolist() for n in frames]


def test_templates_and_label_masks(tok):
    codes = _codes(tok, 2, 1)
    examples, stats = build_examples(codes, ["hello world", ""], tok, "both", block_size=256)
    assert (stats.tts, stats.continuation, stats.dropped_no_text) == (1, 2, 0)
    tts, cont0, cont1 = examples
    audio = tok.codes_to_ids(torch.tensor(codes[0]))
    assert tts.input_ids == tok.build_tts_ids("hello world", torch.tensor(codes[0]))
    assert tts.input_ids[-len(audio) - 1 : -1] == audio and tts.input_ids[-1] == tok.eos_token_id
    cut = tts.input_ids.index(tok.audio_token_id) + 1
    assert tts.labels[:cut] == [IGNORE_INDEX] * cut and tts.labels[cut:] == tts.input_ids[cut:]
    assert cont0.input_ids == [tok.bos_token_id, tok.audio_token_id, *audio, tok.eos_token_id]
    assert cont0.labels[:2] == [IGNORE_INDEX] * 2 and cont0.labels[2:] == cont0.input_ids[2:]
    unmasked, _ = build_examples(codes[:1], ["hello world"], tok, "tts", 256, mask_text_labels=False)
    assert unmasked[0].labels[0] == IGNORE_INDEX and unmasked[0].labels[1:] == unmasked[0].input_ids[1:]
    only_tts, stats = build_examples(codes, ["hello world", ""], tok, "tts", 256)
    assert len(only_tts) == 1 and stats.dropped_no_text == 1
    with pytest.raises(ValueError, match="mode"):
        build_examples(codes, ["", ""], tok, "chat", 256)


def test_long_clips_become_whole_frame_windows(tok):
    codes = _codes(tok, 7)
    block = 3 + 3 * 19  # three frames per window
    examples, stats = build_examples(codes, ["some text that is here"], tok, "both", block_size=block)
    assert stats.dropped_too_long == 1 and stats.continuation == 3 and stats.windows == 2
    audio = tok.codes_to_ids(torch.tensor(codes[0]))
    joined = []
    for i, ex in enumerate(examples):
        assert len(ex.input_ids) <= block and ex.input_ids[:2] == [tok.bos_token_id, tok.audio_token_id]
        body = ex.input_ids[2:]
        if i == len(examples) - 1:
            assert body[-1] == tok.eos_token_id
            body = body[:-1]
        assert len(body) % 19 == 0
        joined += body
    assert joined == audio


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), min_size=1, max_size=40), block=st.integers(64, 200))
def test_packing_is_complete_and_within_capacity(lengths, block):
    bins = pack_examples(lengths, block)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= block for b in bins)
    assert pack_examples(lengths, block) == bins  # deterministic


def test_collate_restarts_positions_and_ignores_boundaries(tok):
    examples, _ = build_examples(_codes(tok, 1, 2), ["", ""], tok, "continuation", 128)
    packed = PackedDataset(examples, 128, tok.pad_token_id, blocks=[[0, 1]])
    batch = packed.collate([0])
    n0, n1 = (len(e.input_ids) for e in examples)
    pos = batch.position_ids[0].tolist()
    assert pos[:n0] == list(range(n0)) and pos[n0 : n0 + n1] == list(range(n1)) and pos[n0 + n1] == 0
    assert batch.labels[0, n0].item() == IGNORE_INDEX  # <bos> of the 2nd sequence is never a target
    assert (batch.labels[0, n0 + n1 :] == IGNORE_INDEX).all() and (
        batch.input_ids[0, n0 + n1 :] == tok.pad_token_id
    ).all()
    with pytest.raises(ValueError, match="do not fit"):
        pack_examples([10, 300], 128)


def test_epoch_batches_shard_evenly_and_deterministically():
    a = epoch_batches(11, 2, epoch=0, seed=3, num_processes=2, process_index=0)
    b = epoch_batches(11, 2, epoch=0, seed=3, num_processes=2, process_index=1)
    assert len(a) == len(b) == 2  # 11 blocks -> 2 steps of 2x2, 3 dropped
    assert not set(sum(a, [])) & set(sum(b, []))
    assert a == epoch_batches(11, 2, epoch=0, seed=3, num_processes=2, process_index=0)
    assert a != epoch_batches(11, 2, epoch=1, seed=3, num_processes=2, process_index=0)
    with pytest.raises(ValueError, match="cannot fill"):
        epoch_batches(3, 2, 0, 0, num_processes=2)


def test_recipes_resolve_and_validate(tmp_path):
    tiny = load_recipe("tiny")
    assert tiny["model_preset"] == "tiny" and tiny["weight_decay"] == 0.1  # inherited from defaults.yaml
    for name in ("small", "base"):
        assert LMTrainArgs.from_recipe(name).model_preset == name
    args = LMTrainArgs.from_recipe(
        "tiny", ["learning_rate=1e-3", "model_overrides.num_hidden_layers=3"], max_steps=7
    )
    assert (
        args.learning_rate == 1e-3
        and args.max_steps == 7
        and args.model_overrides == {"num_hidden_layers": 3}
    )
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("extends: tiny\nblock_size: 64\n")  # a bare name: a recipe of recipes/lm
    assert LMTrainArgs.from_recipe(str(overlay)).block_size == 64
    assert LMTrainArgs.from_recipe(str(overlay)).learning_rate == tiny["learning_rate"]
    overlay.write_text("extends: missing.yaml\n")  # a file name: relative to the overlay
    with pytest.raises(FileNotFoundError):
        load_recipe(str(overlay))
    with pytest.raises(ValueError, match="unknown training option"):
        LMTrainArgs.from_recipe("tiny", ["lerning_rate=1"])
    with pytest.raises(ValueError, match="max_steps"):
        LMTrainArgs.from_recipe("tiny", ["max_steps=0"])
    with pytest.raises(ValueError, match="not a valid int"):
        LMTrainArgs.from_recipe("tiny", ["block_size=big"])
    with pytest.raises(FileNotFoundError, match="available"):
        LMTrainArgs.from_recipe("nope")
    args.save(tmp_path / "args.json")
    assert '"max_steps": 7' in (tmp_path / "args.json").read_text()
