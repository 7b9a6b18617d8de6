"""Rate metrics of a token codec: codebook usage and entropy per token slot, real-time factors.

Codes are `[T, G]` integer arrays (G token slots per frame, slot g taking values 0..slot_sizes[g]-1).
Usage is the fraction of a slot's values seen at least once; entropy is the empirical entropy of the
slot's values in bits (its maximum is log2(slot_size)); the entropy bitrate is sum_g entropy_g * frame
rate, a bound an entropy coder could approach on this data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class SlotStatistics:
    """Per-slot token statistics over an evaluation set."""

    slot_sizes: list[int]  # [G] values per slot
    counts: list[np.ndarray]  # G arrays, counts[g]: [slot_sizes[g]] occurrences per value
    usage: list[float]  # [G] fraction of values used
    entropy_bits: list[float]  # [G] empirical entropy (bits)
    frames: int  # frames counted

    @property
    def mean_usage(self) -> float:
        return float(np.mean(self.usage))

    @property
    def mean_entropy_bits(self) -> float:
        return float(np.mean(self.entropy_bits))

    def entropy_bitrate(self, frame_rate: float) -> float:
        """Bits/s an ideal per-slot entropy coder would need at `frame_rate`."""
        return float(sum(self.entropy_bits) * frame_rate)

    def to_dict(self, frame_rate: float | None = None) -> dict:
        out = {
            "frames": self.frames,
            "slot_sizes": list(self.slot_sizes),
            "usage": [round(u, 6) for u in self.usage],
            "entropy_bits": [round(e, 6) for e in self.entropy_bits],
            "max_entropy_bits": [round(math.log2(s), 6) for s in self.slot_sizes],
        }
        if frame_rate is not None:
            out["entropy_bitrate"] = self.entropy_bitrate(frame_rate)
        return out


def slot_statistics(codes: list[np.ndarray], slot_sizes: list[int]) -> SlotStatistics:
    """Count token values per slot over clips.

    Args:
        codes: list of [T_i, G] integer arrays.
        slot_sizes: [G] number of values of each slot.
    """
    if not slot_sizes:
        raise ValueError("slot_sizes is empty; expected one size per token slot")
    g = len(slot_sizes)
    counts = [np.zeros(int(s), dtype=np.int64) for s in slot_sizes]
    frames = 0
    for i, c in enumerate(codes):
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[1] != g:
            raise ValueError(f"codes[{i}] has shape {c.shape}; expected [T, {g}]")
        for j in range(g):
            col = c[:, j].astype(np.int64)
            if col.size and (col.min() < 0 or col.max() >= slot_sizes[j]):
                raise ValueError(f"codes[{i}] slot {j} has values outside 0..{slot_sizes[j] - 1}")
            counts[j] += np.bincount(col, minlength=slot_sizes[j])
        frames += c.shape[0]
    usage, entropy = [], []
    for cnt in counts:
        total = cnt.sum()
        usage.append(float((cnt > 0).mean()))
        if total == 0:
            entropy.append(0.0)
            continue
        p = cnt[cnt > 0] / total
        entropy.append(float(-(p * np.log2(p)).sum()))
    return SlotStatistics(list(map(int, slot_sizes)), counts, usage, entropy, frames)
