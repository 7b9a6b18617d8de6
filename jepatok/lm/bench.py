"""Speech-LM speed benchmark: generation in audio seconds per wall second, training throughput, LM steps per second.

    python -m jepatok.lm.bench --lm-preset small --codec-preset small --seconds 4 --batch-sizes 1 4

Random weights (speed does not depend on training): a `JepaSpeechTokenizer` on a random codec of
`--codec-preset`, and an LM of `--lm-preset` sized to it. Generation runs the real path (frame-grammar
constrained sampling, KV cache) with `<eos>` held back until `--seconds` of audio so every run produces the
same length; decoding through the codec is timed separately. "LM steps per audio second" is the number of
autoregressive backbone passes one second of audio costs: tokens_per_frame x frame_rate for the flat LM,
frame_rate for the frame-level LM (`--architecture frame`; `both` measures the two in the same run and adds
their ratios: frame over flat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class LMBenchResult:
    """Benchmark numbers (CPU unless `device` says otherwise)."""

    lm_preset: str
    codec_preset: str
    lm_parameters: int
    vocab_size: int
    device: str
    threads: int
    lm_steps_per_audio_second: float  # backbone passes per second of audio
    architecture: str = "flat"
    generation: list[dict] = field(default_factory=list)  # per batch size
    training: dict = field(default_factory=dict)
    load_average: tuple[float, float, float] | None = None
    machine: str = ""


def _tokenizer(codec_preset: str):
    from jepatok import JepaCodecConfig
    from jepatok.tokenizer.modeling import JepaCodecModel
    from jepatok.tokenizer.tokenization import JepaSpeechTokenizer

    torch.manual_seed(0)
    codec = JepaCodecModel(JepaCodecConfig.from_preset(codec_preset)).eval()
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "speech tokens at two and a half frames a second",
    ] * 20
    return JepaSpeechTokenizer.from_codec(codec, texts=texts)


def bench_generation(model, tokenizer, seconds: float, batch_size: int, repeats: int = 2) -> dict:
    """Time constrained generation of exactly `seconds` of audio for `batch_size` prompts, then decoding."""
    from .generation import SpeechGenerationPipeline

    pipe = SpeechGenerationPipeline(model=model, tokenizer=tokenizer, device=model.device)
    grammar = pipe.grammar
    frames = grammar.max_frames(seconds)
    texts = ["hello there, this is a benchmark sentence"] * batch_size
    kwargs = dict(max_seconds=seconds, min_frames=frames, seed=0, top_k=50, batch_size=batch_size)
    pipe(texts[:1], max_seconds=1 / grammar.frame_rate, seed=0)  # warm-up
    best_gen, best_dec = float("inf"), float("inf")
    for _ in range(repeats):
        prompts = [pipe.preprocess(t) for t in texts]
        t0 = time.perf_counter()
        with torch.inference_mode():
            outputs = pipe._forward(prompts, **{k: v for k, v in kwargs.items() if k != "batch_size"})
        t1 = time.perf_counter()
        results = pipe.postprocess(outputs)
        t2 = time.perf_counter()
        best_gen, best_dec = min(best_gen, t1 - t0), min(best_dec, t2 - t1)
    audio_seconds = sum(len(r["audio"]) / r["sampling_rate"] for r in results)
    new_tokens = sum(len(r["ids"]) for r in results)
    return {
        "batch_size": batch_size,
        "audio_seconds": audio_seconds,
        "generate_s": best_gen,
        "decode_s": best_dec,
        "tokens_per_second": new_tokens / best_gen,
        "audio_seconds_per_second_lm": audio_seconds / best_gen,
        "audio_seconds_per_second_with_decode": audio_seconds / (best_gen + best_dec),
    }


def bench_training(model, tokenizer, block_size: int, batch_size: int, steps: int = 3) -> dict:
    """Forward+backward+AdamW steps on random packed blocks: tokens and audio seconds processed per second.
    A frame-level LM gets the same audio: per row one sequence of block_size // tokens_per_frame frames."""
    from .data import LMBatch
    from .modeling import is_frame_lm
    from .train import batch_loss_terms

    model.train()
    frame = is_frame_lm(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lo, hi = int(tokenizer.audio_offset), int(tokenizer.audio_offset) + min(tokenizer.slot_sizes)
    if frame:
        from .frame_model import FrameExample, collate_frames

        G = int(tokenizer.tokens_per_frame)
        n = block_size // G
        prompt = [int(tokenizer.bos_token_id), int(tokenizer.audio_token_id)]
        rows = [
            FrameExample(prompt, torch.randint(0, min(tokenizer.slot_sizes), (n, G), dtype=torch.int16), True)
            for _ in range(batch_size)
        ]
        batch = collate_frames(rows, int(tokenizer.pad_token_id)).to(model.device)
    else:
        ids = torch.randint(lo, hi, (batch_size, block_size))
        batch = LMBatch(ids, ids.clone(), torch.arange(block_size).expand(batch_size, -1)).to(model.device)

    def step():
        nll, count = batch_loss_terms(model, batch, frame)
        loss = nll / max(1, count)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = (time.perf_counter() - t0) / steps
    tokens_per_second_audio = tokenizer.tokens_per_frame * tokenizer.frame_rate
    # the audio both LMs saw (the frame LM: whole frames of block_size tokens)
    tokens = batch_size * (
        block_size // tokenizer.tokens_per_frame * tokenizer.tokens_per_frame if frame else block_size
    )
    model.eval()
    return {
        "block_size": block_size,
        "batch_size": batch_size,
        "seconds_per_step": elapsed,
        "tokens_per_second": tokens / elapsed,
        "audio_seconds_per_second": tokens / tokens_per_second_audio / elapsed,
    }


def run_benchmark(
    lm_preset: str = "small",
    codec_preset: str = "small",
    seconds: float = 4.0,
    batch_sizes: tuple[int, ...] = (1, 4),
    train_block_size: int = 512,
    train_batch_size: int = 4,
    device: str = "cpu",
    architecture: str = "flat",
    tokenizer=None,
) -> LMBenchResult:
    """Args: presets, `seconds` of audio per generated sequence, batch sizes, training block/batch, device,
    architecture ("flat" or "frame"; the frame LM's backbone is the flat preset, value_split 128)."""
    from .modeling import build_lm, count_parameters

    tokenizer = tokenizer or _tokenizer(codec_preset)
    tokenizer.codec.to(device)
    if architecture == "frame":
        from .frame_model import FrameLevelSpeechLM, build_frame_lm_config

        torch.manual_seed(0)
        config = build_frame_lm_config(lm_preset, tokenizer, value_split=128)
        model = FrameLevelSpeechLM(config).to(device).eval()
    elif architecture == "flat":
        model = build_lm(lm_preset, tokenizer, seed=0).to(device).eval()
    else:
        raise ValueError(f"architecture must be flat or frame, got {architecture!r}")
    rate = float(tokenizer.frame_rate)
    result = LMBenchResult(
        lm_preset=lm_preset,
        codec_preset=codec_preset,
        lm_parameters=count_parameters(model),
        vocab_size=len(tokenizer),
        device=device,
        threads=torch.get_num_threads(),
        lm_steps_per_audio_second=rate if architecture == "frame" else tokenizer.tokens_per_frame * rate,
        architecture=architecture,
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
        machine=f"{platform.machine()} {os.cpu_count()} cpus",
    )
    for bs in batch_sizes:
        result.generation.append(bench_generation(model, tokenizer, seconds, bs))
    if train_batch_size > 0:
        result.training = bench_training(model, tokenizer, train_block_size, train_batch_size)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm-preset", default="small")
    parser.add_argument("--codec-preset", default="small")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per generated sequence")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--train-block-size", type=int, default=512)
    parser.add_argument("--train-batch-size", type=int, default=4, help="0 skips the training benchmark")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--architecture",
        choices=("flat", "frame", "both"),
        default="flat",
        help="which LM (both: ratios too)",
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = ("flat", "frame") if args.architecture == "both" else (args.architecture,)
    tokenizer = _tokenizer(args.codec_preset)
    results = [
        run_benchmark(
            args.lm_preset,
            args.codec_preset,
            args.seconds,
            tuple(args.batch_sizes),
            args.train_block_size,
            args.train_batch_size,
            args.device,
            kind,
            tokenizer,
        )
        for kind in kinds
    ]
    if len(results) == 1:
        text = json.dumps(asdict(results[0]), indent=2)
    else:
        flat, frame = results
        ratios = {
            f"generation_batch_{a['batch_size']}_audio_s_per_s": b["audio_seconds_per_second_lm"]
            / a["audio_seconds_per_second_lm"]
            for a, b in zip(flat.generation, frame.generation)
        }
        if flat.training and frame.training:
            ratios["training_audio_s_per_s"] = (
                frame.training["audio_seconds_per_second"] / flat.training["audio_seconds_per_second"]
            )
        text = json.dumps({"flat": asdict(flat), "frame": asdict(frame), "frame_over_flat": ratios}, indent=2)
    print(text)
    if args.out:
        from pathlib import Path

        from .args import atomic_write_text

        atomic_write_text(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
