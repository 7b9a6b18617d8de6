"""Stage-1 JEPA predictor (arXiv 2512.07168 §2; authors' code): maps masked context latents to target latents.

Layout (paper: 3.18 M parameters at d = 128, hidden 256, 16 heads):

    per layer: 1x1 (in -> hidden) -> GELU -> Conformer(hidden)      (in = latent_dim for the first layer)
    1x1 (hidden -> latent_dim)

It predicts every frame; the loss uses the masked frames only. 1x1 convolutions on [B, D, T] are written
as `nn.Linear` on [B, T, D] (same parameters and result). Padded frames are kept at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import JepaCodecConfig
from .conformer import ConformerBlock


class JepaPredictor(nn.Module):
    """Predictor of the JEPA stage-1 objective.

    Args:
        config (`JepaCodecConfig`): Uses `predictor_config` (hidden_dim, num_layers, heads) and the
            encoder's latent width, Conformer ff expansion, kernel and dropout.
    """

    def __init__(self, config: JepaCodecConfig):
        super().__init__()
        enc, pc = config.encoder_config, config.predictor_config
        dims = [enc.latent_dim] + [pc.hidden_dim] * pc.num_layers
        self.in_projs = nn.ModuleList(nn.Linear(dims[i], pc.hidden_dim) for i in range(pc.num_layers))
        self.blocks = nn.ModuleList(
            ConformerBlock(
                pc.hidden_dim, pc.heads, enc.conformer_ff_mult, enc.conformer_kernel_size, enc.dropout
            )
            for _ in range(pc.num_layers)
        )
        self.out_proj = nn.Linear(pc.hidden_dim, enc.latent_dim)

    def forward(self, latents: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """latents [B, T, D] (masked frames already replaced by the mask token), frame_mask [B, T] bool
        (True = valid) -> predictions [B, T, D], zero on padded frames."""
        attn_mask = None if frame_mask is None or bool(frame_mask.all()) else frame_mask
        x = latents
        for proj, block in zip(self.in_projs, self.blocks):
            x = block(F.gelu(proj(x)), attn_mask)  # [B, T, hidden]
        out = self.out_proj(x)  # [B, T, D]
        return out if attn_mask is None else out * attn_mask.unsqueeze(-1).to(out.dtype)
