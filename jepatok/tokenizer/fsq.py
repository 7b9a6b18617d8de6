"""Finite Scalar Quantization (arXiv 2309.15505) as used by the JEPA tokenizer (arXiv 2512.07168).

Each latent dimension d is bounded with tanh and snapped to the nearest of L_d evenly spaced values
{(2i + 1) / L_d - 1 : i = 0..L_d-1} (for L = 4: -0.75, -0.25, 0.25, 0.75). Gradients pass straight
through the rounding (and through tanh). Quantization always runs in fp32, even under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def indices_to_codes(indices: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """FSQ indices [..., D] -> grid values [..., D] in (-1, 1) (float32)."""
    lv = levels.to(device=indices.device, dtype=torch.float32)
    return (2.0 * indices.float() + 1.0) / lv - 1.0


def codes_to_indices(codes: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Grid values (or any value in [-1, 1]) [..., D] -> nearest FSQ indices [..., D] (long)."""
    lv = levels.to(device=codes.device, dtype=torch.float32)
    idx = torch.round((codes.float() + 1.0) * lv / 2.0 - 0.5)
    return torch.minimum(idx.clamp_min(0), lv - 1).long()


@dataclass
class FsqOutput:
    quantized: torch.Tensor  # [..., D] float32 grid values, straight-through gradient to the input
    indices: torch.Tensor  # [..., D] long, 0 <= i_d < levels[d]


class FiniteScalarQuantizer(nn.Module):
    """Stateless quantizer; `levels` is a non-persistent buffer derived from the config."""

    def __init__(self, levels: Sequence[int]):
        super().__init__()
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.long), persistent=False)

    @property
    def dim(self) -> int:
        return int(self.levels.numel())

    def forward(self, z: torch.Tensor) -> FsqOutput:
        """z [..., D] (any dtype) -> quantized values and indices; computed in fp32."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expects last dimension {self.dim}, got {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            bounded = torch.tanh(z.float())
            indices = codes_to_indices(bounded.detach(), self.levels)
            grid = indices_to_codes(indices, self.levels)
            quantized = bounded + (grid - bounded).detach()  # straight-through estimator
        return FsqOutput(quantized=quantized, indices=indices)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        return indices_to_codes(indices, self.levels)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        return codes_to_indices(codes, self.levels)
