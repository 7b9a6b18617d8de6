"""Stage-1 JEPA objective of the tokenizer (arXiv 2512.07168 §2): online encoder, EMA target, predictor.

Both encoders see the whole waveform. Masked frames of the online latents are replaced by a learned mask
token [1, 1, D] (trunc_normal, std 0.02); the predictor maps the result back to latents, and the loss is the
MSE on masked valid frames against the stop-gradient EMA target, normalised by N_mask * D:

    L = 1 / (N_mask * D) * sum_{t in M} || z_pred_t - sg(z_tgt_t) ||^2

The target is the EMA encoder's output (tau = 0.996, constant in the paper; an optional linear schedule to
`tau_end`), or the average of its last k hidden states (`target_layers = k`). Beyond the paper, SIGReg
(LeJEPA, arXiv 2511.08544) can be mixed in: L' = (1 - lambda) * L + lambda * SIGReg(z), and a spectral
anchor (`anchor_weight` > 0): a linear head from each online latent frame to that frame's own log-mel patch
(`anchor_mels` bands x `anchor_subframes` sub-frames), L' += anchor_weight * MSE. It ties every frame's code to
its content, which the position-only collapse we measured on small data removes. Collapse monitors
(mean per-dimension std, effective rank) are plain functions used by the trainer's logging.

The module holds no optimizer or logging; `JepaCodecModel.encoder` is passed in and trained in place, so the
stage-1 result is the codec itself (its decoder untouched).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .configuration import JepaCodecConfig
from .predictor import JepaPredictor
from .spectral import spectral_patches


# ----------------------------------------------------------------------------------------------------
# Anti-collapse term and monitors
# ----------------------------------------------------------------------------------------------------
def sigreg(
    z: torch.Tensor,
    num_slices: int = 256,
    num_points: int = 17,
    t_max: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SIGReg: mean over random 1-D projections of the Epps-Pulley statistic against N(0, 1).

    Follows rbalestr-lab/lejepa: t in linspace(0, t_max, num_points) (the characteristic function is
    symmetric), trapezoid weights times exp(-t^2 / 2), err = (mean cos(t x) - exp(-t^2/2))^2 + (mean sin(t x))^2,
    statistic = N * sum(err * w). Statistics are local to the process (not all-reduced).

    Args:
        z (`Tensor` [N, D]): Embeddings (e.g. the valid frames of a batch).
        num_slices (`int`, defaults to 256): Random unit directions M.
        num_points (`int`, defaults to 17): Integration points.
        t_max (`float`, defaults to 3.0): Integration range [0, t_max].
        generator (`torch.Generator`, *optional*): CPU generator for the directions (seed it from the step
            so every process uses the same slices).
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"sigreg needs embeddings [N >= 2, D], got {tuple(z.shape)}")
    z = z.float()
    directions = torch.randn(z.shape[1], num_slices, generator=generator).to(z.device)
    directions = directions / directions.norm(dim=0, keepdim=True)
    x = z @ directions  # [N, M]
    t = torch.linspace(0.0, t_max, num_points, device=z.device)
    dt = t_max / (num_points - 1)
    weights = torch.full_like(t, 2 * dt)
    weights[0] = weights[-1] = dt
    phi = torch.exp(-0.5 * t**2)
    weights = weights * phi
    xt = x.unsqueeze(-1) * t  # [N, M, P]
    err = (torch.cos(xt).mean(0) - phi) ** 2 + torch.sin(xt).mean(0) ** 2  # [M, P]
    return (err @ weights).mean() * z.shape[0]


@torch.no_grad()
def per_dim_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the std over samples; z [N, D] -> scalar (paper's collapse monitor)."""
    return z.float().std(dim=0).mean() if z.shape[0] > 1 else z.new_zeros(())


