"""`jepatok train-lm`: train a speech LM on pre-tokenized jepatok data with Accelerate (arXiv 2512.07168 tokens).

One loop for one CPU to many GPUs (`accelerate launch -m jepatok.cli train-lm ...`): packed blocks with
block-diagonal attention (jepatok.lm.data), AdamW with linear warmup + cosine decay, gradient accumulation,
mixed precision, clipping, optional LoRA (jepatok.lm.lora), TensorBoard + tqdm, and resumable state through
pickle-free checkpoints (`jepatok.training_state`: safetensors + JSON; accelerate's pickled `save_state` folders are
refused) in `OUTPUT_DIR/checkpoints/step_NNNNNN` (a resumed run is bit-identical to an uninterrupted one on CPU:
the data order is a pure function of the step). Evaluation reports loss per token
and, comparable across tokenizers, NLL / bits / perplexity per second of audio. The final model (LoRA merged) and
the tokenizer are saved to `OUTPUT_DIR/final`, loadable with `AutoModelForCausalLM` / `AutoTokenizer`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..training_state import load_training_state, save_training_state
from .args import LMTrainArgs, atomic_write_text
from .data import IGNORE_INDEX, LMBatch, PackedDataset, build_examples, epoch_batches
from .modeling import build_lm, check_lm_tokenizer, count_parameters

STATE_FILE = "trainer_state.json"


@dataclass
class TrainResult:
    """What a finished `train` call produced."""

    output_dir: str
    final_dir: str
    steps: int  # optimizer steps completed in total
    train_loss: float  # mean loss of the last logging window
    eval_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # per logging step (main process)


def load_tokenizer(path: str):
    """The speech tokenizer saved at `path` (AutoTokenizer; `import jepatok` registers the class)."""
    from transformers import AutoTokenizer

    import jepatok  # noqa: F401  (registers JepaSpeechTokenizer with AutoTokenizer)

    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
    return AutoTokenizer.from_pretrained(path)


def load_pretokenized(path: str, tokenizer) -> dict:
    """Splits of a pre-tokenized dataset (`save_to_disk` dir); raises ValueError if made with another codec."""
    from datasets import Dataset, load_from_disk

    from jepatok.data.pretokenize import check_codec_identity

    if not Path(path).is_dir():
        raise FileNotFoundError(f"pre-tokenized dataset directory {path!r} does not exist")
    check_codec_identity(path, tokenizer)
    data = load_from_disk(path)
    splits = {"train": data} if isinstance(data, Dataset) else dict(data)
    for name, split in splits.items():
        if "audio_codes" not in split.column_names:
            raise ValueError(
                f"split {name!r} of {path} has no audio_codes column (columns: {split.column_names})"
            )
    if "train" not in splits:
        raise ValueError(f"{path} has no train split (splits: {sorted(splits)})")
    return splits


def make_packed(split, tokenizer, args: LMTrainArgs):
    """Sequences of one split, packed into blocks (flat) or one per row (frame, `FrameDataset`); returns the
    dataset and its build statistics."""
    texts = split["text"] if "text" in split.column_names else [""] * len(split)
    frame = args.architecture == "frame"
    G = int(tokenizer.tokens_per_frame)
    # frame mode: block_size counts steps; continuation windows of block_size - 2 frames fit <bos> <audio> ...
    flat_limit = (args.block_size - 2) * G + 3 if frame else args.block_size
    text_frames = None
    if args.tts_layout == "interleaved" and args.sequence_mode != "continuation":
        from .align import TEXT_FRAMES_COLUMN

        if TEXT_FRAMES_COLUMN not in split.column_names:
            raise ValueError(
                f"tts_layout=interleaved needs a {TEXT_FRAMES_COLUMN!r} column (columns: {split.column_names}); "
                "run `jepatok align-text --codec TOKENIZER --data PRETOK --out ALIGNED` and train on ALIGNED"
            )
        text_frames = split[TEXT_FRAMES_COLUMN]
    examples, stats = build_examples(
        split["audio_codes"],
        texts,
        tokenizer,
        args.sequence_mode,
        flat_limit,
        args.mask_text_labels,
        tts_layout=args.tts_layout,
        text_frames=text_frames,
    )
    if frame:
        from .frame_model import FrameDataset, to_frame_example

        converted = [to_frame_example(e, tokenizer) for e in examples]
        kept = [e for e in converted if e.num_steps <= args.block_size]
        stats.dropped_too_long += len(converted) - len(kept)
        stats.tts -= sum(1 for e in converted if e.num_steps > args.block_size and len(e.prompt_ids) > 2)
    if not (kept if frame else examples):
        raise ValueError(
            f"no training sequences could be built ({stats}); check sequence_mode and block_size"
        )
    if frame:
        return FrameDataset(kept, int(tokenizer.pad_token_id)), vars(stats)
    return PackedDataset(examples, args.block_size, int(tokenizer.pad_token_id)), vars(stats)


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak LR after `step` optimizer steps: linear warmup, then cosine to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, args: LMTrainArgs) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not norms/biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_eps
    )


def batch_loss_terms(
    model, batch, frame: bool, align_weight: float = 0.0, ctc_weight: float = 0.0, aux: dict | None = None
) -> tuple[torch.Tensor, int]:
    """(summed NLL in nats, number of scored targets) of a micro-batch: label tokens (flat LM) or frame slot
    values + stop decisions (frame LM). With `align_weight` (frame LM built with an align layer) the guided
    attention loss is added so that, divided by the count, it contributes align_weight x its mean; likewise the
    CTC loss of the text given the speech with `ctc_weight` (per text token). `aux`, when given, receives the
    unweighted means (`align`, `ctc`) of the aids that were used."""
    if frame:
        out = model(batch)
        n = batch.num_targets()
        nll = out.frame_nll + out.stop_nll
        if align_weight and out.align_count:
            nll = nll + align_weight * out.align_sum / out.align_count * n
            if aux is not None:
                aux["align"] = float(out.align_sum.detach()) / out.align_count
        if ctc_weight and out.ctc_count:
            nll = nll + ctc_weight * out.ctc_sum / out.ctc_count * n
            if aux is not None:
                aux["ctc"] = float(out.ctc_sum.detach()) / out.ctc_count
        return nll, n
    nll, targets = batch_nll(model, batch)
    return nll.sum(), int((targets != IGNORE_INDEX).sum())


def batch_nll(model, batch: LMBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL [B, S-1] (0 where unlabelled) and the target ids [B, S-1] of a packed batch.

    `attention_mask=None` with per-sequence `position_ids` gives block-diagonal causal attention.
    """
    out = model(
        input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=None, use_cache=False
    )
    logits = out.logits[:, :-1].float()  # [B, S-1, V]
    targets = batch.labels[:, 1:]  # [B, S-1]
    nll = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return nll.view_as(targets), targets


