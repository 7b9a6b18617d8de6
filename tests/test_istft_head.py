"""The decoder's iSTFT head (`decoder_config.head="istft"`): exact overlap-add inverse, output length, config
checks, loading onto a trained HiFi-GAN-headed codec without changing its codes, chunked decoding, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _train_utils import FAST, make_audio_folder, one_thread  # noqa: F401

from jepatok import JepaCodecConfig, JepaCodecModel, codec_identity
from jepatok.tokenizer.chunking import decode_latents_chunked
from jepatok.tokenizer.configuration import JepaDecoderConfig
from jepatok.tokenizer.decoder import overlap_add_istft
from jepatok.tokenizer.train_common import load_args
from jepatok.tokenizer.train_stage2 import Stage2Args, Stage2Trainer, load_stage1

ISTFT = {"head": "istft", "istft_hop": 2, "istft_n_fft": 8, "istft_channels": 16, "istft_layers": 2}


@pytest.mark.parametrize("n_fft,hop", [(640, 160), (16, 4), (10, 10)])
def test_overlap_add_inverts_a_same_padded_stft(n_fft, hop):
    torch.manual_seed(0)
    frames = 37
    x = torch.randn(2, frames * hop, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    if n_fft == hop:  # a rectangular window of one hop reconstructs too
        window = torch.ones(n_fft, dtype=torch.float64)
    pad = (n_fft - hop) // 2
    padded = torch.nn.functional.pad(x, (pad, pad))
    spec = torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)
    assert spec.shape[-1] == frames
    y = overlap_add_istft(spec, n_fft, hop, window)
    assert y.shape == x.shape  # F frames -> exactly F * hop samples
    torch.testing.assert_close(y, x)


def test_istft_config_keeps_the_blocks_below_its_rate():
    config = JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)  # strides [4, 4], hop 16
    dec = config.decoder_config
    assert (dec.istft_blocks, dec.istft_upsample) == (1, 2)  # 16 / 2 = 8 STFT frames per frame = 4 x 2
    same_rate = JepaCodecConfig.from_preset(
        "tiny", decoder_config={**ISTFT, "istft_hop": 4, "istft_n_fft": 16}
    )
    assert (same_rate.decoder_config.istft_blocks, same_rate.decoder_config.istft_upsample) == (1, 1)
    paper_like = JepaDecoderConfig(
        strides=[6, 5], channels=[8, 8, 8], **{**ISTFT, "istft_hop": 3, "istft_n_fft": 9}
    )
    # hop 30: 10 STFT frames per frame, which 6 does not divide: no block kept, the head up-samples x10
    assert (paper_like.istft_blocks, paper_like.istft_upsample) == (0, 10)
    model = JepaCodecModel(config).eval()
    decoder = model.decoder
    assert len(decoder.blocks) == 1 and not hasattr(decoder, "out_conv")  # no unused parameters (DDP)
    q = torch.rand(2, 5, config.fsq_config.dim) * 2 - 1
    with torch.no_grad():
        audio = decoder(q)
    assert audio.shape == (2, 1, 5 * 16)
    assert float(audio.abs().max()) <= 1.0 and float(audio.std()) > 0


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"head": "wavenet"}, "decoder.head must be one of"),
        ({**ISTFT, "istft_hop": 3}, r"istft_hop \(3\) must divide the hop"),
        ({**ISTFT, "istft_n_fft": 7}, "must be >= istft_hop .* differ from it by an even number"),
        ({**ISTFT, "istft_n_fft": 1}, "must be >= istft_hop"),
        (
            {**ISTFT, "envelope_bands": 2, "envelope_subframes": 16, "istft_hop": 4, "istft_n_fft": 16},
            "the envelope is added after block 1",
        ),
    ],
)
def test_bad_istft_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        JepaCodecConfig.from_preset("tiny", decoder_config=bad)


def test_default_head_keeps_old_identities_and_istft_changes_the_config_not_the_codes(tmp_path):
    torch.manual_seed(0)
    old = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    explicit = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config={"head": "hifigan"}))
    assert codec_identity(explicit)["config_hash"] == codec_identity(old)["config_hash"]
    old.save_pretrained(tmp_path / "old")
    istft_config = JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)
    new = load_stage1(tmp_path / "old", istft_config).eval()  # the head is added to a trained codec
    assert codec_identity(new)["codes_hash"] == codec_identity(old)["codes_hash"]
    assert codec_identity(new)["config_hash"] != codec_identity(old)["config_hash"]
    torch.testing.assert_close(new.decoder.blocks[0].mrf.state_dict(), old.decoder.blocks[0].mrf.state_dict())
    # save / from_pretrained round trip: same audio (the Hann window is not an uninitialised buffer)
    new.save_pretrained(tmp_path / "new")
    loaded = JepaCodecModel.from_pretrained(tmp_path / "new").eval()
    audio = 0.3 * torch.randn(1, 1, 16 * 7)
    with torch.no_grad():
        first, second = new(audio).audio_values, loaded(audio).audio_values
    assert bool(torch.isfinite(second).all())
    torch.testing.assert_close(second, first)


def test_chunked_decoding_with_the_istft_head_matches_whole():
    torch.manual_seed(0)
    model = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)).eval()
    with torch.no_grad():
        for block in model.decoder.istft.blocks:
            block.pw2.weight.mul_(30.0)  # let the ConvNeXt blocks mix neighbouring STFT frames
        q = torch.rand(1, 60, model.config.fsq_config.dim) * 2 - 1
        whole = model.decode_latents(q)
        chunked = decode_latents_chunked(model.decoder, q, 0.05, 8000)  # 25-frame chunks
    assert model.decoder.receptive_frames >= math.ceil((8 // 2 + 2 * 3 * 2) / 16)
    assert (chunked - whole).abs().max() < 1e-4 * whole.abs().max()


def test_stage2_trains_an_istft_head_on_frozen_codes(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    torch.manual_seed(0)
    stage1 = tmp_path / "s1"
    JepaCodecModel(JepaCodecConfig.from_preset("tiny")).save_pretrained(stage1)
    keys = FAST + ["sample_every=0", "max_steps=4", "save_every=10", "disc_start_step=100", "l1_weight=0.0"]
    keys += ["freeze_codes=true", "lr=3e-3"] + [f"codec.decoder_config.{k}={v}" for k, v in ISTFT.items()]
    args = load_args(Stage2Args, "tiny", "stage2", keys)
    final = Stage2Trainer(args, str(data), tmp_path / "run", str(stage1)).run()
    trained = JepaCodecModel.from_pretrained(final)
    assert trained.config.decoder_config.head == "istft"
    assert (
        codec_identity(trained)["codes_hash"]
        == codec_identity(JepaCodecModel.from_pretrained(stage1))["codes_hash"]
    )
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and all(math.isfinite(r["loss"]) for r in logged)
    assert logged[-1]["grad_norm"] > 0
