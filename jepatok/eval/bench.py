"""`jepatok bench`: codec encode / decode speed on CPU, next to Hugging Face `MimiModel` measured in the same run.

Speed is reported as compute seconds per second of audio (lower is better; < 1 is faster than real time) and
as a ratio to Mimi (default `MimiConfig()`, random weights: speed does not depend on the weights). Our codecs
are randomly initialised with a fixed seed for the same reason. Each number is the median of `--repeats`
timed runs after one warm-up run. The input is seeded noise-modulated tones.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class BenchResult:
    name: str
    sampling_rate: int
    frame_rate: float
    params_m: float  # parameters, millions
    encode_s_per_s: float  # median encode seconds per audio second
    decode_s_per_s: float  # median decode seconds per audio second
    encode_ratio: float | None = None  # / Mimi (> 1: slower than Mimi)
    decode_ratio: float | None = None


def _audio(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    tone = torch.sin(2 * math.pi * 180 * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (0.3 * tone + 0.03 * torch.randn(t.shape, generator=g)).view(1, 1, -1).float()


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def bench_jepa(preset: str, seconds: float, repeats: int) -> BenchResult:
    """Encode / decode speed of a randomly initialised jepatok codec preset."""
    from ..tokenizer.configuration import JepaCodecConfig
    from ..tokenizer.modeling import JepaCodecModel

    torch.manual_seed(0)
    model = JepaCodecModel(JepaCodecConfig.from_preset(preset)).eval()
    rate = model.config.sampling_rate
    x = _audio(seconds, rate)
    codes = model.encode(x).audio_codes
    enc = _median_time(lambda: model.encode(x), repeats)
    dec = _median_time(lambda: model.decode(codes), repeats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return BenchResult(
        f"jepatok {preset}", rate, model.config.frame_rate, params, enc / seconds, dec / seconds
    )


@torch.no_grad()
def bench_mimi(seconds: float, repeats: int) -> BenchResult:
    """Encode / decode speed of HF `MimiModel(MimiConfig())` (random weights, all 32 codebooks)."""
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    config = MimiConfig()
    model = MimiModel(config).eval()
    rate = config.sampling_rate
    x = _audio(seconds, rate)
    codes = model.encode(x).audio_codes
    enc = _median_time(lambda: model.encode(x), repeats)
    dec = _median_time(lambda: model.decode(codes), repeats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return BenchResult("HF Mimi", rate, float(config.frame_rate), params, enc / seconds, dec / seconds)


def format_table(results: list[BenchResult], seconds: float, repeats: int, threads: int) -> str:
    head = (
        f"CPU, {threads} thread(s), {seconds:g} s of audio, median of {repeats} runs; "
        "s/s = compute seconds per audio second (lower is faster)"
    )
    rows = [
        "| codec | rate | frames/s | params | encode s/s | decode s/s | encode vs Mimi | decode vs Mimi |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = lambda v: "—" if v is None else f"{v:.2f}x"  # noqa: E731
        rows.append(
            f"| {r.name} | {r.sampling_rate // 1000} kHz | {r.frame_rate:g} | {r.params_m:.1f} M | "
            f"{r.encode_s_per_s:.4f} | {r.decode_s_per_s:.4f} | {ratio(r.encode_ratio)} | {ratio(r.decode_ratio)} |"
        )
    return head + "\n" + "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--presets", nargs="+", default=["small", "paper"], help="jepatok codec presets to time"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of audio per run (default 10)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per measurement (median; default 3)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-mimi", action="store_true", help="skip the HF Mimi reference")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.repeats < 1:
        raise ValueError(f"--duration must be > 0 and --repeats >= 1, got {args.duration} and {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = [bench_jepa(p, args.duration, args.repeats) for p in args.presets]
    if not args.no_mimi:
        mimi = bench_mimi(args.duration, args.repeats)
        for r in results:
            r.encode_ratio = r.encode_s_per_s / mimi.encode_s_per_s
            r.decode_ratio = r.decode_s_per_s / mimi.decode_s_per_s
        results.append(mimi)
    print(format_table(results, args.duration, args.repeats, torch.get_num_threads()))
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0
