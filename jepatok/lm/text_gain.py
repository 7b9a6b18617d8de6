"""`jepatok text-gain`: how much a speech LM's audio predictions use the text (bits per audio second).

For each held-out example of a pre-tokenized dataset the LM scores the same audio tokens (and the closing
`<eos>`) twice: after the TTS prompt `<bos> <text> text-ids <audio>` and after the text-free continuation prompt
`<bos> <audio>`. The difference is the information the text gives the LM about the audio:

    text gain = (NLL without text - NLL with text) / audio seconds        [bits per audio second]

A TTS LM that follows its text has a large gain; one whose speech keeps a sentence's rhythm and few of its words
(the shipped checkpoints so far) has a small one. Unlike a TTS WER through Whisper, this is deterministic, costs
two forward passes per example, and averages over hundreds of utterances, so it can track text-audio alignment
between checkpoints and during training. Outputs the totals with a sentence-bootstrap 95% interval of the gain,
and the share of examples the text helps.

    jepatok text-gain --lm runs/lm/final --data runs/pretok --split validation --max-examples 300
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

BY_FRAME_CAP = 8  # frames from this index on share one bucket of the gain by frame


class NoTextGainExamples(ValueError):
    """Nothing to score: no row has a transcript, or every chosen example is longer than the LM's positions."""


@torch.no_grad()
def audio_nll(model, ids: list[int], audio_start: int, tokenizer=None) -> float:
    """Summed NLL (nats) of `ids[audio_start:]` given everything before, in one forward pass.

    For a frame-level LM (`jepatok.lm.frame_model`; needs `tokenizer`) `ids` must be a whole sequence ending
    with the audio after `<audio>` (and `<eos>`); the NLL is that of its frames and stop decisions."""
    from .modeling import is_frame_lm

    device = next(model.parameters()).device
    if is_frame_lm(model):
        if tokenizer is None:
            raise ValueError("audio_nll of a frame-level LM needs the tokenizer")
        per_frame, end = audio_nll_by_frame(model, ids, audio_start, tokenizer)
        return float(per_frame.sum()) + end
    x = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(input_ids=x).logits[0, audio_start - 1 : -1].float()
    targets = x[0, audio_start:]
    return float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))


@torch.no_grad()
def audio_nll_by_frame(model, ids: list[int], audio_start: int, tokenizer) -> tuple[torch.Tensor, float]:
    """(NLL of each audio frame [T], NLL of the ending) in nats, for `ids` whose `ids[audio_start:]` are whole
    frames of audio ids and optionally `<eos>`: the flat LM's per-token NLLs summed per frame, its `<eos>` as
    the ending; the frame LM's per-frame NLLs, its stop decisions (one before each frame, one at the end)
    as the ending. Their total is `audio_nll`."""
    from .modeling import is_frame_lm

    G, device = int(tokenizer.tokens_per_frame), next(model.parameters()).device
    if is_frame_lm(model):
        from .data import LMExample
        from .frame_model import collate_frames, to_frame_example

        if ids.index(int(tokenizer.audio_token_id)) != audio_start - 1:
            raise ValueError("a frame-level LM scores everything after <audio>: audio_start must follow it")
        example = to_frame_example(LMExample(list(ids), list(ids)), tokenizer)
        inner = getattr(model, "module", model)  # score() is not forwarded by DDP wrappers
        per_frame, stops = inner.score(collate_frames([example], int(tokenizer.pad_token_id)).to(device))
        return per_frame.float().cpu(), float(stops.sum())
    x = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(input_ids=x).logits[0, audio_start - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, x[0, audio_start:], reduction="none").cpu()
    T = nll.numel() // G
    return nll[: T * G].view(T, G).sum(-1), float(nll[T * G :].sum())


