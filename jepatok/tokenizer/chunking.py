"""Long-audio encoding and decoding in overlapping windows (bounded memory for hour-long files).

Encoding. The encoder has three kinds of context: local convolutions, the DAAM gates' per-clip statistics
(mean / variance of the gate projection over the whole clip), and the Conformers (global attention over the
latent frames). Windowing all three naively changes many tokens. Here:

* the convolutional front-end (stem -> strided blocks -> bottleneck) runs window by window, each window
  carrying `context` frames on both sides (half the front-end's receptive field, capped at max(a quarter
  chunk, 15 s)), and only the window's core frames are kept;
* the DAAM statistics are exact whole-file statistics: one extra pass per gate accumulates the sums of a and
  a^2 over every window's core (float64), gate j using the already-known statistics of gates < j;
* the Conformers run once over the whole latent sequence, which is small (2.5 frames/s: 30 min = 4500 x 128).

So chunked tokens equal whole-file tokens up to float rounding whenever half the front-end's receptive field
fits in the context (true of `tiny` and `small`). The `paper` preset's dilations (up to 5^7 positions) give it
a nominal receptive field of hours: beyond the context its far taps read zeros, as they always do on the
<= 15 s training clips, and every frame still sees >= 15 s of context on each side.

Cost: pass j recomputes blocks 0..j, unless a block's whole-clip output fits in `cache_bytes` (true of the
coarse levels: the paper preset's level 3 holds 1.2 floats per input sample), in which case later passes
start from that cache.

Decoding. The decoder is purely convolutional; each window carries its receptive field as context, so
chunked audio equals whole-sequence audio (no seams, no clicks) up to float rounding.
"""

from __future__ import annotations

import math

import torch

from .daam import DaamStatistics
from .decoder import JepaDecoder
from .encoder import JepaEncoder
from .layers import receptive_field

TRAINING_CLIP_S = 15.0  # longest training clip (paper): the least context a window gives each side


def encoder_receptive_frames(encoder: JepaEncoder) -> int:
    """Frames of context on each side that can influence a frame of the convolutional front-end."""
    layers: list[tuple[int, int, int]] = [(encoder.stem.kernel_size[0], 1, 1)]
    for block in encoder.blocks:
        s = block.downsample.stride[0]
        layers.append((2 * s, 1, s))
        for res in block.res_blocks:
            for c1, c2 in zip(res.convs1, res.convs2):
                layers += [(c1.kernel_size[0], c1.dilation[0], 1), (c2.kernel_size[0], 1, 1)]
    # "Same" padding centres every kernel, so each side needs half of the total span.
    return math.ceil(receptive_field(layers) / 2 / encoder.hop_length) + 1


def _windows(num_frames: int, chunk: int, context: int):
    """Yield (core_start, core_end, window_start, window_end) in frames."""
    for start in range(0, num_frames, chunk):
        end = min(num_frames, start + chunk)
        yield start, end, max(0, start - context), min(num_frames, end + context)


class _FrontEnd:
    """Runs the convolutional front-end of one clip on frame windows, reusing cached full-length levels.

    `cache[j]` (when present) holds the whole clip's input of block j ([1, C_j, n * positions_per_frame_j]),
    i.e. block j-1's gated output; a window then starts from the deepest cached level instead of the audio.
    """

    def __init__(self, encoder: JepaEncoder, clip: torch.Tensor):
        self.encoder, self.clip = encoder, clip
        self.hop = encoder.hop_length
        self.stats: list[DaamStatistics | None] = [None] * len(encoder.blocks)
        self.cache: dict[int, torch.Tensor] = {}

    def per_frame(self, level: int) -> int:
        """Positions per frame at the input of block `level` (level = len(blocks): the bottleneck input)."""
        return math.prod(self.encoder.strides[level:])

    def block_input(self, level: int, w0: int, w1: int) -> torch.Tensor:
        """Input of block `level` for frames [w0, w1) -> [1, C, (w1 - w0) * per_frame(level)]."""
        cached = [k for k in self.cache if k <= level]
        if cached:
            k = max(cached)
            f = self.per_frame(k)
            x = self.cache[k][..., w0 * f : w1 * f]
        else:
            k = 0
            x = self.encoder.stem(self.clip[..., w0 * self.hop : w1 * self.hop])
        for j in range(k, level):
            x = self.encoder.blocks[j](x, None, self.stats[j])
        return x


