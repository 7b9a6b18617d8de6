"""Macaron Conformer block of the JEPA encoder and predictor (arXiv 2512.07168 Sec. 2; Conformer arXiv 2005.08100).

Order (authors' code): x += 1/2 FFN(x); x += MHSA(LN(x)); x += ConvModule(x); x += 1/2 FFN(x); LN.
No positional encoding: position enters only through the depthwise convolution.

Padding-aware (our deliberate fix): attention uses a key-padding mask, the convolution module's GroupNorm(1, d)
statistics are taken over valid frames only, the depthwise convolution reads zeros outside the valid frames,
and padded frames are re-zeroed at the block output. A clip alone and the same clip inside a right-padded batch
therefore get the same output on their valid frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedGroupNorm(nn.Module):
    """GroupNorm(1, C) whose mean / variance run over channels x *valid* frames only.

    Same parameters (`weight`, `bias` of size C) as `nn.GroupNorm(1, C)`, and identical to it without a mask.

    Args:
        channels (`int`): Number of channels C.
        eps (`float`): Added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T], mask [B, 1, T] (float, 1 = valid) or None."""
        if mask is None:
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        # Statistics in at least fp32 (as F.group_norm does under autocast).
        dtype = torch.promote_types(x.dtype, torch.float32)
        x32, m32 = x.to(dtype), mask.to(dtype)
        count = (m32.sum(dim=(1, 2), keepdim=True) * x.shape[1]).clamp_min(1.0)  # [B, 1, 1]
        mean = (x32 * m32).sum(dim=(1, 2), keepdim=True) / count
        var = ((x32 - mean).pow(2) * m32).sum(dim=(1, 2), keepdim=True) / count
        y = (x32 - mean) * torch.rsqrt(var + self.eps)
        y = y * self.weight.to(dtype).view(1, -1, 1) + self.bias.to(dtype).view(1, -1, 1)
        return (y * m32).to(x.dtype)


class FeedForward(nn.Module):
    """LayerNorm -> Linear(d, m*d) -> GELU -> Dropout -> Linear(m*d, d) -> Dropout."""

    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult)
        self.fc2 = nn.Linear(dim * mult, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))


class SelfAttention(nn.Module):
    """LayerNorm -> fused qkv -> scaled_dot_product_attention (key-padding mask) -> out projection."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"attention width {dim} must be divisible by the number of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D]; key_mask [B, T] bool (True = valid key) or None."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None
        if key_mask is not None:
            # A clip with no valid frame would make every score -inf (NaN); let it attend everywhere, its
            # output is zeroed by the caller anyway.
            empty = ~key_mask.any(dim=1, keepdim=True)  # [B, 1]
            attn_mask = (key_mask | empty).view(b, 1, 1, t)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class ConvModule(nn.Module):
    """GroupNorm(1, d) -> 1x1 (d -> 2d) -> GLU -> depthwise Conv(k) -> GroupNorm(1, d) -> SiLU -> 1x1 -> Dropout."""

    def __init__(self, dim: int, kernel_size: int, dropout: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"Conformer depthwise kernel must be odd ('same' padding), got {kernel_size}")
        self.norm1 = MaskedGroupNorm(dim)
        self.pointwise1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm2 = MaskedGroupNorm(dim)
        self.pointwise2 = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, D, T], mask [B, 1, T] or None -> [B, D, T]."""
        h = F.glu(self.pointwise1(self.norm1(x, mask)), dim=1)
        if mask is not None:
            h = h * mask  # the depthwise conv must read zeros past the valid frames
        h = F.silu(self.norm2(self.depthwise(h), mask))
        return self.dropout(self.pointwise2(h))


class ConformerBlock(nn.Module):
    """Macaron Conformer block without positional encoding.

    Args:
        dim (`int`): Model width d.
        heads (`int`): Attention heads (d must be divisible by it).
        ff_mult (`int`, defaults to 4): Feed-forward expansion.
        kernel_size (`int`, defaults to 31): Depthwise convolution kernel (odd).
        dropout (`float`, defaults to 0.1): Dropout in FFNs, attention and the conv module.
        final_norm (`bool`, defaults to `True`): End with a per-frame LayerNorm (the authors' block). Without
            it the residual stream keeps each frame's magnitude (see `JepaEncoderConfig.conformer_final_norm`).

    The last layer of each residual branch carries `_init_gain = 0.1` (used by `init_scheme="fan_in"` only):
    branches start small, so the stream stays at the scale of its input.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ff_mult: int = 4,
        kernel_size: int = 31,
        dropout: float = 0.1,
        final_norm: bool = True,
    ):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_mult, dropout)
        self.attn = SelfAttention(dim, heads, dropout)
        self.conv = ConvModule(dim, kernel_size, dropout)
        self.ff2 = FeedForward(dim, ff_mult, dropout)
        self.final_norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        for branch_out in (self.ff1.fc2, self.ff2.fc2, self.attn.out_proj, self.conv.pointwise2):
            branch_out._init_gain = 0.1

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D]; mask [B, T] bool (True = valid frame) or None -> [B, T, D], padded frames zero."""
        conv_mask = None if mask is None else mask.unsqueeze(1).to(x.dtype)  # [B, 1, T]
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.conv(x.transpose(1, 2), conv_mask).transpose(1, 2)
        x = x + 0.5 * self.ff2(x)
        x = self.final_norm(x)
        return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)
