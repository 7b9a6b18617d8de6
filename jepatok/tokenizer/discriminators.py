"""Stage-2 discriminators of the JEPA tokenizer (arXiv 2512.07168 §4.6): HiFi-GAN MPD + MelGAN-style MSD.

Multi-period discriminator (MPD, arXiv 2010.05646): the waveform is reflect-padded to a multiple of the
period p and folded to [B, 1, L/p, p]; a Conv2d stack with (5, 1) kernels and (3, 1) strides looks at each
phase separately. Multi-scale discriminator (MSD): grouped strided Conv1d stacks on the raw waveform and on
average-pooled copies. The authors' code pools the raw waveform once for scales 2 and 3 (both see x2);
we cascade the pools (x1, x2, x4, ...) as HiFi-GAN does — a deliberate fix (DESIGN.md).

Widths come from `DiscriminatorConfig` (`mpd_channels`, `msd_channels`). As in the authors' code there
is no weight or spectral norm and the activation is LeakyReLU(0.1). Discriminators are training-only
modules: they are not part of `JepaCodecModel` and are never shipped with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import DiscriminatorConfig, JepaCodecConfig

LRELU_SLOPE = 0.1


@dataclass
class DiscriminatorOutput:
    """Outputs of every sub-discriminator, in a fixed order (MPD periods, then MSD scales)."""

    logits: list[torch.Tensor]  # each [B, N_k] flattened real/fake scores of sub-discriminator k
    features: list[list[torch.Tensor]]  # features[k][l]: activation of layer l of sub-discriminator k


def _fold_to_periods(audio: torch.Tensor, period: int) -> torch.Tensor:
    """[B, 1, L] -> [B, 1, ceil(L / p), p], padding the end (reflect when possible, else replicate)."""
    b, c, length = audio.shape
    pad = (-length) % period
    if pad:
        mode = "reflect" if pad < length else "replicate"
        audio = F.pad(audio, (0, pad), mode=mode)
    return audio.view(b, c, -1, period)


class PeriodDiscriminator(nn.Module):
    """One MPD branch: Conv2d (k, 1) stack over the waveform folded at `period`.

    Args:
        period (`int`): Folding period in samples.
        channels (`list[int]`): Conv widths; all but the last layer use stride (3, 1), the last stride 1
            (paper: 32, 128, 512, 1024 strided then 1024).
        kernel_size (`int`, defaults to 5): Kernel along time.
        stride (`int`, defaults to 3): Stride along time of the strided layers.
    """

    def __init__(self, period: int, channels: list[int], kernel_size: int = 5, stride: int = 3):
        super().__init__()
        if period < 1:
            raise ValueError(f"MPD period must be >= 1, got {period}")
        if len(channels) < 2:
            raise ValueError(f"MPD needs at least 2 conv widths (strided + final), got {channels}")
        self.period = period
        pad = (kernel_size - 1) // 2
        layers = []
        in_ch = 1
        for i, out_ch in enumerate(channels):
            s = stride if i < len(channels) - 1 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, (kernel_size, 1), (s, 1), padding=(pad, 0)))
            in_ch = out_ch
        self.convs = nn.ModuleList(layers)
        self.post = nn.Conv2d(in_ch, 1, (3, 1), 1, padding=(1, 0))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = _fold_to_periods(audio, self.period)  # [B, 1, L/p, p]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


def _msd_groups(in_ch: int, out_ch: int) -> int:
    """Groups of a strided MSD conv: in_ch / 4 as in MelGAN (4, 16, 64, 256 for the paper), made valid."""
    return math.gcd(math.gcd(in_ch, out_ch), max(1, in_ch // 4))


class ScaleDiscriminator(nn.Module):
    """One MSD branch (MelGAN layout): Conv1d k15 -> grouped strided k41 convs -> Conv1d k5 -> post k3.

    Args:
        channels (`list[int]`): Widths; channels[0] is the k15 stem, channels[1:-1] the strided (stride 4)
            grouped layers, channels[-1] the k5 layer (paper: 16, 64, 256, 1024, 1024, 1024).
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        if len(channels) < 3:
            raise ValueError(f"MSD needs at least 3 conv widths (stem, strided..., final), got {channels}")
        layers = [nn.Conv1d(1, channels[0], 15, 1, padding=7)]
        for in_ch, out_ch in zip(channels[:-2], channels[1:-1]):
            layers.append(nn.Conv1d(in_ch, out_ch, 41, 4, padding=20, groups=_msd_groups(in_ch, out_ch)))
        layers.append(nn.Conv1d(channels[-2], channels[-1], 5, 1, padding=2))
        self.convs = nn.ModuleList(layers)
        self.post = nn.Conv1d(channels[-1], 1, 3, 1, padding=1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = audio
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class MultiPeriodDiscriminator(nn.Module):
    """MPD: one `PeriodDiscriminator` per period."""

    def __init__(self, periods: list[int], channels: list[int]):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        outs = [d(audio) for d in self.discriminators]
        return DiscriminatorOutput(logits=[o[0] for o in outs], features=[o[1] for o in outs])


class MultiScaleDiscriminator(nn.Module):
    """MSD: scale k sees the waveform average-pooled k times (cascaded AvgPool1d(4, 2, pad 2))."""

    def __init__(self, num_scales: int, channels: list[int]):
        super().__init__()
        self.discriminators = nn.ModuleList(ScaleDiscriminator(channels) for _ in range(num_scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        logits, features = [], []
        x = audio
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = self.pool(x)  # cascaded: x2 for scale 1, x4 for scale 2, ...
            score, feats = d(x)
            logits.append(score)
            features.append(feats)
        return DiscriminatorOutput(logits=logits, features=features)


class JepaDiscriminators(nn.Module):
    """MPD + MSD together; `forward(audio [B, 1, L])` returns every sub-discriminator's scores and features.

    Real and generated audio can go through one call (concatenated on the batch axis): there is no
    batch-dependent layer, so the result equals two separate calls.

    Args:
        config (`JepaCodecConfig` or `DiscriminatorConfig`): Where the periods, scales and widths come from.
    """

    def __init__(self, config: JepaCodecConfig | DiscriminatorConfig):
        super().__init__()
        cfg = config.discriminator_config if isinstance(config, JepaCodecConfig) else config
        if not isinstance(cfg, DiscriminatorConfig):
            raise ValueError(
                f"expected a JepaCodecConfig or DiscriminatorConfig, got {type(config).__name__}"
            )
        self.mpd = MultiPeriodDiscriminator(cfg.periods, cfg.mpd_channels)
        self.msd = MultiScaleDiscriminator(cfg.msd_scales, cfg.msd_channels)

    @property
    def num_discriminators(self) -> int:
        return len(self.mpd.discriminators) + len(self.msd.discriminators)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        if audio.dim() == 2:
            audio = audio.unsqueeze(1)
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"discriminators expect audio [B, 1, L] (or [B, L]), got {tuple(audio.shape)}")
        a, b = self.mpd(audio), self.msd(audio)
        return DiscriminatorOutput(logits=a.logits + b.logits, features=a.features + b.features)

    @staticmethod
    def split(
        output: DiscriminatorOutput, batch_size: int
    ) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
        """Split the output of a call on cat([first, second]) into the outputs for `first` and `second`."""
        first = DiscriminatorOutput(
            logits=[x[:batch_size] for x in output.logits],
            features=[[f[:batch_size] for f in fs] for fs in output.features],
        )
        second = DiscriminatorOutput(
            logits=[x[batch_size:] for x in output.logits],
            features=[[f[batch_size:] for f in fs] for fs in output.features],
        )
        return first, second
