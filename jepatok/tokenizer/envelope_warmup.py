"""Envelope warm-up: train a codec's frame-rate path to carry each frame's log-mel envelope through FSQ.

Between stage 1 and stage 2 (or on a trained codec before more stage-2 training), the modules that work at
the frame rate -- the encoder's bottleneck, spectral input and Conformers, the pre-quantization projection,
and the decoder's frame blocks and envelope head -- are trained as an autoencoder of the per-frame log-mel
patches (`spectral.spectral_patches`, the decoder's envelope shape) through FSQ's straight-through
rounding. The convolutional front-end is frozen, so its output is computed once per clip and cached:
a step costs a few Conformer layers at 2.5 frames/s instead of a waveform forward/backward, which makes
thousands of steps over the whole corpus affordable on a CPU. The waveform decoder is not touched here;
stage 2 then teaches it to render the new codes (`calibrate_quantizer_batches=0` keeps the trained
projection).

    jepatok train-envelope --codec runs/s2/final --preset small --data corpus/ --output-dir runs/env
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from .configuration import JepaCodecConfig
from .encoder import JepaEncoder
from .layers import apply_mask
from .losses import masked_frame_l1
from .spectral import spectral_patches

logger = logging.getLogger(__name__)


@torch.no_grad()
def frame_inputs(
    encoder: JepaEncoder, audio: torch.Tensor, bands: int, subframes: int, pitch_subframes: int = 0
) -> dict:
    """One clip [L] -> the cached inputs of the frame-rate path: the front-end output before the bottleneck
    [C, T], the spectral-input patches [T, P] (None without a spectral input), the target envelope
    [T, bands * subframes] and, with `pitch_subframes` > 0 (a decoder pitch path), the input's F0 and
    voicing [T, pitch_subframes] each (`pitch.estimate_pitch`; else None)."""
    x, _ = encoder.pad_input(audio.view(1, 1, -1), None)
    frames = x.shape[-1] // encoder.hop_length
    h = encoder.stem(x)
    for block in encoder.blocks:
        h = block(h, None)
    spectral = encoder.spectral_patches(x, 0, frames)
    spectral = None if spectral is None else spectral[0]
    pitch_in = encoder.pitch_features(x, 0, frames)
    pitch_in = None if pitch_in is None else pitch_in[0]
    target = spectral_patches(x, encoder.hop_length, encoder.sampling_rate, bands, subframes)[0]
    f0 = voiced = None
    if pitch_subframes:
        from .pitch import estimate_pitch

        f0, voiced, _ = estimate_pitch(
            x.view(-1), encoder.sampling_rate, encoder.hop_length // pitch_subframes
        )
        f0, voiced = f0.view(frames, pitch_subframes), voiced.view(frames, pitch_subframes)
    return {
        "front": h[0],
        "spectral": spectral,
        "pitch_in": pitch_in,
        "target": target,
        "f0": f0,
        "voiced": voiced,
    }


def _pad(items: list[torch.Tensor | None], frames: int, time_dim: int) -> torch.Tensor | None:
    if items[0] is None:
        return None
    out = []
    for t in items:
        pad = [0, 0] * (t.dim() - 1 - time_dim) + [0, frames - t.shape[time_dim]]
        out.append(nn.functional.pad(t, pad))
    return torch.stack(out)


def collate(cache: list[dict], indices: list[int]) -> dict:
    """Cached clips -> a right-padded batch with its frame mask [B, T]."""
    clips = [cache[i] for i in indices]
    lengths = torch.tensor([c["target"].shape[0] for c in clips])
    frames = int(lengths.max())
    return {
        "front": _pad([c["front"] for c in clips], frames, 1),
        "spectral": _pad([c["spectral"] for c in clips], frames, 0),
        "pitch_in": _pad([c.get("pitch_in") for c in clips], frames, 0),
        "target": _pad([c["target"] for c in clips], frames, 0),
        "f0": _pad([c.get("f0") for c in clips], frames, 0),
        "voiced": _pad([c.get("voiced") for c in clips], frames, 0),
        "mask": torch.arange(frames).unsqueeze(0) < lengths.unsqueeze(1),
    }


def frame_latents(codec, batch: dict) -> torch.Tensor:
    """The encoder's frame-rate part on a cached batch -> latents z [B, T, D] (what `codec.quantize` takes)."""
    enc = codec.encoder
    mask = batch["mask"]
    z = enc.bottleneck(batch["front"])
    if batch["spectral"] is not None:
        z = z + enc.spectral_input(batch["spectral"]).transpose(1, 2)
    if batch.get("pitch_in") is not None:
        z = z + enc.pitch_input(batch["pitch_in"]).transpose(1, 2)
    z = apply_mask(z, mask.unsqueeze(1).to(z.dtype)).transpose(1, 2)
    return enc.conformer_stack(z, None if bool(mask.all()) else mask)[0]


