"""Convolutional building blocks of the JEPA codec (arXiv 2512.07168, Sec. 3.2 and 4.5).

Snake activation, "same"-padded strided / transposed convolutions (L samples <-> L / stride frames exactly),
the encoder's dilated residual block, and the decoder's HiFi-GAN ResBlock1 / MRF (arXiv 2010.05646).

Padding convention used by every module here: a `mask` [B, 1, T] (float, 1 = valid frame) or `None` when
every frame is valid. Each convolution's output is multiplied by the mask, so the next convolution only ever
reads zeros outside the valid region, exactly what it reads (zero padding) when the clip is encoded alone.
LeakyReLU and Snake map 0 to 0, so masking after each convolution keeps padded positions at zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero padded frames: x [B, C, T] * mask [B, 1, T]; identity when `mask` is None."""
    return x if mask is None else x * mask


class Snake(nn.Module):
    """Snake activation y = x + (1 / alpha) * sin^2(alpha * x), alpha = softplus(raw) + 0.01 per channel.

    1/alpha is clamped to <= 10 (as in the authors' code). raw starts at 0 (alpha ~= 0.703).

    Args:
        channels (`int`): Number of channels (one alpha per channel).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.raw_alpha = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, C, T]
        alpha = (F.softplus(self.raw_alpha) + 0.01).view(1, -1, 1)
        inv_alpha = alpha.reciprocal().clamp(max=10.0)
        return x + inv_alpha * torch.sin(alpha * x).pow(2)


class DilatedConv1d(nn.Conv1d):
    """Odd-kernel stride-1 Conv1d with "same" padding that skips taps which can only read zero padding.

    When dilation >= T, every tap but the centre one falls outside [0, T) for every output position, so the
    convolution is exactly a 1x1 convolution with the centre tap (paper-notes Sec. 3.2): the paper encoder's
    dilations reach 5^7 = 78125 frames, far longer than any sequence at the coarse resolutions.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        if kernel_size % 2 == 0:
            raise ValueError(f"DilatedConv1d needs an odd kernel for 'same' padding, got {kernel_size}")
        super().__init__(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C_out, T]
        k = self.kernel_size[0]
        if k > 1 and self.dilation[0] >= x.shape[-1]:
            centre = self.weight[:, :, k // 2 : k // 2 + 1].contiguous()
            return F.conv1d(x, centre, self.bias)
        return super().forward(x)


class DownsampleConv1d(nn.Conv1d):
    """Conv1d(kernel 2s, stride s) with asymmetric "same" padding: T frames (a multiple of s) -> T / s frames.

    The reference pads s // 2 on both sides, which loses a frame for odd strides; here the total padding is
    exactly s (left s // 2, right s - s // 2).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, kernel_size=2 * stride, stride=stride)
        self.pad = (stride // 2, stride - stride // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C_out, T // s]
        return super().forward(F.pad(x, self.pad))


class UpsampleConvTranspose1d(nn.ConvTranspose1d):
    """ConvTranspose1d(kernel 2s, stride s) cropped to exactly T * s samples (mirror of `DownsampleConv1d`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, kernel_size=2 * stride, stride=stride)
        self.crop = stride // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C_out, T * s]
        y = super().forward(x)  # [B, C_out, (T + 1) * s]
        s = self.stride[0]
        return y[..., self.crop : self.crop + x.shape[-1] * s]


class ResBlock(nn.Module):
    """Residual block (encoder stack and HiFi-GAN ResBlock1): for each dilation d, x += Conv(k, 1)(LReLU(Conv(k, d)(LReLU(x)))).

    Args:
        channels (`int`): Width.
        kernel_size (`int`): Odd kernel of both convolutions.
        dilations (`tuple[int, ...]`): Dilation of the first convolution of each unit, e.g. (1, 3^i, 5^i).
    """

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(DilatedConv1d(channels, channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(DilatedConv1d(channels, channels, kernel_size, 1) for _ in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            h = apply_mask(c1(F.leaky_relu(x, 0.1)), mask)
            x = x + apply_mask(c2(F.leaky_relu(h, 0.1)), mask)
        return x


class MultiReceptiveField(nn.Module):
    """HiFi-GAN MRF: the average of ResBlock1s with different kernels, each over the same dilations.

    Args:
        channels (`int`): Width.
        kernel_sizes (`list[int]`): One ResBlock1 per kernel (3, 7, 11 in the paper).
        dilations (`list[int]`): Dilations inside each ResBlock1 (1, 3, 5 in the paper).
    """

    def __init__(self, channels: int, kernel_sizes: list[int], dilations: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, k, tuple(dilations)) for k in kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        out = self.blocks[0](x)
        for block in self.blocks[1:]:
            out = out + block(x)
        return out / len(self.blocks)


def receptive_field(layers: list[tuple[int, int, int]]) -> int:
    """Receptive field (in input samples) of a chain of (kernel, dilation, stride) convolutions."""
    rf, jump = 1, 1
    for kernel, dilation, stride in layers:
        rf += (kernel - 1) * dilation * jump
        jump *= stride
    return rf


INIT_SCHEMES = ("authors", "fan_in")


def conv_fan_in(module: nn.Module) -> int:
    """Inputs summed into one output of a Conv1d / ConvTranspose1d / Linear (per output sample)."""
    w = module.weight
    if isinstance(module, nn.ConvTranspose1d):  # weight [C_in, C_out, k]; each output reads k / stride taps
        return max(1, w.shape[0] * w.shape[2] // module.stride[0])
    if isinstance(module, nn.Conv1d):  # weight [C_out, C_in / groups, k]
        return w.shape[1] * w.shape[2]
    return w.shape[1]  # Linear [out, in]


def init_weight_std(module: nn.Module, scheme: str = "authors", std: float = 0.02) -> float:
    """Std of the trunc_normal initialisation of one Conv1d / ConvTranspose1d / Linear weight.

    `scheme="authors"`: std = `std` (0.02, the authors' code). `scheme="fan_in"`: std = 1 / sqrt(fan_in),
    which keeps the signal's scale through the stack; the authors' fixed 0.02 shrinks it by
    0.02 * sqrt(fan_in) per layer, so narrow stacks (the `tiny`/`small` presets) start with a latent that
    carries no information about the input (bottleneck std ~6e-5 for `small`). A module with a
    `_init_gain` attribute (the decoder's last convolution) has its std multiplied by it under `fan_in`.
    """
    if scheme == "fan_in":
        return getattr(module, "_init_gain", 1.0) / math.sqrt(conv_fan_in(module))
    if scheme != "authors":
        raise ValueError(f"unknown init_scheme {scheme!r}; choose one of {INIT_SCHEMES}")
    return std


def init_codec_weights(module: nn.Module, scheme: str = "authors", std: float = 0.02) -> None:
    """trunc_normal(`init_weight_std`) weights and zero biases for every conv / linear layer of `module`
    (zero weights for a layer marked `_zero_init`: a branch added to a trained model starts as a no-op)."""
    for m in module.modules():
        if getattr(m, "_zero_init", False):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=init_weight_std(m, scheme, std))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
