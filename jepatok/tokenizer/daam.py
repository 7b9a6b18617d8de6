"""Density-Adaptive Attention (DAAM) gate of the JEPA encoder (arXiv 2512.07168 Sec. 2; arXiv 2401.11143).

Per block: a = Conv1d(C -> 1, k=1)(x); mu, sigma^2 = mean / biased variance of a over the *valid* frames of
each clip (variance clamped >= var_floor); K Gaussians with learnable offsets delta_k (init 0) and scales
s_k = softplus(nu_k) + 1e-3 (nu_k init log 0.5):

    log p_k(t) = -1/2 ((a_t - mu - delta_k) / (sigma * s_k + 1e-8))^2 - log s_k - 1/2 log(2 pi)
    G_t = exp(logsumexp_k log p_k(t) - log K)
    y = x * (1 + alpha * G_t)              (alpha learnable, init 0.05; G broadcast over channels)

computed in fp32 with autocast off. Restricting the statistics to valid frames is one of our deliberate fixes:
padding a clip inside a batch must not change its gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import DaamConfig


@dataclass
class DaamStatistics:
    """Sufficient statistics of the gate projection over valid frames (summable across chunks)."""

    total: torch.Tensor  # [B] float64, sum of a over valid frames
    total_sq: torch.Tensor  # [B] float64, sum of a^2 over valid frames
    count: torch.Tensor  # [B] float64, number of valid frames

    def __add__(self, other: DaamStatistics) -> DaamStatistics:
        return DaamStatistics(
            self.total + other.total, self.total_sq + other.total_sq, self.count + other.count
        )

    def mean_var(self, var_floor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu [B, 1, 1], var [B, 1, 1]) in float32; clips with no valid frame get mu 0, var = floor."""
        count = self.count.clamp_min(1.0)
        mu = self.total / count
        var = (self.total_sq / count - mu * mu).clamp_min(var_floor)
        return mu.float().view(-1, 1, 1), var.float().view(-1, 1, 1)


class DaamGate(nn.Module):
    """Gaussian-mixture temporal gate y = x * (1 + alpha * G(a)).

    Args:
        channels (`int`): Width of the gated features.
        config (`DaamConfig`): Number of Gaussians, alpha / scale initial values, variance floor.
    """

    def __init__(self, channels: int, config: DaamConfig):
        super().__init__()
        self.num_gaussians = config.num_gaussians
        self.alpha_init = float(config.alpha_init)
        self.scale_init = float(config.scale_init)
        self.var_floor = float(config.var_floor)
        self.proj = nn.Conv1d(channels, 1, kernel_size=1)
        self.offsets = nn.Parameter(torch.zeros(self.num_gaussians))  # delta_k
        self.log_scales = nn.Parameter(torch.full((self.num_gaussians,), math.log(self.scale_init)))  # nu_k
        self.alpha = nn.Parameter(torch.tensor(self.alpha_init))

    def reset_gate_parameters(self) -> None:
        with torch.no_grad():
            self.offsets.zero_()
            self.log_scales.fill_(math.log(self.scale_init))
            self.alpha.fill_(self.alpha_init)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> a [B, 1, T] (fp32)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.proj(x.to(self.proj.weight.dtype)).float()

    @staticmethod
    def statistics(a: torch.Tensor, mask: torch.Tensor | None) -> DaamStatistics:
        """Sums of a and a^2 over valid frames: a [B, 1, T], mask [B, 1, T] or None."""
        a64 = a.double()
        if mask is None:
            count = torch.full((a.shape[0],), float(a.shape[-1]), dtype=torch.float64, device=a.device)
            return DaamStatistics(a64.sum(dim=(1, 2)), a64.pow(2).sum(dim=(1, 2)), count)
        m = mask.double()
        return DaamStatistics((a64 * m).sum(dim=(1, 2)), (a64.pow(2) * m).sum(dim=(1, 2)), m.sum(dim=(1, 2)))

    def gate(self, a: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Mixture density G [B, 1, T] (fp32) of a [B, 1, T] given per-clip mu, var [B, 1, 1]."""
        with torch.autocast(device_type=a.device.type, enabled=False):
            sigma = var.float().sqrt()
            scales = (F.softplus(self.log_scales.float()) + 1e-3).view(1, -1, 1)  # [1, K, 1]
            offsets = self.offsets.float().view(1, -1, 1)
            z = (a.float() - (mu.float() + offsets)) / (sigma * scales + 1e-8)  # [B, K, T]
            log_p = -0.5 * z.pow(2) - scales.log() - 0.5 * math.log(2 * math.pi)
            log_g = torch.logsumexp(log_p, dim=1, keepdim=True) - math.log(self.num_gaussians)
            return log_g.exp()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        statistics: DaamStatistics | None = None,
    ) -> torch.Tensor:
        """Gate x [B, C, T]; statistics over the valid frames of `mask`, or the given (e.g. whole-file) ones."""
        a = self.project(x)
        if statistics is None:
            statistics = self.statistics(a, mask)
        mu, var = statistics.mean_var(self.var_floor)
        g = self.gate(a, mu.to(a.device), var.to(a.device))
        y = x * (1.0 + self.alpha.to(x.dtype) * g.to(x.dtype))
        return y if mask is None else y * mask
