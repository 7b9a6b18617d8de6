"""Pre-tokenization: an audio dataset -> JEPA codec tokens (arXiv 2512.07168) with `datasets.map`, resumable.

`pretokenize_batch` is the top-level, batched, pure map function (state via `fn_kwargs`: the codec folder,
loaded once per worker process and cached). `pretokenize_dataset` runs it shard by shard: each shard is
saved on its own (atomically) under `<out>.partial/`, so an interrupted run resumes without lost or
duplicated rows, and the shards are concatenated in order at the end. Every map call gets an explicit
`new_fingerprint` derived from the codec identity, the source fingerprint and the settings.

Workers: `num_proc > 1` forks CPU workers (rows come back in order, so the result equals `num_proc=1`);
on GPUs run one process per device with `accelerate launch -m jepatok.cli pretokenize ...`: rank r takes
shards r, r + W, ... on its own device (no CUDA fork), and the main process concatenates.

The output (`save_to_disk`) has columns `audio_codes` [T][G] ints, `text`, `speaker`, `file_name`,
`duration`; its `info.description` holds a versioned JSON header with the codec identity, read back with
`read_codec_identity` and enforced with `check_codec_identity`. Files that fail to decode are skipped and
listed with their reason in the summary and in `<out>/pretokenize_report.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import AudioReadError
from .pretokenized import FORMAT_VERSION, check_codec_identity, make_header, read_codec_identity, read_header
from .sources import decode_audio_cell

REPORT_FILE = "pretokenize_report.json"
_CODECS: dict[tuple[str, str], Any] = {}  # (codec_dir, device) -> (codec, feature_extractor), per process


def _load_codec(codec_dir: str, device: str):
    key = (str(codec_dir), str(device))
    if key not in _CODECS:
        from ..tokenizer.feature_extraction import JepaCodecFeatureExtractor
        from ..tokenizer.modeling import JepaCodecModel

        codec = JepaCodecModel.from_pretrained(codec_dir).eval().to(device)
        _CODECS[key] = (codec, JepaCodecFeatureExtractor.from_codec_config(codec.config))
    return _CODECS[key]


def pretokenize_batch(
    batch: dict[str, list],
    codec_dir: str,
    audio_column: str = "audio",
    device: str = "cpu",
    encode_batch_size: int = 8,
    chunk_length_s: float | None = None,
    num_threads: int | None = None,
) -> dict[str, list]:
    """Batched `datasets.map` function: audio cells -> `audio_codes` [T][G], `duration` (s), `error` ("" if ok).

    Args:
        batch: Columns of a batch; `batch[audio_column]` holds undecoded Audio cells.
        codec_dir: Folder of a saved `JepaCodecModel` (loaded once per process).
        audio_column: Name of the audio column.
        device: Torch device for the codec.
        encode_batch_size: Clips per codec call (sorted by length; padding never changes codes).
        chunk_length_s: Encode long clips in windows of this many seconds (`JepaCodecModel.encode`).
        num_threads: torch intra-op threads in this worker (set when several workers share the CPU).
    """
    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        return _encode_batch(batch, codec_dir, audio_column, device, encode_batch_size, chunk_length_s)
    finally:
        torch.set_num_threads(previous_threads)


def _encode_batch(
    batch: dict[str, list],
    codec_dir: str,
    audio_column: str,
    device: str,
    encode_batch_size: int,
    chunk_length_s: float | None,
) -> dict[str, list]:
    codec, fe = _load_codec(codec_dir, device)
    rate = int(codec.config.sampling_rate)
    cells = batch[audio_column]
    codes: list[list[list[int]]] = [[] for _ in cells]
    durations = [0.0] * len(cells)
    errors = [""] * len(cells)
    waves: dict[int, np.ndarray] = {}
    for i, cell in enumerate(cells):
        try:
            waves[i] = decode_audio_cell(cell, rate)
            durations[i] = len(waves[i]) / rate
        except (AudioReadError, FileNotFoundError, ValueError) as err:
            errors[i] = str(err)

    def encode(idx: list[int]) -> None:
        feats = fe([waves[i] for i in idx], sampling_rate=rate, return_tensors="pt")
        enc = codec.encode(
            feats["input_values"].to(device), feats["padding_mask"].to(device), chunk_length_s=chunk_length_s
        )
        for row, i in enumerate(idx):
            codes[i] = enc.audio_codes[row][enc.frame_mask[row].bool()].long().cpu().tolist()

    order = sorted(waves, key=lambda i: len(waves[i]))
    with torch.inference_mode():
        for start in range(0, len(order), encode_batch_size):
            idx = order[start : start + encode_batch_size]
            try:
                encode(idx)
            except (ValueError, RuntimeError):  # find the clip(s) at fault; the others still get codes
                for i in idx:
                    try:
                        encode([i])
                    except (ValueError, RuntimeError) as err:
                        errors[i] = f"encode failed: {err}"
    return {"audio_codes": codes, "duration": durations, "error": errors}


# --- resumable, sharded driver ----------------------------------------------------------------------
@dataclass
class PretokenizeReport:
    """Summary of a run (also written to `<out>/pretokenize_report.json`)."""

    rows: int = 0
    kept: int = 0
    audio_seconds: float = 0.0
    frames: int = 0
    tokens: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    resumed_shards: int = 0
    # What this process encoded in this run (excludes reused shards): the basis of the speed figures.
    processed_audio_seconds: float = 0.0
    processed_tokens: int = 0
    skipped: list[dict] = field(default_factory=list)  # [{"file_name", "reason"}]

    @property
    def audio_hours(self) -> float:
        return self.audio_seconds / 3600.0

    @property
    def audio_hours_per_cpu_hour(self) -> float:
        return self.processed_audio_seconds / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")

    def summary(self) -> str:
        lines = [
            f"rows: {self.rows} ({self.kept} tokenized, {len(self.skipped)} skipped; {self.resumed_shards} shards reused)",
            f"audio: {self.audio_hours:.4f} h ({self.audio_seconds:.1f} s)",
            f"tokens: {self.tokens} in {self.frames} frames "
            f"({self.tokens / self.audio_seconds if self.audio_seconds else 0:.1f} tokens per audio second)",
            f"speed: {self.processed_tokens / self.wall_seconds if self.wall_seconds else 0:.1f} tokens/s wall, "
            f"{self.processed_audio_seconds / self.wall_seconds if self.wall_seconds else 0:.2f}x real time, "
            f"{self.audio_hours_per_cpu_hour:.2f} audio hours per CPU hour",
        ]
        for item in self.skipped[:20]:
            lines.append(f"skipped {item['file_name']}: {item['reason']}")
        if len(self.skipped) > 20:
            lines.append(f"... and {len(self.skipped) - 20} more skipped files (see {REPORT_FILE})")
        return "\n".join(lines)


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_fingerprint(identity: dict, source_fingerprint: str, settings: dict) -> str:
    """Deterministic id of a run: codec identity + source + settings that change the output."""
    blob = json.dumps(
        [identity["config_hash"], identity["weights_hash"], source_fingerprint, settings, FORMAT_VERSION],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _save_atomic(dataset, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def pretokenize_dataset(
    dataset,
    codec_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    audio_column: str = "audio",
    num_proc: int = 1,
    batch_size: int = 16,
    encode_batch_size: int = 8,
    shard_rows: int = 256,
    device: str | None = None,
    chunk_length_s: float | None = None,
    source: str = "",
    overwrite: bool = False,
    num_threads: int | None = None,
):
    """Tokenize `dataset` with the codec in `codec_dir`; returns (Dataset, PretokenizeReport).

    Args:
        dataset: A Dataset with an undecoded Audio column (see `jepatok.data.sources.load_source`).
        codec_dir: Folder of a saved `JepaCodecModel`.
        out_dir: Where to `save_to_disk` the result; shards of an unfinished run are kept in
            `<out_dir>.partial/` and reused. `None` keeps everything in memory (no resume).
        audio_column: Audio column name.
        num_proc: CPU worker processes for `datasets.map` (forced to 1 on CUDA; use accelerate launch).
        batch_size: Rows per map batch.
        encode_batch_size: Clips per codec call.
        shard_rows: Rows per resumable shard.
        device: Codec device (default: the accelerate process's device, else "cpu").
        chunk_length_s: Encode long clips in windows of this many seconds.
        source: Human-readable source name stored in the header.
        overwrite: Replace an existing `out_dir` made by a different run (same run: reused as is).
        num_threads: torch threads per worker (default: all cores split evenly between the workers).
    """
    import datasets
    from accelerate import PartialState

    from ..tokenizer.modeling import JepaCodecModel, codec_identity

    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc must be a positive integer, got {num_proc!r}")
    if not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    if audio_column not in dataset.column_names:
        raise ValueError(f"audio column {audio_column!r} not in the dataset's columns {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("the dataset has no rows to pre-tokenize")
    state = PartialState()
    device = str(device or state.device)
    if out_dir is None and state.num_processes > 1:
        raise ValueError(
            "several processes (accelerate launch) share work through out_dir: pass an output folder"
        )
    if device.startswith("cuda"):
        num_proc = 1  # never fork a process that holds CUDA: one process per GPU (accelerate launch) instead
    codec_dir = str(codec_dir)
    identity = codec_identity(JepaCodecModel.from_pretrained(codec_dir))
    settings = {"audio_column": audio_column, "chunk_length_s": chunk_length_s, "shard_rows": shard_rows}
    fingerprint = run_fingerprint(identity, dataset._fingerprint, settings)
    num_shards = -(-len(dataset) // shard_rows)
    if out_dir is not None and Path(out_dir).exists():
        done = Path(out_dir) / REPORT_FILE
        previous = json.loads(done.read_text()) if done.is_file() else {}
        if previous.get("fingerprint") == fingerprint:  # same codec, source and settings: nothing to do
            previous.pop("fingerprint")
            return datasets.load_from_disk(str(out_dir)), PretokenizeReport(**previous)
        if not (Path(out_dir) / "dataset_info.json").is_file() and any(Path(out_dir).iterdir()):
            raise FileExistsError(
                f"{str(out_dir)!r} exists and is not a pre-tokenized dataset; refusing to replace it"
            )
        if not overwrite:
            raise FileExistsError(
                f"{str(out_dir)!r} exists and was not made by this run (other codec, source or settings); "
                "pass overwrite=True (--overwrite) to replace it"
            )
    work = Path(out_dir).resolve().with_name(Path(out_dir).resolve().name + ".partial") if out_dir else None
    if work is not None and state.is_main_process:
        manifest = work / "manifest.json"
        if work.exists() and (
            not manifest.is_file() or json.loads(manifest.read_text())["fingerprint"] != fingerprint
        ):
            shutil.rmtree(work)  # leftovers of a different run (other codec, source or settings)
        work.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"fingerprint": fingerprint, "num_shards": num_shards}))
    state.wait_for_everyone()

    fn_kwargs = {
        "codec_dir": codec_dir,
        "audio_column": audio_column,
        "device": device,
        "encode_batch_size": encode_batch_size,
        "chunk_length_s": chunk_length_s,
        "num_threads": num_threads or (max(1, (os.cpu_count() or 1) // num_proc) if num_proc > 1 else None),
    }
    report = PretokenizeReport(rows=len(dataset))
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    shards: list[Any] = [None] * num_shards
    mine = range(state.process_index, num_shards, state.num_processes)
    for i in mine:
        target = work / f"shard-{i:05d}-of-{num_shards:05d}" if work is not None else None
        if target is not None and target.is_dir():
            shards[i] = datasets.load_from_disk(str(target))
            report.resumed_shards += 1
            continue
        part = dataset.shard(num_shards, i, contiguous=True)
        shard_fp = hashlib.sha256(f"{fingerprint}-{i}-{num_shards}".encode()).hexdigest()[:32]
        mapped = part.map(
            pretokenize_batch,
            batched=True,
            batch_size=batch_size,
            fn_kwargs=fn_kwargs,
            num_proc=num_proc if len(part) >= num_proc > 1 else None,
            remove_columns=[audio_column],
            new_fingerprint=shard_fp,
            desc=f"pretokenize shard {i + 1}/{num_shards}",
        )
        if target is not None:
            _save_atomic(mapped, target)
            mapped = datasets.load_from_disk(str(target))
        shards[i] = mapped
        report.processed_audio_seconds += float(sum(mapped["duration"]))
        report.processed_tokens += sum(len(c) for c in mapped["audio_codes"]) * int(
            identity["tokens_per_frame"]
        )
    state.wait_for_everyone()
    if not state.is_main_process:
        return None, report
    if work is not None:  # shards done by other ranks
        for i in range(num_shards):
            if shards[i] is None:
                shards[i] = datasets.load_from_disk(str(work / f"shard-{i:05d}-of-{num_shards:05d}"))
    full = datasets.concatenate_datasets(shards)
    errors = full["error"]
    names = full["file_name"] if "file_name" in full.column_names else [str(i) for i in range(len(full))]
    report.skipped = [
        {"file_name": n or f"row {i}", "reason": e} for i, (n, e) in enumerate(zip(names, errors)) if e
    ]
    kept = full.filter(lambda e: not e, input_columns="error", new_fingerprint=f"{fingerprint}-kept")
    kept = kept.remove_columns("error").flatten_indices()  # materialize the filter (no indices mapping)
    durations = kept["duration"]
    report.kept = len(kept)
    report.audio_seconds = float(sum(durations))
    report.frames = int(sum(len(c) for c in kept["audio_codes"]))
    report.tokens = report.frames * int(identity["tokens_per_frame"])
    report.wall_seconds = time.perf_counter() - wall0
    report.cpu_seconds = _cpu_seconds() - cpu0
    info = kept.info.copy()
    info.description = make_header(identity, source, settings)
    kept = datasets.Dataset(kept.data, info=info, fingerprint=f"{fingerprint}-final")
    if out_dir is not None:
        out = Path(out_dir)
        _save_atomic(kept, out)
        tmp = out / f".{REPORT_FILE}.tmp"
        tmp.write_text(json.dumps({**asdict(report), "fingerprint": fingerprint}, indent=2))
        os.replace(tmp, out / REPORT_FILE)
        shutil.rmtree(work, ignore_errors=True)
        kept = datasets.load_from_disk(str(out))
    return kept, report


# --- command line ------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """`jepatok pretokenize` options."""
    parser.add_argument(
        "--codec", help="folder of a saved JepaCodecModel (or a JepaSpeechTokenizer folder with codec/)"
    )
    parser.add_argument(
        "--data",
        help="audio folder, LibriSpeech/LibriTTS/LJSpeech folder, save_to_disk folder or HF dataset name",
    )
    parser.add_argument("--out", help="output folder (datasets save_to_disk)")
    parser.add_argument("--split", default=None, help="split (sub-folder / DatasetDict key / Hub split)")
    parser.add_argument("--audio-column", default=None, help="audio column of an HF dataset (auto-detected)")
    parser.add_argument("--text-column", default=None, help="text column of an HF dataset (auto-detected)")
    parser.add_argument(
        "--num-proc", type=int, default=1, help="CPU worker processes (datasets.map num_proc)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="rows per map batch")
    parser.add_argument("--encode-batch-size", type=int, default=8, help="clips per codec call")
    parser.add_argument("--shard-rows", type=int, default=256, help="rows per resumable shard")
    parser.add_argument(
        "--device", default=None, help="codec device (default: accelerate's device for this process)"
    )
    parser.add_argument(
        "--chunk-length-s", type=float, default=None, help="encode long clips in windows of N seconds"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (default: cores / num-proc)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out when it holds a different run"
    )
    parser.add_argument(
        "--benchmark", action="store_true", help="measure throughput on synthetic audio and exit"
    )
    parser.add_argument(
        "--bench-preset", default="small", help="codec preset for --benchmark without --codec"
    )
    parser.add_argument("--bench-clips", type=int, default=24, help="synthetic clips for --benchmark")
    parser.add_argument("--bench-seconds", type=float, default=10.0, help="seconds per synthetic clip")


def _codec_folder(path: str) -> str:
    folder = Path(path)
    if (folder / "codec" / "config.json").is_file():  # a tokenizer folder
        return str(folder / "codec")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no codec in {path!r} (expected config.json, or codec/config.json of a tokenizer)"
        )
    return str(folder)


def run(args) -> int:
    if args.benchmark:
        from .pretokenize_bench import benchmark

        codec = _codec_folder(args.codec) if args.codec else None
        report = benchmark(
            codec,
            args.bench_preset,
            args.bench_clips,
            args.bench_seconds,
            args.num_proc,
            args.encode_batch_size,
            args.threads,
        )
        print(report.summary())
        print(
            f"benchmark ({'codec ' + codec if codec else 'preset ' + args.bench_preset}, {os.cpu_count()} CPUs visible, "
            f"num_proc={args.num_proc}, threads={args.threads or 'default'}): {report.audio_hours_per_cpu_hour:.2f} audio hours per CPU hour"
        )
        return 0
    missing = [name for name in ("codec", "data", "out") if not getattr(args, name)]
    if missing:
        raise ValueError(f"missing required option(s): {', '.join('--' + m for m in missing)}")
    from accelerate import PartialState

    from .sources import load_source, source_splits

    codec_dir = _codec_folder(args.codec)
    splits = [args.split] if args.split else source_splits(args.data)
    out = Path(args.out)
    if splits is not None and not args.split and (out / "dataset_info.json").is_file():
        if not args.overwrite:
            raise FileExistsError(
                f"{args.out!r} holds a single-split dataset; pass --overwrite to replace it"
            )
        shutil.rmtree(out)
    main = PartialState().is_main_process
    done = []
    for split in splits or [None]:
        dataset = load_source(
            args.data, split=split, audio_column=args.audio_column, text_column=args.text_column
        )
        result, report = pretokenize_dataset(
            dataset,
            codec_dir,
            out / split if args.split is None and split is not None else out,
            num_proc=args.num_proc,
            batch_size=args.batch_size,
            encode_batch_size=args.encode_batch_size,
            shard_rows=args.shard_rows,
            device=args.device,
            chunk_length_s=args.chunk_length_s,
            source=f"{args.data}" + (f" [{split}]" if split else ""),
            overwrite=args.overwrite,
            num_threads=args.threads,
        )
        if main:
            print(("" if split is None else f"== {split}\n") + report.summary())
            done.append((split, len(result)))
    if (
        main and splits is not None and args.split is None
    ):  # the DatasetDict layout: dataset_dict.json + <split>/
        tmp = out / ".dataset_dict.json.tmp"
        tmp.write_text(json.dumps({"splits": splits}))
        os.replace(tmp, out / "dataset_dict.json")
    if main:
        print(f"saved {', '.join(f'{n} rows' + (f' ({s})' if s else '') for s, n in done)} to {args.out}")
    return 0


__all__ = [
    "PretokenizeReport",
    "check_codec_identity",
    "pretokenize_batch",
    "pretokenize_dataset",
    "read_codec_identity",
    "read_header",
    "add_arguments",
    "run",
]