def envelope_forward(codec, batch: dict, return_pitch: bool = False):
    """The frame-rate path on a cached batch -> predicted envelope [B, T, bands * subframes] (and, with
    `return_pitch`, the pitch head's output [B, 2, T * pitch_subframes], None without a pitch path)."""
    quantized = codec.quantize(frame_latents(codec, batch)).quantized
    features = codec.decoder.frame_features(quantized, batch["mask"])
    envelope = codec.decoder.envelope_head(features).transpose(1, 2)
    if not return_pitch:
        return envelope
    pitch = codec.decoder.predict_pitch(features) if codec.decoder.pitch_subframes else None
    return envelope, pitch


def pitch_losses(pitch: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 of ln F0 over voiced valid sub-frames, voicing BCE over valid sub-frames) of the pitch head's output
    [B, 2, T * S] against the cached targets (stage 2's `pitch_loss` on the cached batch layout)."""
    from .pitch import pitch_head_losses

    b, t, s = batch["f0"].shape
    valid = batch["mask"].unsqueeze(-1).expand(b, t, s).reshape(b, t * s)
    return pitch_head_losses(pitch, batch["f0"].reshape(b, t * s), batch["voiced"].reshape(b, t * s), valid)


def trained_modules(codec) -> list[nn.Module]:
    """The modules the warm-up trains (everything between the frozen front-end and the envelope head, and the
    pitch head when the decoder has one)."""
    mods = [codec.encoder.bottleneck, codec.encoder.conformers, codec.decoder.frame_blocks]
    mods += [codec.decoder.envelope_head]
    if codec.decoder.pitch_subframes:
        mods.append(codec.decoder.pitch_head)
    mods += [
        m for m in (codec.encoder.spectral_input, codec.encoder.pitch_input, codec.pre_quant) if m is not None
    ]
    return mods


@torch.no_grad()
def whiten_quantizer(codec, cache: list[dict], target_std: float = 0.8, batch_size: int = 16) -> int:
    """Set `codec.pre_quant` to a ZCA whitening (std `target_std`) of the latents of the cached clips, as stage 2's
    `calibrate_quantizer_batches` does from audio; returns the number of frames used."""
    from .train_stage2 import whitening_projection

    if codec.pre_quant is None:
        raise ValueError("the codec has no pre-quantization projection (fsq_config.pre_projection = false)")
    codec.eval()
    dim = codec.pre_quant.weight.shape[0]
    count, total = torch.zeros(1, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    outer = torch.zeros(dim, dim, dtype=torch.float64)
    for s in range(0, len(cache), batch_size):
        b = collate(cache, list(range(s, min(len(cache), s + batch_size))))
        z = frame_latents(codec, b)[b["mask"]].double()  # valid frames [N, D]
        count += z.shape[0]
        total += z.sum(0)
        outer += z.T @ z
    weight, bias = whitening_projection(count, total, outer, target_std)
    codec.pre_quant.weight.copy_(weight.to(codec.pre_quant.weight))
    codec.pre_quant.bias.copy_(bias.to(codec.pre_quant.bias))
    return int(count.item())


@torch.no_grad()
def envelope_r2(codec, cache: list[dict], batch_size: int = 16) -> tuple[float, float]:
    """(L1, pooled R^2) of the predicted envelope over cached clips (valid frames only)."""
    codec.eval()
    preds, targets = [], []
    for s in range(0, len(cache), batch_size):
        b = collate(cache, list(range(s, min(len(cache), s + batch_size))))
        preds.append(envelope_forward(codec, b)[b["mask"]])
        targets.append(b["target"][b["mask"]])
    pred, target = torch.cat(preds), torch.cat(targets)
    err = float(((pred - target) ** 2).sum())
    tot = float(((target - target.mean(0)) ** 2).sum())
    l1 = float((pred - target).abs().mean())
    return l1, 1.0 - err / max(tot, 1e-12)


@torch.no_grad()
def pitch_scores(codec, cache: list[dict], batch_size: int = 16) -> dict | None:
    """The pitch head against the cached targets (valid sub-frames): median |error| in cents and the gross
    error rate (> 20 % off) on the voiced ones, and the voicing error rate; None without a pitch path."""
    if not codec.decoder.pitch_subframes:
        return None
    codec.eval()
    cents, wrong, total = [], 0, 0
    for s in range(0, len(cache), batch_size):
        b = collate(cache, list(range(s, min(len(cache), s + batch_size))))
        _, pitch = envelope_forward(codec, b, return_pitch=True)
        n, t, k = b["f0"].shape
        valid = b["mask"].unsqueeze(-1).expand(n, t, k).reshape(n, t * k)
        voiced = b["voiced"].reshape(n, t * k) & valid
        f0, p_voiced = codec.decoder.pitch_values(pitch)
        cents.append(1200 * torch.log2(f0 / b["f0"].reshape(n, t * k).clamp_min(1.0))[voiced])
        wrong += int(((p_voiced > 0.5) != voiced)[valid].sum())
        total += int(valid.sum())
    c = torch.cat(cents).abs()
    return {
        "median_cents": float(c.median()) if c.numel() else float("nan"),
        "gross_error": float((c > 1200 * math.log2(1.2)).float().mean()) if c.numel() else float("nan"),
        "voicing_error": wrong / max(total, 1),
    }


def build_cache(codec, source: str, split: str, max_seconds: float, progress: bool) -> list[dict]:
    """Read every clip of a split at the codec rate (at most `max_seconds` each) and cache its inputs."""
    from tqdm.auto import tqdm

    from ..data.training_data import AudioTrainingDataset, load_audio_source

    src = load_audio_source(source, split=split)
    data = AudioTrainingDataset(src, codec.config.sampling_rate, crop_seconds=max_seconds)
    dec = codec.config.decoder_config
    codec.eval()
    return [
        frame_inputs(
            codec.encoder, data[(0, i)], dec.envelope_bands, dec.envelope_subframes, dec.pitch_subframes
        )
        for i in tqdm(range(len(data)), desc=f"front-end cache ({split})", disable=not progress)
    ]


def warmup(
    codec,
    train: list[dict],
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    warmup_steps: int = 50,
    seed: int = 0,
    log_every: int = 50,
    metrics_path: Path | None = None,
    progress: bool = True,
    pitch_weight: float = 1.0,
) -> list[dict]:
    """Train `trained_modules(codec)` for `steps` AdamW steps (linear warm-up, cosine to 0.1 x lr) on the
    masked L1 between predicted and true envelopes, plus `pitch_weight` x `pitch_losses` when the decoder has a
    pitch path (the codes then learn to carry the F0 contour too); returns the logged metrics."""
    from tqdm.auto import tqdm

    if steps <= 0:
        raise ValueError(f"steps must be a positive number of optimizer steps, got {steps}")
    codec.requires_grad_(False)
    params = [p for m in trained_modules(codec) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.8, 0.99), weight_decay=1e-3)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed)
    codec.train()
    history, running, running_pitch = [], 0.0, [0.0, 0.0]
    has_pitch = bool(codec.decoder.pitch_subframes)
    bar = tqdm(range(steps), desc="envelope warm-up", disable=not progress)
    for step in bar:
        idx = torch.randint(len(train), (batch_size,), generator=gen).tolist()
        batch = collate(train, idx)
        envelope, pitch = envelope_forward(codec, batch, return_pitch=True)
        env_loss = masked_frame_l1(envelope, batch["target"], batch["mask"])
        loss = env_loss
        if has_pitch:
            f0_loss, voicing_loss = pitch_losses(pitch, batch)
            loss = loss + pitch_weight * (f0_loss + voicing_loss)
            running_pitch[0] += float(f0_loss.detach())
            running_pitch[1] += float(voicing_loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running += float(env_loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            k = (step % log_every) + 1
            row = {"step": step + 1, "envelope_l1": running / k, "lr": sched.get_last_lr()[0]}
            if has_pitch:
                row.update(pitch_f0_l1=running_pitch[0] / k, pitch_voicing_bce=running_pitch[1] / k)
            running, running_pitch = 0.0, [0.0, 0.0]
            history.append(row)
            bar.set_postfix(l1=f"{row['envelope_l1']:.4f}")
            if metrics_path is not None:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
    codec.requires_grad_(True)
    codec.eval()
    return history


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codec", required=True, help="trained codec directory (stage-1 or stage-2 final/)")
    parser.add_argument(
        "--preset",
        default=None,
        help="codec preset whose architecture to train into (modules it adds to --codec start as in "
        "stage 2, e.g. the spectral input at zero); default: the codec's own config",
    )
    parser.add_argument(
        "--spectral-input-bands",
        type=int,
        default=None,
        help="with --preset: set encoder_config.spectral_input_bands (e.g. 32; the 20 sub-frames of the envelope)",
    )
    parser.add_argument(
        "--spectral-input-hidden",
        type=int,
        default=None,
        help="with --spectral-input-bands: set encoder_config.spectral_input_hidden (an MLP spectral input, e.g. 512)",
    )
    parser.add_argument(
        "--fsq-input-rms",
        type=float,
        default=None,
        help="with --preset: set fsq_config.input_rms (each frame's FSQ input rescaled to this RMS, e.g. 0.8)",
    )
    parser.add_argument(
        "--pitch-subframes",
        type=int,
        default=None,
        help="add the decoder's pitch path (decoder_config.pitch_subframes, e.g. 20; iSTFT head only) and train "
        "the codes to carry each frame's F0 contour and voicing beside the envelope",
    )
    parser.add_argument(
        "--pitch-weight", type=float, default=1.0, help="weight of the pitch loss (default 1.0)"
    )
    parser.add_argument(
        "--pitch-input",
        action="store_true",
        help="with --pitch-subframes: also add the encoder's pitch input (encoder_config.pitch_input_subframes, "
        "the input's F0 track, started as a no-op) so the codes can carry the F0 the decoder needs",
    )
    parser.add_argument(
        "--whiten",
        action="store_true",
        help="first set the pre-quantization projection to a whitening of the train clips' latents",
    )
    parser.add_argument("--data", required=True, help="SOURCE with a train split (and validation for R^2)")
    parser.add_argument("--output-dir", required=True, help="run folder: final/ (the codec), metrics.jsonl")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step (default 16)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="longest clip kept (default 20 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from .modeling import JepaCodecModel
    from .train_stage2 import load_stage1

    out = Path(args.output_dir)
    if (out / "final").exists():
        raise FileExistsError(f"{str(out / 'final')!r} already exists; choose another --output-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    bands = getattr(args, "spectral_input_bands", None)
    hidden = getattr(args, "spectral_input_hidden", None)
    if bands is not None and not args.preset:
        raise ValueError("--spectral-input-bands needs --preset (the architecture it modifies)")
    if hidden is not None and bands is None:
        raise ValueError(
            "--spectral-input-hidden needs --spectral-input-bands (the spectral input it shapes)"
        )
    rms = getattr(args, "fsq_input_rms", None)
    if rms is not None and not args.preset:
        raise ValueError("--fsq-input-rms needs --preset (the architecture it modifies)")
    if args.preset:
        extra = {} if bands is None else {"encoder_config": {"spectral_input_bands": bands}}
        if hidden is not None:
            extra["encoder_config"]["spectral_input_hidden"] = hidden
        if rms is not None:
            extra["fsq_config"] = {"input_rms": rms}
        codec = load_stage1(args.codec, JepaCodecConfig.from_preset(args.preset, **extra))
    else:
        codec = JepaCodecModel.from_pretrained(args.codec)
    pitch_subframes = getattr(args, "pitch_subframes", None)
    if pitch_subframes is not None:
        if pitch_subframes <= 0:
            raise ValueError(
                f"--pitch-subframes must be a positive number of sub-frames, got {pitch_subframes}"
            )
        config = copy.deepcopy(codec.config)
        config.decoder_config = type(config.decoder_config)(
            **{**config.decoder_config.to_dict(), "pitch_subframes": pitch_subframes}
        )
        if getattr(args, "pitch_input", False):
            config.encoder_config = type(config.encoder_config)(
                **{**config.encoder_config.to_dict(), "pitch_input_subframes": pitch_subframes}
            )
        with tempfile.TemporaryDirectory() as staged:
            codec.save_pretrained(staged)
            codec = load_stage1(staged, config)  # the pitch path added as stage 2 adds modules
    elif getattr(args, "pitch_input", False):
        raise ValueError("--pitch-input needs --pitch-subframes (the sub-frames of the pitch track)")
    if codec.decoder.envelope_block is None:
        raise ValueError(
            "the codec's decoder has no envelope path (decoder_config.envelope_bands = 0): nothing to warm up"
        )
    torch.manual_seed(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    train = build_cache(codec, args.data, "train", args.max_seconds, True)
    try:
        valid = build_cache(codec, args.data, "validation", args.max_seconds, True)
    except (FileNotFoundError, ValueError) as err:
        logger.warning("no validation split (%s): R^2 is reported on train clips", err)
        valid = train[: min(64, len(train))]
    if getattr(args, "whiten", False):
        frames = whiten_quantizer(codec, train)
        print(f"pre-quantization projection whitened on {frames} train frames")
    before = envelope_r2(codec, valid)
    print(f"validation envelope before: L1 {before[0]:.4f}, R^2 {before[1]:.3f}")
    pitch_before = pitch_scores(codec, valid)
    warmup(
        codec,
        train,
        args.steps,
        args.lr,
        args.batch_size,
        seed=args.seed,
        metrics_path=out / "metrics.jsonl",
        pitch_weight=getattr(args, "pitch_weight", 1.0),
    )
    after = envelope_r2(codec, valid)
    print(f"validation envelope after {args.steps} steps: L1 {after[0]:.4f}, R^2 {after[1]:.3f}")
    pitch_after = pitch_scores(codec, valid)
    if pitch_after is not None:
        print(
            "validation pitch after: median error {median_cents:.0f} cents, gross errors {gross_error:.3f}, "
            "voicing errors {voicing_error:.3f}".format(**pitch_after)
        )
    partial = out / ".final.partial"
    shutil.rmtree(partial, ignore_errors=True)
    codec.save_pretrained(partial)
    summary = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "train_clips": len(train)}
    summary.update(valid_l1_before=before[0], valid_r2_before=before[1])
    summary.update(valid_l1_after=after[0], valid_r2_after=after[1])
    if pitch_after is not None:
        summary.update(valid_pitch_before=pitch_before, valid_pitch_after=pitch_after)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    partial.rename(out / "final")
    print(f"wrote {out / 'final'}")
    return 0