@torch.no_grad()
def between_clip_std(z: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor | None:
    """Std across clips at the same frame position, averaged over positions and dims; z [B, T, D].

    Catches the collapse `per_dim_std` misses: latents that depend on the frame position only (every clip
    gets the same codes at frame t). Random crops put unrelated content at a position, so a healthy
    encoder has a between-clip std close to its overall std. Positions valid in fewer than two clips are
    ignored; returns None when no position has two valid clips.
    """
    x = z.float()
    m = frame_mask.to(x.dtype).unsqueeze(-1)  # [B, T, 1]
    count = m.sum(0)  # [T, 1]
    keep = count.squeeze(-1) >= 2
    if not bool(keep.any()):
        return None
    mean = (x * m).sum(0) / count.clamp_min(1)  # [T, D]
    var = (((x - mean) ** 2) * m).sum(0) / (count - 1).clamp_min(1)  # [T, D]
    return var[keep].sqrt().mean()


@torch.no_grad()
def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the normalised singular values) of centred z [N, D] (Roy & Vetterli 2007); 1..min(N, D)."""
    z = z.float()
    if z.shape[0] < 2:
        return z.new_ones(())
    s = torch.linalg.svdvals(z - z.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return torch.exp(entropy)


def ema_tau(step: int, total_steps: int, tau: float = 0.996, tau_end: float | None = None) -> float:
    """EMA momentum at `step`: constant `tau`, or linear from `tau` to `tau_end` over `total_steps`."""
    if tau_end is None:
        return tau
    return tau + (tau_end - tau) * min(1.0, step / max(1, total_steps))


# ----------------------------------------------------------------------------------------------------
# The stage-1 module
# ----------------------------------------------------------------------------------------------------
@dataclass
class JepaStage1Output:
    loss: torch.Tensor  # scalar: the optimised objective (MSE, or the SIGReg mix)
    mse: torch.Tensor  # scalar: masked MSE
    sigreg: torch.Tensor | None  # scalar or None
    anchor: torch.Tensor | None  # scalar or None (spectral anchor MSE)
    predictions: torch.Tensor  # [B, T, D]
    targets: torch.Tensor  # [B, T, D] (no grad)
    latents: torch.Tensor  # [B, T, D] online encoder output z
    frame_mask: torch.Tensor  # [B, T] bool, valid frames
    mask: torch.Tensor  # [B, T] bool, masked (predicted) frames


class JepaStage1Model(nn.Module):
    """Online encoder + EMA target encoder + mask token + predictor.

    Args:
        encoder (`nn.Module`): The online `JepaEncoder` (trained in place; usually `codec.encoder`).
        config (`JepaCodecConfig`): Codec config (predictor and latent sizes).
        target_layers (`int`, defaults to 1): Target = average of the last k encoder hidden states (1 = output).
        sigreg_lambda (`float`, defaults to 0.0): Weight of SIGReg on the online latents (0 = paper: off).
        sigreg_slices (`int`, defaults to 256): SIGReg random directions.
        anchor_weight (`float`, defaults to 0.0): Weight of the spectral anchor (0 = paper: off).
        anchor_mels, anchor_subframes (`int`): Shape of each frame's log-mel patch (see `spectral_patches`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        config: JepaCodecConfig,
        target_layers: int = 1,
        sigreg_lambda: float = 0.0,
        sigreg_slices: int = 256,
        anchor_weight: float = 0.0,
        anchor_mels: int = 16,
        anchor_subframes: int = 8,
    ):
        super().__init__()
        if anchor_weight < 0:
            raise ValueError(f"anchor_weight must be >= 0, got {anchor_weight}")
        n_hidden = config.encoder_config.conformer_layers + 1
        if not 1 <= target_layers <= n_hidden:
            raise ValueError(
                f"target_layers must be in 1..{n_hidden} (bottleneck + Conformers), got {target_layers}"
            )
        if not 0.0 <= sigreg_lambda < 1.0:
            raise ValueError(f"sigreg_lambda must be in [0, 1), got {sigreg_lambda}")
        self.encoder = encoder
        self.target_encoder = copy.deepcopy(encoder)
        self.target_encoder.requires_grad_(False)
        self.predictor = JepaPredictor(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.encoder_config.latent_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.target_layers = target_layers
        self.sigreg_lambda = sigreg_lambda
        self.sigreg_slices = sigreg_slices
        self.anchor_weight = anchor_weight
        self.anchor_mels, self.anchor_subframes = anchor_mels, anchor_subframes
        self.hop_length, self.sampling_rate = config.hop_length, config.sampling_rate
        self.anchor_head = (
            nn.Linear(config.encoder_config.latent_dim, anchor_mels * anchor_subframes)
            if anchor_weight > 0
            else None
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.target_encoder.eval()  # targets without dropout
        return self

    @torch.no_grad()
    def targets(self, input_values: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        out = self.target_encoder(input_values, padding_mask, output_hidden_states=self.target_layers > 1)
        if self.target_layers == 1:
            return out.latents
        return torch.stack(out.hidden_states[-self.target_layers :]).mean(0)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """theta_tgt <- tau * theta_tgt + (1 - tau) * theta_online; buffers copied."""
        for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.lerp_(o.detach(), 1.0 - tau)
        for t, o in zip(self.target_encoder.buffers(), self.encoder.buffers()):
            t.copy_(o)

    def forward(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None,
        mask: torch.Tensor,
        sigreg_generator: torch.Generator | None = None,
    ) -> JepaStage1Output:
        """Masked latent prediction loss.

        Args:
            input_values (`Tensor` [B, 1, L]): Audio. padding_mask (`Tensor` [B, L]): 1 = real sample.
            mask (`Tensor` [B, T] bool): Frames to mask and predict (from `masking.block_span_mask`).
            sigreg_generator (`torch.Generator`, *optional*): Directions of SIGReg.
        """
        online = self.encoder(input_values, padding_mask)
        z, frame_mask = online.latents, online.frame_mask  # [B, T, D], [B, T]
        if mask.shape != frame_mask.shape:
            raise ValueError(
                f"mask {tuple(mask.shape)} must match the encoder frames {tuple(frame_mask.shape)}"
            )
        mask = mask & frame_mask
        target = self.targets(input_values, padding_mask)
        z_masked = torch.where(mask.unsqueeze(-1), self.mask_token.to(z.dtype), z)
        pred = self.predictor(z_masked, frame_mask)
        n_mask = mask.sum()
        sq = ((pred.float() - target.float()) ** 2) * mask.unsqueeze(-1)
        mse = sq.sum() / (n_mask.clamp_min(1) * z.shape[-1])
        loss, reg = mse, None
        if self.sigreg_lambda > 0:
            reg = sigreg(z[frame_mask], self.sigreg_slices, generator=sigreg_generator)
            loss = (1.0 - self.sigreg_lambda) * mse + self.sigreg_lambda * reg
        anchor = None
        if self.anchor_head is not None:
            padded, _ = self.encoder.pad_input(input_values, padding_mask)  # what the encoder read
            patches = spectral_patches(
                padded, self.hop_length, self.sampling_rate, self.anchor_mels, self.anchor_subframes
            )
            err = ((self.anchor_head(z.float()) - patches) ** 2).mean(-1)  # [B, T]
            anchor = err[frame_mask].mean()
            loss = loss + self.anchor_weight * anchor
        return JepaStage1Output(loss, mse, reg, anchor, pred, target, z, frame_mask, mask)
