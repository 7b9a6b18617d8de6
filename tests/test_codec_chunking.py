"""Long-audio encode/decode in windows: tokens agree with whole-file encoding, seams carry no clicks."""

from __future__ import annotations

import math

import pytest
import torch

from jepatok import JepaCodecConfig, JepaCodecModel
from jepatok.tokenizer.chunking import (
    decode_latents_chunked,
    encode_latents_chunked,
    encoder_receptive_frames,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread avoids OpenMP stalls on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return JepaCodecModel(JepaCodecConfig.from_preset("tiny")).eval()


def _speechlike(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    """An amplitude- and pitch-modulated harmonic signal with noise bursts (non-stationary) [L]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 * (1 + torch.sin(2 * math.pi * 2.3 * t)).clamp(min=0.05)
    noise = 0.05 * torch.randn(t.shape, generator=g) * (torch.sin(2 * math.pi * 1.1 * t) > 0.6)
    return (0.3 * envelope * voiced + noise).float()


@pytest.mark.parametrize(("chunk_s", "cache_bytes"), [(0.25, 0), (0.25, 2**30), (0.6, 100_000)])
def test_chunked_tokens_match_whole_file(model, chunk_s, cache_bytes):
    """cache_bytes 0: every pass recomputes from the audio; 100 kB: only the coarse level (96 kB) is cached."""
    x = _speechlike(3.0, 8000).view(1, 1, -1)
    with torch.no_grad():
        whole = model.encode(x)
        latents, _ = encode_latents_chunked(model.encoder, x, None, chunk_s, 8000, cache_bytes=cache_bytes)
        chunked = model.encode(x, chunk_length_s=chunk_s)
    torch.testing.assert_close(latents, chunked.latents, rtol=1e-3, atol=1e-4)
    assert chunked.audio_codes.shape == whole.audio_codes.shape
    same = (chunked.audio_codes == whole.audio_codes).all(dim=-1).float().mean().item()
    assert same >= 0.99, same
    torch.testing.assert_close(chunked.latents, whole.latents, rtol=1e-3, atol=1e-4)


def test_chunked_encode_of_padded_batch(model):
    clips = [_speechlike(1.5, 8000, 1), _speechlike(0.7, 8000, 2)]
    x = torch.zeros(2, 1, len(clips[0]))
    mask = torch.zeros(2, len(clips[0]), dtype=torch.long)
    for i, c in enumerate(clips):
        x[i, 0, : len(c)] = c
        mask[i, : len(c)] = 1
    with torch.no_grad():
        whole = model.encode(x, mask)
        chunked = model.encode(x, mask, chunk_length_s=0.2)
    assert torch.equal(chunked.frame_mask, whole.frame_mask)
    valid = whole.frame_mask
    same = (chunked.audio_codes == whole.audio_codes).all(dim=-1)[valid].float().mean().item()
    assert same >= 0.99
    assert torch.count_nonzero(chunked.latents[1, int(valid[1].sum()) :]) == 0


def test_context_defaults_to_receptive_field(model):
    frames = encoder_receptive_frames(model.encoder)
    assert 1 <= frames < 100
    assert model.decoder.receptive_frames >= 1


def test_chunked_decode_has_no_seams(model):
    x = _speechlike(2.0, 8000, 3).view(1, 1, -1)
    with torch.no_grad():
        codes = model.encode(x).audio_codes
        whole = model.decode(codes).audio_values[0, 0]
        chunked = model.decode(codes, chunk_length_s=0.1).audio_values[0, 0]
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)
    # Sample discontinuity at the seams vs everywhere else: no click may stand out.
    step = torch.diff(chunked).abs()
    seam_every = math.ceil(0.1 * 8000 / 16) * 16
    seams = torch.arange(seam_every, len(chunked), seam_every) - 1
    elsewhere = torch.ones_like(step, dtype=torch.bool)
    elsewhere[seams] = False
    assert step[seams].max() <= step[elsewhere].max()
    assert (step[seams] - torch.diff(whole).abs()[seams]).abs().max() < 1e-4


def test_too_little_context_shows_seams(model):
    """The decoder's context is what removes seams: without it, chunk borders do differ."""
    torch.manual_seed(1)
    q = model.dequantize(model.encode(_speechlike(1.0, 8000, 4).view(1, 1, -1)).audio_codes)
    with torch.no_grad():
        whole = model.decode_latents(q)
        naive = decode_latents_chunked(model.decoder, q, 0.1, 8000, context_frames=0)
        with_context = decode_latents_chunked(model.decoder, q, 0.1, 8000)
    scale = whole.abs().max()
    assert (naive - whole).abs().max() > 1e-2 * scale
    assert (with_context - whole).abs().max() < 1e-4 * scale


@pytest.mark.parametrize("bad", [0, -1.0, "1s", True])
def test_bad_chunk_length(model, bad):
    x = torch.zeros(1, 1, 64)
    with pytest.raises(ValueError, match="chunk_length_s"):
        model.encode(x, chunk_length_s=bad)
    with pytest.raises(ValueError, match="chunk_length_s"):
        model.decode(torch.zeros(1, 2, 19, dtype=torch.long), chunk_length_s=bad)


def test_chunked_decode_with_frame_blocks_matches_whole():
    """The decoder's frame-rate blocks widen its context by frame_layers * (kernel // 2) frames; chunked
    decoding accounts for it (and the blocks do change the output)."""
    torch.manual_seed(0)
    config = JepaCodecConfig.from_preset("tiny", decoder_config={"frame_layers": 2})
    framed = JepaCodecModel(config).eval()
    plain = JepaCodecModel(JepaCodecConfig.from_preset("tiny")).eval()
    assert framed.decoder.receptive_frames == plain.decoder.receptive_frames + 2
    with torch.no_grad():
        for block in framed.decoder.frame_blocks:
            block.out.weight.mul_(30.0)  # well away from the near-identity start
        q = framed.dequantize(framed.encode(_speechlike(1.5, 8000, 5).view(1, 1, -1)).audio_codes)
        whole = framed.decode_latents(q)
        chunked = decode_latents_chunked(framed.decoder, q, 0.1, 8000)
        plain.decoder.load_state_dict(framed.decoder.state_dict(), strict=False)
        without_blocks = plain.decode_latents(q)
    scale = whole.abs().max()
    assert (chunked - whole).abs().max() < 1e-4 * scale
    assert (without_blocks - whole).abs().max() > 1e-2 * scale


def test_chunked_decode_of_padded_batch_keeps_padding_out_of_frame_blocks():
    """A padded batch decoded in windows equals the same batch decoded whole with its frame mask (the frame
    blocks read each window's slice of the mask); without the mask the padding leaks into the short clip."""
    torch.manual_seed(0)
    config = JepaCodecConfig.from_preset("tiny", decoder_config={"frame_layers": 2})
    framed = JepaCodecModel(config).eval()
    with torch.no_grad():
        for block in framed.decoder.frame_blocks:
            block.out.weight.mul_(30.0)
        long_codes = framed.encode(_speechlike(1.5, 8000, 7).view(1, 1, -1)).audio_codes  # [1, T, G]
        short_codes = framed.encode(_speechlike(0.7, 8000, 8).view(1, 1, -1)).audio_codes
        t_long, t_short = long_codes.shape[1], short_codes.shape[1]
        batch = torch.cat([long_codes, long_codes]).clone()
        batch[1, :t_short] = short_codes[0]  # clip 1: the short clip, then padding (codes of the long clip)
        mask = torch.arange(t_long).unsqueeze(0) < torch.tensor([[t_long], [t_short]])
        whole = framed.decode(batch, frame_mask=mask).audio_values
        chunked = framed.decode(batch, frame_mask=mask, chunk_length_s=0.1).audio_values
        unmasked = framed.decode(batch, chunk_length_s=0.1).audio_values * mask.repeat_interleave(
            config.hop_length, dim=1
        ).unsqueeze(1)
    scale = whole.abs().max()
    assert (chunked - whole).abs().max() < 1e-4 * scale
    assert (unmasked - whole).abs().max() > 1e-2 * scale
