"""Flat vs frame-level speech LM in the same run: same data each step, loss in nats per audio second, speeds.

    python -m jepatok.lm.frame_compare --data PRETOKENIZED_DIR --tokenizer TOK_DIR --preset small --steps 200

Both models see the same examples at every step (mode `both`: TTS + continuation, text prompt unscored), get
the same AdamW settings, and are scored on the validation split in nats per second of audio (audio tokens +
`<eos>` for the flat LM; frame tokens + stop decisions for the frame LM; the same information). Speed: seconds
per training step, LM forward passes per audio second, and generation in audio seconds per wall second.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, field

import torch

from .data import IGNORE_INDEX, LMExample, PackedDataset, build_examples
from .frame_model import FrameLevelSpeechLM, build_frame_lm_config, collate_frames, to_frame_example


@dataclass
class CompareResult:
    preset: str
    steps: int
    audio_seconds_per_step: float
    flat: dict = field(default_factory=dict)
    frame: dict = field(default_factory=dict)


def _flat_nats(model, examples: list[LMExample], tokenizer, pad_id: int) -> tuple[torch.Tensor, int]:
    from .train import batch_nll

    block = max(len(e.input_ids) for e in examples)
    batch = PackedDataset(examples, block, pad_id, blocks=[[i] for i in range(len(examples))]).collate(
        list(range(len(examples)))
    )
    nll, targets = batch_nll(model, batch)
    coded = (targets >= int(tokenizer.audio_offset)) | (targets == int(tokenizer.eos_token_id))
    return nll[coded].sum(), int((targets >= int(tokenizer.audio_offset)).sum())


def compare(
    tokenizer,
    train: list[LMExample],
    valid: list[LMExample],
    preset: str = "tiny",
    steps: int = 20,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    gen_seconds: float | None = None,
) -> CompareResult:
    """Train a flat and a frame-level LM side by side; report nats per audio second and speeds."""
    from .generation import SpeechGenerationPipeline, tts_prompt_ids
    from .modeling import build_lm, count_parameters

    G, rate, pad = int(tokenizer.tokens_per_frame), float(tokenizer.frame_rate), int(tokenizer.pad_token_id)
    flat = build_lm(preset, tokenizer, seed=seed)
    torch.manual_seed(seed)
    frame = FrameLevelSpeechLM(build_frame_lm_config(preset, tokenizer))
    opt_flat = torch.optim.AdamW(flat.parameters(), lr=lr)
    opt_frame = torch.optim.AdamW(frame.parameters(), lr=lr)
    frame_train = [to_frame_example(e, tokenizer) for e in train]
    frame_valid = [to_frame_example(e, tokenizer) for e in valid]
    rng = random.Random(seed)
    times = {"flat": 0.0, "frame": 0.0}
    seen_seconds, flat_nats, frame_nats = 0.0, 0.0, 0.0
    for _ in range(steps):
        idx = rng.sample(range(len(train)), min(batch_size, len(train)))
        t0 = time.perf_counter()
        nats, audio_tokens = _flat_nats(flat, [train[i] for i in idx], tokenizer, pad)
        labels = sum(sum(t != IGNORE_INDEX for t in train[i].labels[1:]) for i in idx)
        opt_flat.zero_grad()
        (nats / max(1, labels)).backward()
        opt_flat.step()
        t1 = time.perf_counter()
        out = frame(collate_frames([frame_train[i] for i in idx], pad))
        opt_frame.zero_grad()
        ((out.frame_nll + out.stop_nll) / max(1, out.frames * G + out.stops)).backward()
        opt_frame.step()
        t2 = time.perf_counter()
        times["flat"] += t1 - t0
        times["frame"] += t2 - t1
        seen_seconds += audio_tokens / G / rate
        flat_nats += float(nats.detach())
        frame_nats += float((out.frame_nll + out.stop_nll).detach())
    with torch.no_grad():
        flat.eval()
        frame.eval()
        v_nats, v_tokens = _flat_nats(flat, valid, tokenizer, pad)
        v_out = frame(collate_frames(frame_valid, pad))
    v_seconds = v_tokens / G / rate
    result = CompareResult(preset, steps, seen_seconds / max(1, steps))
    result.flat = {
        "parameters": count_parameters(flat),
        "lm_steps_per_audio_second": G * rate,
        "seconds_per_train_step": times["flat"] / steps,
        "train_nats_per_audio_second": flat_nats / max(seen_seconds, 1e-9),
        "eval_nats_per_audio_second": float(v_nats) / v_seconds,
    }
    result.frame = {
        "parameters": count_parameters(frame),
        "lm_steps_per_audio_second": rate,
        "seconds_per_train_step": times["frame"] / steps,
        "train_nats_per_audio_second": frame_nats / max(seen_seconds, 1e-9),
        "eval_nats_per_audio_second": float(v_out.frame_nll + v_out.stop_nll) / v_seconds,
    }
    if gen_seconds:
        frames = max(1, int(gen_seconds * rate))
        prompt = tts_prompt_ids(tokenizer, "hello there, this is a comparison")
        pipe = SpeechGenerationPipeline(model=flat, tokenizer=tokenizer)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe._forward(
                [pipe.preprocess({"input_ids": prompt})], max_seconds=frames / rate, min_frames=frames
            )
        t1 = time.perf_counter()
        codes = frame.generate_frames([prompt], max_frames=frames, min_frames=frames)
        t2 = time.perf_counter()
        assert codes[0].shape == (frames, G)
        result.flat["generation_audio_seconds_per_second"] = frames / rate / (t1 - t0)
        result.frame["generation_audio_seconds_per_second"] = frames / rate / (t2 - t1)
    return result


def main(argv: list[str] | None = None) -> int:
    from .train import load_pretokenized, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--block-size", type=int, default=2048, help="longest sequence kept")
    parser.add_argument("--gen-seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.tokenizer)
    splits = load_pretokenized(args.data, tok)
    valid_split = splits.get("validation") or splits["train"]

    def examples(split):
        texts = split["text"] if "text" in split.column_names else [""] * len(split)
        return build_examples(split["audio_codes"], texts, tok, "both", args.block_size)[0]

    result = compare(
        tok,
        examples(splits["train"]),
        examples(valid_split),
        args.preset,
        args.steps,
        args.batch_size,
        args.lr,
        gen_seconds=args.gen_seconds,
    )
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
