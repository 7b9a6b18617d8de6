"""Mixed-radix packing of FSQ indices into LM tokens (arXiv 2512.07168, Sec. "token packing").

Each frame's D quantizer indices are split into groups of `group_size` consecutive dimensions; a group
becomes one integer token, little-endian (the first dimension of a group is the least significant
digit), as in the authors' code and the FSQ paper's codes-to-index convention. With 128 dims of 4
levels and groups of 7 that is 19 tokens per frame, values < 4**7 = 16384, the 19th slot < 16.

`pack` and `unpack` are pure, vectorised and exact inverses of each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _layout(levels: Sequence[int], group_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(padded levels [G, g], little-endian place values [G, g], number of groups G)."""
    if group_size <= 0:
        raise ValueError(f"group_size must be a positive integer, got {group_size}")
    dim = len(levels)
    groups = math.ceil(dim / group_size)
    padded = list(levels) + [1] * (groups * group_size - dim)  # radix-1 padding carries no information
    lv = torch.tensor(padded, dtype=torch.long).view(groups, group_size)
    basis = torch.cumprod(torch.cat([torch.ones(groups, 1, dtype=torch.long), lv[:, :-1]], dim=1), dim=1)
    return lv, basis, groups


def slot_sizes(levels: Sequence[int], group_size: int) -> list[int]:
    """Number of values each token slot can take."""
    lv, _, _ = _layout(levels, group_size)
    return lv.prod(dim=1).tolist()


def pack(indices: torch.Tensor, levels: Sequence[int], group_size: int = 7) -> torch.Tensor:
    """FSQ indices [..., D] (0 <= i_d < levels[d]) -> packed tokens [..., ceil(D / group_size)] (long)."""
    dim = len(levels)
    if indices.shape[-1] != dim:
        raise ValueError(
            f"pack expects indices with last dimension {dim} (one per level), got {tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point:
        raise ValueError(f"pack expects integer indices, got dtype {indices.dtype}")
    lv, basis, groups = _layout(levels, group_size)
    lv, basis = lv.to(indices.device), basis.to(indices.device)
    idx = indices.long()
    flat_levels = lv.flatten()[:dim]
    if idx.numel() and (bool((idx < 0).any()) or bool((idx >= flat_levels).any())):
        bad = idx[(idx < 0) | (idx >= flat_levels)][0].item()
        raise ValueError(f"FSQ index {bad} is out of range for levels {list(levels)[:8]}...")
    pad = groups * group_size - dim
    if pad:
        idx = torch.nn.functional.pad(idx, (0, pad))
    idx = idx.view(*idx.shape[:-1], groups, group_size)  # [..., G, g]
    return (idx * basis).sum(dim=-1)


def unpack(tokens: torch.Tensor, levels: Sequence[int], group_size: int = 7) -> torch.Tensor:
    """Packed tokens [..., G] -> FSQ indices [..., D]; the exact inverse of `pack`."""
    dim = len(levels)
    lv, basis, groups = _layout(levels, group_size)
    if tokens.shape[-1] != groups:
        raise ValueError(
            f"unpack expects {groups} tokens per frame (ceil({dim}/{group_size})), got last dimension {tokens.shape[-1]}"
        )
    if tokens.dtype.is_floating_point:
        raise ValueError(f"unpack expects integer tokens, got dtype {tokens.dtype}")
    lv, basis = lv.to(tokens.device), basis.to(tokens.device)
    tok = tokens.long()
    sizes = lv.prod(dim=1)
    if tok.numel() and (bool((tok < 0).any()) or bool((tok >= sizes).any())):
        where = ((tok < 0) | (tok >= sizes)).nonzero()[0]
        slot = int(where[-1])
        raise ValueError(
            f"token value {int(tok[tuple(where)])} in slot {slot} is out of range; slot {slot} holds 0..{int(sizes[slot]) - 1}"
        )
    idx = (tok.unsqueeze(-1) // basis) % lv  # [..., G, g]
    return idx.flatten(start_dim=-2)[..., :dim]
