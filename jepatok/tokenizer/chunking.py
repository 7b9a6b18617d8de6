"""Long-audio encoding and decoding in overlapping windows (bounded memory for hour-long files).

Encoding. The encoder has three kinds of context: local convolutions, the DAAM gates' per-clip statistics
(mean / variance of the gate projection over the whole clip), and the Conformers (global attention over the
latent frames). Windowing all three naively changes many tokens. Here:

* the convolutional front-end (stem -> strided blocks -> bottleneck) runs window by window, each window
  carrying `context` frames on both sides (the front-end's receptive field, capped at one chunk), and only
  the window's core frames are kept;
* the DAAM statistics are exact whole-file statistics: one extra pass per gate accumulates the sums of a and
  a^2 over every window's core (float64), gate j using the already-known statistics of gates < j;
* the Conformers run once over the whole latent sequence, which is small (2.5 frames/s: 30 min = 4500 x 128).

So chunked tokens equal whole-file tokens up to float rounding whenever the front-end's receptive field fits
in the context. (The `paper` preset's deepest dilations, 5^7 frames, exceed any window: beyond one chunk of
context its far taps read zeros, as they always do on the <= 15 s training clips.) Cost: one front-end pass
per DAAM gate prefix plus the final pass.

Decoding. The decoder is purely convolutional; each window carries its full receptive field as context, so
chunked audio equals whole-sequence audio (no seams, no clicks) up to float rounding.
"""

from __future__ import annotations

import math

import torch

from .daam import DaamStatistics
from .decoder import JepaDecoder
from .encoder import JepaEncoder
from .layers import receptive_field


def encoder_receptive_frames(encoder: JepaEncoder) -> int:
    """Frames of context on each side that can influence a frame of the convolutional front-end."""
    layers: list[tuple[int, int, int]] = [(encoder.stem.kernel_size[0], 1, 1)]
    for block in encoder.blocks:
        s = block.downsample.stride[0]
        layers.append((2 * s, 1, s))
        for res in block.res_blocks:
            for c1, c2 in zip(res.convs1, res.convs2):
                layers += [(c1.kernel_size[0], c1.dilation[0], 1), (c2.kernel_size[0], 1, 1)]
    return math.ceil(receptive_field(layers) / encoder.hop_length) + 1


def _windows(num_frames: int, chunk: int, context: int):
    """Yield (core_start, core_end, window_start, window_end) in frames."""
    for start in range(0, num_frames, chunk):
        end = min(num_frames, start + chunk)
        yield start, end, max(0, start - context), min(num_frames, end + context)


def _front_end(
    encoder: JepaEncoder, x: torch.Tensor, stats: list[DaamStatistics | None], upto: int | None
) -> torch.Tensor:
    """Run stem and blocks. With `upto = j`: stop after block j's pre-gate features and return the gate
    projection a [1, 1, T_j]. With `upto = None`: all blocks and the bottleneck -> [1, D, T]."""
    x = encoder.stem(x)
    for j, block in enumerate(encoder.blocks):
        if upto == j:
            return block.daam.project(block.pre_gate(x, None))
        x = block(x, None, stats[j])
    return encoder.bottleneck(x)


