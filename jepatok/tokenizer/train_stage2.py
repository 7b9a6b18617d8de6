"""Stage 2 of the JEPA tokenizer (arXiv 2512.07168 §3): FSQ + HiFi-GAN decoder on the stage-1 encoder.

`jepatok train-stage2 --recipe NAME_OR_YAML --stage1 DIR/final --data SOURCE --output-dir DIR
[--finetune-encoder] [--max-steps N] [--resume] [key=value ...]`.

The stage-1 `JepaCodecModel` is loaded with `from_pretrained` and refused (naming the differing keys) when
its architecture differs from the recipe's codec config. The encoder is frozen by default (eval mode, no
gradient; `--finetune-encoder` trains it). Each step, HiFi-GAN order: once `disc_start_step` is reached the
MPD + MSD discriminators (their own AdamW and schedule) take an LSGAN step on the detached reconstruction,
then the generator takes a step on L1 + 2.0 * MR-STFT + 0.1 * (LSGAN + 2 * FM) [+ mel-L1]. Mixed precision
goes through Accelerate (fp16 uses its grad scaler on CUDA). Every `sample_every` steps the main process
writes original/reconstructed WAVs, a spectrogram comparison PNG and the losses under DIR/samples/step_N/.
"""

from __future__ import annotations

import argparse
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.audio import write_wav
from ..data.training_data import AudioBatch
from .configuration import JepaCodecConfig
from .discriminators import JepaDiscriminators
from .losses import generator_loss, lsgan_discriminator_loss, stft_magnitude
from .train_common import (
    CodecTrainer,
    TrainArgs,
    _f,
    _unwrap_mod,
    average_gradients,
    load_args,
    write_json_atomic,
)
from .train_stage1 import _seed, add_common_arguments

logger = logging.getLogger(__name__)


@dataclass
class Stage2Args(TrainArgs):
    """Stage-2 run config (TrainArgs plus the decoder/GAN options; paper values by default)."""

    finetune_encoder: bool = _f(False, "train the encoder too (paper code: frozen)")
    freeze_codes: bool = _f(
        False,
        "train the decoder only: the pre-quantization projection stays as loaded (no calibration), so with the "
        "frozen encoder the codes and the codec's codes_hash stay the same, and LMs and pre-tokenized data made "
        "with the loaded codec stay valid",
    )
    encoder_lr: float | None = _f(None, "encoder lr when fine-tuning (None = lr)")
    disc_start_step: int = _f(5000, "step at which the discriminators start training")
    disc_lr: float = _f(7.5e-5, "discriminator AdamW lr")
    disc_warmup_steps: int = _f(0, "linear warmup of the discriminator lr (from disc_start_step)")
    l1_weight: float = _f(1.0, "weight of the waveform L1")
    stft_weight: float = _f(2.0, "weight of the multi-resolution STFT loss")
    gan_weight: float = _f(0.1, "weight of (LSGAN + fm_weight * feature matching)")
    fm_weight: float = _f(2.0, "feature-matching weight inside the GAN term")
    mel_weight: float = _f(0.0, "weight of the optional log-mel L1 (0 = off, as in the paper)")
    gan_before_disc: bool = _f(
        False, "add adversarial + FM terms before the discriminators train (authors' quirk)"
    )
    calibrate_quantizer_batches: int = _f(
        32,
        "with fsq.pre_projection: batches of training audio whose encoder latents set the projection to a "
        "whitening before step 1 (0 = keep the loaded projection; never on resume)",
    )
    quantizer_target_std: float = _f(
        0.8, "std of each whitened dimension (0.8: FSQ's 4 tanh bins about equally used)"
    )
    calibrate_envelope_batches: int = _f(
        32,
        "decoders with envelope_bands > 0: batches of training audio on which the envelope head is set to the "
        "ridge regression from the frame features to the input's log-mel patches before step 1 (0 = keep it; "
        "never on resume)",
    )
    envelope_weight: float = _f(
        1.0,
        "decoders with envelope_bands > 0: weight of the L1 between the predicted log-mel envelope and the "
        "input's (jepa.spectral_patches scale), on valid frames",
    )
    envelope_teacher_forcing: float = _f(
        0.0,
        "decoders with envelope_bands > 0: probability, per clip and step, that the waveform stack renders the "
        "input's true log-mel envelope instead of the predicted one (teaches the decoder to render envelopes; "
        "the head still trains on its L1; 0 = off)",
    )
    pitch_weight: float = _f(
        1.0,
        "decoders with pitch_subframes > 0: weight of the pitch head's loss (L1 of ln F0 on the input's voiced "
        "sub-frames + voicing BCE on all valid ones, against `pitch.estimate_pitch`)",
    )
    pitch_teacher_forcing: float = _f(
        0.0,
        "decoders with pitch_subframes > 0: probability, per clip and step, that the harmonic source follows the "
        "input's estimated F0 and voicing instead of the pitch head's (0 = off)",
    )
    sample_every: int = _f(500, "write audio samples + spectrogram PNG every N steps (0 = never)")
    num_samples: int = _f(2, "clips written per sample dump")

    def __post_init__(self):
        super().__post_init__()
        if self.freeze_codes and self.finetune_encoder:
            raise ValueError(
                "freeze_codes keeps the codes fixed, which --finetune-encoder would change; use one"
            )
        if not 0.0 <= self.envelope_teacher_forcing <= 1.0:
            raise ValueError(
                f"envelope_teacher_forcing is a probability in [0, 1], got {self.envelope_teacher_forcing}"
            )
        if not 0.0 <= self.pitch_teacher_forcing <= 1.0:
            raise ValueError(
                f"pitch_teacher_forcing is a probability in [0, 1], got {self.pitch_teacher_forcing}"
            )
        if self.pitch_weight < 0:
            raise ValueError(f"pitch_weight must be >= 0, got {self.pitch_weight}")


