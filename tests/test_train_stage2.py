"""Stage-2 training: overfit a fixed batch, exact resume (with discriminators), stage-1 mismatch, samples."""

from __future__ import annotations

import json

import pytest
import torch
from _train_utils import FAST, assert_same_weights, load_weights, make_audio_folder, one_thread  # noqa: F401

from jepatok.tokenizer.train_common import load_args
from jepatok.tokenizer.train_stage2 import Stage2Args, Stage2Generator, Stage2Trainer, config_differences

STAGE2_FAST = FAST + ["disc_start_step=1", "sample_every=0"]


def _args(*extra: str) -> Stage2Args:
    return load_args(Stage2Args, "tiny", "stage2", STAGE2_FAST + list(extra))


@pytest.fixture
def stage1_dir(tmp_path, tiny_codec_config):
    from jepatok import JepaCodecModel

    torch.manual_seed(0)
    path = tmp_path / "stage1" / "final"
    JepaCodecModel(tiny_codec_config()).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("finetune", [False, True], ids=["frozen-encoder", "finetune-encoder"])
def test_few_steps_lower_the_loss_on_a_fixed_batch(tiny_codec_config, make_sine, finetune):
    from jepatok import JepaCodecModel
    from jepatok.tokenizer.discriminators import JepaDiscriminators
    from jepatok.tokenizer.losses import generator_loss, lsgan_discriminator_loss

    torch.manual_seed(0)
    config = tiny_codec_config()
    codec = JepaCodecModel(config)
    encoder_before = {k: v.clone() for k, v in codec.encoder.state_dict().items()}
    gen = Stage2Generator(codec, finetune_encoder=finetune).train()
    disc = JepaDiscriminators(config)
    g_opt = torch.optim.AdamW([p for p in gen.parameters() if p.requires_grad], lr=2e-3, betas=(0.8, 0.99))
    d_opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.8, 0.99))
    audio = torch.stack([make_sine(0.1, 8000, 220.0), make_sine(0.1, 8000, 330.0)]).unsqueeze(1)
    recon = []
    for _ in range(12):
        fake, envelope, _ = gen(audio, None)
        assert envelope is None  # the tiny decoder has no envelope path
        d_out = disc(torch.cat([audio, fake.detach()]))
        real, gen_out = JepaDiscriminators.split(d_out, 2)
        d_opt.zero_grad()
        lsgan_discriminator_loss(real.logits, gen_out.logits).backward()
        d_opt.step()
        real, gen_out = JepaDiscriminators.split(disc(torch.cat([audio, fake])), 2)
        loss = generator_loss(fake, audio, gen_out.logits, real.features, gen_out.features)
        g_opt.zero_grad()
        loss.total.backward()
        g_opt.step()
        recon.append(float(loss.l1 + 2.0 * loss.stft))
    assert recon[-1] < 0.8 * recon[0], recon
    changed = any(not torch.equal(v, codec.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert changed == finetune


def test_killed_run_resumes_to_the_same_weights(tmp_path, stage1_dir):
    data = make_audio_folder(tmp_path / "wavs")
    full = Stage2Trainer(
        _args("max_steps=4", "save_every=2"), str(data), tmp_path / "full", str(stage1_dir)
    ).run()
    cut = tmp_path / "cut"
    assert (
        Stage2Trainer(
            _args("max_steps=4", "save_every=2", "halt_after_steps=2"), str(data), cut, str(stage1_dir)
        ).run()
        is None
    )
    resumed = Stage2Trainer(
        _args("max_steps=4", "save_every=2"), str(data), cut, str(stage1_dir), resume=True
    ).run()
    a, b = load_weights(full / "model.safetensors"), load_weights(resumed / "model.safetensors")
    assert_same_weights(a, b)
    # discriminators (second prepared model) are part of the state and match as well
    assert_same_weights(
        load_weights(tmp_path / "full" / "checkpoints" / "step_4" / "model_1.safetensors"),
        load_weights(cut / "checkpoints" / "step_4" / "model_1.safetensors"),
    )
    # frozen encoder: identical to stage 1; decoder trained
    s1 = load_weights(stage1_dir / "model.safetensors")
    assert all(torch.equal(s1[k], a[k]) for k in s1 if k.startswith("encoder."))
    assert any(not torch.equal(s1[k], a[k]) for k in s1 if k.startswith("decoder."))
    logged = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert "disc_loss" not in logged[0] and "disc_loss" in logged[-1]  # D switched on after step 1


def test_refuses_a_mismatched_stage1_checkpoint(tmp_path, tiny_codec_config):
    from jepatok import JepaCodecModel

    other = tmp_path / "other" / "final"
    JepaCodecModel(tiny_codec_config(encoder_config={"conformer_layers": 2})).save_pretrained(str(other))
    with pytest.raises(ValueError, match=r"encoder_config\.conformer_layers: checkpoint=2 recipe=1"):
        Stage2Trainer(_args("max_steps=2"), str(tmp_path), tmp_path / "run", str(other))
    with pytest.raises(FileNotFoundError, match="config.json"):
        Stage2Trainer(_args("max_steps=2"), str(tmp_path), tmp_path / "run", str(tmp_path / "nowhere"))
    assert config_differences(tiny_codec_config(), tiny_codec_config()) == {}


def test_writes_samples_and_spectrogram(tmp_path, stage1_dir):
    data = make_audio_folder(tmp_path / "wavs")
    Stage2Trainer(
        _args("max_steps=2", "sample_every=2", "mel_weight=1.0"), str(data), tmp_path / "run", str(stage1_dir)
    ).run()
    out = tmp_path / "run" / "samples" / "step_2"
    assert (out / "0_original.wav").is_file() and (out / "0_reconstruction.wav").is_file()
    assert (out / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    assert "gen_mel" in json.loads((out / "losses.json").read_text())


def test_whitening_projection_decorrelates_and_scales_held_out_latents():
    from jepatok.tokenizer.train_stage2 import whitening_projection

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 16, generator=g) * torch.tensor([10.0, 3.0, 1.0, 0.3, 0.1, 0.05]).unsqueeze(1)
    z = torch.randn(4000, 6, generator=g, dtype=torch.float64) @ mix.double() + 3.0  # rank 6 of 16, offset 3
    fit, held = z[:2000], z[2000:]
    weight, bias = whitening_projection(torch.tensor([2000.0]), fit.sum(0), fit.T @ fit, 0.8)
    y = held @ weight.T + bias
    assert y.mean(0).abs().max() < 0.1
    cov = torch.cov(y.T)
    top = torch.linalg.eigvalsh(cov)[-6:]  # the 6 directions the data varies in: each at std 0.8
    assert torch.allclose(top.sqrt(), torch.full((6,), 0.8, dtype=torch.float64), atol=0.1), top.sqrt()
    assert (
        torch.isfinite(weight).all() and float(torch.linalg.eigvalsh(cov)[0]) < 1e-6
    )  # null space not blown up
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        whitening_projection(torch.tensor([1.0]), fit[0], torch.outer(fit[0], fit[0]), 0.8)


def test_adds_and_calibrates_a_pre_quantization_projection(tmp_path, stage1_dir):
    """A stage-1 codec without `pre_quant`, frame blocks and envelope under a recipe with them: stage 2 adds them and
    whitens the projection from data on a fresh run (not on resume: the resumed run matches the uninterrupted one exactly)."""
    from jepatok import JepaCodecConfig

    data = make_audio_folder(tmp_path / "wavs")
    extra = (
        "max_steps=3",
        "save_every=1",
        "codec.fsq_config.pre_projection=true",
        "codec.decoder_config.frame_layers=2",
        "codec.decoder_config.envelope_bands=4",
        "codec.decoder_config.envelope_subframes=4",
        "calibrate_quantizer_batches=2",
    )
    trainer = Stage2Trainer(_args(*extra), str(data), tmp_path / "full", str(stage1_dir))
    full = trainer.run()
    assert not trainer.codec.encoder.training  # the calibrations leave the frozen encoder in eval mode
    weights = load_weights(full / "model.safetensors")
    dim = weights["pre_quant.weight"].shape[0]
    assert not torch.allclose(
        weights["pre_quant.weight"], torch.eye(dim), atol=0.05
    )  # calibrated, not identity
    saved = JepaCodecConfig.from_pretrained(str(full))
    assert saved.fsq_config.pre_projection is True and saved.decoder_config.frame_layers == 2
    assert "decoder.frame_blocks.1.out.weight" in weights and "decoder.envelope_head.weight" in weights
    logged = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["gen_envelope"] > 0 for r in logged)  # the envelope is trained
    # its head starts as the ridge regression to the log-mel patches: a closer first-step fit than without
    plain = Stage2Trainer(
        _args(*extra, "max_steps=1", "calibrate_envelope_batches=0"),
        str(data),
        tmp_path / "plain",
        str(stage1_dir),
    ).run()
    assert plain is not None
    first = json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged[0]["gen_envelope"] < first["gen_envelope"]
    cut = tmp_path / "cut"
    assert Stage2Trainer(_args(*extra, "halt_after_steps=1"), str(data), cut, str(stage1_dir)).run() is None
    resumed = Stage2Trainer(_args(*extra), str(data), cut, str(stage1_dir), resume=True).run()
    assert_same_weights(weights, load_weights(resumed / "model.safetensors"))
    # other architecture differences are still refused
    with pytest.raises(ValueError, match="differing keys"):
        Stage2Trainer(_args("codec.fsq_config.group_size=3"), str(data), tmp_path / "x", str(stage1_dir))
