"""Stage 2's envelope teacher forcing (`envelope_teacher_forcing`, `JepaDecoder.forward(envelope_override=...)`)
and the MLP spectral input (`encoder_config.spectral_input_hidden`)."""

from __future__ import annotations

import json

import pytest
import torch
from _train_utils import FAST, assert_same_weights, load_weights, make_audio_folder, one_thread  # noqa: F401

from jepatok import JepaCodecConfig, JepaCodecModel, codec_identity
from jepatok.tokenizer.train_common import load_args
from jepatok.tokenizer.train_stage2 import Stage2Args, Stage2Trainer, load_stage1

ENV = {"envelope_bands": 3, "envelope_subframes": 4, "frame_layers": 1}
ENV_KEYS = [f"codec.decoder_config.{k}={v}" for k, v in ENV.items()]


def _decoder_inputs(seed: int = 0):
    torch.manual_seed(seed)
    model = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ENV)).eval()
    torch.nn.init.normal_(model.decoder.envelope_in.weight, std=1.0)  # make the envelope audible
    q = torch.rand(2, 5, model.config.fsq_config.dim) * 2 - 1
    forced = torch.randn(2, 5, 3 * 4)
    return model.decoder, q, forced


def test_override_renders_the_given_envelope_for_the_chosen_clips_only():
    decoder, q, forced = _decoder_inputs()
    seen = []
    decoder.envelope_in.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        plain, predicted = decoder(q, return_envelope=True)
        audio, returned = decoder(q, return_envelope=True, envelope_override=forced)
        mixed, _ = decoder(
            q, return_envelope=True, envelope_override=forced, override_rows=torch.tensor([True, False])
        )
    torch.testing.assert_close(returned, predicted)  # the prediction is returned (its L1 still trains)
    assert seen[1].shape == (2, 3, 5 * 4)
    torch.testing.assert_close(seen[1][0, :, 4:8], forced[0, 1].reshape(3, 4))  # frame 1's sub-frames
    assert not torch.allclose(audio, plain, atol=1e-4)
    torch.testing.assert_close(mixed[0], audio[0])  # forced clip
    torch.testing.assert_close(mixed[1], plain[1])  # clip left to its prediction
    with pytest.raises(ValueError, match="envelope_override must be"):
        decoder(q, envelope_override=forced[:, :4])
    plain_decoder = JepaCodecModel(JepaCodecConfig.from_preset("tiny")).decoder
    with pytest.raises(ValueError, match="needs a decoder with an envelope path"):
        plain_decoder(q, envelope_override=forced)


def test_teacher_forcing_draws_are_seeded_and_follow_the_probability(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    torch.manual_seed(0)
    stage1 = tmp_path / "s1"
    JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ENV)).save_pretrained(stage1)

    def trainer(p: float, name: str, *extra: str) -> Stage2Trainer:
        args = load_args(
            Stage2Args,
            "tiny",
            "stage2",
            FAST + ENV_KEYS + ["sample_every=0", f"envelope_teacher_forcing={p}", *extra],
        )
        return Stage2Trainer(args, str(data), tmp_path / name, str(stage1))

    t = trainer(0.5, "half")
    t.accelerator = t._make_accelerator()
    t.build()
    batch = type("B", (), {"input_values": 0.1 * torch.randn(64, 1, 16 * 3), "padding_mask": None})()
    target, rows = t.teacher_forcing(batch, step=3, micro=0)
    assert target.shape == (64, 3, 12) and rows.dtype == torch.bool
    assert torch.equal(rows, t.teacher_forcing(batch, step=3, micro=0)[1])  # same draw on resume
    assert not torch.equal(rows, t.teacher_forcing(batch, step=4, micro=0)[1])
    assert 16 < int(rows.sum()) < 48
    assert trainer(0.0, "off").teacher_forcing(batch, 0, 0) == (None, None)
    with pytest.raises(ValueError, match="envelope_teacher_forcing is a probability"):
        trainer(1.5, "bad")


def test_teacher_forced_run_trains_and_resumes_exactly(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    torch.manual_seed(0)
    stage1 = tmp_path / "s1"
    JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ENV)).save_pretrained(stage1)
    extra = (
        FAST + ENV_KEYS + ["sample_every=0", "envelope_teacher_forcing=0.5", "max_steps=3", "save_every=1"]
    )
    extra += ["disc_start_step=100"]

    def args(*more: str):
        return load_args(Stage2Args, "tiny", "stage2", extra + list(more))

    full = Stage2Trainer(args(), str(data), tmp_path / "full", str(stage1)).run()
    cut = tmp_path / "cut"
    assert Stage2Trainer(args("halt_after_steps=1"), str(data), cut, str(stage1)).run() is None
    resumed = Stage2Trainer(args(), str(data), cut, str(stage1), resume=True).run()
    assert_same_weights(load_weights(full / "model.safetensors"), load_weights(resumed / "model.safetensors"))
    logged = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 3 and all(r["gen_envelope"] > 0 for r in logged)