# ----------------------------------------------------------------------------------------------------
# Stage-1 checkpoint compatibility
# ----------------------------------------------------------------------------------------------------
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_differences(a: JepaCodecConfig, b: JepaCodecConfig) -> dict[str, tuple]:
    """Architecture keys (dotted) whose values differ: {key: (a_value, b_value)}."""
    from .modeling import _architecture_dict

    fa, fb = _flatten(_architecture_dict(a)), _flatten(_architecture_dict(b))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


# Fields a loaded checkpoint may lack (saved before them, so at their legacy value) while the recipe sets them:
# the modules they add are initialised by stage 2.
_ADDABLE = {
    "encoder_config.spectral_input_bands",
    "encoder_config.spectral_input_subframes",
    "encoder_config.spectral_input_hidden",
    "encoder_config.pitch_input_subframes",
    "fsq_config.pre_projection",
    "fsq_config.input_rms",
    "decoder_config.frame_layers",
    "decoder_config.envelope_bands",
    "decoder_config.envelope_subframes",
    "decoder_config.head",
    "decoder_config.istft_n_fft",
    "decoder_config.istft_hop",
    "decoder_config.istft_channels",
    "decoder_config.istft_layers",
    "decoder_config.pitch_subframes",
}


def load_stage1(path: str | Path, expected: JepaCodecConfig):
    """Load a stage-1 `JepaCodecModel`, refusing one whose architecture differs from `expected`, except for
    modules the recipe adds to a checkpoint saved without them (`_ADDABLE`): the encoder's spectral input
    (starts at zero), the pre-quantization projection
    (starts as the identity; stage 2 calibrates it), the decoder's frame blocks (start close to the identity)
    and its envelope path (its input starts small; stage 2 calibrates the head)."""
    from .modeling import JepaCodecModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"stage-1 checkpoint {str(path)!r} has no config.json (expected DIR/final)")
    found = JepaCodecConfig.from_pretrained(str(path))
    diff = config_differences(found, expected)
    if diff and all(k in _ADDABLE and old is None for k, (old, _) in diff.items()):
        logger.info("stage-1 checkpoint %s lacks %s: the recipe's modules are added", path, ", ".join(diff))
        with torch.random.fork_rng(devices=[]):  # the added modules' init must not depend on the global RNG
            torch.manual_seed(0)
            return JepaCodecModel.from_pretrained(str(path), config=expected)
    if diff:
        lines = ", ".join(f"{k}: checkpoint={va!r} recipe={vb!r}" for k, (va, vb) in diff.items())
        raise ValueError(
            f"stage-1 checkpoint {str(path)!r} does not match the recipe's codec config "
            f"({len(diff)} differing keys: {lines}); use the recipe the encoder was trained with"
        )
    return JepaCodecModel.from_pretrained(str(path))


