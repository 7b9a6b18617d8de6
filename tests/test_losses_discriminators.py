"""MPD/MSD discriminators and the stage-2 losses (pure functions)."""

from __future__ import annotations

import pytest
import torch
from _train_utils import one_thread  # noqa: F401

from jepatok.tokenizer.discriminators import JepaDiscriminators, MultiScaleDiscriminator, PeriodDiscriminator
from jepatok.tokenizer.losses import (
    feature_matching_loss,
    generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mel_l1_loss,
    multi_resolution_stft_loss,
    waveform_l1_loss,
)


def test_discriminators_layout_and_batch_independence(tiny_codec_config, generator):
    config = tiny_codec_config()
    disc = JepaDiscriminators(config)
    cfg = config.discriminator_config
    assert disc.num_discriminators == len(cfg.periods) + cfg.msd_scales
    a, b = torch.randn(2, 1, 999, generator=generator), torch.randn(3, 1, 999, generator=generator)
    joint = disc(torch.cat([a, b]))
    first, second = JepaDiscriminators.split(joint, 2)
    alone = disc(a)
    assert len(joint.logits) == len(joint.features) == disc.num_discriminators
    for x, y in zip(first.logits, alone.logits):
        torch.testing.assert_close(x, y)
    assert all(x.shape[0] == 3 for x in second.logits)
    # MPD layers: len(mpd_channels) convs + post; MSD: len(msd_channels) convs + post
    assert [len(f) for f in joint.features] == [len(cfg.mpd_channels) + 1] * len(cfg.periods) + [
        len(cfg.msd_channels) + 1
    ] * cfg.msd_scales
    with pytest.raises(ValueError, match=r"\[B, 1, L\]"):
        disc(torch.randn(2, 2, 100))


def test_msd_pools_are_cascaded():
    msd = MultiScaleDiscriminator(3, [2, 4, 4])
    seen = []
    for d in msd.discriminators:
        d.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[-1]))
    msd(torch.randn(1, 1, 1000))
    assert seen == [1000, 501, 251]  # x1, x2, x4 (AvgPool1d(4, 2, pad 2) twice)


def test_mpd_folds_by_period_and_handles_short_input():
    d = PeriodDiscriminator(5, [4, 8])
    _, feats = d(torch.randn(2, 1, 23))  # padded to 25 -> [B, 1, 5, 5]
    assert feats[0].shape[-1] == 5
    d(torch.randn(1, 1, 3))  # shorter than the period: replicate padding


def test_paper_discriminator_widths_and_groups():
    from jepatok import JepaCodecConfig

    disc = JepaDiscriminators(JepaCodecConfig.from_preset("paper"))
    groups = [c.groups for c in disc.msd.discriminators[0].convs]
    assert groups == [1, 4, 16, 64, 256, 1]  # MelGAN layout (paper-notes §4.6)
    assert [c.out_channels for c in disc.mpd.discriminators[0].convs] == [32, 128, 512, 1024, 1024]


def test_reconstruction_losses(generator):
    x = torch.randn(2, 1, 4000, generator=generator) * 0.3
    y = x + 0.1 * torch.randn(2, 1, 4000, generator=generator)
    assert float(waveform_l1_loss(x, x)) == 0.0
    assert float(multi_resolution_stft_loss(x, x)) == 0.0
    assert float(multi_resolution_stft_loss(x, y)) > 0.0
    assert float(mel_l1_loss(x, y, 16000)) > float(mel_l1_loss(x, x, 16000)) == 0.0
    # padding is ignored: garbage past the mask changes nothing
    mask = torch.ones(2, 4000, dtype=torch.long)
    mask[:, 3000:] = 0
    y2 = y.clone()
    y2[..., 3000:] = 5.0
    torch.testing.assert_close(waveform_l1_loss(x, y, mask), waveform_l1_loss(x, y2, mask))
    torch.testing.assert_close(
        multi_resolution_stft_loss(x, y, mask), multi_resolution_stft_loss(x, y2, mask)
    )
    multi_resolution_stft_loss(x[..., :50], y[..., :50])  # shorter than every FFT size
    with pytest.raises(ValueError, match="one shape"):
        waveform_l1_loss(x, y[..., :10])


def test_gan_losses_and_generator_total(generator):
    real_logits = [torch.ones(2, 5), torch.ones(2, 3)]
    fake_logits = [torch.zeros(2, 5), torch.zeros(2, 3)]
    assert float(lsgan_discriminator_loss(real_logits, fake_logits)) == 0.0  # perfect D
    assert float(lsgan_generator_loss(fake_logits)) == 2.0  # 2 discriminators x mean((0 - 1)^2)
    feats_r = [[torch.ones(2, 4, requires_grad=True)]]
    feats_f = [[torch.zeros(2, 4, requires_grad=True)]]
    fm = feature_matching_loss(feats_r, feats_f)
    fm.backward()
    assert float(fm) == 1.0 and feats_r[0][0].grad is None  # real features are stop-gradient
    x = torch.randn(1, 1, 2000, generator=generator)
    y = torch.randn(1, 1, 2000, generator=generator)
    out = generator_loss(y, x, fake_logits, feats_r, feats_f)
    expected = out.l1 + 2.0 * out.stft + 0.1 * (out.adversarial + 2.0 * out.feature_matching)
    torch.testing.assert_close(out.total, expected)
    no_gan = generator_loss(y, x)
    torch.testing.assert_close(no_gan.total, no_gan.l1 + 2.0 * no_gan.stft)
    with pytest.raises(ValueError, match="sampling_rate"):
        generator_loss(y, x, mel_weight=1.0)