def example_pair(tokenizer, codes, text: str) -> tuple[list[int], list[int], int]:
    """(TTS ids, continuation ids, number of scored tokens): both end with the same audio ids + `<eos>`."""
    codes = torch.as_tensor(codes, dtype=torch.long).reshape(-1, int(tokenizer.tokens_per_frame))
    tts = list(tokenizer.build_tts_ids(text, codes))
    audio = list(tokenizer.codes_to_ids(codes)) + [int(tokenizer.eos_token_id)]
    if tts[-len(audio) :] != audio:
        raise ValueError("the tokenizer's TTS template does not end with the audio ids and <eos>")
    cont = [int(tokenizer.bos_token_id), int(tokenizer.audio_token_id)] + audio
    return tts, cont, len(audio)


def pick_text_rows(rows, max_examples: int) -> list[int]:
    """Indices of up to `max_examples` rows with a transcript, spread evenly over `rows` (what `text_gain`
    scores; `train-lm` picks them once per run)."""
    from ..eval.clips import _pick_indices

    if max_examples <= 0:
        raise ValueError(f"max_examples must be positive, got {max_examples}")
    with_text = [i for i, t in enumerate(rows["text"]) if t and t.strip()]
    if not with_text:
        raise NoTextGainExamples("no row has a transcript: text gain needs a `text` column with transcripts")
    return [with_text[i] for i in _pick_indices(len(with_text), max_examples)]


def text_gain(
    model,
    tokenizer,
    rows,
    max_examples: int = 300,
    progress: bool = True,
    max_positions: int | None = None,
    chosen: list[int] | None = None,
) -> dict:
    """The text gain of `model` over up to `max_examples` rows with text, spread evenly over `rows`.

    Args:
        model: causal LM over the tokenizer's ids.
        tokenizer: the `JepaSpeechTokenizer` of the LM (its codec made the rows' codes).
        rows: a pre-tokenized split (`audio_codes`, `text` columns), e.g. a `datasets.Dataset`.
        max_examples: examples scored (> 0); rows without text and sequences longer than the LM's positions
            are skipped (and counted).
        progress: show a progress bar.
        max_positions: the LM's context length (default: `model.config.max_position_embeddings`; give it when
            `model` is wrapped, e.g. by DDP).
        chosen: the rows to score (from `pick_text_rows`); default: picked here from `max_examples`.
    """
    from tqdm.auto import tqdm

    from ..eval.compare_tts import bootstrap_rate_ci
    from .modeling import is_frame_lm, tts_layout

    if not is_frame_lm(model) and tts_layout(model) != "prefix":
        raise ValueError(
            "the text gain compares prefix-layout prompts with and without their text; this LM reads its text "
            f"inside the audio part (tts_layout={tts_layout(model)!r}), so the measure does not apply to it"
        )
    if chosen is None:
        chosen = pick_text_rows(rows, max_examples)

    frame = is_frame_lm(model)
    if max_positions is None:
        config = getattr(model, "config", None)
        max_positions = getattr(config, "max_position_embeddings", None)
        if frame:
            max_positions = config.backbone.get("max_position_embeddings")
    limit = int(max_positions or 1 << 30)
    G, rate = int(tokenizer.tokens_per_frame), float(tokenizer.frame_rate)
    was_training = model.training
    model.eval()
    try:
        gains, seconds, with_nll, without_nll, helped, too_long = [], [], 0.0, 0.0, 0, 0
        by_frame: dict[int, list[float]] = {}  # frame index (capped) -> per-example gains in nats
        at_end: list[float] = []
        for i in tqdm(chosen, desc="text-gain", unit="example", disable=not progress):
            row = rows[i]
            tts, cont, scored = example_pair(tokenizer, row["audio_codes"], row["text"].strip())
            # a frame LM takes one step per frame: its length is the prompt plus the frames
            steps = len(tts) - scored + (scored - 1) // G if frame else len(tts)
            if steps > limit:
                too_long += 1
                continue
            fa, ea = audio_nll_by_frame(model, tts, len(tts) - scored, tokenizer)
            fb, eb = audio_nll_by_frame(model, cont, len(cont) - scored, tokenizer)
            for j, d in enumerate((fb - fa).tolist()):
                by_frame.setdefault(min(j, BY_FRAME_CAP), []).append(d)
            at_end.append(eb - ea)
            a, b = float(fa.sum()) + ea, float(fb.sum()) + eb
            with_nll, without_nll = with_nll + a, without_nll + b
            gains.append(b - a)
            seconds.append((scored - 1) / G / rate)
            helped += int(b > a)
    finally:
        model.train(was_training)
    if not gains:
        raise NoTextGainExamples(f"every chosen example is longer than the LM's {limit} positions")
    total_s = sum(seconds)
    bits = 1.0 / math.log(2)
    lo, hi = bootstrap_rate_ci(gains, seconds, resamples=2000, seed=0)
    return {
        "examples": len(gains),
        "skipped_too_long": too_long,
        "audio_seconds": total_s,
        "bits_per_audio_second_with_text": with_nll / total_s * bits,
        "bits_per_audio_second_without_text": without_nll / total_s * bits,
        "text_gain_bits_per_audio_second": (without_nll - with_nll) / total_s * bits,
        "text_gain_ci95": [lo * bits, hi * bits],
        "text_gain_share": (without_nll - with_nll) / without_nll,
        "examples_helped_by_text": helped / len(gains),
        # where the text helps: mean bits per frame by frame index (the last bucket: that index and later),
        # and per utterance at its end (the flat LM's <eos>, the frame LM's stop decisions)
        "gain_bits_by_frame": {
            (f"{j}+" if j == BY_FRAME_CAP else str(j)): sum(v) / len(v) * bits
            for j, v in sorted(by_frame.items())
        },
        "gain_bits_at_end": sum(at_end) / len(at_end) * bits,
    }


