"""JEPA+DAAM waveform encoder (arXiv 2512.07168 Sec. 2, authors' `JEPAEncoder` without predictor).

    Conv1d(1 -> C0, k7)
    per block i: Conv1d(k=2s, stride s, "same") -> Snake -> N x ResBlock(k3, dilations (1, 3^j, 5^j)) -> DAAM gate
    Conv1d(C_last -> latent_dim, k1)                                    (bottleneck)
    M x Conformer(latent_dim)                                           -> latents z [B, T, D]

Deliberate fixes (tested): the input is right-padded to a multiple of the hop, so L samples give exactly
T = ceil(L / hop) frames; a clip's valid region at every resolution is ceil(L / hop) * hop / (strides so far),
and DAAM statistics, normalisation and attention only see valid frames while padded positions are re-zeroed
after every convolution and block. A clip alone and inside a right-padded batch gets the same latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import JepaCodecConfig
from .conformer import ConformerBlock
from .daam import DaamGate, DaamStatistics
from .layers import DilatedConv1d, DownsampleConv1d, ResBlock, Snake, apply_mask, init_codec_weights
from .spectral import spectral_patches_window

PITCH_INPUT_HIDDEN = 256  # width of the encoder's pitch-input MLP


@dataclass
class JepaEncoderOutput:
    latents: torch.Tensor  # [B, T, D] float, zero on padded frames
    frame_mask: torch.Tensor  # [B, T] bool, True on valid frames
    hidden_states: tuple[torch.Tensor, ...] | None = None  # (bottleneck, conformer_1..M), each [B, T, D]


def valid_lengths(padding_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """Valid samples per clip [B] (long): one past the last non-zero of a right-padding mask [B, L]."""
    if padding_mask is None:
        return torch.full((batch,), length, dtype=torch.long, device=device)
    if padding_mask.dim() == 3:
        padding_mask = padding_mask.squeeze(1)
    if padding_mask.shape != (batch, length):
        raise ValueError(f"padding_mask must be [B, L] = {[batch, length]}, got {list(padding_mask.shape)}")
    positions = torch.arange(1, length + 1, device=padding_mask.device)
    return (padding_mask.to(torch.bool) * positions).amax(dim=1).to(device)


def frame_mask_from_lengths(lengths: torch.Tensor, num_frames: int, hop: int) -> torch.Tensor:
    """[B, T] bool: frame t is valid iff t < ceil(length / hop)."""
    frames = torch.div(lengths + hop - 1, hop, rounding_mode="floor")
    return torch.arange(num_frames, device=lengths.device).unsqueeze(0) < frames.unsqueeze(1)


class EncoderBlock(nn.Module):
    """Strided conv -> Snake -> dilated residual stack -> DAAM gate (or identity when DAAM is disabled)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, config: JepaCodecConfig):
        super().__init__()
        enc = config.encoder_config
        self.downsample = DownsampleConv1d(in_ch, out_ch, stride)
        self.snake = Snake(out_ch)
        self.res_blocks = nn.ModuleList(
            ResBlock(out_ch, enc.res_kernel_size, (1, 3**i, 5**i)) for i in range(enc.num_res_blocks)
        )
        self.daam = DaamGate(out_ch, config.daam_config) if config.daam_config.enabled else None

    def pre_gate(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[B, C_in, T] -> [B, C_out, T / s] before the gate; `mask` is the *output* resolution mask."""
        x = self.snake(apply_mask(self.downsample(x), mask))
        for block in self.res_blocks:
            x = block(x, mask)
        return x

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, statistics: DaamStatistics | None = None
    ) -> torch.Tensor:
        x = self.pre_gate(x, mask)
        return x if self.daam is None else self.daam(x, mask, statistics)


class JepaEncoder(nn.Module):
    """The codec's encoder (the stage-1 online/target encoder and the stage-2 frozen encoder).

    Args:
        config (`JepaCodecConfig`): Uses `encoder_config`, `daam_config` and `sampling_rate`.

    Attributes:
        daam_gates (`list[DaamGate]`): The gate of each strided block (empty when DAAM is disabled).
    """

    def __init__(self, config: JepaCodecConfig):
        super().__init__()
        enc = config.encoder_config
        self.hop_length = enc.hop_length
        self.strides = list(enc.strides)
        self.stem = DilatedConv1d(1, enc.channels[0], enc.stem_kernel_size)
        self.blocks = nn.ModuleList(
            EncoderBlock(enc.channels[i], enc.channels[i + 1], s, config) for i, s in enumerate(enc.strides)
        )
        self.bottleneck = nn.Conv1d(enc.channels[-1], enc.latent_dim, kernel_size=1)
        # Under init_scheme="fan_in": the conv stack ends near std 10 for `small`; start z well inside FSQ's tanh.
        self.bottleneck._init_gain = 0.05
        self.conformers = nn.ModuleList(
            ConformerBlock(
                enc.latent_dim,
                enc.conformer_heads,
                enc.conformer_ff_mult,
                enc.conformer_kernel_size,
                enc.dropout,
                enc.conformer_final_norm,
            )
            for _ in range(enc.conformer_layers)
        )
        self.daam_gates = [b.daam for b in self.blocks if b.daam is not None]
        self.sampling_rate = config.sampling_rate
        self.spectral_bands, self.spectral_subframes = enc.spectral_input_bands, enc.spectral_input_subframes
        self.spectral_input = None
        if self.spectral_bands:
            patch, hidden = self.spectral_bands * self.spectral_subframes, enc.spectral_input_hidden
            out = nn.Linear(hidden or patch, enc.latent_dim)
            out._zero_init = True  # added to a trained encoder, it starts as a no-op
            self.spectral_input = nn.Sequential(nn.Linear(patch, hidden), nn.GELU(), out) if hidden else out
        self.pitch_subframes = enc.pitch_input_subframes
        self.pitch_input = None
        if self.pitch_subframes:
            out = nn.Linear(PITCH_INPUT_HIDDEN, enc.latent_dim)
            out._zero_init = True  # added to a trained encoder, it starts as a no-op (the same codes)
            self.pitch_input = nn.Sequential(
                nn.Linear(2 * self.pitch_subframes, PITCH_INPUT_HIDDEN), nn.GELU(), out
            )
        init_codec_weights(self, config.init_scheme)

    # --- helpers shared with chunked encoding ------------------------------------------------------
    def pad_input(
        self, input_values: torch.Tensor, padding_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 1, L] or [B, L] -> (zero-padded [B, 1, T * hop], frames per clip [B] long)."""
        if input_values.dim() == 2:
            input_values = input_values.unsqueeze(1)
        if input_values.dim() != 3 or input_values.shape[1] != 1:
            raise ValueError(
                f"input_values must be [B, 1, L] or [B, L] mono audio, got {list(input_values.shape)}"
            )
        b, _, length = input_values.shape
        if length == 0:
            raise ValueError("input_values has no samples (L = 0)")
        lengths = valid_lengths(padding_mask, b, length, input_values.device)
        if padding_mask is not None:
            pm = padding_mask.squeeze(1) if padding_mask.dim() == 3 else padding_mask
            input_values = input_values * pm.to(input_values.dtype).unsqueeze(1)
        frames = math.ceil(length / self.hop_length)
        x = F.pad(input_values, (0, frames * self.hop_length - length))
        num_valid = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")
        return x, num_valid

    def level_masks(self, num_valid: torch.Tensor, frames: int) -> list[torch.Tensor | None]:
        """Masks [B, 1, T_j] at the input and after each block; None where every clip is fully valid."""
        if bool((num_valid == frames).all()):
            return [None] * (len(self.strides) + 1)
        masks, factor = [], self.hop_length
        for j in range(len(self.strides) + 1):
            valid = num_valid * factor  # valid positions at resolution j
            length = frames * factor
            masks.append((torch.arange(length, device=num_valid.device) < valid.unsqueeze(1)).unsqueeze(1))
            if j < len(self.strides):
                factor //= self.strides[j]
        return masks

    def spectral_patches(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor | None:
        """The spectral input's log-mel patches [B, stop - start, P] of frames `start`..`stop` of the padded input
        x [B, 1, T * hop] (None when the encoder has no spectral input)."""
        if self.spectral_input is None:
            return None
        return spectral_patches_window(
            x[:, 0],
            start,
            stop,
            self.hop_length,
            self.sampling_rate,
            self.spectral_bands,
            self.spectral_subframes,
        )

    def pitch_features(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor | None:
        """The pitch input's features [B, stop - start, 2 x pitch_input_subframes] of frames `start`..`stop` of the
        padded input x [B, 1, T * hop] (None when the encoder has no pitch input)."""
        if self.pitch_input is None:
            return None
        from .pitch import pitch_features_window

        return pitch_features_window(
            x[:, 0], start, stop, self.hop_length, self.sampling_rate, self.pitch_subframes
        )

    def spectral_term(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor | None:
        """The contribution [B, stop - start, D] of the spectral input and the pitch input (each when present) to
        those bottleneck frames (None with neither); both are frame-local, so any window of frames equals the
        same frames of the whole clip."""
        patches = self.spectral_patches(x, start, stop)
        pitch = self.pitch_features(x, start, stop)
        if patches is None and pitch is None:
            return None
        with torch.autocast(device_type=x.device.type, enabled=False):
            total = None if patches is None else self.spectral_input(patches)
            if pitch is not None:
                term = self.pitch_input(pitch)
                total = term if total is None else total + term
            return total.to(x.dtype)

    def conformer_stack(
        self, z: torch.Tensor, frame_mask: torch.Tensor | None, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Bottleneck output z [B, T, D] -> Conformer output [B, T, D] (and the hidden states)."""
        hidden = [z] if output_hidden_states else None
        for layer in self.conformers:
            z = layer(z, frame_mask)
            if hidden is not None:
                hidden.append(z)
        return z, (tuple(hidden) if hidden is not None else None)

    # --- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> JepaEncoderOutput:
        """Encode audio.

        Args:
            input_values (`torch.Tensor` [B, 1, L] or [B, L]): Mono audio at the codec's sampling rate.
            padding_mask (`torch.Tensor` [B, L], *optional*): 1 on real samples, 0 on right padding.
            output_hidden_states (`bool`): Also return the bottleneck and every Conformer output.
        """
        x, num_valid = self.pad_input(input_values, padding_mask)
        frames = x.shape[-1] // self.hop_length
        masks = self.level_masks(num_valid, frames)
        fmasks = [None if m is None else m.to(x.dtype) for m in masks]
        padded = x
        x = apply_mask(self.stem(x), fmasks[0])
        for j, block in enumerate(self.blocks):
            x = block(x, fmasks[j + 1])
        z = self.bottleneck(x)
        spectral = self.spectral_term(padded, 0, frames)
        if spectral is not None:
            z = z + spectral.transpose(1, 2)
        z = apply_mask(z, fmasks[-1]).transpose(1, 2)  # [B, T, D]
        frame_mask = torch.arange(frames, device=x.device).unsqueeze(0) < num_valid.unsqueeze(1)  # [B, T]
        attn_mask = None if masks[-1] is None else frame_mask
        z, hidden = self.conformer_stack(z, attn_mask, output_hidden_states)
        return JepaEncoderOutput(latents=z, frame_mask=frame_mask, hidden_states=hidden)
