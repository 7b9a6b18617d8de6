"""Shared scaffolding of the two codec training stages (arXiv 2512.07168): the Accelerate loop and checkpoints.

* The run config (`TrainArgs`, recipes, overrides) lives in `train_config.py` and is re-exported here.
* `CodecTrainer` runs the loop both stages share: Accelerate (1..N processes, DDP by default), manual
  gradient accumulation, clipping, warmup + cosine schedule, TensorBoard + `metrics.jsonl`, tqdm on the
  main process, pickle-free checkpoints (`jepatok.training_state`: safetensors + JSON) in
  `<output_dir>/checkpoints/step_N` (written to a partial directory and renamed when complete), exact resume
  from the newest one, and the final unwrapped `JepaCodecModel.save_pretrained` in `<output_dir>/final`.

Exact resume: model/optimizer/scheduler/RNG states come from `save_training_state`; the data position and
counters from `trainer_state.json`; masks and augmentation are seeded from (seed, step/epoch, index, rank).
Checkpoints written by `accelerator.save_state` (pickled optimizer/RNG state) are refused, never loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.training_data import (
    AudioBatch,
    AudioCollator,
    AudioTrainingDataset,
    BucketBatchSampler,
    iterate_batches,
    load_audio_source,
)
from ..training_state import LegacyCheckpointError, load_training_state, save_training_state
from .train_config import (  # noqa: F401  (re-exported: the trainers import them from here)
    RUN_CONFIG_FILE,
    TrainArgs,
    _f,
    build_args,
    load_args,
    parse_overrides,
    read_recipe,
    recipes_dir,
    resolve_recipe,
    write_json_atomic,
    write_yaml_atomic,
)

STATE_FILE = "trainer_state.json"


# ----------------------------------------------------------------------------------------------------
# Schedules and checkpoints
# ----------------------------------------------------------------------------------------------------
def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints `checkpoints/step_N` sorted by N (partial `.step_N` dirs are ignored)."""
    root = Path(output_dir) / "checkpoints"
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit():
                out.append((int(p.name[5:]), p))
    return sorted(out)


def newest_checkpoint(output_dir: str | os.PathLike) -> Path:
    ckpts = list_checkpoints(output_dir)
    if not ckpts:
        raise FileNotFoundError(
            f"--resume given but {str(Path(output_dir) / 'checkpoints')!r} holds no step_N checkpoint"
        )
    return ckpts[-1][1]


@dataclass
class TrainerState:
    """Counters saved next to each checkpoint (`trainer_state.json`)."""

    step: int = 0
    micro_batches: int = 0  # per-process micro-batches consumed (the data position)
    audio_seconds: float = 0.0  # audio seen by all processes
    extra: dict = field(default_factory=dict)