@torch.no_grad()
def encode_latents_chunked(
    encoder: JepaEncoder,
    input_values: torch.Tensor,
    padding_mask: torch.Tensor | None,
    chunk_length_s: float,
    sampling_rate: int,
    context_frames: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode long audio window by window; same result as `encoder(...)` up to float rounding.

    Args:
        encoder (`JepaEncoder`): The codec encoder (eval mode recommended).
        input_values (`torch.Tensor` [B, 1, L] or [B, L]): Audio at `sampling_rate`.
        padding_mask (`torch.Tensor` [B, L], *optional*): 1 on real samples.
        chunk_length_s (`float`): Core window length in seconds (rounded up to whole frames).
        sampling_rate (`int`): The codec's sampling rate.
        context_frames (`int`, *optional*): Context on each side; default: the front-end's receptive field
            capped at one chunk.

    Returns:
        (latents [B, T, D], frame_mask [B, T] bool) with T = ceil(L / hop).
    """
    if (
        not isinstance(chunk_length_s, (int, float))
        or isinstance(chunk_length_s, bool)
        or chunk_length_s <= 0
    ):
        raise ValueError(f"chunk_length_s must be a positive number of seconds, got {chunk_length_s!r}")
    hop = encoder.hop_length
    chunk = max(1, math.ceil(chunk_length_s * sampling_rate / hop))
    context = min(encoder_receptive_frames(encoder), chunk) if context_frames is None else int(context_frames)
    x, num_valid = encoder.pad_input(input_values, padding_mask)
    frames = x.shape[-1] // hop
    gates = [b.daam is not None for b in encoder.blocks]
    out = torch.zeros(x.shape[0], frames, encoder.bottleneck.out_channels, dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        n = int(num_valid[i])
        if n == 0:
            continue
        clip = x[i : i + 1, :, : n * hop]
        stats: list[DaamStatistics | None] = [None] * len(encoder.blocks)
        for j in (j for j, has_gate in enumerate(gates) if has_gate):
            factor = math.prod(encoder.strides[j + 1 :])  # positions per frame after block j
            total = None
            for c0, c1, w0, w1 in _windows(n, chunk, context):
                a = _front_end(encoder, clip[..., w0 * hop : w1 * hop], stats, upto=j)
                core = a[..., (c0 - w0) * factor : (c1 - w0) * factor]
                part = encoder.blocks[j].daam.statistics(core, None)
                total = part if total is None else total + part
            stats[j] = total
        pieces = []
        for c0, c1, w0, w1 in _windows(n, chunk, context):
            z = _front_end(encoder, clip[..., w0 * hop : w1 * hop], stats, upto=None)  # [1, D, W]
            pieces.append(z[..., c0 - w0 : c1 - w0])
        out[i, :n] = torch.cat(pieces, dim=-1)[0].transpose(0, 1)
    frame_mask = torch.arange(frames, device=x.device).unsqueeze(0) < num_valid.unsqueeze(1)
    attn_mask = None if bool(frame_mask.all()) else frame_mask
    latents, _ = encoder.conformer_stack(out, attn_mask)  # padded frames of `out` are zero, as in forward
    return latents, frame_mask


@torch.no_grad()
def decode_latents_chunked(
    decoder: JepaDecoder,
    quantized: torch.Tensor,
    chunk_length_s: float,
    sampling_rate: int,
    context_frames: int | None = None,
) -> torch.Tensor:
    """Decode quantized latents [B, T, D] window by window -> audio [B, 1, T * hop].

    Args:
        decoder (`JepaDecoder`): The codec decoder.
        quantized (`torch.Tensor` [B, T, D]): Quantized latents.
        chunk_length_s (`float`): Core window length in seconds (rounded up to whole frames).
        sampling_rate (`int`): The codec's sampling rate.
        context_frames (`int`, *optional*): Context on each side; default: the decoder's receptive field.
    """
    if (
        not isinstance(chunk_length_s, (int, float))
        or isinstance(chunk_length_s, bool)
        or chunk_length_s <= 0
    ):
        raise ValueError(f"chunk_length_s must be a positive number of seconds, got {chunk_length_s!r}")
    hop = decoder.hop_length
    chunk = max(1, math.ceil(chunk_length_s * sampling_rate / hop))
    context = decoder.receptive_frames if context_frames is None else int(context_frames)
    frames = quantized.shape[1]
    pieces = []
    for c0, c1, w0, w1 in _windows(frames, chunk, context):
        audio = decoder(quantized[:, w0:w1])  # [B, 1, (w1 - w0) * hop]
        pieces.append(audio[..., (c0 - w0) * hop : (c1 - w0) * hop])
    return torch.cat(pieces, dim=-1)
