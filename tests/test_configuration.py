"""JepaCodecConfig: presets, derived quantities, validation messages, save/load round trip."""

from __future__ import annotations

import pytest

from jepatok import JepaCodecConfig


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_presets_round_trip(preset, tmp_path):
    cfg = JepaCodecConfig.from_preset(preset)
    cfg.save_pretrained(tmp_path)
    again = JepaCodecConfig.from_pretrained(tmp_path)
    assert again.to_dict() == cfg.to_dict()
    assert again.tokens_per_frame == 19 and again.codebook_size == 16384


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_paper_rates(preset):
    cfg = JepaCodecConfig.from_preset(preset)
    assert cfg.frame_rate == 2.5
    assert cfg.tokens_per_second == 47.5
    assert cfg.bitrate == 640.0


def test_paper_preset_geometry():
    cfg = JepaCodecConfig.from_preset("paper")
    assert cfg.sampling_rate == 24000 and cfg.hop_length == 9600
    assert cfg.encoder_config.strides == [8, 8, 5, 5, 6]
    assert cfg.decoder_config.strides == [6, 5, 5, 8, 8]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"encoder_config": {"strides": [4, 5]}}, "must match"),
        ({"encoder_config": {"channels": [8, 16]}}, "len\\(strides\\) \\+ 1"),
        ({"fsq_config": {"levels": [4] * 64}}, "latent_dim"),
        ({"fsq_config": {"levels": [4] * 127 + [1]}}, ">= 2"),
        ({"encoder_config": {"conformer_heads": 5}}, "divisible"),
        ({"decoder_config": {"mrf_kernel_sizes": [4]}}, "odd"),
    ],
)
def test_validation_names_bad_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        JepaCodecConfig.from_preset("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown codec preset 'huge'"):
        JepaCodecConfig.from_preset("huge")
