"""HiFi-GAN-style decoder of the JEPA codec (arXiv 2512.07168 Sec. 3; HiFi-GAN arXiv 2010.05646).

    frame_layers x FrameBlock(latent_dim) at the frame rate (0 for the paper)
    Conv1d(latent_dim -> C0, k1)
    per block i: Snake -> ConvTranspose1d(k=2s, stride s, cropped to T*s) -> MRF (average of ResBlock1s)
    Conv1d(C_last -> 1, k7) -> tanh                                       -> audio [B, 1, T * hop]

or, with `head="istft"`, the first blocks then an iSTFT head (ConvNeXt -> log-magnitude + phase -> overlap-add;
Vocos, arXiv 2306.00814) that renders the spectrum directly.

No weight norm and no decoder DAAM, as in the authors' code. The transposed convolutions are cropped so T frames
give exactly T * hop samples (the reference loses the last 0.384 s of every clip).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import JepaCodecConfig
from .layers import (
    DilatedConv1d,
    MultiReceptiveField,
    Snake,
    UpsampleConvTranspose1d,
    init_codec_weights,
    receptive_field,
)


class DecoderBlock(nn.Module):
    """Snake -> ConvTranspose1d(k=2s, stride s) -> MRF."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_sizes: list[int], dilations: list[int]):
        super().__init__()
        self.snake = Snake(in_ch)
        self.upsample = UpsampleConvTranspose1d(in_ch, out_ch, stride)
        self.mrf = MultiReceptiveField(out_ch, kernel_sizes, dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T] -> [B, C_out, T * s]
        return self.mrf(self.upsample(self.snake(x)))


class FrameBlock(nn.Module):
    """Residual block at the frame rate: LayerNorm -> Conv1d(D, 4D, k) -> GELU -> Conv1d(4D, D, 1), plus input.
    Its output convolution starts small (x0.1 under init_scheme="fan_in"), so a block added to a trained
    decoder starts close to the identity. With a frame mask [B, T], the normalised input of padded frames is
    zeroed before the convolution, so a valid frame next to right padding sees what it sees at the end of a
    clip alone (the convolution's own zero padding): batching never changes valid frames' output."""

    def __init__(self, dim: int, kernel_size: int, mult: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, mult * dim, kernel_size, padding=kernel_size // 2)
        self.out = nn.Conv1d(mult * dim, dim, kernel_size=1)
        self.out._init_gain = 0.1

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, D, T] (frame_mask [B, T], True on valid frames) -> [B, D, T]."""
        h = self.norm(x.transpose(1, 2)).transpose(1, 2)
        if frame_mask is not None:
            h = h * frame_mask.unsqueeze(1).to(h.dtype)
        return x + self.out(F.gelu(self.conv(h)))


CONVNEXT_KERNEL = 7  # depthwise kernel of the iSTFT head's ConvNeXt blocks
PITCH_HIDDEN = (
    256  # width of the pitch head (Conv1d(D, 256, k3) -> GELU -> Conv1d(256, 2 x pitch_subframes, k1))
)


class ConvNeXtBlock(nn.Module):
    """Residual ConvNeXt block (depthwise Conv1d(k) -> LayerNorm -> Linear(C, mult C) -> GELU -> Linear(mult C, C));
    its last layer starts small (x0.1 under init_scheme="fan_in")."""

    def __init__(self, dim: int, kernel_size: int = CONVNEXT_KERNEL, mult: int = 3):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, mult * dim)
        self.pw2 = nn.Linear(mult * dim, dim)
        self.pw2._init_gain = 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        h = self.norm(self.dwconv(x).transpose(1, 2))
        return x + self.pw2(F.gelu(self.pw1(h))).transpose(1, 2)


def overlap_add_istft(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse STFT with "same" padding: complex spectrum [B, n_fft // 2 + 1, F] -> audio [B, F * hop].

    Each frame's inverse real FFT is windowed and overlap-added (frame f centred on sample f * hop + hop / 2),
    divided by the summed squared window, and (n_fft - hop) / 2 samples are trimmed from each end, so F frames
    give exactly F * hop samples (torch.istft's centred framing gives (F - 1) * hop)."""
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window.view(1, -1, 1)  # [B, n_fft, F]
    count = frames.shape[-1]
    length = (count - 1) * hop + n_fft
    audio = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))[:, 0, 0]
    norm = F.fold(
        window.square().view(1, -1, 1).expand(1, -1, count),
        output_size=(1, length),
        kernel_size=(1, n_fft),
        stride=(1, hop),
    )[0, 0, 0]
    pad = (n_fft - hop) // 2
    return audio[:, pad : length - pad] / norm[pad : length - pad].clamp_min(1e-11)


