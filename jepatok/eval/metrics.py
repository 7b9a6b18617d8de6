"""Full-reference signal metrics for codec evaluation: PESQ (WB/NB), STOI, SI-SDR, multi-resolution mel
distance, mel-cepstral distortion, and the F0 gross pitch error and voicing decision error.

All functions take 1-D float arrays (reference first, then the estimate) at a given sampling rate and
return a Python float (`pitch_errors` a pair). A metric whose package is missing, or that cannot score a clip (PESQ finds no
utterance in silence), raises `MetricUnavailable` with the reason; callers record the reason and never
substitute a number.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.audio import resample

#: Rate every system's output is brought to before scoring (PESQ-WB, STOI, ASR, speaker, MOS models).
EVAL_SAMPLING_RATE = 16000


class MetricUnavailable(RuntimeError):
    """A metric could not run (missing package, unsupported input); `str(err)` is the reason."""


def _as_1d(name: str, audio) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim > 1:
        audio = np.squeeze(audio)  # [1, L] / [1, 1, L] -> [L]
    if audio.ndim != 1:
        raise ValueError(f"{name} must be a mono 1-D signal, got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError(f"{name} is empty; expected at least one sample")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name} contains NaN or inf samples")
    return audio


def _pair(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Validate and cut both signals to their common length."""
    ref = _as_1d("reference", reference)
    est = _as_1d("estimate", estimate)
    n = min(ref.size, est.size)
    return ref[:n], est[:n]


def _xcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Circular cross-correlation c[k] = sum_t b[t + k] a[t] (zero-padded, so negative k sit at the end)."""
    n_fft = 1 << int(math.ceil(math.log2(2 * max(a.size, b.size))))
    return np.fft.irfft(np.fft.rfft(b, n_fft) * np.conj(np.fft.rfft(a, n_fft)), n_fft)


def _best_lag(xcorr: np.ndarray, low: int, high: int) -> int:
    lags = np.arange(low, high + 1)
    return int(lags[int(np.argmax(xcorr[lags % xcorr.size]))])


def align(reference, estimate, sampling_rate: int, max_shift_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Compensate a constant codec delay, then cut both signals to the overlapping part.

    The lag (|lag| <= max_shift_s) is found on amplitude envelopes (5 ms moving RMS), which is robust
    for vocoders that do not keep the waveform's phase (Codec2), then refined to the sample within
    +-2 ms on the waveforms themselves (what SI-SDR needs for waveform codecs).

    Args:
        reference: [L] clean signal.
        estimate: [L'] decoded signal.
        sampling_rate: rate of both signals.
        max_shift_s: largest delay searched, in seconds.

    Returns:
        (reference, estimate) as float64 arrays of equal length.
    """
    ref, est = _pair(reference, estimate)
    max_shift = int(round(max_shift_s * sampling_rate))
    if max_shift <= 0 or ref.size <= 2 * max_shift:
        return ref, est
    width = max(1, int(0.005 * sampling_rate))
    kernel = np.ones(width) / width
    env_ref = np.sqrt(np.convolve(ref**2, kernel, mode="same"))
    env_est = np.sqrt(np.convolve(est**2, kernel, mode="same"))
    coarse = _best_lag(_xcorr(env_ref - env_ref.mean(), env_est - env_est.mean()), -max_shift, max_shift)
    fine = max(1, int(0.002 * sampling_rate))
    lo, hi = max(-max_shift, coarse - fine), min(max_shift, coarse + fine)
    lag = _best_lag(_xcorr(ref, est), lo, hi)  # lag > 0: the estimate is late by `lag` samples
    if lag > 0:
        est, ref = est[lag:], ref[: ref.size - lag]
    elif lag < 0:
        ref, est = ref[-lag:], est[: est.size + lag]
    return ref, est


