"""Block-span masking of encoder frames for stage-1 JEPA training (arXiv 2512.07168 §3.5).

Per sample, with T valid frames: n_mask = floor(ratio * T); repeatedly draw a span length
l ~ U{s_min, s_max} and a start ~ U{0, T - l} and mask [start, start + l) until the counter reaches
n_mask. The paper adds every span's length to the counter even when spans overlap, so the true masked
fraction can fall below `ratio`; `exact_ratio=True` counts newly masked frames instead. Defaults follow the
paper: ratio 0.5, s_min = 2, s_max = max(4, T // 4).

Options beyond the paper (off by default): spans given in milliseconds (converted with the frame rate),
and an A-JEPA-style curriculum that starts from random single-frame masking and grows the spans linearly
to their full size over `curriculum_steps`. At least one frame of each sample stays visible and padding
(frame_mask == False) is never masked. Randomness comes from an explicit `torch.Generator`, so a trainer
that seeds it from (seed, step, rank) gets masks that are reproducible across resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class MaskingConfig:
    """Block-span masking settings.

    Args:
        ratio (`float`, defaults to 0.5): Target fraction of valid frames to mask.
        min_span (`int`, defaults to 2): Shortest span in frames.
        max_span (`int`, *optional*): Longest span in frames; None = max(4, T // 4) per sample.
        min_span_ms (`float`, *optional*): Shortest span in milliseconds (overrides `min_span`).
        max_span_ms (`float`, *optional*): Longest span in milliseconds (overrides `max_span`).
        exact_ratio (`bool`, defaults to False): Count newly masked frames rather than span lengths.
        curriculum_steps (`int`, defaults to 0): Steps over which spans grow from 1 frame to full size
            (0 = no curriculum).
    """

    ratio: float = 0.5
    min_span: int = 2
    max_span: int | None = None
    min_span_ms: float | None = None
    max_span_ms: float | None = None
    exact_ratio: bool = False
    curriculum_steps: int = 0

    def __post_init__(self):
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"masking ratio must be in (0, 1), got {self.ratio}")
        if self.min_span < 1:
            raise ValueError(f"min_span must be >= 1 frame, got {self.min_span}")
        if self.max_span is not None and self.max_span < self.min_span:
            raise ValueError(f"max_span ({self.max_span}) must be >= min_span ({self.min_span})")
        for name in ("min_span_ms", "max_span_ms"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.curriculum_steps < 0:
            raise ValueError(f"curriculum_steps must be >= 0, got {self.curriculum_steps}")

    def span_range(self, num_frames: int, frame_rate: float, step: int = 0) -> tuple[int, int]:
        """(s_min, s_max) in frames for a sample of `num_frames` valid frames at training `step`."""
        lo = self.min_span
        hi = self.max_span if self.max_span is not None else max(4, num_frames // 4)
        if self.min_span_ms is not None:
            lo = max(1, round(self.min_span_ms * frame_rate / 1000.0))
        if self.max_span_ms is not None:
            hi = max(1, round(self.max_span_ms * frame_rate / 1000.0))
        hi = max(lo, hi)
        if self.curriculum_steps > 0:
            progress = min(1.0, step / self.curriculum_steps)
            lo = 1 + round(progress * (lo - 1))
            hi = max(lo, 1 + round(progress * (hi - 1)))
        return lo, hi


def _mask_one(
    num_frames: int, ratio: float, lo: int, hi: int, exact: bool, gen: torch.Generator
) -> torch.Tensor:
    """Mask [num_frames] bool (True = masked) for one sample of `num_frames` valid frames."""
    mask = torch.zeros(num_frames, dtype=torch.bool)
    if num_frames < 2:
        return mask  # nothing can be masked while keeping a visible frame
    n_mask = min(max(1, math.floor(ratio * num_frames)), num_frames - 1)
    hi = min(hi, num_frames - 1)
    lo = min(lo, hi)
    counted = 0
    for _ in range(64 * num_frames):  # bounded: each draw masks >= 1 frame
        if counted >= n_mask:
            break
        span = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        start = int(torch.randint(0, num_frames - span + 1, (1,), generator=gen))
        mask[start : start + span] = True
        counted = int(mask.sum()) if exact else counted + span
    if bool(mask.all()):  # keep a context frame: unmask one masked frame at random
        mask[int(torch.randint(0, num_frames, (1,), generator=gen))] = False
    return mask


def block_span_mask(
    frame_mask: torch.Tensor,
    config: MaskingConfig | None = None,
    frame_rate: float = 2.5,
    step: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample block-span masks over valid frames.

    Args:
        frame_mask (`Tensor` [B, T] bool): True for valid frames (padding False; assumed right-padded).
        config (`MaskingConfig`, *optional*): Settings; defaults to the paper's.
        frame_rate (`float`, defaults to 2.5): Frames per second (for spans in milliseconds).
        step (`int`, defaults to 0): Training step (for the curriculum).
        generator (`torch.Generator`, *optional*): CPU random generator.

    Returns:
        `Tensor` [B, T] bool, True where the frame is replaced by the mask token (never on padding).
    """
    if frame_mask.dim() != 2:
        raise ValueError(f"frame_mask must be [B, T], got shape {tuple(frame_mask.shape)}")
    config = config or MaskingConfig()
    valid = frame_mask.detach().to("cpu", torch.bool)
    out = torch.zeros_like(valid)
    for b in range(valid.shape[0]):
        idx = torch.nonzero(valid[b]).flatten()
        n = int(idx.numel())
        if n == 0:
            continue
        lo, hi = config.span_range(n, frame_rate, step)
        m = _mask_one(n, config.ratio, lo, hi, config.exact_ratio, generator or torch.default_generator)
        out[b, idx] = m
    return out.to(frame_mask.device)