def average_gradients(params: list, world_size: int) -> None:
    """All-reduce (mean) the gradients of `params` across processes in one coalesced buffer (DDP-style)."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in params if p.grad is not None]
    if not grads or world_size <= 1:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(world_size)
    for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(reduced)


def _unwrap_mod(module):
    return getattr(module, "module", module)


class CodecTrainer:
    """Loop shared by stage 1 and stage 2. Subclasses implement `build`, `train_step`, `final_model`.

    Args:
        args (`TrainArgs`): Run config.
        data (`str`): Audio folder, saved dataset directory or HF dataset name.
        output_dir (`str`): Run directory.
        resume (`bool`, defaults to False): Continue from the newest checkpoint (required if one exists).
    """

    stage = "stage"

    def __init__(self, args: TrainArgs, data: str, output_dir: str | os.PathLike, resume: bool = False):
        self.args = args
        self.data = data
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.state = TrainerState()
        self.config = args.codec_config()
        self.schedulers: list = []  # made by make_scheduler, checkpointed in this order

    # -- to implement ----------------------------------------------------------------------------------
    def build(self) -> None:  # create and `accelerator.prepare` modules and optimizers
        raise NotImplementedError

    def train_step(self, batches: list[AudioBatch]) -> dict[str, float]:
        raise NotImplementedError

    def final_model(self):  # the unwrapped JepaCodecModel to save_pretrained
        raise NotImplementedError

    def extra_logs(self) -> dict[str, float]:
        return {}

    def before_first_step(self, dataset, sampler, collator) -> None:
        """Hook run once after `build` on a fresh (not resumed) run, e.g. to calibrate from data."""

    def on_step_end(self) -> None:
        pass

    # -- helpers for subclasses -------------------------------------------------------------------------
    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        a = self.args
        return torch.optim.AdamW(
            params, lr=lr, betas=(a.adam_beta1, a.adam_beta2), weight_decay=a.weight_decay
        )

    def make_scheduler(self, optimizer, total: int | None = None, warmup: int | None = None):
        """Warmup + cosine LambdaLR over `total` steps (default max_steps); appended to `self.schedulers`
        (checkpointed)."""
        a = self.args
        total = a.max_steps if total is None else total
        warmup = a.warmup_steps if warmup is None else warmup
        opt = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside AcceleratedOptimizer
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup, total, a.min_lr_ratio)
        )
        self.schedulers.append(sched)
        return sched

    def sync_context(self, model, micro: int, n: int):
        """Context for the forward *and* backward of micro-batch `micro` of `n`: DDP all-reduces only on the
        last one (DDP decides at forward time, so the forward must run inside it too)."""
        return self.accelerator.no_sync(model) if micro < n - 1 else nullcontext()

    def clip(self, params) -> float:
        """Clip to `max_grad_norm`; returns the pre-clip norm (nan when off or when DeepSpeed clips itself)."""
        if self.args.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm)
            return float(norm) if norm is not None else float("nan")
        return float("nan")

    # -- the loop --------------------------------------------------------------------------------------
    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

        a = self.args
        if a.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ValueError("mixed_precision=fp16 needs a CUDA device; use bf16 or no on CPU")
        project = ProjectConfiguration(
            project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
        )
        return Accelerator(
            cpu=not torch.cuda.is_available(),  # selects gloo DDP when launched with several CPU processes
            mixed_precision=a.mixed_precision,
            log_with=None if a.tracker == "none" else a.tracker,
            project_config=project,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )

    def _data(self):
        a, acc = self.args, self.accelerator
        source = load_audio_source(self.data, a.data_split, a.audio_column, a.min_seconds)
        self.sampling_rate = self.config.sampling_rate
        dataset = AudioTrainingDataset(source, self.sampling_rate, a.crop_seconds, a.augment(), a.seed)
        sampler = BucketBatchSampler(
            dataset.lengths(), a.batch_size, acc.num_processes, acc.process_index, a.seed, a.bucket
        )
        collator = AudioCollator(self.config.hop_length, int(a.min_pad_seconds * self.sampling_rate))
        return dataset, sampler, collator

    def checkpointed_modules(self) -> tuple[list, list]:
        """(prepared models, prepared optimizers) to checkpoint, in `accelerator.prepare` order (file names
        `model.safetensors`, `model_1.safetensors`, ...). Each stage lists its own."""
        raise NotImplementedError

    def checkpoint_objects(self) -> dict:
        """What a checkpoint holds: `checkpointed_modules()`, the schedulers of `make_scheduler`, and the fp16
        GradScaler if any."""
        acc = self.accelerator
        models, optimizers = self.checkpointed_modules()
        return {
            "models": list(models),
            "optimizers": list(optimizers),
            "schedulers": list(self.schedulers),
            "scaler": acc.scaler,
            "accelerator": acc,
        }

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        root = self.output_dir / "checkpoints"
        final = root / f"step_{self.state.step}"
        partial = root / f".step_{self.state.step}.partial"
        if acc.is_main_process and partial.exists():
            shutil.rmtree(partial)
        acc.wait_for_everyone()
        save_training_state(partial, **self.checkpoint_objects())
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_json_atomic(partial / STATE_FILE, dataclasses.asdict(self.state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            keep = self.args.keep_checkpoints
            if keep > 0:
                for _, old in list_checkpoints(self.output_dir)[:-keep]:
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise ValueError(f"checkpoint {str(path)!r} is incomplete: {STATE_FILE} is missing")
        try:
            state = json.loads(state_file.read_text())
            load_training_state(path, **self.checkpoint_objects())
        except LegacyCheckpointError:
            raise
        except Exception as err:  # re-raised: a damaged checkpoint must stop the run, never restart it
            raise ValueError(
                f"checkpoint {str(path)!r} is corrupt or does not match this run: {err}"
            ) from err
        self.state = TrainerState(**state)

    def check_processes_agree(self) -> list[str]:
        """sha256 of every process's trained weights, gathered; raises when data-parallel copies diverged.

        Written to `<output_dir>/process_fingerprints.json` by the main process.
        """
        import hashlib

        from accelerate.utils import gather_object

        digest = hashlib.sha256()
        for model in self.fingerprint_modules():
            for key, tensor in sorted(_unwrap_mod(model).state_dict().items()):
                digest.update(key.encode())
                digest.update(
                    tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                )
        prints = gather_object([digest.hexdigest()])
        if self.accelerator.is_main_process:
            write_json_atomic(self.output_dir / "process_fingerprints.json", {"fingerprints": prints})
        if len(set(prints)) != 1:
            raise RuntimeError(f"data-parallel processes hold different weights: {prints}")
        return prints

    def fingerprint_modules(self) -> list:
        return [self.final_model()]

    def run(self) -> Path | None:
        """Train; returns the `final` directory (None when stopped early by `halt_after_steps`)."""
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        a = self.args
        existing = list_checkpoints(self.output_dir)
        if existing and not self.resume:
            raise FileExistsError(
                f"{str(self.output_dir)!r} already holds checkpoints (newest step {existing[-1][0]}); "
                "pass --resume to continue it or choose another --output-dir"
            )
        resume_from = newest_checkpoint(self.output_dir) if self.resume else None
        if a.num_threads is not None:
            torch.set_num_threads(a.num_threads)
        self.accelerator = acc = self._make_accelerator()
        set_seed(a.seed)  # identical initialisation on every process
        dataset, sampler, collator = self._data()
        self.build()
        if resume_from is not None:
            self.load_checkpoint(resume_from)
            acc.print(f"resumed from {resume_from} at step {self.state.step}")
        else:
            self.before_first_step(dataset, sampler, collator)
        if acc.is_main_process:
            write_yaml_atomic(
                self.output_dir / RUN_CONFIG_FILE,
                {"stage": self.stage, "data": str(self.data), **a.to_dict()},
            )
            write_json_atomic(self.output_dir / "codec_config.json", self.config.to_dict())
        if a.tracker != "none":
            flat = {
                k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                for k, v in a.to_dict().items()
            }
            acc.init_trackers(self.stage, config=flat)
        stream = iterate_batches(dataset, sampler, collator, self.state.micro_batches, a.num_workers)
        bar = tqdm(
            total=a.max_steps, initial=self.state.step, disable=not acc.is_local_main_process, desc=self.stage
        )
        metrics_path = self.output_dir / "metrics.jsonl"
        t0, cpu0 = time.perf_counter(), time.process_time()
        seconds0, step0 = self.state.audio_seconds, self.state.step
        while self.state.step < a.max_steps:
            batches = [next(stream)[1].to(acc.device) for _ in range(a.grad_accum)]
            metrics = self.train_step(batches)
            local_seconds = sum(b.num_samples for b in batches) / self.sampling_rate
            self.state.step += 1
            self.state.micro_batches += a.grad_accum
            if acc.num_processes > 1:  # clip lengths differ between processes: sum them
                local_seconds = float(acc.reduce(torch.tensor([local_seconds], device=acc.device), "sum")[0])
            self.state.audio_seconds += local_seconds
            self.on_step_end()
            bar.update(1)
            if self.state.step % a.log_every == 0 or self.state.step == a.max_steps:
                elapsed = time.perf_counter() - t0
                metrics = {**metrics, **self.extra_logs()}
                metrics["audio_seconds_per_second"] = (self.state.audio_seconds - seconds0) / max(
                    elapsed, 1e-9
                )
                metrics["steps_per_second"] = (self.state.step - step0) / max(elapsed, 1e-9)
                # CPU time of this process (all its threads): throughput per busy core, robust to a shared machine
                cpu = time.process_time() - cpu0
                metrics["audio_seconds_per_cpu_second"] = (
                    (self.state.audio_seconds - seconds0) / acc.num_processes / max(cpu, 1e-9)
                )
                acc.log(metrics, step=self.state.step)
                if acc.is_main_process:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k.endswith("loss")})
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps({"step": self.state.step, **metrics}) + "\n")
            if self.state.step % a.save_every == 0 or self.state.step == a.max_steps:
                self.save_checkpoint()
            if a.halt_after_steps is not None and self.state.step >= a.halt_after_steps:
                bar.close()
                acc.end_training()
                return None
        bar.close()
        final_dir = self.output_dir / "final"
        self.check_processes_agree()
        acc.wait_for_everyone()
        if acc.is_main_process:  # written beside and renamed into place: never a half-written final/
            partial = self.output_dir / ".final.partial"
            if partial.exists():
                shutil.rmtree(partial)
            self.final_model().save_pretrained(str(partial))
            if final_dir.exists():
                shutil.rmtree(final_dir)
            os.replace(partial, final_dir)
        acc.wait_for_everyone()
        acc.end_training()
        return final_dir