def stft_same(audio: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """The analysis that matches `overlap_add_istft`: audio [B, F * hop] -> complex spectrum [B, n_fft // 2 + 1, F],
    frame f windowed around sample f * hop + hop / 2 (zeros beyond the ends)."""
    pad = (n_fft - hop) // 2
    frames = F.pad(audio, (pad, pad)).unfold(-1, n_fft, hop) * window  # [B, F, n_fft]
    return torch.fft.rfft(frames, dim=-1).transpose(1, 2)


class ISTFTHead(nn.Module):
    """Features [B, C_in, T'] -> audio [B, 1, T' * upsample * hop]: Conv1d(C_in -> C, k1) [-> Snake ->
    ConvTranspose1d(stride upsample)] -> ConvNeXt blocks -> LayerNorm -> Linear(C -> n_fft + 2) = per-bin
    log-magnitude and phase -> `overlap_add_istft`. The magnitude is exp(log-magnitude) capped at 100 (Vocos).

    With `source=True` (the decoder's pitch path) `forward` also takes a source signal: its log-magnitude spectrum
    (`stft_same`, the head's own framing) is mapped by a 1x1 convolution (started at zero) and added after the
    up-sampling, so the head sees where the harmonics of the frame's F0 lie."""

    def __init__(
        self, in_ch: int, dim: int, layers: int, upsample: int, n_fft: int, hop: int, source: bool = False
    ):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.in_conv = nn.Conv1d(in_ch, dim, kernel_size=1)
        self.upsample = (
            nn.Sequential(Snake(dim), UpsampleConvTranspose1d(dim, dim, upsample)) if upsample > 1 else None
        )
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, n_fft + 2)
        self.out._init_gain = 0.1
        if source:
            bins = n_fft // 2 + 1
            self.source_in = nn.Conv1d(bins, dim, kernel_size=1)
            self.source_in._zero_init = True  # added to a trained head: start as a no-op
        else:
            self.source_in = None

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, T'] (source [B, T' * upsample * hop] with the pitch path) -> audio [B, 1, T' * upsample * hop]."""
        # The window is made here, not held as a buffer: from_pretrained leaves non-persistent buffers uninitialised.
        window = torch.hann_window(self.n_fft, periodic=True, device=x.device)
        x = self.in_conv(x)
        if self.upsample is not None:
            x = self.upsample(x)
        if self.source_in is not None:
            if source is None:
                raise ValueError(
                    "this iSTFT head has a source path (decoder pitch_subframes > 0) and needs a source"
                )
            source_spec = stft_same(source.float(), self.n_fft, self.hop, window)  # [B, bins, F]
            if source_spec.shape[-1] != x.shape[-1]:
                raise ValueError(
                    f"source gives {source_spec.shape[-1]} STFT frames, the head has {x.shape[-1]}"
                )
            x = x + self.source_in(torch.log(source_spec.abs() + 1e-3).to(x.dtype))
        for block in self.blocks:
            x = block(x)
        h = self.norm(x.transpose(1, 2))
        log_mag, phase = self.out(h).float().transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(log_mag.clamp(max=math.log(100.0)))
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        return overlap_add_istft(spec, self.n_fft, self.hop, window).unsqueeze(1)


class JepaDecoder(nn.Module):
    """Latents (quantized) [B, T, D] -> waveform [B, 1, T * hop] in [-1, 1]; differentiable.

    Args:
        config (`JepaCodecConfig`): Uses `decoder_config` and `encoder_config.latent_dim`.
    """

    def __init__(self, config: JepaCodecConfig):
        super().__init__()
        dec = config.decoder_config
        self.hop_length = dec.hop_length
        dim = config.encoder_config.latent_dim
        self.frame_blocks = nn.ModuleList(
            FrameBlock(dim, dec.frame_kernel_size) for _ in range(dec.frame_layers)
        )
        self.in_proj = nn.Conv1d(dim, dec.channels[0], kernel_size=1)
        self.envelope_block = dec.envelope_block
        if self.envelope_block is not None:
            self.envelope_bands, self.envelope_subframes = dec.envelope_bands, dec.envelope_subframes
            self.envelope_head = nn.Conv1d(dim, dec.envelope_bands * dec.envelope_subframes, kernel_size=1)
            self.envelope_in = nn.Conv1d(
                dec.envelope_bands, dec.channels[self.envelope_block + 1], kernel_size=1
            )
            self.envelope_in._init_gain = 0.1  # added to a trained decoder: start as a small perturbation
        self.head = dec.head
        kept = dec.istft_blocks if dec.head == "istft" else len(dec.strides)
        self.blocks = nn.ModuleList(
            DecoderBlock(dec.channels[i], dec.channels[i + 1], s, dec.mrf_kernel_sizes, dec.mrf_dilations)
            for i, s in enumerate(dec.strides[:kept])
        )
        self.pitch_subframes = dec.pitch_subframes
        self.sampling_rate = config.sampling_rate
        if self.pitch_subframes:
            out = nn.Conv1d(PITCH_HIDDEN, 2 * self.pitch_subframes, kernel_size=1)
            out._init_gain = 0.1  # starts near PITCH_REF_HZ, voicing 0.5
            self.pitch_head = nn.Sequential(
                nn.Conv1d(dim, PITCH_HIDDEN, kernel_size=3, padding=1), nn.GELU(), out
            )
        if dec.head == "istft":
            self.istft = ISTFTHead(
                dec.channels[kept],
                dec.istft_channels,
                dec.istft_layers,
                dec.istft_upsample,
                dec.istft_n_fft,
                dec.istft_hop,
                source=bool(self.pitch_subframes),
            )
        else:
            self.out_conv = DilatedConv1d(dec.channels[-1], 1, dec.out_kernel_size)
            self.out_conv._init_gain = 0.1  # under init_scheme="fan_in": start quiet, not at full scale
        self._receptive_frames = self._compute_receptive_frames(config)
        init_codec_weights(self, config.init_scheme)

    @staticmethod
    def _compute_receptive_frames(config: JepaCodecConfig) -> int:
        """Frames of context on each side that can influence an output sample (for chunked decoding)."""
        dec = config.decoder_config
        # Walk from the output back to the frames, measuring every convolution's span in output samples.
        strides = dec.strides
        if dec.head == "istft":
            # the window of n_fft samples, then the ConvNeXt blocks and the up-sampling (k2) at the head's rate
            strides = dec.strides[: dec.istft_blocks]
            layers = [(dec.istft_n_fft, 1, dec.istft_hop)]
            layers += [(CONVNEXT_KERNEL, 1, 1)] * dec.istft_layers
            layers.append((2, dec.istft_upsample, dec.istft_upsample))
        else:
            layers = [(dec.out_kernel_size, 1, 1)]
        for s in reversed(strides):
            for k in dec.mrf_kernel_sizes:  # widest MRF branch dominates; include all for a safe bound
                for d in dec.mrf_dilations:
                    layers += [(k, d, 1), (k, 1, 1)]
            layers.append((2, s, s))  # transposed conv: each output sample reads 2 inputs, s samples apart
        span = receptive_field(layers)  # in output samples; kernels are centred, so half of it per side
        return math.ceil(span / 2 / dec.hop_length) + 1 + dec.frame_layers * (dec.frame_kernel_size // 2)

    @property
    def receptive_frames(self) -> int:
        return self._receptive_frames

    def frame_features(self, quantized: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """quantized [B, T, D] -> the frame blocks' output [B, D, T] (what the in-projection and the envelope
        head read). `frame_mask` [B, T] (True on valid frames) keeps right padding out of the valid frames'
        features (each clip's features equal those of the clip alone)."""
        if frame_mask is not None and frame_mask.shape != quantized.shape[:2]:
            raise ValueError(
                f"frame_mask must be [B, T] = {list(quantized.shape[:2])}, got {list(frame_mask.shape)}"
            )
        x = quantized.transpose(1, 2).to(self.in_proj.weight.dtype)
        for block in self.frame_blocks:
            x = block(x, frame_mask)
        return x

    def predict_pitch(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features [B, D, T] -> the pitch head's output [B, 2, T * pitch_subframes]: ln(f0 / PITCH_REF_HZ)
        and the voicing logit per sub-frame, in time order."""
        b, _, t = features.shape
        out = self.pitch_head(features).view(b, 2, self.pitch_subframes, t)
        return out.transpose(2, 3).reshape(b, 2, t * self.pitch_subframes)

    @staticmethod
    def pitch_values(pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pitch head's output [B, 2, N] -> (f0 in Hz, clamped to the estimator's range, voicing in [0, 1]),
        each [B, N], without gradients (the source does not train the head; its own loss does)."""
        from .pitch import F0_MAX, F0_MIN, PITCH_REF_HZ

        pitch = pitch.detach().float()
        f0 = (PITCH_REF_HZ * torch.exp(pitch[:, 0])).clamp(F0_MIN, F0_MAX)
        return f0, torch.sigmoid(pitch[:, 1])

    def source(
        self,
        f0: torch.Tensor,
        voiced: torch.Tensor,
        phase0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-sub-frame f0 (Hz) and voicing [B, N] -> the harmonic source [B, N * hop / pitch_subframes]."""
        from .pitch import harmonic_source

        return harmonic_source(
            f0, voiced, self.hop_length // self.pitch_subframes, self.sampling_rate, phase0
        )

    def forward(
        self,
        quantized: torch.Tensor,
        return_envelope: bool = False,
        envelope_override: torch.Tensor | None = None,
        override_rows: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        return_pitch: bool = False,
        pitch_override: tuple[torch.Tensor, torch.Tensor] | None = None,
        pitch_override_rows: torch.Tensor | None = None,
        source_phase0: torch.Tensor | None = None,
    ):
        """quantized [B, T, D] -> audio [B, 1, T * hop] (and, with `return_envelope`, the predicted log-mel
        envelope [B, T, envelope_bands * envelope_subframes], band-major per frame like
        `jepa.spectral_patches`; None when the decoder has none).

        `envelope_override` [B, T, bands * subframes] (stage 2's teacher forcing) is the envelope the waveform
        stack renders instead of the predicted one, for the clips where `override_rows` [B] is True (all clips
        when it is None); the returned envelope is still the prediction. `frame_mask` [B, T]: valid frames, for
        the frame blocks (`frame_features`); the waveform stack's convolutions still read across padding.

        With the pitch path (`pitch_subframes` > 0): `return_pitch` also returns the pitch head's output
        [B, 2, T * pitch_subframes] (`predict_pitch`; None without the path), after the envelope, so the result
        is (audio, envelope, pitch). `pitch_override` (f0 Hz, voicing), each [B, T * pitch_subframes], is what
        the source is made from instead of the prediction, for the clips where `pitch_override_rows` [B] is True
        (all when None): stage 2's teacher forcing, and chunked decoding's whole-clip pitch. `source_phase0` [B]:
        the source's phase at the first sample (`pitch.source_phase`; 0 when None)."""
        if quantized.dim() != 3:
            raise ValueError(f"decoder expects quantized latents [B, T, D], got {list(quantized.shape)}")
        x = self.frame_features(quantized, frame_mask)
        envelope = self.envelope_head(x) if self.envelope_block is not None else None  # [B, M * S, T]
        rendered = envelope
        if envelope_override is not None:
            if envelope is None:
                raise ValueError(
                    "envelope_override needs a decoder with an envelope path (envelope_bands > 0)"
                )
            if envelope_override.shape != (envelope.shape[0], envelope.shape[2], envelope.shape[1]):
                raise ValueError(
                    f"envelope_override must be [B, T, bands * subframes] = "
                    f"{[envelope.shape[0], envelope.shape[2], envelope.shape[1]]}, got {list(envelope_override.shape)}"
                )
            forced = envelope_override.transpose(1, 2).to(envelope.dtype)
            rendered = (
                forced
                if override_rows is None
                else torch.where(override_rows.view(-1, 1, 1), forced, envelope)
            )
        pitch = source = None
        if self.pitch_subframes:
            pitch = self.predict_pitch(x)
            f0, voiced = self.pitch_values(pitch)
            if pitch_override is not None:
                if pitch_override[0].shape != f0.shape or pitch_override[1].shape != f0.shape:
                    raise ValueError(
                        f"pitch_override must be (f0, voicing), each [B, T * pitch_subframes] = {list(f0.shape)}, "
                        f"got {[list(t.shape) for t in pitch_override]}"
                    )
                rows = (
                    torch.ones(f0.shape[0], dtype=torch.bool, device=f0.device)
                    if pitch_override_rows is None
                    else pitch_override_rows.to(f0.device).bool()
                ).view(-1, 1)
                f0 = torch.where(rows, pitch_override[0].to(f0), f0)
                voiced = torch.where(rows, pitch_override[1].to(voiced), voiced)
            source = self.source(f0, voiced, source_phase0)
        elif pitch_override is not None or source_phase0 is not None:
            raise ValueError(
                "pitch_override / source_phase0 need a decoder with a pitch path (pitch_subframes > 0)"
            )
        x = self.in_proj(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.envelope_block:
                b, _, t = rendered.shape
                placed = rendered.reshape(b, self.envelope_bands, self.envelope_subframes, t)
                placed = placed.permute(0, 1, 3, 2).reshape(
                    b, self.envelope_bands, t * self.envelope_subframes
                )
                x = x + self.envelope_in(placed)
        if self.head == "istft":
            audio = self.istft(x, source).clamp(-1.0, 1.0)
        else:
            audio = torch.tanh(self.out_conv(x))
        envelope = None if envelope is None else envelope.transpose(1, 2)
        if return_pitch:
            return audio, envelope, pitch
        if return_envelope:
            return audio, envelope
        return audio