def whitening_projection(
    count: torch.Tensor, total: torch.Tensor, outer: torch.Tensor, target_std: float, floor: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening from sufficient statistics of latents z [N, D] (count N, sum over frames [D], sum of z z^T
    [D, D]): (weight [D, D], bias [D]) with W z + b zero-mean, decorrelated and of std `target_std` in every
    direction. Eigenvalues below `floor` times the largest are raised to it (a direction the data never
    varies in is not blown up to full scale)."""
    n = float(count.reshape(-1)[0])
    if n < 2:
        raise ValueError(f"whitening needs at least 2 latent frames, got {int(n)}")
    mean = total.double() / n
    cov = outer.double() / n - torch.outer(mean, mean)
    eigvals, eigvecs = torch.linalg.eigh((cov + cov.T) / 2)
    eigvals = eigvals.clamp_min(float(eigvals.max().clamp_min(1e-30)) * floor)
    weight = target_std * (eigvecs * eigvals.rsqrt()) @ eigvecs.T
    return weight, -(weight @ mean)


class Stage2Generator(nn.Module):
    """Encoder -> FSQ -> decoder as one module (what DDP wraps). Frozen encoder runs without gradients."""

    def __init__(self, codec, finetune_encoder: bool):
        super().__init__()
        self.codec = codec
        self.finetune_encoder = finetune_encoder
        codec.encoder.requires_grad_(finetune_encoder)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune_encoder:
            self.codec.encoder.eval()
        return self

    def forward(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None,
        envelope_override: torch.Tensor | None = None,
        override_rows: torch.Tensor | None = None,
        pitch_override: tuple[torch.Tensor, torch.Tensor] | None = None,
        pitch_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """[B, 1, L] (L a multiple of the hop) -> (reconstruction [B, 1, L], the decoder's predicted log-mel
        envelope [B, T, bands * subframes] or None, its pitch head's output [B, 2, T * pitch_subframes] or None).
        `envelope_override` / `override_rows`, `pitch_override` / `pitch_rows`: teacher forcing
        (`JepaDecoder.forward`)."""
        with torch.set_grad_enabled(self.finetune_encoder and torch.is_grad_enabled()):
            enc = self.codec.encoder(input_values, padding_mask)  # latents [B, T, D]
        quantized = self.codec.quantize(enc.latents).quantized
        audio, envelope, pitch = self.codec.decoder(
            quantized,
            return_envelope=True,
            envelope_override=envelope_override,
            override_rows=override_rows,
            frame_mask=enc.frame_mask,
            return_pitch=True,
            pitch_override=pitch_override,
            pitch_override_rows=pitch_rows,
        )
        return audio[..., : input_values.shape[-1]], envelope, pitch


class Stage2Trainer(CodecTrainer):
    """Stage-2 loop; see the module docstring.

    Args:
        stage1 (`str`): Directory of the stage-1 final model (`save_pretrained` output).
        Other args as `CodecTrainer`.
    """

    stage = "stage2"

    def __init__(self, args: Stage2Args, data: str, output_dir, stage1: str, resume: bool = False):
        super().__init__(args, data, output_dir, resume)
        self.stage1 = stage1
        self.codec = load_stage1(stage1, self.config)  # fail before any setup

    def build(self) -> None:
        a, acc = self.args, self.accelerator
        if (
            a.grad_accum > 1
            and acc.num_processes > 1
            and acc.distributed_type.value not in ("MULTI_GPU", "MULTI_CPU")
        ):
            raise ValueError(
                f"stage 2 with grad_accum > 1 on several processes needs DDP (got {acc.distributed_type.value}); "
                "use grad_accum=1 and a larger batch_size"
            )
        generator = Stage2Generator(self.codec, a.finetune_encoder)
        quantizer_trained = self.codec.pre_quant is not None and not a.freeze_codes
        if self.codec.pre_quant is not None:
            self.codec.pre_quant.requires_grad_(quantizer_trained)
        trained = [self.codec.decoder] + ([self.codec.pre_quant] if quantizer_trained else [])
        groups = [{"params": [p for m in trained for p in m.parameters()], "lr": a.lr}]
        if a.finetune_encoder:
            groups.append({"params": list(self.codec.encoder.parameters()), "lr": a.encoder_lr or a.lr})
        g_opt = self.make_optimizer(groups, a.lr)
        disc = JepaDiscriminators(self.config)
        d_opt = torch.optim.AdamW(
            disc.parameters(), lr=a.disc_lr, betas=(a.adam_beta1, a.adam_beta2), weight_decay=a.weight_decay
        )
        self.gen, self.g_opt, self.disc, self.d_opt = acc.prepare(generator, g_opt, disc, d_opt)
        self.g_sched = self.make_scheduler(self.g_opt)
        self.d_sched = self.make_scheduler(
            self.d_opt, max(1, a.max_steps - a.disc_start_step), a.disc_warmup_steps
        )
        self.gen.train()
        self.disc.train()

    def checkpointed_modules(self) -> tuple[list, list]:
        return [self.gen, self.disc], [self.g_opt, self.d_opt]  # the order they were prepared in

    def before_first_step(self, dataset, sampler, collator) -> None:
        """Calibrations from data on a fresh run: `pre_quant`, then the envelope head (each on its own stream
        of training batches; statistics summed over processes, so every process sets the same weights)."""
        a = self.args
        if self.codec.pre_quant is not None and a.calibrate_quantizer_batches > 0 and not a.freeze_codes:
            self.calibrate_quantizer(dataset, sampler, collator)
        if self.codec.decoder.envelope_block is not None and a.calibrate_envelope_batches > 0:
            self.calibrate_envelope(dataset, sampler, collator)

    def calibration_batches(self, dataset, sampler, collator, count: int):
        """Yield the first `count` training batches from a stream of their own (the training order is
        unchanged), with the codec in eval mode; afterwards the generator's train mode is restored, which
        keeps a frozen encoder in eval mode."""
        from ..data.training_data import iterate_batches

        stream = iterate_batches(dataset, sampler, collator, 0, 0)
        self.codec.eval()
        try:
            for _ in range(count):
                yield next(stream)[1].to(self.accelerator.device)
        finally:
            self.gen.train()

    def calibrate_envelope(self, dataset, sampler, collator, ridge: float = 1e-3) -> None:
        """Set the decoder's envelope head to the ridge regression (penalty `ridge` x mean feature variance)
        from its frame features to the input's log-mel patches, over `calibrate_envelope_batches` batches."""
        a, acc, codec = self.args, self.accelerator, self.codec
        head = codec.decoder.envelope_head
        d, k = head.in_channels, head.out_channels
        dev, f64 = acc.device, torch.float64
        stats = {
            "n": torch.zeros(1, dtype=f64, device=dev),
            "sx": torch.zeros(d, dtype=f64, device=dev),
            "sy": torch.zeros(k, dtype=f64, device=dev),
            "xx": torch.zeros(d, d, dtype=f64, device=dev),
            "xy": torch.zeros(d, k, dtype=f64, device=dev),
        }
        with torch.no_grad():
            for b in self.calibration_batches(dataset, sampler, collator, a.calibrate_envelope_batches):
                enc = codec.encoder(b.input_values, b.padding_mask)
                q = codec.quantize(enc.latents).quantized
                x = codec.decoder.frame_features(q, enc.frame_mask).transpose(1, 2)  # [B, T, D]
                y, m = self.envelope_target(b)
                x, y = x[m].double(), y[m].double()
                stats["n"] += x.shape[0]
                stats["sx"] += x.sum(0)
                stats["sy"] += y.sum(0)
                stats["xx"] += x.T @ x
                stats["xy"] += x.T @ y
        if acc.num_processes > 1:
            stats = {key: acc.reduce(v, "sum") for key, v in stats.items()}
        n = float(stats["n"][0])
        if n < 2:
            raise ValueError(f"envelope calibration needs at least 2 valid frames, got {int(n)}")
        mx, my = stats["sx"] / n, stats["sy"] / n
        cxx = stats["xx"] / n - torch.outer(mx, mx)
        cxy = stats["xy"] / n - torch.outer(mx, my)
        penalty = ridge * float(torch.diagonal(cxx).mean().clamp_min(1e-12))
        w = torch.linalg.solve(cxx + penalty * torch.eye(d, dtype=f64, device=dev), cxy)  # [D, K]
        head.weight.data.copy_(w.T.unsqueeze(-1).to(head.weight))
        head.bias.data.copy_((my - mx @ w).to(head.bias))
        acc.print(f"envelope head calibrated on {int(n)} frames (ridge regression to the log-mel patches)")

    def calibrate_quantizer(self, dataset, sampler, collator) -> None:
        """Set `pre_quant` to a whitening of the encoder's latents on `calibrate_quantizer_batches` batches."""
        a, acc = self.args, self.accelerator
        dim = self.codec.pre_quant.weight.shape[0]
        count = torch.zeros(1, dtype=torch.float64, device=acc.device)
        total = torch.zeros(dim, dtype=torch.float64, device=acc.device)
        outer = torch.zeros(dim, dim, dtype=torch.float64, device=acc.device)
        with torch.no_grad():
            for batch in self.calibration_batches(dataset, sampler, collator, a.calibrate_quantizer_batches):
                enc = self.codec.encoder(batch.input_values, batch.padding_mask)
                z = enc.latents[enc.frame_mask].double()  # valid frames only [N, D]
                count += z.shape[0]
                total += z.sum(0)
                outer += z.T @ z
        if acc.num_processes > 1:
            count, total, outer = (acc.reduce(t, "sum") for t in (count, total, outer))
        weight, bias = whitening_projection(count, total, outer, a.quantizer_target_std)
        self.codec.pre_quant.weight.data.copy_(weight.to(self.codec.pre_quant.weight))
        self.codec.pre_quant.bias.data.copy_(bias.to(self.codec.pre_quant.bias))
        frames = int(count.item())
        acc.print(
            f"quantizer calibrated on {frames} frames: pre_quant whitens the latents to std {a.quantizer_target_std}"
        )

    def train_step(self, batches: list[AudioBatch]) -> dict[str, float]:
        a, acc = self.args, self.accelerator
        n, step = len(batches), self.state.step
        disc_on = step >= a.disc_start_step
        use_gan = disc_on or a.gan_before_disc
        # All generator forwards run before any generator backward (the D step sits in between). DDP
        # decides at forward time whether a backward all-reduces, and a pending synced graph would be
        # reduced by the first backward that reaches it; so with several micro-batches every forward runs
        # in no_sync and the gradients are all-reduced once, explicitly, after the last backward.
        manual_reduce = n > 1 and acc.num_processes > 1
        wants_target = self.codec.decoder.envelope_block is not None and (
            a.envelope_weight > 0 or a.envelope_teacher_forcing > 0
        )
        has_pitch = bool(self.codec.decoder.pitch_subframes)
        fakes, envelopes, targets, pitches, pitch_targets = [], [], [], [], []
        for i, b in enumerate(batches):
            # the input's log-mel envelope, computed once per micro-batch for teacher forcing and the L1
            target = self.envelope_target(b) if wants_target else None
            targets.append(target)
            forcing = self.teacher_forcing(b, step, i, target)
            pitch_target = self.pitch_target(b) if has_pitch else None
            pitch_targets.append(pitch_target)
            pitch_forcing = self.pitch_forcing(b, step, i, pitch_target)
            with acc.no_sync(self.gen) if manual_reduce else nullcontext(), acc.autocast():
                fake, envelope, pitch = self.gen(b.input_values, b.padding_mask, *forcing, *pitch_forcing)
            fakes.append(fake)
            envelopes.append(envelope)
            pitches.append(pitch)
        metrics: dict[str, float] = {}
        if disc_on:  # 1) discriminator step on detached reconstructions
            self.d_opt.zero_grad(set_to_none=True)
            d_total = 0.0
            for i, (b, fake) in enumerate(zip(batches, fakes)):
                with self.sync_context(self.disc, i, n):
                    with acc.autocast():
                        out = self.disc(torch.cat([b.input_values, fake.detach()]))
                        real, gen_out = JepaDiscriminators.split(out, b.input_values.shape[0])
                        d_loss = lsgan_discriminator_loss(real.logits, gen_out.logits)
                    acc.backward(d_loss / n)
                d_total += float(d_loss.detach()) / n
            metrics["disc_grad_norm"] = self.clip(self.disc.parameters())
            self.d_opt.step()
            self.d_sched.step()
            self.d_opt.zero_grad(set_to_none=True)
            metrics["disc_loss"] = d_total
            metrics["disc_lr"] = self.d_sched.get_last_lr()[0]
        # 2) generator step
        sums: dict[str, float] = {}
        for b, fake, envelope, target, pitch, pitch_target in zip(
            batches, fakes, envelopes, targets, pitches, pitch_targets
        ):
            with acc.autocast():
                kwargs = {}
                if use_gan:
                    real, gen_out = self.disc_for_generator(b.input_values, fake)
                    kwargs = dict(
                        fake_logits=gen_out.logits,
                        real_features=real.features,
                        fake_features=gen_out.features,
                    )
                losses = generator_loss(
                    fake,
                    b.input_values,
                    mask=b.padding_mask,
                    l1_weight=a.l1_weight,
                    stft_weight=a.stft_weight,
                    gan_weight=a.gan_weight,
                    fm_weight=a.fm_weight,
                    mel_weight=a.mel_weight,
                    sampling_rate=self.config.sampling_rate,
                    **kwargs,
                )
            total = losses.total
            if envelope is not None and a.envelope_weight > 0:
                env_loss = self.envelope_loss(envelope, b, target)
                total = total + a.envelope_weight * env_loss
                sums["gen_envelope"] = sums.get("gen_envelope", 0.0) + float(env_loss.detach()) / n
            if pitch is not None and a.pitch_weight > 0:
                f0_loss, voicing_loss = self.pitch_loss(pitch, pitch_target)
                total = total + a.pitch_weight * (f0_loss + voicing_loss)
                sums["gen_pitch_f0"] = sums.get("gen_pitch_f0", 0.0) + float(f0_loss.detach()) / n
                sums["gen_pitch_voicing"] = (
                    sums.get("gen_pitch_voicing", 0.0) + float(voicing_loss.detach()) / n
                )
            acc.backward(total / n)
            for k, v in losses.as_dict("gen_").items():
                sums[k] = sums.get(k, 0.0) + v / n
        metrics.update(sums)
        metrics["loss"] = (
            metrics.pop("gen_loss")
            + a.envelope_weight * metrics.get("gen_envelope", 0.0)
            + a.pitch_weight * (metrics.get("gen_pitch_f0", 0.0) + metrics.get("gen_pitch_voicing", 0.0))
        )
        params = [p for p in _unwrap_mod(self.gen).parameters() if p.requires_grad]
        if manual_reduce:
            average_gradients(params, acc.num_processes)
        metrics["grad_norm"] = self.clip(params)
        self.g_opt.step()
        self.g_sched.step()
        self.g_opt.zero_grad(set_to_none=True)
        metrics["lr"] = self.g_sched.get_last_lr()[0]
        if a.sample_every and (step + 1) % a.sample_every == 0 and acc.is_main_process:
            self.write_samples(step + 1, batches[0], fakes[0].detach(), metrics)
        return metrics

    def teacher_forcing(self, batch: AudioBatch, step: int, micro: int, target: tuple | None = None) -> tuple:
        """(true envelope [B, T, M * S], clips to force [B] bool) for `envelope_teacher_forcing`, or (None, None).
        The draw is seeded from (seed, step, rank, micro-batch), so resume stays exact. `target`: the batch's
        `envelope_target` when already computed."""
        p = self.args.envelope_teacher_forcing
        if p <= 0 or self.codec.decoder.envelope_block is None:
            return None, None
        gen = torch.Generator().manual_seed(
            _seed(self.args.seed, step, self.accelerator.process_index, micro)
        )
        rows = torch.rand(batch.input_values.shape[0], generator=gen) < p
        target = self.envelope_target(batch) if target is None else target
        return target[0], rows.to(batch.input_values.device)

    def pitch_forcing(self, batch: AudioBatch, step: int, micro: int, target: tuple | None) -> tuple:
        """((true f0, voicing) each [B, N], clips to force [B] bool) for `pitch_teacher_forcing`, or (None, None).
        Drawn from its own seeded stream (resume stays exact; the envelope's draws do not move)."""
        p = self.args.pitch_teacher_forcing
        if p <= 0 or target is None:
            return None, None
        gen = torch.Generator().manual_seed(
            _seed(self.args.seed + 7919, step, self.accelerator.process_index, micro)
        )
        rows = torch.rand(batch.input_values.shape[0], generator=gen) < p
        f0, voiced, _ = target
        return (f0, voiced.to(f0.dtype)), rows.to(batch.input_values.device)

    @torch.no_grad()
    def pitch_target(self, batch: AudioBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The input's F0 (Hz), voicing (bool) and the valid-sub-frame mask, each [B, T * pitch_subframes]
        (`pitch.estimate_pitch` at the decoder's sub-frame hop; sub-frames past the real samples are invalid)."""
        from .encoder import valid_lengths
        from .pitch import estimate_pitch

        x, hop = batch.input_values, self.config.hop_length
        sub_hop = hop // self.codec.decoder.pitch_subframes
        f0, voiced, _ = estimate_pitch(x.reshape(x.shape[0], -1), self.config.sampling_rate, sub_hop)
        lengths = valid_lengths(batch.padding_mask, x.shape[0], x.shape[-1], x.device)
        valid = torch.arange(f0.shape[1], device=x.device).unsqueeze(0) * sub_hop < lengths.view(-1, 1)
        return f0, voiced & valid, valid

    def pitch_loss(self, pitch: torch.Tensor, target: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """(L1 of ln F0 over the voiced valid sub-frames, voicing BCE over the valid ones) of the pitch head's
        output [B, 2, N] against `pitch_target` (`pitch.pitch_head_losses`)."""
        from .pitch import pitch_head_losses

        f0, voiced, valid = target
        return pitch_head_losses(pitch, f0, voiced, valid)

    @torch.no_grad()
    def envelope_target(self, batch: AudioBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The input's log-mel patches [B, T, M * S] at the decoder's envelope shape, and the mask [B, T] of
        the frames that cover real samples."""
        from .encoder import frame_mask_from_lengths, valid_lengths
        from .jepa import spectral_patches

        dec = self.config.decoder_config
        x, hop = batch.input_values, self.config.hop_length
        target = spectral_patches(
            x, hop, self.config.sampling_rate, dec.envelope_bands, dec.envelope_subframes
        )
        lengths = valid_lengths(batch.padding_mask, x.shape[0], x.shape[-1], x.device)
        return target, frame_mask_from_lengths(lengths, target.shape[1], hop)

    def envelope_loss(
        self, envelope: torch.Tensor, batch: AudioBatch, target: tuple | None = None
    ) -> torch.Tensor:
        """L1 between the decoder's predicted envelope [B, T, M * S] and the input's log-mel patches, over
        the frames that cover real samples."""
        from .losses import masked_frame_l1

        target, mask = self.envelope_target(batch) if target is None else target
        return masked_frame_l1(envelope, target, mask)

    def disc_for_generator(self, real_audio: torch.Tensor, fake: torch.Tensor):
        """Discriminator outputs for the generator loss: real audio without autograd (its features are
        stop-gradient targets anyway) and generated audio with the discriminator's weights frozen, so the
        backward only flows into the generator. Under DDP the forward runs in no_sync: nothing to reduce."""
        params = [p for p in self.disc.parameters()]
        with self.accelerator.no_sync(self.disc):
            with torch.no_grad():
                real = self.disc(real_audio)
            for p in params:
                p.requires_grad_(False)
            try:
                fake_out = self.disc(fake)
            finally:
                for p in params:
                    p.requires_grad_(True)
        return real, fake_out

    def write_samples(self, step: int, batch: AudioBatch, fake: torch.Tensor, metrics: dict) -> Path:
        """WAVs (original / reconstruction), a spectrogram comparison PNG and the losses for a few clips."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = self.output_dir / "samples" / f"step_{step}"
        out_dir.mkdir(parents=True, exist_ok=True)
        sr = self.config.sampling_rate
        k = min(self.args.num_samples, batch.input_values.shape[0])
        fig, axes = plt.subplots(k, 2, figsize=(10, 2.6 * k), squeeze=False)
        for i in range(k):
            n = int(batch.lengths[i])
            ref, rec = batch.input_values[i, 0, :n].float().cpu(), fake[i, 0, :n].float().cpu()
            write_wav(out_dir / f"{i}_original.wav", ref, sr)
            write_wav(out_dir / f"{i}_reconstruction.wav", rec, sr)
            n_fft = min(512, max(16, 1 << (max(n, 2) - 1).bit_length() - 1))
            specs = [torch.log10(stft_magnitude(w[None], n_fft, n_fft // 4)[0] + 1e-5) for w in (ref, rec)]
            lo, hi = float(specs[0].min()), float(specs[0].max())  # one colour scale per row: comparable
            for j, (name, spec) in enumerate(zip(("original", "reconstruction"), specs)):
                extent = (0.0, n / sr, 0.0, sr / 2000.0)
                axes[i][j].imshow(
                    spec.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi, extent=extent
                )
                axes[i][j].set_title(f"clip {i} {name}")
                axes[i][j].set_xlabel("s")
                axes[i][j].set_ylabel("kHz")
        fig.suptitle(f"stage 2, step {step}")
        fig.tight_layout()
        tmp = out_dir / ".spectrograms.tmp.png"
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(out_dir / "spectrograms.png")
        write_json_atomic(out_dir / "losses.json", {"step": step, **metrics})
        return out_dir

    def final_model(self):
        return self.codec

    def fingerprint_modules(self) -> list:
        return [self.codec, self.disc]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--stage1", required=True, help="stage-1 final model directory (DIR/final)")
    parser.add_argument(
        "--finetune-encoder", action="store_true", help="train the encoder too (default: frozen)"
    )


def run(args: argparse.Namespace) -> int:
    train_args = load_args(
        Stage2Args,
        args.recipe,
        "stage2",
        args.overrides,
        max_steps=args.max_steps,
        finetune_encoder=True if args.finetune_encoder else None,
    )
    Stage2Trainer(train_args, args.data, args.output_dir, args.stage1, resume=args.resume).run()
    return 0