@torch.no_grad()
def evaluate(model, packed: PackedDataset, tokenizer, args: LMTrainArgs, accelerator) -> dict[str, float]:
    """Loss per token and NLL/bits/perplexity per audio second over (up to max_eval_blocks) eval blocks."""
    was_training = model.training
    model.eval()
    n_blocks = min(len(packed), args.max_eval_blocks)
    world, bs = accelerator.num_processes, args.per_device_batch_size
    mine = list(range(accelerator.process_index, n_blocks, world))
    # Every process runs the same number of forward passes (DDP broadcasts buffers and FSDP gathers weights in
    # forward: an uneven count would hang); a process out of blocks re-scores block 0 with weight 0.
    n_batches = math.ceil(math.ceil(n_blocks / world) / bs)
    G, offset, eos = int(tokenizer.tokens_per_frame), int(tokenizer.audio_offset), int(tokenizer.eos_token_id)
    sums = torch.zeros(
        4, dtype=torch.float64, device=accelerator.device
    )  # nll, tokens, audio nll, audio tokens
    frame = args.architecture == "frame"
    for b in range(n_batches):
        chunk = mine[b * bs : (b + 1) * bs]
        batch = packed.collate(chunk or [0]).to(accelerator.device)
        if frame:  # every scored value codes the audio: the frames' slot values and the stop decisions
            with accelerator.autocast():
                nll, n = batch_loss_terms(model, batch, frame=True)
            frames = batch.num_frames()
            part = torch.tensor([float(nll), n, float(nll), frames * G], dtype=torch.float64)
        else:
            with accelerator.autocast():
                nll, targets = batch_nll(model, batch)
            labelled = targets != IGNORE_INDEX
            audio = targets >= offset
            coded = audio | (targets == eos)  # what coding the audio costs: its tokens and where it ends
            part = torch.stack([nll[labelled].sum(), labelled.sum(), nll[coded].sum(), audio.sum()])
        sums += part.to(torch.float64).to(sums.device) * float(bool(chunk))
    sums = accelerator.reduce(sums, reduction="sum")
    model.train(was_training)
    nll, tokens, audio_nll, audio_tokens = (float(x) for x in sums.tolist())
    if tokens == 0:
        return {}
    seconds = audio_tokens / G / float(tokenizer.frame_rate)
    metrics = {"eval/loss": nll / tokens, "eval/perplexity": math.exp(min(nll / tokens, 700.0))}
    if seconds > 0:
        per_second = audio_nll / seconds
        metrics.update(
            {
                "eval/nll_per_audio_second": per_second,
                "eval/bits_per_audio_second": per_second / math.log(2),
                "eval/audio_seconds": seconds,
            }
        )
        # exp(nats per second) overflows float64 past 709 nats/s (e.g. an untrained LM on the 500 Hz tiny codec):
        # then only the log form (nll_per_audio_second) is reported.
        if per_second < 709:
            metrics["eval/perplexity_per_audio_second"] = math.exp(per_second)
    return metrics


