"""`jepatok generate`: text-to-speech or speech continuation with a trained jepatok speech LM, written to WAV.

    jepatok generate --lm RUN/final --tokenizer TOK --text "hello there" --out hello.wav
    jepatok generate --lm RUN/final --tokenizer TOK --prompt-audio start.wav --out more.wav --max-seconds 8
    jepatok generate --lm RUN/final --tokenizer TOK --text "a" --text "b" --out out.wav   # out_0.wav, out_1.wav

Sampling is constrained by the frame grammar (jepatok.lm.logits), batched over several --text values, with the
KV cache on; the audio is decoded by the tokenizer's codec at the codec's sampling rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .args import add_reading_arguments, add_rerank_arguments

    parser.add_argument("--lm", required=True, help="trained LM directory (train-lm's OUTPUT_DIR/final)")
    parser.add_argument(
        "--tokenizer", default=None, help="JepaSpeechTokenizer directory (default: the --lm directory)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="text to speak (repeat for a batch)")
    source.add_argument(
        "--prompt-audio", action="append", help="WAV/FLAC file to continue (repeat for a batch)"
    )
    parser.add_argument(
        "--voice-prompt", default=None, help="with --text: audio whose voice the speech continues"
    )
    parser.add_argument(
        "--out", required=True, help="output WAV (out_0.wav, out_1.wav, ... for several inputs)"
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="classifier-free guidance toward the text (1 = off, e.g. 2 follows the text more closely)",
    )
    add_rerank_arguments(parser)
    add_reading_arguments(parser)
    parser.add_argument(
        "--max-seconds", type=float, default=10.0, help="maximum audio length (prompt included)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    parser.add_argument(
        "--include-prompt", action="store_true", help="continuation: write prompt + continuation"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def output_paths(out: str, n: int) -> list[Path]:
    """`out` for one result; `stem_0.wav`, `stem_1.wav`, ... for several."""
    path = Path(out)
    if path.suffix.lower() != ".wav":
        raise ValueError(f"--out must be a .wav file, got {out!r}")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(n)]


def build_inputs(args: argparse.Namespace) -> list:
    from jepatok.data.audio import load_audio

    if args.text:
        voice = None
        if args.voice_prompt:
            wave, sr = load_audio(args.voice_prompt)
            voice = {"audio": wave, "sampling_rate": sr}
        return [{"text": t, **(voice or {})} for t in args.text]
    if args.voice_prompt:
        raise ValueError("--voice-prompt goes with --text; use --prompt-audio alone to continue speech")
    inputs = []
    for f in args.prompt_audio:
        if not Path(f).is_file():
            raise FileNotFoundError(f"prompt audio {f!r} does not exist")
        wave, sr = load_audio(f)
        inputs.append({"audio": wave, "sampling_rate": sr})
    return inputs


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    import jepatok  # noqa: F401  (registers the tokenizer class)
    from jepatok.data.audio import write_wav

    from .generation import SpeechGenerationPipeline
    from .modeling import load_speech_lm

    for name in ("lm", "tokenizer"):
        path = getattr(args, name)
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"--{name} directory {path!r} does not exist")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_speech_lm(args.lm).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.lm)
    pipe = SpeechGenerationPipeline(model=model, tokenizer=tokenizer, device=torch.device(device))
    inputs = build_inputs(args)
    paths = output_paths(args.out, len(inputs))
    results = pipe(
        inputs,
        batch_size=args.batch_size,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        guidance_scale=args.guidance_scale,
        do_sample=not args.greedy,
        max_seconds=args.max_seconds,
        seed=args.seed,
        include_prompt_audio=args.include_prompt,
        reading_rate=args.reading_rate,
        reading_slack=args.reading_slack,
        **(
            {
                "num_candidates": args.num_candidates,
                "phoneme_scorer": args.phoneme_scorer,
                "rerank_metric": args.rerank_metric,
            }
            if args.num_candidates != 1
            else {}
        ),
    )
    summary = []
    for path, result in zip(paths, results):
        write_wav(path, result["audio"], result["sampling_rate"])
        seconds = len(result["audio"]) / result["sampling_rate"]
        ended = bool(result["ids"]) and result["ids"][-1] == tokenizer.eos_token_id
        entry = {"file": str(path), "seconds": round(seconds, 4), "ended_with_eos": ended}
        if "chosen" in result:
            entry["chosen_candidate"] = result["chosen"]
            entry["phoneme_score"] = round(result["candidate_scores"][result["chosen"]], 4)
        summary.append(entry)
    print(json.dumps(summary, indent=2))
    return 0