def si_sdr(reference, estimate, eps: float = 1e-10) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (zero-mean signals, Le Roux et al. 2019).

    Args:
        reference: [L] clean signal.
        estimate: [L] decoded signal (cut to the common length).
    """
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy <= eps:
        raise MetricUnavailable("SI-SDR undefined: the reference is silent")
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def pesq_score(reference, estimate, sampling_rate: int, mode: str = "wb") -> float:
    """ITU-T P.862 PESQ through the `pesq` package: mode "wb" scores at 16 kHz, "nb" at 8 kHz (inputs are
    resampled as needed). Identical signals give ~4.64 (WB) / ~4.55 (NB).

    Args:
        reference: [L] clean signal.
        estimate: [L] decoded signal.
        sampling_rate: rate of both inputs.
        mode: "wb" or "nb".
    """
    if mode not in ("wb", "nb"):
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    try:
        from pesq import pesq as _pesq
    except ImportError as err:
        raise MetricUnavailable(f"package `pesq` is not installed ({err}); install jepatok[eval]") from err
    rate = 16000 if mode == "wb" else 8000
    ref, est = _pair(reference, estimate)
    ref = resample(ref.astype(np.float32), sampling_rate, rate)
    est = resample(est.astype(np.float32), sampling_rate, rate)
    try:
        return float(_pesq(rate, ref.astype(np.float64), est.astype(np.float64), mode))
    except Exception as err:  # pesq raises its own NoUtterancesError / BufferTooShortError / cypesq errors
        raise MetricUnavailable(
            f"PESQ-{mode.upper()} could not score this clip: {type(err).__name__}: {err}"
        ) from err


def stoi_score(reference, estimate, sampling_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (`pystoi`, 0..1; identical signals give 1.0).

    Args:
        reference: [L] clean signal.
        estimate: [L] decoded signal.
        sampling_rate: rate of both inputs (pystoi resamples to 10 kHz itself).
        extended: ESTOI instead of STOI.
    """
    try:
        from pystoi import stoi as _stoi
    except ImportError as err:
        raise MetricUnavailable(f"package `pystoi` is not installed ({err}); install jepatok[eval]") from err
    ref, est = _pair(reference, estimate)
    if ref.size < int(0.4 * sampling_rate):
        raise MetricUnavailable("STOI needs at least ~0.4 s of audio (30 frames of 25.6 ms)")
    return float(_stoi(ref, est, sampling_rate, extended=extended))


_MEL_CACHE: dict[tuple[int, int, int, int], torch.nn.Module] = {}


def _mel(sampling_rate: int, n_fft: int, n_mels: int, hop: int | None = None) -> torch.nn.Module:
    import torchaudio

    key = (sampling_rate, n_fft, n_mels, hop or n_fft // 4)
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=sampling_rate,
            n_fft=n_fft,
            hop_length=hop or n_fft // 4,
            n_mels=n_mels,
            f_min=0.0,
            f_max=sampling_rate / 2,
            power=1.0,
            center=True,
        )
    return _MEL_CACHE[key]


def mel_distance(
    reference,
    estimate,
    sampling_rate: int,
    fft_sizes: tuple[int, ...] = (256, 512, 1024, 2048),
    n_mels: tuple[int, ...] = (32, 64, 80, 80),
) -> float:
    """Multi-resolution log-mel distance: mean over resolutions of the L1 distance between log10 mel
    magnitudes (clamped at 1e-5), as the mel loss of DAC/EnCodec. 0 for identical audio.

    Args:
        reference: [L] clean signal.
        estimate: [L] decoded signal.
        sampling_rate: rate of both inputs.
        fft_sizes: STFT sizes (hop = n_fft / 4).
        n_mels: mel bands per resolution.
    """
    if len(fft_sizes) != len(n_mels):
        raise ValueError(f"fft_sizes {fft_sizes} and n_mels {n_mels} must have the same length")
    ref, est = _pair(reference, estimate)
    x = torch.from_numpy(np.stack([ref, est]).astype(np.float32))
    total = 0.0
    for n_fft, mels in zip(fft_sizes, n_mels):
        spec = _mel(sampling_rate, n_fft, mels)(x).clamp_min(1e-5).log10()  # [2, mels, frames]
        total += float((spec[0] - spec[1]).abs().mean())
    return total / len(fft_sizes)


