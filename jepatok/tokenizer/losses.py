"""Stage-2 losses of the JEPA tokenizer (arXiv 2512.07168 §4.7) as pure functions.

Generator: L_G = L1(wave) + 2.0 * MR-STFT + 0.1 * (LSGAN + 2 * feature matching) [+ optional mel-L1].
MR-STFT: FFT sizes 2048..128, hop = n_fft / 4, Hann window = n_fft; per resolution L1 on |S| plus L1 on
log(|S| + 1e-5), averaged over resolutions (no spectral-convergence term, as in the authors' code).
Discriminator: LSGAN, sum_k mean((D_k(x) - 1)^2) + mean(D_k(x_hat)^2) on a detached x_hat.

Every function accepts an optional `mask` [B, L] (1 = real sample); masked-out samples of both signals are
zeroed before comparison so batch padding never contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

DEFAULT_FFT_SIZES = (2048, 1024, 512, 256, 128)


@dataclass
class GeneratorLossOutput:
    """Weighted total and the unweighted terms (all scalars)."""

    total: torch.Tensor
    l1: torch.Tensor
    stft: torch.Tensor
    adversarial: torch.Tensor
    feature_matching: torch.Tensor
    mel: torch.Tensor | None = None

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        items = {
            "loss": self.total,
            "l1": self.l1,
            "stft": self.stft,
            "adv": self.adversarial,
            "fm": self.feature_matching,
            "mel": self.mel,
        }
        return {f"{prefix}{k}": float(v.detach()) for k, v in items.items() if v is not None}


def _flat(audio: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, 1, L] or [B, L] -> [B, L] float32, zeroed where mask == 0."""
    if audio.dim() == 3:
        if audio.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, L], got {tuple(audio.shape)}")
        audio = audio[:, 0]
    if audio.dim() != 2:
        raise ValueError(f"expected audio [B, 1, L] or [B, L], got {tuple(audio.shape)}")
    audio = audio.float()
    if mask is not None:
        if mask.shape != audio.shape:
            raise ValueError(f"mask {tuple(mask.shape)} does not match audio {tuple(audio.shape)}")
        audio = audio * mask.to(audio.dtype)
    return audio


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape"
        )


def waveform_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean |x_hat - x| over valid samples.

    Args:
        pred, target (`Tensor` [B, 1, L] or [B, L]): Generated and reference waveforms.
        mask (`Tensor` [B, L], *optional*): 1 for real samples, 0 for padding.
    """
    _check_pair(pred, target)
    p, t = _flat(pred, mask), _flat(target, mask)
    if mask is None:
        return (p - t).abs().mean()
    return (p - t).abs().sum() / mask.float().sum().clamp_min(1.0)


def stft_magnitude(
    audio: torch.Tensor, n_fft: int, hop_length: int, pad_mode: str = "constant", center: bool = True
) -> torch.Tensor:
    """|STFT| [B, n_fft // 2 + 1, frames] with a Hann window of n_fft (centred and zero-padded by default;
    `center=False`: window k starts at sample k * hop_length, no padding)."""
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(
        audio, n_fft, hop_length, n_fft, window, center=center, pad_mode=pad_mode, return_complex=True
    )
    return spec.abs()


def mel_magnitude(
    audio: torch.Tensor,
    sampling_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    pad_mode: str = "constant",
    center: bool = True,
) -> torch.Tensor:
    """Mel-scaled |STFT| [B, n_mels, frames] of audio [B, L] (filter bank 0 .. sampling_rate / 2)."""
    fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sampling_rate / 2, n_mels, sampling_rate).to(audio.device)
    return torch.einsum("bft,fm->bmt", stft_magnitude(audio, n_fft, hop_length, pad_mode, center), fb)


def masked_frame_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 between per-frame vectors [B, T, F] over the frames where `mask` [B, T] is True."""
    diff = (pred.float() - target).abs().mean(-1)  # [B, T]
    return (diff * mask).sum() / mask.sum().clamp_min(1)