def test_mlp_spectral_input_is_added_as_a_no_op_and_keeps_old_identities(tmp_path):
    spec = {"spectral_input_bands": 4, "spectral_input_subframes": 4}
    base = JepaCodecConfig.from_preset("tiny", encoder_config=spec)
    zero = JepaCodecConfig.from_preset("tiny", encoder_config={**spec, "spectral_input_hidden": 0})
    assert (
        codec_identity(JepaCodecModel(zero))["config_hash"]
        == codec_identity(JepaCodecModel(base))["config_hash"]
    )
    torch.manual_seed(0)
    old = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    old.save_pretrained(tmp_path / "old")
    mlp = JepaCodecConfig.from_preset("tiny", encoder_config={**spec, "spectral_input_hidden": 24})
    new = load_stage1(tmp_path / "old", mlp).eval()
    first, _, last = new.encoder.spectral_input
    assert first.weight.shape == (24, 16) and last.weight.shape == (128, 24)
    assert float(first.weight.detach().std()) > 0 and float(last.weight.detach().abs().sum()) == 0.0
    audio = 0.3 * torch.randn(1, 1, 16 * 12)
    with torch.no_grad():
        assert torch.equal(new.encode(audio).audio_codes, old.eval().encode(audio).audio_codes)
        torch.nn.init.normal_(last.weight, std=0.5)
        assert not torch.equal(new.encode(audio).audio_codes, old.encode(audio).audio_codes)
    assert codec_identity(new)["config_hash"] != codec_identity(JepaCodecModel(base))["config_hash"]
    with pytest.raises(ValueError, match="spectral_input_hidden must be an integer >= 0"):
        JepaCodecConfig.from_preset("tiny", encoder_config={**spec, "spectral_input_hidden": -2})


def test_fsq_input_rms_keeps_tanh_unsaturated_and_old_identities():
    """fsq_config.input_rms: each frame's FSQ input is rescaled to that RMS, whatever the latents' scale."""
    torch.manual_seed(0)
    plain = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    explicit = JepaCodecConfig.from_preset("tiny", fsq_config={"input_rms": 0.0})
    assert codec_identity(JepaCodecModel(explicit))["config_hash"] == codec_identity(plain)["config_hash"]
    codec = JepaCodecModel(JepaCodecConfig.from_preset("tiny", fsq_config={"input_rms": 0.8})).eval()
    assert codec_identity(codec)["config_hash"] != codec_identity(plain)["config_hash"]
    latents = 500.0 * torch.randn(2, 40, codec.config.fsq_config.dim)  # far out in tanh's flat tails
    spread = codec.quantize(latents).indices
    saturated = plain.eval().quantize(latents).indices
    inner = lambda idx: float(((idx == 1) | (idx == 2)).float().mean())  # noqa: E731
    assert inner(saturated) < 0.01  # without it: almost only the two outer levels
    assert 0.35 < inner(spread) < 0.65  # RMS 0.8: the four levels about equally used
    assert torch.equal(codec.quantize(latents / 1000).indices, spread)  # scale-free per frame
    latents.requires_grad_(True)
    codec.quantize(latents).quantized.sum().backward()
    assert float(latents.grad.abs().mean()) > 0  # the gradient reaches the latents
    with torch.no_grad():
        audio = 0.3 * torch.randn(1, 1, 16 * 9)
        assert codec.encode(audio).audio_codes.shape == (1, 9, codec.config.fsq_config.num_groups)
    with pytest.raises(ValueError, match="input_rms must be a number >= 0"):
        JepaCodecConfig.from_preset("tiny", fsq_config={"input_rms": -1.0})


def test_frame_mask_keeps_right_padding_out_of_valid_frames():
    torch.manual_seed(0)
    config = JepaCodecConfig.from_preset("tiny", decoder_config={**ENV, "frame_layers": 3})
    decoder = JepaCodecModel(config).eval().decoder
    for block in decoder.frame_blocks:  # make every block mix neighbouring frames strongly
        torch.nn.init.normal_(block.out.weight, std=0.5)
    q = torch.rand(2, 6, config.fsq_config.dim) * 2 - 1
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    with torch.no_grad():
        alone = decoder.frame_features(q[1:, :3])
        masked = decoder.frame_features(q, mask)
        leaky = decoder.frame_features(q)
        env_masked = decoder(q, return_envelope=True, frame_mask=mask)[1]
        env_alone = decoder(q[1:, :3], return_envelope=True)[1]
    torch.testing.assert_close(masked[1, :, :3], alone[0])  # batching does not change the valid frames
    torch.testing.assert_close(masked[0], leaky[0])  # a full clip is unaffected
    assert not torch.allclose(leaky[1, :, :3], alone[0], atol=1e-4)  # without the mask the padding leaks in
    torch.testing.assert_close(env_masked[1, :3], env_alone[0])
    with pytest.raises(ValueError, match="frame_mask must be"):
        decoder.frame_features(q, mask[:, :5])


def test_freeze_codes_trains_the_decoder_only_and_keeps_codes_hash(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    torch.manual_seed(0)
    stage1 = tmp_path / "s1"
    JepaCodecModel(JepaCodecConfig.from_preset("tiny", fsq_config={"pre_projection": True})).save_pretrained(
        stage1
    )
    keys = FAST + ["sample_every=0", "max_steps=2", "save_every=10", "disc_start_step=100"]
    keys += ["codec.fsq_config.pre_projection=true", "calibrate_quantizer_batches=1"]
    before = codec_identity(JepaCodecModel.from_pretrained(stage1))

    def run(name: str, *extra: str):
        args = load_args(Stage2Args, "tiny", "stage2", keys + list(extra))
        final = Stage2Trainer(args, str(data), tmp_path / name, str(stage1)).run()
        return codec_identity(JepaCodecModel.from_pretrained(final))

    frozen = run("frozen", "freeze_codes=true")
    assert frozen["codes_hash"] == before["codes_hash"]  # same tokens: LMs and datasets stay valid
    assert frozen["weights_hash"] != before["weights_hash"]  # the decoder trained
    trained = run("trained")
    assert trained["codes_hash"] != before["codes_hash"]  # calibrated and trained projection: new codes
    with pytest.raises(ValueError, match="freeze_codes keeps the codes fixed"):
        load_args(Stage2Args, "tiny", "stage2", keys + ["freeze_codes=true", "finetune_encoder=true"])
