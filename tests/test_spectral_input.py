"""encoder_config.spectral_input_bands (the encoder's log-mel input) and the envelope warm-up."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from _train_utils import make_audio_folder

from jepatok import JepaCodecConfig, JepaCodecModel, codec_identity
from jepatok.tokenizer.envelope_warmup import build_cache, collate, envelope_r2, run, trained_modules, warmup
from jepatok.tokenizer.spectral import spectral_patches, spectral_patches_window

SPEC = {"spectral_input_bands": 4, "spectral_input_subframes": 4}
ENV = {"envelope_bands": 4, "envelope_subframes": 4, "frame_layers": 1}


def _codec(seed: int = 0, **extra) -> JepaCodecModel:
    torch.manual_seed(seed)
    return JepaCodecModel(JepaCodecConfig.from_preset("tiny", encoder_config=SPEC, **extra)).eval()


def test_window_patches_equal_the_whole_clip_and_the_anchor_inside():
    torch.manual_seed(0)
    hop, frames = 64, 9
    audio = torch.randn(2, hop * frames)
    whole = spectral_patches_window(audio, 0, frames, hop, 8000, 5, 4)
    assert whole.shape == (2, frames, 5 * 4)
    for start, stop in ((0, 3), (2, 7), (6, 9)):
        torch.testing.assert_close(
            spectral_patches_window(audio, start, stop, hop, 8000, 5, 4), whole[:, start:stop]
        )
    # away from the clip's edges (where the anchor reflects and this zero-pads) the two layouts agree
    anchor = spectral_patches(audio.unsqueeze(1), hop, 8000, 5, 4)
    torch.testing.assert_close(whole[:, 1:-1], anchor[:, 1:-1])
    assert float((whole[:, 0] - anchor[:, 0]).abs().max()) > 1e-3  # zeros before the start, not a reflection


def test_spectral_input_starts_at_zero_and_keeps_old_identities():
    plain = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    explicit = JepaCodecConfig.from_preset("tiny", encoder_config={"spectral_input_bands": 0})
    assert codec_identity(JepaCodecModel(explicit))["config_hash"] == codec_identity(plain)["config_hash"]
    codec = _codec()
    assert codec.encoder.spectral_input.weight.shape == (128, 16)
    assert float(codec.encoder.spectral_input.weight.detach().abs().sum()) == 0.0
    assert codec_identity(codec)["config_hash"] != codec_identity(plain)["config_hash"]
    with pytest.raises(ValueError, match="spectral_input_subframes .* must divide the hop"):
        JepaCodecConfig.from_preset(
            "tiny", encoder_config={"spectral_input_bands": 4, "spectral_input_subframes": 5}
        )
    with pytest.raises(ValueError, match="spectral_input_bands must be an integer >= 0"):
        JepaCodecConfig.from_preset("tiny", encoder_config={"spectral_input_bands": -1})


def test_spectral_input_changes_latents_padding_and_chunks_do_not():
    codec = _codec()
    torch.nn.init.normal_(codec.encoder.spectral_input.weight, std=0.3)
    torch.manual_seed(1)
    a, b = 0.3 * torch.randn(1, 1, 16 * 21 + 5), 0.3 * torch.randn(1, 1, 16 * 40)
    with torch.no_grad():
        alone = codec.encode(a)
        batch = torch.zeros(2, 1, b.shape[-1])
        batch[0, :, : a.shape[-1]], batch[1] = a, b
        mask = torch.zeros(2, b.shape[-1])
        mask[0, : a.shape[-1]], mask[1] = 1, 1
        batched = codec.encode(batch, mask)
        assert torch.equal(alone.audio_codes[0], batched.audio_codes[0, : alone.audio_codes.shape[1]])
        torch.testing.assert_close(
            alone.latents[0], batched.latents[0, : alone.latents.shape[1]], atol=1e-5, rtol=0
        )
        whole = codec.encode(b).latents
        chunked = codec.encode(b, chunk_length_s=16 * 7 / 8000).latents
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
        off = codec.encoder.spectral_input.weight.clone()
        codec.encoder.spectral_input.weight.zero_()
        assert not torch.allclose(codec.encode(b).latents, whole, atol=1e-3)
        codec.encoder.spectral_input.weight.copy_(off)


def test_stage1_codec_gets_the_spectral_input_added(tmp_path):
    from jepatok.tokenizer.train_stage2 import load_stage1

    torch.manual_seed(0)
    old = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    old.save_pretrained(tmp_path / "old")
    new = load_stage1(tmp_path / "old", JepaCodecConfig.from_preset("tiny", encoder_config=SPEC))
    assert new.encoder.spectral_input is not None
    assert float(new.encoder.spectral_input.weight.detach().abs().sum()) == 0.0  # starts as a no-op
    audio = 0.3 * torch.randn(1, 1, 16 * 12)
    with torch.no_grad():
        assert torch.equal(new.eval().encode(audio).audio_codes, old.eval().encode(audio).audio_codes)


def test_envelope_warmup_trains_the_frame_path_only(tmp_path):
    data = make_audio_folder(tmp_path / "wavs", n=6, seconds=0.3)
    codec = _codec(decoder_config=ENV)
    cache = build_cache(codec, str(data), "train", 10.0, progress=False)
    assert len(cache) == 6 and cache[0]["spectral"].shape[1] == 16 and cache[0]["target"].shape[1] == 16
    before_state = {k: v.clone() for k, v in codec.state_dict().items()}
    l1_before, r2_before = envelope_r2(codec, cache)
    history = warmup(
        codec, cache, steps=60, lr=3e-3, batch_size=4, warmup_steps=5, log_every=20, progress=False
    )
    l1_after, r2_after = envelope_r2(codec, cache)
    assert [h["step"] for h in history] == [20, 40, 60]
    assert l1_after < 0.7 * l1_before and r2_after > r2_before
    trained = {id(p) for m in trained_modules(codec) for p in m.parameters()}
    names = {n for n, p in codec.named_parameters() if id(p) in trained}
    for name, value in codec.state_dict().items():
        changed = not torch.equal(value, before_state[name])
        if name.startswith(
            ("encoder.stem", "encoder.blocks", "decoder.blocks", "decoder.in_proj", "decoder.out_conv")
        ):
            assert not changed, name  # the front-end and the waveform decoder are left alone
        if changed:
            assert name in names, name
    assert "encoder.spectral_input.weight" in names and all(p.requires_grad for p in codec.parameters())
    with pytest.raises(ValueError, match="positive number of optimizer steps"):
        warmup(codec, cache, steps=0)


def _warmup_args(tmp_path, data, **extra) -> argparse.Namespace:
    """`train-envelope` arguments for the codec saved at tmp_path/codec (run folder tmp_path/run)."""
    defaults = dict(preset=None, steps=5, lr=1e-3, batch_size=2, max_seconds=10.0, seed=0, threads=None)
    return argparse.Namespace(
        codec=str(tmp_path / "codec"),
        data=str(data),
        output_dir=str(tmp_path / "run"),
        **{**defaults, **extra},
    )


def test_train_envelope_command(tmp_path):
    data = make_audio_folder(tmp_path / "wavs", n=4, seconds=0.3)
    codec = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ENV))
    codec.save_pretrained(tmp_path / "codec")
    args = _warmup_args(tmp_path, data, spectral_input_bands=None)
    assert run(args) == 0
    out = JepaCodecModel.from_pretrained(str(tmp_path / "run" / "final"))
    assert out.encoder.spectral_input is None  # no --preset: the codec's own architecture
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["valid_r2_after"] <= 1.0  # random codec: R^2 may be << 0
    assert summary["valid_l1_after"] > 0 and summary["train_clips"] == 4
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(FileExistsError, match="already exists"):
        run(args)
    plain = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    plain.save_pretrained(tmp_path / "plain")
    args.codec, args.output_dir = str(tmp_path / "plain"), str(tmp_path / "run2")
    with pytest.raises(ValueError, match="no envelope path"):
        run(args)
    args.spectral_input_bands = 4
    with pytest.raises(ValueError, match="needs --preset"):
        run(args)
    args.spectral_input_bands, args.spectral_input_hidden = None, 8
    with pytest.raises(ValueError, match="needs --spectral-input-bands"):
        run(args)


def test_warmup_whitens_the_quantizer_input(tmp_path):
    from jepatok.tokenizer.envelope_warmup import frame_latents, whiten_quantizer

    data = make_audio_folder(tmp_path / "wavs", n=6, seconds=0.6)
    codec = _codec(decoder_config=ENV, fsq_config={"pre_projection": True})
    cache = build_cache(codec, str(data), "train", 10.0, progress=False)
    frames = whiten_quantizer(codec, cache, target_std=0.8)
    assert frames == sum(c["target"].shape[0] for c in cache)
    with torch.no_grad():
        z = torch.cat([frame_latents(codec, collate(cache, [i]))[0] for i in range(len(cache))])
        w = codec.pre_quant(z)
    assert float(w.mean(0).abs().max()) < 1e-3  # centred
    top = torch.linalg.eigvalsh(torch.cov(w.T))[-5:]
    torch.testing.assert_close(top.sqrt(), torch.full((5,), 0.8), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="no pre-quantization projection"):
        whiten_quantizer(_codec(decoder_config=ENV), cache)


def test_train_envelope_adds_a_pitch_path_and_trains_the_codes_to_carry_pitch(tmp_path):
    from jepatok.tokenizer.envelope_warmup import pitch_scores

    data = make_audio_folder(tmp_path / "wavs", n=4, seconds=0.3)
    istft = {"head": "istft", "istft_hop": 2, "istft_n_fft": 8, "istft_channels": 16, "istft_layers": 2}
    torch.manual_seed(0)
    codec = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config={**ENV, **istft}))
    codec.save_pretrained(tmp_path / "codec")
    args = _warmup_args(
        tmp_path, data, steps=30, lr=3e-3, pitch_subframes=4, pitch_weight=1.0, pitch_input=True
    )
    assert run(args) == 0
    out = JepaCodecModel.from_pretrained(str(tmp_path / "run" / "final"))
    assert out.config.decoder_config.pitch_subframes == 4
    assert (
        out.config.encoder_config.pitch_input_subframes == 4
    )  # --pitch-input: the encoder reads the F0 track
    assert float(out.encoder.pitch_input[-1].weight.abs().max()) > 0  # trained from its zero start
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    before, after = summary["valid_pitch_before"], summary["valid_pitch_after"]
    assert after["median_cents"] < before["median_cents"]  # the sine clips' F0 is learned
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["pitch_f0_l1"] < rows[0]["pitch_f0_l1"] or len(rows) == 1
    assert all(r["pitch_voicing_bce"] > 0 for r in rows)
    # the cache carries the targets at the decoder's pitch sub-frames
    cache = build_cache(out, str(data), "train", 10.0, progress=False)
    assert cache[0]["f0"].shape == (cache[0]["target"].shape[0], 4) and cache[0]["voiced"].dtype == torch.bool
    assert cache[0]["pitch_in"].shape == (cache[0]["target"].shape[0], 8)
    assert pitch_scores(out, cache)["voicing_error"] <= 1.0
    assert (
        pitch_scores(JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ENV)), cache) is None
    )
    args.output_dir, args.pitch_subframes = str(tmp_path / "run2"), 0
    with pytest.raises(ValueError, match="positive number of sub-frames"):
        run(args)
    args.pitch_subframes = None
    with pytest.raises(ValueError, match="--pitch-input needs --pitch-subframes"):
        run(args)
