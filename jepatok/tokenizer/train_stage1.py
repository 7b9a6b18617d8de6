"""Stage 1 of the JEPA tokenizer (arXiv 2512.07168 §2): self-supervised JEPA+DAAM encoder training.

`jepatok train-stage1 --recipe NAME_OR_YAML --data SOURCE --output-dir DIR [--max-steps N] [--resume]
[key=value ...]`, also under `accelerate launch -m jepatok.cli train-stage1 ...` for several processes/GPUs.

Each step: block-span masks over the valid encoder frames (seeded from seed, step, rank and micro-batch),
masked-latent MSE against the EMA target (JepaStage1Model), AdamW(0.8, 0.99), warmup + cosine, clipping,
then the EMA update of the target. Every `log_every` steps: loss, per-dimension std of predictions and
targets, effective rank of z, DAAM alphas and the learning rate; a loud warning when the prediction std
falls below `collapse_std_threshold` (the paper's monitor). The final model is the `JepaCodecModel` whose
encoder is the trained online encoder (decoder untrained), saved with `save_pretrained` to DIR/final.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch

from ..data.training_data import AudioBatch
from .encoder import frame_mask_from_lengths
from .jepa import JepaStage1Model, between_clip_std, effective_rank, ema_tau, per_dim_std
from .masking import MaskingConfig, block_span_mask
from .train_common import CodecTrainer, TrainArgs, _f, _unwrap_mod, load_args

logger = logging.getLogger(__name__)


@dataclass
class Stage1Args(TrainArgs):
    """Stage-1 run config (TrainArgs plus the JEPA options; paper behaviour by default)."""

    ema_tau: float = _f(0.996, "EMA momentum of the target encoder")
    ema_tau_end: float | None = _f(None, "if set, momentum goes linearly from ema_tau to this over max_steps")
    mask_ratio: float = _f(0.5, "fraction of valid frames to mask")
    mask_min_span: int = _f(2, "shortest masked span (frames)")
    mask_max_span: int | None = _f(None, "longest masked span (frames); default max(4, T // 4)")
    mask_min_span_ms: float | None = _f(None, "shortest span in milliseconds (overrides mask_min_span)")
    mask_max_span_ms: float | None = _f(None, "longest span in milliseconds (overrides mask_max_span)")
    mask_exact_ratio: bool = _f(False, "count newly masked frames (paper counts overlapping spans twice)")
    mask_curriculum_steps: int = _f(0, "steps to grow spans from random single frames to full size (0 = off)")
    target_layers: int = _f(1, "target = average of the last k encoder hidden states (1 = output)")
    sigreg_lambda: float = _f(
        0.0, "SIGReg weight lambda: loss = (1 - lambda) * mse + lambda * sigreg (0 = off)"
    )
    sigreg_slices: int = _f(256, "SIGReg random projection directions")
    anchor_weight: float = _f(
        0.0,
        "spectral anchor: weight of the MSE of a linear head from each latent frame to its log-mel patch (0 = off)",
    )
    anchor_mels: int = _f(16, "mel bands of the spectral anchor's patch")
    anchor_subframes: int = _f(8, "sub-frames (STFT hops) per codec frame in the spectral anchor's patch")
    collapse_std_threshold: float = _f(0.01, "warn when the mean per-dim std of predictions falls below this")
    collapse_between_ratio: float = _f(
        0.25,
        "warn when the std of z across clips at the same frame position falls below this fraction of the "
        "overall std of z (position-only codes)",
    )

    def masking(self) -> MaskingConfig:
        return MaskingConfig(
            self.mask_ratio,
            self.mask_min_span,
            self.mask_max_span,
            self.mask_min_span_ms,
            self.mask_max_span_ms,
            self.mask_exact_ratio,
            self.mask_curriculum_steps,
        )


def _seed(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**61 - 1)
    return h


class Stage1Trainer(CodecTrainer):
    """Stage-1 loop; see the module docstring."""

    stage = "stage1"

    def build(self) -> None:
        from .modeling import JepaCodecModel

        a, acc = self.args, self.accelerator
        self.masking = a.masking()
        self.codec = JepaCodecModel(self.config)
        self.codec.decoder.requires_grad_(False)  # untouched in stage 1
        model = JepaStage1Model(
            self.codec.encoder,
            self.config,
            a.target_layers,
            a.sigreg_lambda,
            a.sigreg_slices,
            a.anchor_weight,
            a.anchor_mels,
            a.anchor_subframes,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(params, a.lr)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = self.make_scheduler(self.optimizer)
        self.model.train()
        self._last = None

    def checkpointed_modules(self) -> tuple[list, list]:
        return [self.model], [self.optimizer]

    def train_step(self, batches: list[AudioBatch]) -> dict[str, float]:
        a, acc = self.args, self.accelerator
        step, n = self.state.step, len(batches)
        hop = self.config.hop_length
        totals = {"loss": 0.0, "mse": 0.0, "sigreg": 0.0, "anchor": 0.0}
        for i, batch in enumerate(batches):
            frames = batch.input_values.shape[-1] // hop
            frame_mask = frame_mask_from_lengths(batch.lengths, frames, hop)
            gen = torch.Generator().manual_seed(_seed(a.seed, step, acc.process_index, i))
            mask = block_span_mask(frame_mask, self.masking, self.config.frame_rate, step, gen)
            sig_gen = torch.Generator().manual_seed(_seed(a.seed, step, i, 7))  # same slices on every rank
            with self.sync_context(self.model, i, n):
                with acc.autocast():
                    out = self.model(batch.input_values, batch.padding_mask, mask, sig_gen)
                acc.backward(out.loss / n)
            totals["loss"] += float(out.loss.detach()) / n
            totals["mse"] += float(out.mse.detach()) / n
            if out.sigreg is not None:
                totals["sigreg"] += float(out.sigreg.detach()) / n
            if out.anchor is not None:
                totals["anchor"] += float(out.anchor.detach()) / n
        grad_norm = self.clip(self.model.parameters())
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tau = ema_tau(step, a.max_steps, a.ema_tau, a.ema_tau_end)
        _unwrap_mod(self.model).update_target(tau)
        self._last = out
        metrics = {**totals, "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0], "ema_tau": tau}
        if out.sigreg is None:
            metrics.pop("sigreg")
        if out.anchor is None:
            metrics.pop("anchor")
        return metrics

    def extra_logs(self) -> dict[str, float]:
        out = self._last
        if out is None:
            return {}
        m, v = out.mask, out.frame_mask
        logs = {
            "pred_std": float(per_dim_std(out.predictions[m].detach())),
            "target_std": float(per_dim_std(out.targets[m].detach())),
            "z_std": float(per_dim_std(out.latents[v].detach())),
            "z_effective_rank": float(effective_rank(out.latents[v].detach())),
            "masked_fraction": float(m.sum() / v.sum().clamp_min(1)),
        }
        between = between_clip_std(out.latents.detach(), v)
        if between is not None:
            logs["z_between_clip_std"] = float(between)
            logs["z_between_clip_ratio"] = float(between) / max(logs["z_std"], 1e-12)
        for k, gate in enumerate(_unwrap_mod(self.model).encoder.daam_gates):
            logs[f"daam_alpha_{k}"] = float(gate.alpha.detach())
        if logs["pred_std"] < self.args.collapse_std_threshold:
            msg = (
                f"REPRESENTATION COLLAPSE? step {self.state.step}: mean per-dim std of predictions "
                f"{logs['pred_std']:.2e} < {self.args.collapse_std_threshold} (target std {logs['target_std']:.2e}, "
                f"effective rank of z {logs['z_effective_rank']:.2f})"
            )
            self._warn(msg)
        ratio = logs.get("z_between_clip_ratio")
        if ratio is not None and ratio < self.args.collapse_between_ratio:
            msg = (
                f"POSITION-ONLY COLLAPSE? step {self.state.step}: std of z across clips at the same frame "
                f"{logs['z_between_clip_std']:.2e} is {ratio:.2f} of its overall std {logs['z_std']:.2e} "
                f"(< {self.args.collapse_between_ratio}): codes depend on the frame position, not the audio"
            )
            self._warn(msg)
        return logs

    def _warn(self, msg: str) -> None:
        """To the log and, on the main process, to the console (tqdm hides plain logging)."""
        logger.warning(msg)
        self.accelerator.print("WARNING: " + msg)

    def final_model(self):
        return self.codec


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipe name (tiny, small, paper) or a YAML file")
    parser.add_argument(
        "--data", required=True, help="audio folder, saved dataset directory or HF dataset name"
    )
    parser.add_argument("--output-dir", required=True, help="run directory (checkpoints/, final/, logs)")
    parser.add_argument("--max-steps", type=int, default=None, help="override max_steps of the recipe")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="run-config overrides (YAML values)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    train_args = load_args(Stage1Args, args.recipe, "stage1", args.overrides, max_steps=args.max_steps)
    Stage1Trainer(train_args, args.data, args.output_dir, resume=args.resume).run()
    return 0
