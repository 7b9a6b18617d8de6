"""Per-frame log-mel patches: the spectral anchor's and the envelope loss's target, and the encoder's optional
spectral input (`encoder_config.spectral_input_bands`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import mel_magnitude


def spectral_patches(
    input_values: torch.Tensor, hop_length: int, sampling_rate: int, n_mels: int = 16, subframes: int = 8
) -> torch.Tensor:
    """Per-frame log-mel patches [B, T, n_mels * subframes] (band-major), the spectral anchor's target.

    Each codec frame (`hop_length` samples) is split into `subframes` STFT hops; the log-mel energies
    (log(mel + 1e-5), mapped by (x + 5) / 4 to about unit scale) of those hops are flattened per frame.

    Args:
        input_values (`Tensor` [B, 1, L]): Audio, L a multiple of `hop_length` (the encoder's padded input).
        hop_length (`int`): Samples per codec frame. sampling_rate (`int`): Audio rate.
        n_mels (`int`, defaults to 16): Mel bands. subframes (`int`, defaults to 8): STFT hops per frame.
    """
    if hop_length % subframes != 0:
        raise ValueError(f"anchor_subframes ({subframes}) must divide the codec hop ({hop_length} samples)")
    if input_values.shape[-1] % hop_length != 0:
        raise ValueError(f"audio length {input_values.shape[-1]} is not a multiple of the hop {hop_length}")
    b, frames = input_values.shape[0], input_values.shape[-1] // hop_length
    sub_hop = hop_length // subframes
    audio = input_values.reshape(b, -1).float()
    mel = mel_magnitude(audio, sampling_rate, patch_fft_size(sub_hop), sub_hop, n_mels, pad_mode="reflect")
    return _mel_to_patches(mel, frames, subframes)


def patch_fft_size(sub_hop: int) -> int:
    """STFT size of a log-mel patch with `sub_hop` samples per sub-frame: the power of two >= 2 * sub_hop."""
    return max(16, 1 << (2 * sub_hop - 1).bit_length())


def _mel_to_patches(mel: torch.Tensor, frames: int, subframes: int) -> torch.Tensor:
    """Mel magnitudes [B, n_mels, >= frames * subframes] -> scaled log-mel patches [B, frames, n_mels * subframes]."""
    b, n_mels = mel.shape[:2]
    mel = (mel[..., : frames * subframes] + 1e-5).log().add(5.0).div(4.0)  # [B, n_mels, T * subframes]
    return mel.reshape(b, n_mels, frames, subframes).permute(0, 2, 1, 3).reshape(b, frames, -1)


def spectral_patches_window(
    audio: torch.Tensor,
    start: int,
    stop: int,
    hop_length: int,
    sampling_rate: int,
    n_mels: int,
    subframes: int,
) -> torch.Tensor:
    """Log-mel patches [B, stop - start, n_mels * subframes] of frames `start`..`stop` of audio [B, L] (L a
    multiple of the hop), in the `spectral_patches` layout and scale. Each STFT window reads the real samples
    around it and zeros only outside the audio, so any window of frames equals the same frames of the
    whole-clip call (the chunked encoder relies on this), and the zeros a batch pads with give the same values
    as the end of a clip alone (padding never changes codes)."""
    sub_hop = hop_length // subframes
    n_fft = patch_fft_size(sub_hop)
    half = n_fft // 2
    s0, s1 = start * hop_length - half, stop * hop_length + half
    seg = audio[:, max(0, s0) : min(audio.shape[-1], s1)].float()
    seg = F.pad(seg, (max(0, -s0), max(0, s1 - audio.shape[-1])))
    mel = mel_magnitude(seg, sampling_rate, n_fft, sub_hop, n_mels, center=False)
    return _mel_to_patches(mel, stop - start, subframes)