def multi_resolution_stft_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
    hop_ratio: float = 0.25,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Mean over resolutions of L1(|S|) + L1(log(|S| + eps)).

    Args:
        pred, target (`Tensor` [B, 1, L] or [B, L]): Waveforms.
        mask (`Tensor` [B, L], *optional*): Padding is zeroed in both signals before the STFT.
        fft_sizes (`Sequence[int]`, defaults to (2048, 1024, 512, 256, 128)): FFT (= window) sizes.
        hop_ratio (`float`, defaults to 0.25): hop = n_fft * hop_ratio.
        eps (`float`, defaults to 1e-5): Floor inside the log.
    """
    _check_pair(pred, target)
    if not fft_sizes:
        raise ValueError("fft_sizes must name at least one FFT size")
    p, t = _flat(pred, mask), _flat(target, mask)
    total = p.new_zeros(())
    for n_fft in fft_sizes:
        hop = max(1, int(n_fft * hop_ratio))
        sp, st = stft_magnitude(p, n_fft, hop), stft_magnitude(t, n_fft, hop)
        total = total + F.l1_loss(sp, st) + F.l1_loss(torch.log(sp + eps), torch.log(st + eps))
    return total / len(fft_sizes)


def mel_l1_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    sampling_rate: int,
    mask: torch.Tensor | None = None,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    eps: float = 1e-5,
) -> torch.Tensor:
    """L1 between log-mel spectrograms (HiFi-GAN's mel loss; optional here, off in the paper).

    Args:
        pred, target (`Tensor` [B, 1, L] or [B, L]): Waveforms at `sampling_rate`.
        sampling_rate (`int`): Audio rate (sets the mel filter bank).
        mask (`Tensor` [B, L], *optional*): Padding mask.
        n_fft, hop_length, n_mels: STFT and filter-bank sizes.
    """
    _check_pair(pred, target)
    p, t = _flat(pred, mask), _flat(target, mask)
    mp = mel_magnitude(p, sampling_rate, n_fft, hop_length, n_mels)
    mt = mel_magnitude(t, sampling_rate, n_fft, hop_length, n_mels)
    return F.l1_loss(torch.log(mp + eps), torch.log(mt + eps))


def lsgan_generator_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_k mean((D_k(x_hat) - 1)^2)."""
    return sum(((x.float() - 1.0) ** 2).mean() for x in fake_logits)


def lsgan_discriminator_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> torch.Tensor:
    """sum_k mean((D_k(x) - 1)^2) + mean(D_k(x_hat)^2); pass logits of a detached x_hat."""
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"{len(real_logits)} real vs {len(fake_logits)} fake discriminator outputs")
    return sum(
        ((r.float() - 1.0) ** 2).mean() + (f.float() ** 2).mean() for r, f in zip(real_logits, fake_logits)
    )


def feature_matching_loss(
    real_features: Sequence[Sequence[torch.Tensor]], fake_features: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """sum over discriminators and layers of mean |D_l(x_hat) - sg(D_l(x))| (before the x2 weight)."""
    if len(real_features) != len(fake_features):
        raise ValueError(f"{len(real_features)} real vs {len(fake_features)} fake feature lists")
    total = None
    for rs, fs in zip(real_features, fake_features):
        for r, f in zip(rs, fs):
            term = (f.float() - r.detach().float()).abs().mean()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("feature_matching_loss got no features")
    return total


def generator_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    fake_logits: Sequence[torch.Tensor] | None = None,
    real_features: Sequence[Sequence[torch.Tensor]] | None = None,
    fake_features: Sequence[Sequence[torch.Tensor]] | None = None,
    mask: torch.Tensor | None = None,
    l1_weight: float = 1.0,
    stft_weight: float = 2.0,
    gan_weight: float = 0.1,
    fm_weight: float = 2.0,
    mel_weight: float = 0.0,
    sampling_rate: int | None = None,
    fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
) -> GeneratorLossOutput:
    """Paper generator loss: l1_weight*L1 + stft_weight*MRSTFT + gan_weight*(LSGAN + fm_weight*FM) + mel.

    Without discriminator outputs (`fake_logits` None) the adversarial and FM terms are zero (reconstruction
    warm-up). `mel_weight > 0` adds `mel_weight * mel_l1_loss` and needs `sampling_rate`.
    """
    l1 = waveform_l1_loss(pred, target, mask)
    stft = multi_resolution_stft_loss(pred, target, mask, fft_sizes=fft_sizes)
    zero = l1.new_zeros(())
    adv = lsgan_generator_loss(fake_logits) if fake_logits is not None else zero
    fm = feature_matching_loss(real_features, fake_features) if real_features is not None else zero
    total = l1_weight * l1 + stft_weight * stft + gan_weight * (adv + fm_weight * fm)
    mel = None
    if mel_weight > 0:
        if sampling_rate is None:
            raise ValueError("mel_weight > 0 needs the sampling_rate of the audio")
        mel = mel_l1_loss(pred, target, sampling_rate, mask)
        total = total + mel_weight * mel
    return GeneratorLossOutput(total=total, l1=l1, stft=stft, adversarial=adv, feature_matching=fm, mel=mel)