def summary_lines(m: dict) -> list[str]:
    """Printable lines of a `text_gain` result."""
    lo, hi = m["text_gain_ci95"]
    return [
        f"{m['examples']} examples, {m['audio_seconds']:.0f} s of audio ({m['skipped_too_long']} too long)",
        f"audio bits/s with text     {m['bits_per_audio_second_with_text']:.1f}",
        f"audio bits/s without text  {m['bits_per_audio_second_without_text']:.1f}",
        f"text gain                  {m['text_gain_bits_per_audio_second']:.2f} bits/s [95% CI {lo:.2f}, {hi:.2f}]"
        f" ({m['text_gain_share']:.1%} of the audio's bits; text helps {m['examples_helped_by_text']:.0%} of examples)",
        "gain by frame (bits/frame)  "
        + " ".join(f"{k}:{v:+.2f}" for k, v in m.get("gain_bits_by_frame", {}).items())
        + f"  end: {m.get('gain_bits_at_end', float('nan')):+.2f} bits/utterance",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lm", default="small", help="LM directory or shipped checkpoint name (default: small)"
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the --lm directory)")
    parser.add_argument("--data", required=True, help="pre-tokenized dataset directory (jepatok pretokenize)")
    parser.add_argument("--split", default="validation", help="split to score (default: validation)")
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from datasets import DatasetDict, load_from_disk

    from ..data.pretokenized import check_codec_identity
    from ..eval.evaluate_tts import load_lm_and_tokenizer
    from .args import atomic_write_text

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data!r} is not a pre-tokenized dataset directory")
    tokenizer, model = load_lm_and_tokenizer(args.lm, args.tokenizer, args.device)
    data = load_from_disk(args.data)
    if isinstance(data, DatasetDict):
        if args.split not in data:
            raise ValueError(f"split {args.split!r} not in {args.data} (has {sorted(data)})")
        check_codec_identity(args.data, tokenizer)
        data = data[args.split]
    for column in ("audio_codes", "text"):
        if column not in data.column_names:
            raise ValueError(f"{args.data} has no {column!r} column (has {data.column_names})")
    m = text_gain(model, tokenizer, data, args.max_examples)
    m["lm"], m["data"], m["split"] = args.lm, args.data, args.split
    print("\n".join(summary_lines(m)))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(m, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