def _pitch_tracks(reference, estimate, sampling_rate: int, hop_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """F0 [2, T] and voicing [2, T] of (reference, estimate), cut to their common length."""
    from ..tokenizer.pitch import estimate_pitch

    ref, est = _pair(reference, estimate)
    hop = max(1, int(round(hop_s * sampling_rate)))
    if ref.size < 2 * hop:
        raise MetricUnavailable(f"clip of {ref.size} samples is too short to pitch ({2 * hop} needed)")
    f0, voiced, _ = estimate_pitch(
        torch.from_numpy(np.stack([ref, est]).astype(np.float32)), sampling_rate, hop
    )
    return f0, voiced


def pitch_errors(reference, estimate, sampling_rate: int, hop_s: float = 0.01) -> tuple[float, float]:
    """(F0 gross pitch error, voicing decision error) of an estimate against its reference.

    Both are pitched with `tokenizer.pitch.estimate_pitch` (normalised autocorrelation, 50-500 Hz) every
    `hop_s`. The gross pitch error is the fraction of the frames voiced in both whose F0 differs by more than
    20 %; the voicing decision error is the fraction of all frames voiced in one signal and not the other.
    Both in [0, 1], lower is better. Raises `MetricUnavailable` when no frame is voiced in both (the GPE is
    then undefined; `voicing_error` alone is still defined)."""
    f0, voiced = _pitch_tracks(reference, estimate, sampling_rate, hop_s)
    vde = float((voiced[0] != voiced[1]).float().mean())
    both = voiced[0] & voiced[1]
    if not bool(both.any()):
        raise MetricUnavailable("no frame is voiced in both the reference and the estimate")
    ratio = f0[1][both] / f0[0][both]
    return float(((ratio > 1.2) | (ratio < 1 / 1.2)).float().mean()), vde


def voicing_error(reference, estimate, sampling_rate: int, hop_s: float = 0.01) -> float:
    """The voicing decision error of `pitch_errors` alone (defined even when nothing is voiced in both)."""
    _, voiced = _pitch_tracks(reference, estimate, sampling_rate, hop_s)
    return float((voiced[0] != voiced[1]).float().mean())


def mel_cepstral_distortion(
    reference,
    estimate,
    sampling_rate: int,
    n_coefficients: int = 25,
    n_mels: int = 40,
    frame_s: float = 0.032,
    hop_s: float = 0.005,
    silence_db: float = 40.0,
) -> float:
    """Mel-cepstral distortion in dB over the speech frames of the reference.

    Mel cepstra are the cosine transform of the log mel amplitude spectrum, scaled as a real cepstrum
    (c_d = 1/M sum_m ln|X_m| cos(pi d (m + 1/2) / M)); c0 (energy) is excluded. This is an MFCC-style
    approximation of SPTK's all-pass mel-cepstrum, so compare values within this suite, not with papers.
    Without c0 it ignores level: a near-silent output (flat log spectrum at the floor) is not penalised
    more than a wrongly shaped one, so read it next to mel_distance.
    Frames are compared one to one (the signals are time-aligned, so no DTW) and frames more than
    `silence_db` below the reference's loudest frame are left out.
    MCD = mean_t (10 / ln 10) * sqrt(2 * sum_{d>=1} (c_d - c'_d)^2).

    Args:
        reference: [L] clean signal.
        estimate: [L] decoded signal.
        sampling_rate: rate of both inputs.
        n_coefficients: cepstral coefficients including c0.
        n_mels: mel bands before the cosine transform.
        frame_s: analysis window in seconds.
        hop_s: hop in seconds.
        silence_db: frames this far below the loudest reference frame are ignored.
    """
    ref, est = _pair(reference, estimate)
    n_fft = 1 << int(math.ceil(math.log2(frame_s * sampling_rate)))
    hop = max(1, int(round(hop_s * sampling_rate)))
    x = torch.from_numpy(np.stack([ref, est]).astype(np.float32))
    amplitude = _mel(sampling_rate, n_fft, n_mels, hop)(x)  # [2, mels, frames]
    log_amp = amplitude.clamp_min(1e-5).log()
    k = torch.arange(n_mels, dtype=torch.float32)
    d = torch.arange(n_coefficients, dtype=torch.float32)[:, None]
    basis = torch.cos(math.pi / n_mels * (k + 0.5) * d) / n_mels  # [C, mels]
    ceps = torch.einsum("cm,bmt->bct", basis, log_amp)[:, 1:]  # drop c0: [2, C-1, frames]
    energy_db = 20 * torch.log10(amplitude[0].pow(2).sum(0).sqrt().clamp_min(1e-10))
    keep = energy_db >= energy_db.max() - silence_db
    if not bool(keep.any()):
        raise MetricUnavailable("MCD undefined: the reference has no non-silent frame")
    diff = (ceps[0] - ceps[1])[:, keep]
    per_frame = (10.0 / math.log(10.0)) * torch.sqrt(2.0 * (diff**2).sum(0))
    return float(per_frame.mean())
