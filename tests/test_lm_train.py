"""`jepatok train-lm`: end to end on the tiny recipe, exact resume, codec check, LoRA run, 2-process launch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_helpers import (  # noqa: F401  (single_thread: autouse fixture)
    FAST_TRAIN,
    make_pretokenized,
    single_thread,
    speech_tokenizer,
)

import jepatok.lm.train as lm_train
from jepatok.lm.args import LMTrainArgs

REPO = Path(__file__).resolve().parents[1]
FAST = FAST_TRAIN


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    tok = speech_tokenizer()
    root = tmp_path_factory.mktemp("lm_train")
    tok.save_pretrained(root / "tok")
    make_pretokenized(tok, root / "data")
    return root


def _args(paths, out, **kw) -> LMTrainArgs:
    values = {**FAST, "report_to": "none", **kw}
    return LMTrainArgs.from_recipe(
        "tiny", data=str(paths / "data"), tokenizer=str(paths / "tok"), output_dir=str(out), **values
    )


def test_cli_trains_with_lora_and_saves_a_plain_model(paths, tmp_path):
    """--lora: LoRA on q/v plus trainable embeddings/head; final/ is a merged plain LlamaForCausalLM."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from jepatok.cli import main
    from jepatok.lm.modeling import build_lm

    out = tmp_path / "run"
    argv = [
        "train-lm",
        "--recipe",
        "tiny",
        "--data",
        str(paths / "data"),
        "--tokenizer",
        str(paths / "tok"),
        "--output-dir",
        str(out),
        "--max-steps",
        "2",
        "--lora",
        "4,8,q_proj,v_proj",
    ]
    argv += [f"{k}={v}" for k, v in FAST.items() if k != "max_steps"]
    argv += ["report_to=tensorboard", "learning_rate=0.01", "eval_steps=2", "save_steps=2"]
    assert main(argv) == 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000002"]
    assert list(out.rglob("events.out.tfevents*")), "no TensorBoard event file"
    saved = json.loads((out / "train_args.json").read_text())
    assert saved["block_size"] == 96 and saved["max_steps"] == 2 and saved["lora"] == "4,8,q_proj,v_proj"
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["steps"] == 2
    assert metrics["eval/bits_per_audio_second"] > 0 and metrics["eval/audio_seconds"] > 0
    # The text gain is a difference of two NLLs: finite, either sign for a 2-step LM, and a share below 1.
    assert (
        math.isfinite(metrics["eval/text_gain_bits_per_audio_second"]) and metrics["eval/text_gain_share"] < 1
    )
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    # The step-2 checkpoint, loaded for evaluation, is the final model (LoRA merged there too).
    from jepatok.eval.evaluate_tts import load_lm_and_tokenizer

    ck_tok, ck_model = load_lm_and_tokenizer(str(out / "checkpoints" / "step_000002"), None, "cpu")
    ids = torch.tensor([[tok.bos_token_id, tok.audio_token_id, tok.audio_offset + 3, tok.audio_offset + 5]])
    with torch.no_grad():
        torch.testing.assert_close(ck_model(ids).logits, model(ids).logits)
    assert len(ck_tok) == len(tok)
    assert type(model) is LlamaForCausalLM and model.config.vocab_size == len(tok) == len(speech_tokenizer())
    # The run started from the seeded initialisation: compare what changed.
    before = build_lm("tiny", speech_tokenizer(), seed=0).state_dict()
    after = load_file(out / "final" / "model.safetensors")
    assert set(after) == {k for k in before if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    emb, q, k = (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
    )
    offset = tok.audio_offset
    assert not torch.equal(before[emb][offset:], after[emb][offset:]), "audio-token embeddings did not train"
    assert not torch.equal(before["lm_head.weight"][offset:], after["lm_head.weight"][offset:]), (
        "LM head did not train"
    )
    assert not torch.equal(before[q], after[q]), "LoRA delta was not merged into q_proj"
    assert torch.equal(before[k], after[k]), "k_proj is neither a LoRA target nor trainable"


def test_resume_after_crash_equals_uninterrupted_run(paths, tmp_path, monkeypatch):
    full = lm_train.train(_args(paths, tmp_path / "full", save_steps=2))

    def crash(step):
        if step == 3:  # step 3 done in memory, not yet checkpointed: lost, and redone after the resume
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_train, "_after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        lm_train.train(_args(paths, tmp_path / "crash", save_steps=2))
    assert [p.name for p in lm_train.list_checkpoints(tmp_path / "crash")] == ["step_000002"]
    monkeypatch.setattr(lm_train, "_after_step", lambda step: None)
    with pytest.raises(FileExistsError, match="--resume"):
        lm_train.train(_args(paths, tmp_path / "crash", save_steps=2))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        lm_train.train(_args(paths, tmp_path / "never-started", save_steps=2), resume=True)
    resumed = lm_train.train(_args(paths, tmp_path / "crash", save_steps=2), resume=True)
    assert resumed.steps == full.steps == 3
    assert resumed.history[-1]["train/loss"] == full.history[-1]["train/loss"]
    assert resumed.eval_metrics == full.eval_metrics
    from safetensors.torch import load_file

    a = load_file(Path(full.final_dir) / "model.safetensors")
    b = load_file(Path(resumed.final_dir) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert full.history[-1]["train/loss"] < full.history[0]["train/loss"]


def test_refuses_data_from_another_codec(paths, tmp_path):
    other = speech_tokenizer(seed=1).codec_identity
    make_pretokenized(speech_tokenizer(), tmp_path / "foreign", identity=other)
    args = _args(paths, tmp_path / "run")
    args.data = str(tmp_path / "foreign")
    with pytest.raises(ValueError, match="codec mismatch"):
        lm_train.train(args)


def test_warm_start_from_an_lm_of_another_codec_needs_the_flag_and_records_the_new_codec(paths, tmp_path):
    from jepatok.lm.modeling import build_lm

    other = speech_tokenizer(seed=1)  # same id layout, another codec's codes
    old = build_lm("tiny", other, seed=0)
    old.save_pretrained(tmp_path / "old")
    args = _args(paths, tmp_path / "run", init_from=str(tmp_path / "old"))
    with pytest.raises(ValueError, match="different codec"):
        lm_train.train(args)
    args = _args(paths, tmp_path / "run2", init_from=str(tmp_path / "old"), init_from_other_codec=True)
    result = lm_train.train(args)
    saved = json.loads((Path(result.final_dir) / "config.json").read_text())["jepatok"]
    mine = speech_tokenizer().codec_identity
    assert saved["codec_codes_hash"] == mine["codes_hash"] != other.codec_identity["codes_hash"]


@pytest.mark.parametrize("architecture", ["flat", "frame"])
def test_two_process_accelerate_launch(paths, tmp_path, architecture):
    out = tmp_path / "ddp"
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "recipes/accelerate/lm_ddp_cpu2.yaml"),
        "-m",
        "jepatok.cli",
        "train-lm",
        "--recipe",
        "tiny",
        "--data",
        str(paths / "data"),
        "--tokenizer",
        str(paths / "tok"),
        "--output-dir",
        str(out),
        "--max-steps",
        "2",
        "block_size=128",
        "per_device_batch_size=1",
        "save_steps=2",
        "eval_steps=2",
        "max_eval_blocks=3",  # uneven across the 2 processes: eval must not hang
        "report_to=none",
        f"architecture={architecture}",  # frame: one sequence per row, block_size counts steps
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert "eval/bits_per_audio_second" in proc.stdout  # the uneven evaluation finished on both ranks
    assert (out / "final" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "step_000002" / STATE).is_file()


STATE = lm_train.STATE_FILE


def test_atomic_write_text_replaces_readably_and_keeps_the_old_file_on_error(tmp_path, monkeypatch):
    from jepatok.lm.args import atomic_write_text

    path = tmp_path / "sub" / "card.json"
    atomic_write_text(path, "old")
    assert path.read_text() == "old" and (path.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["card.json"]


def test_frame_architecture_trains_resumes_exactly_and_loads(paths, tmp_path, monkeypatch):
    """architecture=frame: FrameLevelSpeechLM trained by the same loop (per-step frames, text-gain eval),
    resumed bit-exactly, saved to final/ and loadable from final/ and from a checkpoint alike."""
    from jepatok.eval.evaluate_tts import load_lm_and_tokenizer
    from jepatok.lm.frame_model import FrameLevelSpeechLM
    from jepatok.lm.modeling import load_speech_lm

    kw = dict(architecture="frame", block_size=40, per_device_batch_size=2, save_steps=2, learning_rate=0.01)
    full = lm_train.train(_args(paths, tmp_path / "full", **kw))
    m = full.eval_metrics
    assert m["eval/bits_per_audio_second"] > 0 and m["eval/audio_seconds"] > 0
    assert math.isfinite(m["eval/text_gain_bits_per_audio_second"])
    aids = {
        "frame_ctc_weight": 0.5,
        "frame_ctc_substeps": 16,
        "frame_align_weight": 1.0,
        "frame_align_layer": 1,
    }
    aided = lm_train.train(_args(paths, tmp_path / "aided", **{**kw, **aids, "per_device_batch_size": 8}))
    # the aids' own losses are logged (steps whose rows include a TTS row), and only when they are on
    assert any(r.get("train/ctc_loss", 0) > 0 and r.get("train/align_loss", 0) > 0 for r in aided.history)
    assert not any("train/ctc_loss" in r or "train/align_loss" in r for r in full.history)

    def crash(step):
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(lm_train, "_after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        lm_train.train(_args(paths, tmp_path / "crash", **kw))
    monkeypatch.setattr(lm_train, "_after_step", lambda step: None)
    resumed = lm_train.train(_args(paths, tmp_path / "crash", **kw), resume=True)
    assert resumed.history[-1]["train/loss"] == full.history[-1]["train/loss"]
    assert resumed.eval_metrics == full.eval_metrics
    from safetensors.torch import load_file

    a = load_file(Path(full.final_dir) / "model.safetensors")
    b = load_file(Path(resumed.final_dir) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = load_speech_lm(full.final_dir)
    assert type(model) is FrameLevelSpeechLM
    _, ck = load_lm_and_tokenizer(str(Path(full.output_dir) / "checkpoints" / "step_000003"), None, "cpu")
    assert type(ck) is FrameLevelSpeechLM
    assert all(torch.equal(ck.state_dict()[k], model.state_dict()[k]) for k in model.state_dict())
    # a flat LM cannot seed a frame run, and flat-only options are refused up front
    with pytest.raises(ValueError, match="flat LM"):
        flat = _flat_final(tmp_path)
        lm_train._build_model(_args(paths, tmp_path / "bad", **kw, init_from=flat), speech_tokenizer())
    with pytest.raises(ValueError, match="does not support"):
        _args(paths, tmp_path / "bad", **{**kw, "audio_digit_radix": 4})


def _flat_final(tmp_path) -> str:
    from jepatok.lm.modeling import build_lm

    path = tmp_path / "flat"
    build_lm("tiny", speech_tokenizer(), seed=0).save_pretrained(path)
    return str(path)


def test_frame_init_from_gains_the_training_aids_it_lacks(paths, tmp_path):
    """A frame LM saved without guided attention or a CTC head warm-starts a run that wants them: the heads are
    added, every other weight is the saved one."""
    from jepatok.lm.frame_model import FrameLevelSpeechLM, build_frame_lm_config

    tok = speech_tokenizer()
    torch.manual_seed(0)
    saved = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok))
    saved.save_pretrained(tmp_path / "lm")
    kw = dict(
        architecture="frame", init_from=str(tmp_path / "lm"), frame_ctc_weight=0.5, frame_align_weight=1.0
    )
    kw["frame_align_layer"] = 1  # the tiny backbone has 2 layers
    grown = lm_train._build_model(_args(paths, tmp_path / "run", **kw), tok)
    assert grown.config.ctc_substeps == 8 and grown.config.align_layer == 1
    before, after = saved.state_dict(), grown.state_dict()
    assert {k for k in after if k not in before} == {k for k in after if k.startswith("ctc_")} != set()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # frame-input dropout: its mask vector is added the same way, and a dropout-free run can drop it again
    dropped = lm_train._build_model(_args(paths, tmp_path / "run2", **kw, frame_input_dropout=0.5), tok)
    assert dropped.config.frame_dropout == 0.5 and "frame_mask_embed" in dropped.state_dict()
    dropped.save_pretrained(tmp_path / "dropped")
    kw["init_from"] = str(tmp_path / "dropped")
    plain = lm_train._build_model(_args(paths, tmp_path / "run3", **kw), tok)
    assert plain.config.frame_dropout == 0.0 and "frame_mask_embed" not in plain.state_dict()
