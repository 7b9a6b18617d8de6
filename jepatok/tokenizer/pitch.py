"""Frame-synchronous pitch (F0) and voicing from audio, in torch: the pitch path's target and its measure.

Each analysis frame is `hop` samples, centred on the hop it describes, read through a Hann window twice as long.
Its normalised autocorrelation (the windowed signal's, divided by the window's own, so a periodic signal peaks
near 1 at its period) is searched over the lags of `f0_min`..`f0_max`: the period is the shortest-lag local peak
within 10 % of the strongest one (a periodic signal peaks again at every multiple of its period), refined by a
parabola.
A frame is voiced when the peak clears `threshold` and the frame is not silent.

    f0, voiced, strength = estimate_pitch(audio [B, L], sampling_rate, hop)   # each [B, L // hop]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

F0_MIN, F0_MAX = 50.0, 500.0


def _frames(audio: torch.Tensor, hop: int, win: int) -> torch.Tensor:
    """audio [B, L] (L a multiple of hop) -> frames [B, L // hop, win], frame i centred on hop i's centre."""
    pad = (win - hop) // 2
    x = F.pad(audio, (pad, win - hop - pad))
    return x.unfold(-1, win, hop)


@torch.no_grad()
def estimate_pitch(
    audio: torch.Tensor,
    sampling_rate: int,
    hop: int,
    f0_min: float = F0_MIN,
    f0_max: float = F0_MAX,
    threshold: float = 0.45,
    silence_db: float = -50.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """audio [B, L] or [L] -> (f0 Hz, voiced bool, peak strength in [0, 1]), each [B, L // hop] (or [L // hop]).

    `f0` is the estimate on every frame (on unvoiced ones it is the best lag's, meaningless); frames whose RMS is
    `silence_db` below the clip's loudest frame are unvoiced. L is cut to a multiple of `hop`.
    """
    if audio.dim() not in (1, 2):
        raise ValueError(f"estimate_pitch expects audio [L] or [B, L], got shape {list(audio.shape)}")
    if not 0 < f0_min < f0_max < sampling_rate / 2:
        raise ValueError(
            f"need 0 < f0_min < f0_max < sampling_rate / 2, got {f0_min}, {f0_max}, {sampling_rate}"
        )
    single = audio.dim() == 1
    x = audio.float().reshape(1 if single else audio.shape[0], -1)
    frames = x.shape[-1] // hop
    if frames == 0:
        raise ValueError(f"audio of {x.shape[-1]} samples is shorter than one pitch frame ({hop} samples)")
    x = x[:, : frames * hop]
    lag_min = max(2, int(math.floor(sampling_rate / f0_max)))
    lag_max = int(math.ceil(sampling_rate / f0_min))
    win = max(2 * hop, 2 * lag_max + 2 * hop // 2)
    win += win % 2
    window = torch.hann_window(win, periodic=False, dtype=x.dtype, device=x.device)
    seg = _frames(x, hop, win)
    seg = (seg - seg.mean(-1, keepdim=True)) * window
    n_fft = 1 << (2 * win - 1).bit_length()
    acf = torch.fft.irfft(torch.fft.rfft(seg, n_fft).abs().square(), n_fft)[..., : lag_max + 2]
    wacf = torch.fft.irfft(torch.fft.rfft(window, n_fft).abs().square(), n_fft)[: lag_max + 2]
    norm = acf / (acf[..., :1].clamp_min(1e-12) * (wacf / wacf[0]).clamp_min(1e-3))
    # the shortest-lag local maximum within 10 % of the best one: a periodic signal also peaks at every multiple
    # of its period, often a little higher (the doubling error), and never below it
    search = norm[..., lag_min - 1 : lag_max + 2]
    mid = search[..., 1:-1]
    peak = (mid >= search[..., :-2]) & (mid >= search[..., 2:])
    top = mid.amax(-1, keepdim=True)
    lags = torch.arange(lag_min, lag_max + 1, device=x.device).expand_as(mid)
    candidate = peak & (mid >= 0.9 * top)
    best = torch.where(candidate, lags, lag_max + 1).amin(-1)
    best = torch.where(best > lag_max, mid.argmax(-1) + lag_min, best)  # no interior peak: the largest value
    strength = norm.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    # parabolic refinement of the peak
    left = norm.gather(-1, (best - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    right = norm.gather(-1, (best + 1).clamp(max=lag_max + 1).unsqueeze(-1)).squeeze(-1)
    denom = left - 2 * strength + right
    shift = torch.where(denom.abs() > 1e-9, 0.5 * (left - right) / denom, torch.zeros_like(denom)).clamp(
        -0.5, 0.5
    )
    f0 = sampling_rate / (best.float() + shift)
    rms = seg.square().mean(-1).sqrt()
    loud = 20 * torch.log10(rms.clamp_min(1e-9) / rms.amax(-1, keepdim=True).clamp_min(1e-9)) > silence_db
    voiced = (strength > threshold) & loud & (rms > 1e-4)
    strength = strength.clamp(0.0, 1.0)
    if single:
        return f0[0], voiced[0], strength[0]
    return f0, voiced, strength


def pitch_agreement(ref_audio: torch.Tensor, est_audio: torch.Tensor, sampling_rate: int, hop: int) -> dict:
    """Pitch of an estimate against its reference (1-D, same rate, aligned): on the frames voiced in both, the
    RMS and median absolute error in cents and the gross pitch error rate (off by more than 20 %); the voicing decision error rate on
    all frames; the voiced fraction of each; and the frame counts."""
    n = min(ref_audio.shape[-1], est_audio.shape[-1])
    f_r, v_r, _ = estimate_pitch(ref_audio[..., :n], sampling_rate, hop)
    f_e, v_e, _ = estimate_pitch(est_audio[..., :n], sampling_rate, hop)
    both = v_r & v_e
    cents = 1200 * torch.log2(f_e[both] / f_r[both])
    return {
        "frames": int(v_r.numel()),
        "voiced_both": int(both.sum()),
        "rmse_cents": float(cents.square().mean().sqrt()) if both.any() else float("nan"),
        "gross_error": float((cents.abs() > 1200 * math.log2(1.2)).float().mean())
        if both.any()
        else float("nan"),
        "median_cents": float(cents.abs().median()) if both.any() else float("nan"),
        "voicing_error": float((v_r != v_e).float().mean()),
        "voiced_reference": float(v_r.float().mean()),
        "voiced_estimate": float(v_e.float().mean()),
    }


#: F0 the decoder's pitch head predicts relative to (its output is ln(f0 / PITCH_REF_HZ)).
PITCH_REF_HZ = 150.0


def source_phase(f0: torch.Tensor, sub_hop: int, sampling_rate: int) -> torch.Tensor:
    """Per-sub-frame F0 [B, N] (Hz, constant over each sub-frame of `sub_hop` samples) -> the harmonic source's
    phase at the start of each sub-frame [B, N + 1] (radians, float64, wrapped to [0, 2 pi)): the running sum
    of 2 pi f0 sub_hop / sampling_rate. A decoder that renders part of a clip starts there (chunked decoding)."""
    step = (2 * math.pi * sub_hop / sampling_rate) * f0.double()
    phase = torch.cat([torch.zeros_like(step[:, :1]), torch.cumsum(step, dim=1)], dim=1)
    return torch.remainder(phase, 2 * math.pi)


def harmonic_source(
    f0: torch.Tensor,
    voiced: torch.Tensor,
    sub_hop: int,
    sampling_rate: int,
    phase0: torch.Tensor | None = None,
    max_hz: float | None = None,
) -> torch.Tensor:
    """Band-limited harmonic source: per-sub-frame F0 [B, N] (Hz) and voicing in [0, 1] [B, N] -> audio
    [B, N * sub_hop].

    Inside a sub-frame the F0 is constant and the phase grows linearly from where the last one ended
    (`phase0` [B], radians, where the first one starts; 0 when None), so the source is continuous. Each sample
    is the sum of cos(k phase) over the harmonics k f0 below `max_hz` (0.95 x Nyquist when None), divided by
    the square root of their count (unit power per harmonic group), times the sub-frame's voicing. The sum is
    the closed form sin((K + 1/2) phase) / (2 sin(phase / 2)) - 1/2, so the cost does not grow with K.
    """
    if f0.shape != voiced.shape or f0.dim() != 2:
        raise ValueError(f"f0 and voiced must both be [B, N], got {list(f0.shape)} and {list(voiced.shape)}")
    b, n = f0.shape
    f0d = f0.double().clamp_min(1.0)
    top = 0.95 * sampling_rate / 2 if max_hz is None else max_hz
    starts = source_phase(f0d, sub_hop, sampling_rate)[:, :-1]  # [B, N]
    if phase0 is not None:
        starts = starts + phase0.double().view(b, 1)
    offset = torch.arange(sub_hop, dtype=torch.float64, device=f0.device)  # samples into the sub-frame
    phase = starts.unsqueeze(-1) + (2 * math.pi / sampling_rate) * f0d.unsqueeze(-1) * offset  # [B, N, H]
    phase = torch.remainder(phase, 2 * math.pi)
    count = torch.floor(top / f0d).clamp_min(1.0).unsqueeze(-1)  # harmonics per sub-frame [B, N, 1]
    half = torch.sin(phase / 2)
    near = half.abs() < 1e-6
    comb = torch.sin((count + 0.5) * phase) / (2 * torch.where(near, torch.ones_like(half), half)) - 0.5
    comb = torch.where(near, count, comb) / count.sqrt()
    out = comb * voiced.double().clamp(0.0, 1.0).unsqueeze(-1)
    return out.reshape(b, n * sub_hop).to(f0.dtype if f0.is_floating_point() else torch.float32)


def pitch_window_margin(sampling_rate: int, sub_hop: int, f0_min: float = F0_MIN) -> int:
    """Samples `estimate_pitch` reads on each side of a sub-frame of `sub_hop` samples (half its window beyond
    the sub-frame), so a window of frames can be pitched exactly as inside the whole clip."""
    lag_max = int(math.ceil(sampling_rate / f0_min))
    win = max(2 * sub_hop, 2 * lag_max + 2 * sub_hop // 2)
    win += win % 2
    return (win - sub_hop) - (win - sub_hop) // 2


@torch.no_grad()
def pitch_features_window(
    audio: torch.Tensor, start: int, stop: int, hop_length: int, sampling_rate: int, subframes: int
) -> torch.Tensor:
    """The encoder's pitch input of frames `start`..`stop` of audio [B, L] (L a multiple of the hop) ->
    [B, stop - start, 2 * subframes]: per sub-frame ln(f0 / PITCH_REF_HZ) then the autocorrelation peak's
    strength (`estimate_pitch` without its clip-relative silence gate, so every value depends only on the
    samples around its sub-frame: a window of frames equals the same frames of the whole clip, and the zeros
    a batch pads with give what the end of a clip alone gives)."""
    sub_hop = hop_length // subframes
    margin = -(-pitch_window_margin(sampling_rate, sub_hop) // sub_hop) * sub_hop  # whole sub-frames
    s0, s1 = start * hop_length - margin, stop * hop_length + margin
    seg = audio[:, max(0, s0) : min(audio.shape[-1], s1)].float()
    seg = torch.nn.functional.pad(seg, (max(0, -s0), max(0, s1 - audio.shape[-1])))
    f0, _, strength = estimate_pitch(seg, sampling_rate, sub_hop, silence_db=-1e9)
    k0, n = margin // sub_hop, (stop - start) * subframes
    f0, strength = f0[:, k0 : k0 + n], strength[:, k0 : k0 + n]
    b = audio.shape[0]
    feats = torch.stack([torch.log(f0 / PITCH_REF_HZ), strength], dim=1)  # [B, 2, n]
    return (
        feats.view(b, 2, stop - start, subframes).permute(0, 2, 1, 3).reshape(b, stop - start, 2 * subframes)
    )


def pitch_head_losses(
    pitch: torch.Tensor, f0: torch.Tensor, voiced: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder pitch head's losses: (L1 of ln F0 over the voiced valid sub-frames, voicing BCE over the valid
    ones) of its output [B, 2, N] (ln(f0 / PITCH_REF_HZ), voicing logit) against the input's F0 (Hz), voicing and
    valid-sub-frame mask, each [B, N]."""
    valid = valid.float()
    voiced = voiced.float() * valid
    pitch = pitch.float()
    err = (pitch[:, 0] - torch.log(f0.clamp_min(1.0) / PITCH_REF_HZ)).abs()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pitch[:, 1], voiced, reduction="none")
    return (err * voiced).sum() / voiced.sum().clamp_min(1), (bce * valid).sum() / valid.sum().clamp_min(1)
