"""Stage-1 training: overfit a fixed batch, exact resume, loud checkpoint failures, recipes and overrides."""

from __future__ import annotations

import shutil

import pytest
import torch
from _train_utils import FAST, assert_same_weights, load_weights, make_audio_folder, one_thread  # noqa: F401

from jepatok.tokenizer.train_common import load_args, parse_overrides
from jepatok.tokenizer.train_stage1 import Stage1Args, Stage1Trainer


def _args(*extra: str) -> Stage1Args:
    return load_args(Stage1Args, "tiny", "stage1", FAST + list(extra))


@pytest.mark.parametrize(
    "options",
    [{}, {"codec": {"daam_config": {"enabled": False}}, "target_layers": 2}, {"sigreg_lambda": 0.05}],
    ids=["paper", "no-daam-avg2", "sigreg"],
)
def test_few_steps_lower_the_loss_on_a_fixed_batch(tiny_codec_config, make_sine, options):
    from jepatok import JepaCodecModel
    from jepatok.tokenizer.jepa import JepaStage1Model, ema_tau
    from jepatok.tokenizer.masking import block_span_mask

    torch.manual_seed(0)
    config = tiny_codec_config(**options.get("codec", {}))
    codec = JepaCodecModel(config)
    model = JepaStage1Model(
        codec.encoder, config, options.get("target_layers", 1), options.get("sigreg_lambda", 0.0), 32
    ).train()
    if not config.daam_config.enabled:
        assert codec.encoder.daam_gates == []
    audio = torch.stack([make_sine(0.1, 8000, 220.0), make_sine(0.1, 8000, 330.0)]).unsqueeze(1)
    frames = torch.ones(2, audio.shape[-1] // config.hop_length, dtype=torch.bool)
    mask = block_span_mask(frames, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, betas=(0.8, 0.99))
    losses = []
    for step in range(12):
        out = model(audio, None, mask, torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.update_target(ema_tau(step, 12))
        losses.append(float(out.mse.detach()))
    assert out.predictions.shape == out.targets.shape == (2, frames.shape[1], 128)
    assert not out.targets.requires_grad
    assert losses[-1] < 0.5 * losses[0], losses


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    full = Stage1Trainer(_args("max_steps=4", "save_every=2"), str(data), tmp_path / "full").run()
    assert (
        Stage1Trainer(
            _args("max_steps=4", "save_every=2", "halt_after_steps=2"), str(data), tmp_path / "cut"
        ).run()
        is None
    )
    assert not (tmp_path / "cut" / "final").exists()
    resumed = Stage1Trainer(
        _args("max_steps=4", "save_every=2"), str(data), tmp_path / "cut", resume=True
    ).run()
    assert_same_weights(load_weights(full / "model.safetensors"), load_weights(resumed / "model.safetensors"))
    # the EMA target and predictor (checkpoint state) match too
    ck_full = load_weights(tmp_path / "full" / "checkpoints" / "step_4" / "model.safetensors")
    ck_cut = load_weights(tmp_path / "cut" / "checkpoints" / "step_4" / "model.safetensors")
    assert any(k.startswith("target_encoder.") for k in ck_full)
    assert_same_weights(ck_full, ck_cut)
    # final/ is a plain HF checkpoint of the codec with the trained online encoder
    from transformers import AutoModel

    codec = AutoModel.from_pretrained(str(full))
    assert type(codec).__name__ == "JepaCodecModel" and codec.config.sampling_rate == 8000
    enc_key = next(k for k in ck_full if k.startswith("encoder."))
    assert torch.equal(codec.state_dict()[enc_key], ck_full[enc_key])
    assert (tmp_path / "full" / "run_config.yaml").is_file()


def test_missing_and_corrupt_checkpoints_fail_loudly(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    with pytest.raises(FileNotFoundError, match="no step_N checkpoint"):
        Stage1Trainer(_args("max_steps=2"), str(data), tmp_path / "empty", resume=True).run()
    run_dir = tmp_path / "run"
    Stage1Trainer(_args("max_steps=2", "save_every=1", "halt_after_steps=2"), str(data), run_dir).run()
    with pytest.raises(FileExistsError, match="--resume"):
        Stage1Trainer(_args("max_steps=3"), str(data), run_dir).run()
    weights = run_dir / "checkpoints" / "step_2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated file
    with pytest.raises(ValueError, match="corrupt"):
        Stage1Trainer(_args("max_steps=3"), str(data), run_dir, resume=True).run()
    shutil.rmtree(run_dir / "checkpoints" / "step_2")
    (run_dir / "checkpoints" / "step_1" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        Stage1Trainer(_args("max_steps=3"), str(data), run_dir, resume=True).run()


def test_recipes_and_overrides(tmp_path):
    args = _args("codec.daam_config.enabled=false", "mask_max_span_ms=1200", "lr=1e-3")
    assert args.codec == {"daam_config": {"enabled": False}} and args.mask_max_span_ms == 1200.0
    assert args.lr == 1e-3 and args.codec_config().daam_config.enabled is False
    assert parse_overrides(["a.b=[1, 2]", "c=x"]) == {"a": {"b": [1, 2]}, "c": "x"}
    with pytest.raises(ValueError, match="unknown run-config keys"):
        _args("not_a_key=1")
    with pytest.raises(ValueError, match="must be an integer"):
        _args("max_steps=1.5")
    with pytest.raises(ValueError, match="unknown stage1 recipe"):
        load_args(Stage1Args, "huge", "stage1")
    for name in ("small", "paper"):
        a = load_args(Stage1Args, name, "stage1")
        assert a.preset == name and a.ema_tau == 0.996 and a.mask_ratio == 0.5
        a.codec_config()
    custom = tmp_path / "mine.yaml"
    custom.write_text(
        "inherit: "
        + str(__import__("jepatok").tokenizer.train_common.recipes_dir() / "stage1" / "tiny.yaml")
        + "\nmax_steps: 7\n"
    )
    assert load_args(Stage1Args, str(custom), "stage1").max_steps == 7


def test_collapse_monitor_warns_loudly(tmp_path, caplog):
    data = make_audio_folder(tmp_path / "wavs")
    with caplog.at_level("WARNING", logger="jepatok.tokenizer.train_stage1"):
        Stage1Trainer(_args("max_steps=1", "collapse_std_threshold=1e9"), str(data), tmp_path / "run").run()
    assert "REPRESENTATION COLLAPSE" in caplog.text
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    for key in ("pred_std", "target_std", "z_effective_rank", "daam_alpha_0", "lr"):
        assert f'"{key}"' in logged


def test_position_only_collapse_monitor_warns(tmp_path, caplog):
    data = make_audio_folder(tmp_path / "wavs")
    with caplog.at_level("WARNING", logger="jepatok.tokenizer.train_stage1"):
        Stage1Trainer(_args("max_steps=1", "collapse_between_ratio=1e9"), str(data), tmp_path / "run").run()
    assert "POSITION-ONLY COLLAPSE" in caplog.text
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"z_between_clip_std"' in logged and '"z_between_clip_ratio"' in logged
