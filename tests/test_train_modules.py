"""Stage-1 building blocks: block-span masking, predictor, EMA, SIGReg and collapse monitors."""

from __future__ import annotations

import pytest
import torch
from _train_utils import one_thread  # noqa: F401

from jepatok.tokenizer.jepa import (
    JepaStage1Model,
    between_clip_std,
    effective_rank,
    ema_tau,
    per_dim_std,
    sigreg,
)
from jepatok.tokenizer.masking import MaskingConfig, block_span_mask


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    out, n = [], 0
    for v in row.tolist() + [False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


@pytest.mark.parametrize("length", [2, 3, 9, 37, 120])
def test_block_mask_respects_padding_ratio_and_spans(length):
    gen = torch.Generator().manual_seed(length)
    frame_mask = torch.zeros(3, 130, dtype=torch.bool)
    frame_mask[0, :length] = True
    frame_mask[1, : max(1, length // 2)] = True
    frame_mask[2, :] = True
    mask = block_span_mask(frame_mask, MaskingConfig(exact_ratio=True), generator=gen)
    assert not bool((mask & ~frame_mask).any())  # padding never masked
    for b in range(3):
        n = int(frame_mask[b].sum())
        m = int(mask[b].sum())
        if n >= 2:
            assert 1 <= m <= n - 1  # something to predict, something visible
            assert m >= min(n - 1, n // 2)  # exact ratio reaches floor(0.5 * n)
        else:
            assert m == 0
    # paper default: spans of >= 2 frames (runs may merge) on a long clip
    paper = block_span_mask(frame_mask[2:], generator=torch.Generator().manual_seed(0))
    assert min(_runs(paper[0])) >= 2 and 0.3 <= float(paper.float().mean()) <= 0.5 + 1e-6


def test_span_options_ms_and_curriculum():
    cfg = MaskingConfig(min_span_ms=800, max_span_ms=2000)
    assert cfg.span_range(37, frame_rate=2.5) == (2, 5)  # 800 ms, 2000 ms at 2.5 Hz
    assert MaskingConfig().span_range(37, 2.5) == (2, 9)  # max(4, 37 // 4)
    cur = MaskingConfig(min_span=2, max_span=9, curriculum_steps=100)
    assert cur.span_range(37, 2.5, step=0) == (1, 1)  # random single frames first
    assert cur.span_range(37, 2.5, step=50) == (1, 5)  # 1 + round(0.5 * 1), 1 + round(0.5 * 8)
    assert cur.span_range(37, 2.5, step=500) == (2, 9)
    frames = torch.ones(1, 200, dtype=torch.bool)
    early = block_span_mask(frames, cur, step=0, generator=torch.Generator().manual_seed(0))
    late = block_span_mask(frames, cur, step=100, generator=torch.Generator().manual_seed(0))
    assert max(_runs(early[0])) < max(_runs(late[0]))
    a = block_span_mask(frames, generator=torch.Generator().manual_seed(3))
    b = block_span_mask(frames, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="ratio"):
        MaskingConfig(ratio=1.5)


def test_sigreg_prefers_gaussian_embeddings(generator):
    gauss = torch.randn(512, 16, generator=generator)
    collapsed = torch.zeros(512, 16) + 0.01 * torch.randn(512, 16, generator=generator)
    g = torch.Generator().manual_seed(0)
    s_gauss = float(sigreg(gauss, 64, generator=g))
    s_coll = float(sigreg(collapsed, 64, generator=torch.Generator().manual_seed(0)))
    assert s_gauss < 0.1 * s_coll
    z = collapsed.clone().requires_grad_(True)
    sigreg(z, 32, generator=torch.Generator().manual_seed(0)).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_collapse_monitors(generator):
    full = torch.randn(256, 32, generator=generator)
    rank2 = torch.randn(256, 2, generator=generator) @ torch.randn(2, 32, generator=generator)
    assert float(effective_rank(full)) > 20 and float(effective_rank(rank2)) < 2.5
    assert float(per_dim_std(full)) == pytest.approx(1.0, abs=0.1)
    assert float(per_dim_std(torch.ones(10, 4))) == 0.0


def test_ema_update_and_schedule(tiny_codec_config):
    from jepatok import JepaCodecModel

    torch.manual_seed(0)
    config = tiny_codec_config()
    model = JepaStage1Model(JepaCodecModel(config).encoder, config)
    assert tuple(model.mask_token.shape) == (1, 1, 128) and float(model.mask_token.std()) < 0.05
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    online = next(model.encoder.parameters())
    target = next(model.target_encoder.parameters())
    assert torch.equal(online, target)
    before = target.clone()
    with torch.no_grad():
        online.add_(1.0)
    model.update_target(0.996)
    torch.testing.assert_close(target, before + 0.004)
    assert ema_tau(0, 100) == ema_tau(99, 100) == 0.996
    assert ema_tau(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    model.train()
    assert not model.target_encoder.training and model.encoder.training
    with pytest.raises(ValueError, match="target_layers"):
        JepaStage1Model(JepaCodecModel(config).encoder, config, target_layers=9)


def test_predictor_keeps_padding_zero_and_paper_size(tiny_codec_config):
    from jepatok import JepaCodecConfig
    from jepatok.tokenizer.predictor import JepaPredictor

    paper = JepaPredictor(JepaCodecConfig.from_preset("paper"))
    assert sum(p.numel() for p in paper.parameters()) == pytest.approx(3.18e6, rel=0.01)
    pred = JepaPredictor(tiny_codec_config()).eval()
    x = torch.randn(2, 10, 128)
    fm = torch.ones(2, 10, dtype=torch.bool)
    fm[1, 6:] = False
    out = pred(x * fm.unsqueeze(-1), fm)
    assert float(out[1, 6:].abs().sum()) == 0.0
    torch.testing.assert_close(out[1:, :6], pred(x[1:, :6], None), atol=1e-5, rtol=1e-4)


def test_between_clip_std_separates_position_only_latents():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(6, 20, dtype=torch.bool)
    mask[3:, 12:] = False  # right padding must not count
    content = torch.randn(6, 20, 8, generator=g)  # every clip different at every frame
    position_only = torch.randn(1, 20, 8, generator=g).expand(6, 20, 8).clone()
    position_only[3:, 12:] = 100.0  # garbage in padded frames is ignored
    assert float(between_clip_std(content, mask)) == pytest.approx(1.0, abs=0.15)
    assert float(between_clip_std(position_only, mask)) < 1e-6
    assert float(per_dim_std(position_only[mask])) > 0.5  # the per-dim std monitor alone misses it
    assert between_clip_std(content[:1], mask[:1]) is None  # one clip: undefined


def test_spectral_patches_follow_each_frames_own_content():
    from jepatok.tokenizer.jepa import spectral_patches

    sr, hop = 16000, 1600
    t = torch.arange(4 * hop) / sr
    loud_then_quiet = torch.cat([0.5 * torch.sin(2 * torch.pi * 440 * t[: 2 * hop]), torch.zeros(2 * hop)])
    patches = spectral_patches(loud_then_quiet.view(1, 1, -1), hop, sr, n_mels=8, subframes=4)
    assert patches.shape == (1, 4, 8 * 4)
    assert float(patches[0, :2].mean()) > float(patches[0, 2:].mean()) + 1.0  # loud frames >> silent frames
    with pytest.raises(ValueError, match="divide the codec hop"):
        spectral_patches(loud_then_quiet.view(1, 1, -1), hop, sr, subframes=7)


def test_spectral_anchor_trains_a_head_from_latents_to_patches(tiny_codec_config, make_sine):
    from jepatok import JepaCodecModel
    from jepatok.tokenizer.jepa import JepaStage1Model

    torch.manual_seed(0)
    config = tiny_codec_config()
    codec = JepaCodecModel(config)
    model = JepaStage1Model(
        codec.encoder, config, anchor_weight=1.0, anchor_mels=4, anchor_subframes=2
    ).train()
    assert model.anchor_head is not None and JepaStage1Model(codec.encoder, config).anchor_head is None
    audio = torch.stack([make_sine(0.1, 8000, 220.0), 0.1 * make_sine(0.1, 8000, 330.0)]).unsqueeze(1)
    mask = torch.zeros(2, audio.shape[-1] // config.hop_length, dtype=torch.bool)
    mask[:, 1::3] = True
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    anchors = []
    for _ in range(15):
        out = model(audio, None, mask)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        anchors.append(float(out.anchor.detach()))
    assert out.loss > out.mse  # the anchor term is part of the objective
    assert anchors[-1] < 0.5 * anchors[0], anchors