@torch.no_grad()
def encode_latents_chunked(
    encoder: JepaEncoder,
    input_values: torch.Tensor,
    padding_mask: torch.Tensor | None,
    chunk_length_s: float,
    sampling_rate: int,
    context_frames: int | None = None,
    cache_bytes: int = 256 * 2**20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode long audio window by window; same result as `encoder(...)` up to float rounding.

    Args:
        encoder (`JepaEncoder`): The codec encoder (eval mode recommended).
        input_values (`torch.Tensor` [B, 1, L] or [B, L]): Audio at `sampling_rate`.
        padding_mask (`torch.Tensor` [B, L], *optional*): 1 on real samples.
        chunk_length_s (`float`): Core window length in seconds (rounded up to whole frames).
        sampling_rate (`int`): The codec's sampling rate.
        context_frames (`int`, *optional*): Context on each side; default: the front-end's receptive field,
            capped at max(a quarter chunk, 15 s) (the paper preset's nominal receptive field is hours long).
        cache_bytes (`int`, defaults to 256 MiB): A block's whole-clip output is kept (instead of being
            recomputed by later passes) when it fits in this many bytes; only the deepest kept level is
            held, so the cache peaks below 2 x cache_bytes. 0 recomputes everything: memory then depends
            on the window size only, whatever the file length.

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
    if context_frames is None:
        floor = math.ceil(TRAINING_CLIP_S * sampling_rate / hop)
        context = min(encoder_receptive_frames(encoder), max(chunk // 4, floor))
    else:
        context = int(context_frames)
    x, num_valid = encoder.pad_input(input_values, padding_mask)
    frames = x.shape[-1] // hop
    out = torch.zeros(x.shape[0], frames, encoder.bottleneck.out_channels, dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        n = int(num_valid[i])
        if n == 0:
            continue
        front = _FrontEnd(encoder, x[i : i + 1, :, : n * hop])
        for j, block in enumerate(encoder.blocks):
            if block.daam is None:
                continue
            f = front.per_frame(j + 1)  # positions per frame after block j
            size = block.downsample.out_channels * n * f * x.element_size()
            keep = (
                torch.empty(1, block.downsample.out_channels, n * f, dtype=x.dtype)
                if size <= cache_bytes
                else None
            )
            total = None
            for c0, c1, w0, w1 in _windows(n, chunk, context):
                pre = block.pre_gate(front.block_input(j, w0, w1), None)[..., (c0 - w0) * f : (c1 - w0) * f]
                part = block.daam.statistics(block.daam.project(pre), None)
                total = part if total is None else total + part
                if keep is not None:
                    keep[..., c0 * f : c1 * f] = pre
            front.stats[j] = total
            if keep is not None:  # gate once the whole-clip statistics are known; later passes start here
                mu, var = total.mean_var(block.daam.var_floor)
                gate = block.daam.gate(block.daam.project(keep), mu.to(keep.device), var.to(keep.device))
                keep.mul_(
                    1.0 + block.daam.alpha.to(keep.dtype) * gate.to(keep.dtype)
                )  # in place: no 2nd copy
                front.cache = {j + 1: keep}  # shallower levels are never read again
        pieces = []
        for c0, c1, w0, w1 in _windows(n, chunk, context):
            z = encoder.bottleneck(front.block_input(len(encoder.blocks), w0, w1))[..., c0 - w0 : c1 - w0]
            spectral = encoder.spectral_term(front.clip, c0, c1)  # [1, c1 - c0, D]: exact per window
            pieces.append(z if spectral is None else z + spectral.transpose(1, 2))
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
    frame_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode quantized latents [B, T, D] window by window -> audio [B, 1, T * hop].

    Args:
        decoder (`JepaDecoder`): The codec decoder.
        quantized (`torch.Tensor` [B, T, D]): Quantized latents.
        chunk_length_s (`float`): Core window length in seconds (rounded up to whole frames).
        sampling_rate (`int`): The codec's sampling rate.
        context_frames (`int`, *optional*): Context on each side; default: the decoder's receptive field.
        frame_mask (`torch.Tensor` [B, T], *optional*): Valid frames; each window's slice goes to the decoder's
            frame blocks, so a clip's right padding stays out of its valid frames as in whole-sequence decoding.
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
    pitch = phase = None
    if decoder.pitch_subframes:
        # The source's phase runs through the whole clip: every window renders the whole-clip pitch from where
        # the phase stands at its first sample, so the windows join exactly.
        from .pitch import source_phase

        f0, voiced = decoder.pitch_values(
            decoder.predict_pitch(decoder.frame_features(quantized, frame_mask))
        )
        pitch = (f0, voiced)
        phase = source_phase(f0, hop // decoder.pitch_subframes, sampling_rate)
    sub = decoder.pitch_subframes
    pieces = []
    for c0, c1, w0, w1 in _windows(frames, chunk, context):
        mask = None if frame_mask is None else frame_mask[:, w0:w1]
        kwargs = {}
        if pitch is not None:
            kwargs = dict(
                pitch_override=(pitch[0][:, w0 * sub : w1 * sub], pitch[1][:, w0 * sub : w1 * sub]),
                source_phase0=phase[:, w0 * sub],
            )
        audio = decoder(quantized[:, w0:w1], frame_mask=mask, **kwargs)  # [B, 1, (w1 - w0) * hop]
        pieces.append(audio[..., (c0 - w0) * hop : (c1 - w0) * hop])
    return torch.cat(pieces, dim=-1)