@torch.no_grad()
def evaluate_text_gain(
    model, rows, tokenizer, args: LMTrainArgs, accelerator, chosen: list[int] | None = None
) -> dict[str, float]:
    """`eval/text_gain_bits_per_audio_second` (and its share of the audio's bits) on the first
    `eval_text_gain_examples` validation examples with text, spread over the split. Every process scores the
    same examples (no collectives: an FSDP forward gathers on all ranks alike); {} when the split has no text."""
    from .text_gain import NoTextGainExamples, text_gain

    if rows is None or "text" not in rows.column_names:
        return {}
    unwrapped = accelerator.unwrap_model(model)
    positions = getattr(unwrapped.config, "max_position_embeddings", None) or unwrapped.config.backbone.get(
        "max_position_embeddings", args.block_size
    )
    try:
        with accelerator.autocast():
            m = text_gain(
                model,
                tokenizer,
                rows,
                args.eval_text_gain_examples,
                progress=False,
                max_positions=min(args.block_size, positions),
                chosen=chosen,
            )
    except NoTextGainExamples:  # no transcript in the split, or every example longer than a block
        return {}
    return {
        "eval/text_gain_bits_per_audio_second": m["text_gain_bits_per_audio_second"],
        "eval/text_gain_share": m["text_gain_share"],
    }


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (a trainer_state.json is written last), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(
    accelerator,
    output_dir: Path,
    step: int,
    keep: int,
    extra: dict,
    *,
    models: list,
    optimizers: list,
    schedulers: list,
) -> Path:
    """`save_training_state` into a hidden temp folder, add trainer_state.json, rename to step_NNNNNN (atomic)."""
    root = output_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    save_training_state(
        tmp,
        models=models,
        optimizers=optimizers,
        schedulers=schedulers,
        scaler=accelerator.scaler,
        accelerator=accelerator,
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps({"step": step, **extra}, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep > 0:
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _after_step(step: int) -> None:
    """Hook called right after each optimizer step, before logging/eval/checkpointing (tests simulate a crash)."""


def _build_model(args: LMTrainArgs, tokenizer):
    from transformers import AutoModelForCausalLM

    if args.architecture == "frame":
        from .frame_model import FrameLevelSpeechLM, build_frame_lm_config
        from .modeling import is_frame_lm, load_speech_lm

        if args.init_from:
            model = load_speech_lm(args.init_from, dtype=torch.float32)
            if not is_frame_lm(model):
                raise ValueError(
                    f"init_from {args.init_from} is a flat LM; architecture=frame needs a frame LM"
                )
            # training aids the saved model lacks (guided attention, the CTC head, the frame-input mask vector) are
            # added here, and a mask vector the run does not want is dropped
            wanted = {}
            if args.frame_align_weight > 0 and model.config.align_layer < 0:
                wanted["align_layer"] = args.frame_align_layer
            if args.frame_ctc_weight > 0 and not model.config.ctc_substeps:
                wanted["ctc_substeps"] = args.frame_ctc_substeps
            if args.frame_input_dropout != model.config.frame_dropout:
                wanted["frame_dropout"] = args.frame_input_dropout
            if wanted:
                config = model.config
                for key, value in wanted.items():
                    setattr(config, key, value)
                torch.manual_seed(args.seed)
                grown = FrameLevelSpeechLM(config)
                result = grown.load_state_dict(model.state_dict(), strict=False)
                added = ("ctc_", "frame_mask_embed")
                if any(not k.startswith(added) for k in result.missing_keys) or any(
                    k != "frame_mask_embed" for k in result.unexpected_keys
                ):
                    raise RuntimeError(f"adding {sorted(wanted)} to {args.init_from} did not fit: {result}")
                model = grown
        else:
            torch.manual_seed(args.seed)
            config = build_frame_lm_config(
                args.model_preset,
                tokenizer,
                value_split=0 if args.frame_value_radix else args.frame_value_split,
                value_radix=args.frame_value_radix,
                align_layer=args.frame_align_layer if args.frame_align_weight > 0 else -1,
                ctc_substeps=args.frame_ctc_substeps if args.frame_ctc_weight > 0 else 0,
                frame_dropout=args.frame_input_dropout,
                **args.model_overrides,
            )
            model = FrameLevelSpeechLM(config)
        check_lm_tokenizer(model, tokenizer)
        return model
    if args.init_from:
        model = AutoModelForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        check_lm_tokenizer(model, tokenizer, check_codec=not args.init_from_other_codec)
        if args.init_from_other_codec:  # from here on the LM models this tokenizer's codec
            from .modeling import lm_metadata

            model.config.jepatok = lm_metadata(tokenizer)
    else:
        model = build_lm(args.model_preset, tokenizer, seed=args.seed, **args.model_overrides)
    if getattr(model.config, "jepatok", None) is not None:  # the layout the generation pipeline must follow
        model.config.jepatok = {**model.config.jepatok, "tts_layout": args.tts_layout}
    if args.audio_digit_radix:
        from .factorized import add_audio_digit_factors

        add_audio_digit_factors(
            model, tokenizer.audio_offset, tokenizer.codebook_size, args.audio_digit_radix
        )
    if args.lora:
        from .lora import apply_lora

        model = apply_lora(model, args.lora)
    return model


def train(args: LMTrainArgs, resume: bool = False) -> TrainResult:
    """Train (or resume) a speech LM as described by `args`; returns where the final model went.

    Args:
        args: run configuration (recipe + overrides + paths).
        resume: continue from the newest complete checkpoint in `OUTPUT_DIR/checkpoints`; an error when there
            is none (as in the codec trainers: nothing silently restarts from scratch).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not (args.data and args.tokenizer and args.output_dir):
        raise ValueError("data, tokenizer and output_dir are required")
    out = Path(args.output_dir)
    frame = args.architecture == "frame"
    if resume and not list_checkpoints(out):  # checked before any setup: fail fast
        raise FileNotFoundError(
            f"--resume was given but {out / 'checkpoints'} holds no complete checkpoint; "
            "drop --resume to start a new run"
        )
    if not resume and list_checkpoints(out):
        raise FileExistsError(
            f"{out} already holds checkpoints; pass --resume to continue or use a new --output-dir"
        )
    trackers = None if args.report_to in ("", "none", None) else args.report_to
    accelerator = Accelerator(
        # Without CUDA, cpu=True is what makes a torchrun/`accelerate launch` group use gloo (MULTI_CPU) instead of
        # every process running alone as rank 0.
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers,
        project_dir=str(out),
    )
    set_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer)
    splits = load_pretokenized(args.data, tokenizer)
    train_set, train_stats = make_packed(splits["train"], tokenizer, args)
    eval_set = make_packed(splits[args.eval_split], tokenizer, args)[0] if args.eval_split in splits else None
    eval_rows = splits.get(args.eval_split)
    gain_rows = None  # the text-gain examples, picked once per run
    # the text gain compares the prefix layout with and without its text; an interleaved LM reads the text
    # inside the audio part too, so the measure does not apply to it
    gain_on = args.eval_text_gain_examples and args.tts_layout == "prefix"
    if eval_rows is not None and gain_on and "text" in eval_rows.column_names:
        from .text_gain import NoTextGainExamples, pick_text_rows

        try:
            gain_rows = pick_text_rows(eval_rows, args.eval_text_gain_examples)
        except NoTextGainExamples:
            gain_rows = None

    model = _build_model(args, tokenizer)
    if args.tts_layout == "interleaved" and args.sequence_mode != "continuation":
        from .align import TEXT_FRAMES_COLUMN, reading_rate

        # the pipeline's default reading schedule: the train split's pieces per frame
        rate = round(reading_rate(splits["train"][TEXT_FRAMES_COLUMN]), 4)
        model.config.jepatok = {**model.config.jepatok, "pieces_per_frame": rate}
    optimizer = make_optimizer(model, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, args.warmup_steps, args.max_steps, args.min_lr_ratio)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is stepped once per optimizer step by hand (not prepared: Accelerate would step it once per
    # process) and checkpointed alongside the prepared objects.
    checkpointed = {"models": [model], "optimizers": [optimizer], "schedulers": [scheduler]}

    step = 0
    checkpoints = list_checkpoints(out) if resume else []
    if checkpoints:
        load_training_state(
            checkpoints[-1], **checkpointed, scaler=accelerator.scaler, accelerator=accelerator
        )
        step = json.loads((checkpoints[-1] / STATE_FILE).read_text())["step"]
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        args.save(out / "train_args.json")
    if trackers:
        hparams = {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("lm", config=hparams)

    ga, world, rank = args.gradient_accumulation_steps, accelerator.num_processes, accelerator.process_index
    bs = args.per_device_batch_size
    per_epoch = len(epoch_batches(len(train_set), bs, 0, args.seed, world, rank))  # same count every epoch
    order: dict[int, list[list[int]]] = {}  # the current epoch's micro-batches only

    def micro_batch(m: int) -> LMBatch:
        """Micro-batch number m of this process: a pure function of m (what makes resume exact)."""
        epoch, j = divmod(m, per_epoch)
        if epoch not in order:
            order.clear()
            order[epoch] = epoch_batches(len(train_set), bs, epoch, args.seed, world, rank)
        return train_set.collate(order[epoch][j]).to(accelerator.device)

    if accelerator.is_main_process:
        n_params = count_parameters(accelerator.unwrap_model(model))
        n_train = count_parameters(accelerator.unwrap_model(model), trainable_only=True)
        accelerator.print(
            f"train-lm ({args.architecture}): {n_params / 1e6:.2f} M parameters ({n_train / 1e6:.2f} M trainable), "
            + (
                f"{len(train_set)} sequences of at most {args.block_size} steps"
                if frame
                else f"{len(train_set)} blocks of {args.block_size} tokens"
            )
            + f", {world} process(es), sequences {train_stats}, starting at step {step}"
        )
    model.train()
    history: list[dict[str, float]] = []
    window_loss, window_steps, window_tokens, t0 = 0.0, 0, 0, time.perf_counter()
    window_aux: dict[str, list[float]] = {}  # frame LM training aids: unweighted losses per micro-batch
    last_loss, eval_metrics = float("nan"), {}
    bar = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train-lm")
    while step < args.max_steps:
        micro = [micro_batch(step * ga + i) for i in range(ga)]
        n_tokens = sum(
            b.num_targets() if frame else int((b.labels[:, 1:] != IGNORE_INDEX).sum()) for b in micro
        )
        step_loss, grad_norm = 0.0, float("nan")
        for batch in micro:
            # accumulate() skips gradient sync (DDP) and makes optimizer.step/zero_grad no-ops until the last
            # micro-batch of the step; it also works with DeepSpeed/FSDP, which own these steps there.
            with accelerator.accumulate(model):
                aux: dict[str, float] = {}
                nll, _ = batch_loss_terms(
                    model, batch, frame, args.frame_align_weight, args.frame_ctc_weight, aux
                )
                for key, value in aux.items():
                    window_aux.setdefault(key, []).append(value)
                loss = nll / max(1, n_tokens)  # mean over the step's scored targets on this process
                accelerator.backward(loss * ga)  # backward() divides by gradient_accumulation_steps
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    grad_norm = float(norm) if norm is not None else grad_norm
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += float(loss.detach())
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation fell out of step with the optimizer steps")
        scheduler.step()
        step += 1
        window_loss, window_steps, window_tokens = (
            window_loss + step_loss,
            window_steps + 1,
            window_tokens + n_tokens,
        )
        bar.update(1)
        _after_step(step)
        if args.logging_steps and (step % args.logging_steps == 0 or step == args.max_steps):
            elapsed = time.perf_counter() - t0
            record = {
                "train/loss": window_loss / window_steps,
                "train/lr": scheduler.get_last_lr()[0],
                "train/grad_norm": grad_norm,
                "train/steps_per_second": window_steps / elapsed,
                "train/label_tokens_per_second": window_tokens * world / elapsed,
                # the aids' own losses (train/loss includes them, weighted)
                **{f"train/{k}_loss": sum(v) / len(v) for k, v in window_aux.items()},
            }
            last_loss = record["train/loss"]
            history.append({"step": step, **record})
            accelerator.log(record, step=step)
            bar.set_postfix(loss=f"{last_loss:.3f}")
            window_loss, window_steps, window_tokens, t0 = 0.0, 0, 0, time.perf_counter()
            window_aux.clear()
        if (
            eval_set is not None
            and args.eval_steps
            and (step % args.eval_steps == 0 or step == args.max_steps)
        ):
            eval_metrics = evaluate(model, eval_set, tokenizer, args, accelerator)
            if args.eval_text_gain_examples:
                if gain_rows:
                    eval_metrics.update(
                        evaluate_text_gain(model, eval_rows, tokenizer, args, accelerator, gain_rows)
                    )
            accelerator.log(eval_metrics, step=step)
            accelerator.print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in eval_metrics.items()))
        if args.save_steps and (step % args.save_steps == 0 or step == args.max_steps):
            save_checkpoint(
                accelerator, out, step, args.save_total_limit, {"train_loss": last_loss}, **checkpointed
            )
    bar.close()
    if window_steps:
        last_loss = window_loss / window_steps
    final_dir = save_final(accelerator, model, tokenizer, out)
    if accelerator.is_main_process:
        summary = {"steps": step, "train_loss": last_loss, **eval_metrics, "sequences": train_stats}
        atomic_write_text(out / "final_metrics.json", json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return TrainResult(str(out), str(final_dir), step, last_loss, eval_metrics, history)


def load_checkpoint_lm(checkpoint: str | Path, tokenizer: str | None = None, device: str = "cpu"):
    """(tokenizer, LM) from a train-lm checkpoint `OUTPUT_DIR/checkpoints/step_NNNNNN`, to evaluate a run before
    it ends: the model is rebuilt as the run built it (`OUTPUT_DIR/train_args.json`), its weights are read from
    the checkpoint's `model.safetensors`, then LoRA is merged and digit factors folded, as in `final/`.

    Args:
        checkpoint: the step folder (holds trainer_state.json).
        tokenizer: tokenizer directory (default: the run's `tokenizer` argument).
        device: where the model goes.
    """
    from safetensors.torch import load_file

    from .factorized import materialize
    from .lora import merge_lora

    ckpt = Path(checkpoint)
    if not (ckpt / STATE_FILE).is_file():
        raise FileNotFoundError(f"{ckpt} is not a complete train-lm checkpoint (no {STATE_FILE})")
    args_file = ckpt.parent.parent / "train_args.json"
    if not args_file.is_file():
        raise FileNotFoundError(
            f"{args_file} is missing: the checkpoint's run directory must hold train_args.json"
        )
    args = LMTrainArgs(**json.loads(args_file.read_text()))
    tok = load_tokenizer(tokenizer or args.tokenizer)
    model = _build_model(args, tok)
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
    return tok, materialize(merge_lora(model)).to(device).eval()


def save_final(accelerator, model, tokenizer, out: Path) -> Path:
    """Unwrap (and merge LoRA into) the model and save it with the tokenizer to OUTPUT_DIR/final, atomically."""
    from .factorized import materialize
    from .lora import merge_lora

    final, tmp = out / "final", out / ".final.tmp"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        plain = materialize(merge_lora(accelerator.unwrap_model(model)))
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final


# --- command line -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe", default="tiny", help="recipe name in recipes/lm (tiny, small, base) or a YAML path"
    )
    parser.add_argument("--data", required=True, help="pre-tokenized dataset directory (jepatok pretokenize)")
    parser.add_argument("--tokenizer", required=True, help="JepaSpeechTokenizer directory")
    parser.add_argument("--output-dir", required=True, help="run directory (checkpoints/, final/, logs)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides the recipe)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in OUTPUT_DIR"
    )
    parser.add_argument("--lora", default=None, help="LoRA 'r,alpha,targets' e.g. 8,16,q_proj,v_proj")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides (YAML values)")


def run(args: argparse.Namespace) -> int:
    train_args = LMTrainArgs.from_recipe(
        args.recipe,
        args.overrides,
        data=args.data,
        tokenizer=args.tokenizer,
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        lora=args.lora,
    )
    result = train(train_args, resume=args.resume)
    print(
        json.dumps(
            {
                "final_dir": result.final_dir,
                "steps": result.steps,
                "train_loss": result.train_loss,
                **result.eval_metrics,
            },
            indent=2,
        )
    )
    return 0
