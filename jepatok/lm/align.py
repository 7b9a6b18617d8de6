"""Text-to-frame alignment for the interleaved TTS layout: which codec frame each text piece is spoken in.

A speech LM trained on `<bos> <text> pieces <audio> frames <eos>` has to find, by itself, which part of the text
each 0.4 s frame speaks; at a few hours of data and a few thousand CPU steps the shipped LMs never learned it
(text gain 0.11 bits per audio second; README, "Does the LM use its text?"). The interleaved layout (ELLA-V
style) repeats every text piece inside the audio part, just before the frame in which it starts:

    <bos> <text> p1 .. pn <audio> p1 p2 [frame 0] p3 [frame 1] [frame 2] p4 p5 [frame 3] ... <eos>

so the LM only has to speak the pieces it has just read, and the generation grammar
(`InterleavedTextLogitsProcessor`) only lets it emit the next piece of the prompt's text or the next frame.
The alignment comes from the checkpoint's phoneme scorer (`jepatok.lm.rerank.PhonemeScorer`, a CTC recogniser
over the codes): a CTC forced alignment (Viterbi) of the text's phonemes to the scorer's sub-frame steps gives
each phoneme a step, and each piece takes the frame of its first phoneme. No ASR model or external aligner is
needed, so any pre-tokenized dataset with transcripts can be aligned offline:

    jepatok align-text --codec TOKENIZER_DIR --phoneme-scorer small --data PRETOK_DIR --out ALIGNED_DIR

which copies the dataset with a `text_frames` column (one frame index per text piece of `tokenizer(text)`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..eval.phonetic_probe import LENGTH_MARK, STRESS_MARKS

TEXT_FRAMES_COLUMN = "text_frames"


def ctc_forced_align(log_probs: np.ndarray | torch.Tensor, targets: list[int], blank: int = 0) -> list[int]:
    """The most likely CTC path of `targets` through `log_probs` [T, C] (Viterbi): each target's first step.

    Raises ValueError when the T steps cannot hold the targets (each target needs a step, and a repeated
    symbol needs a blank between its two copies)."""
    lp = log_probs.detach().float().cpu().numpy() if isinstance(log_probs, torch.Tensor) else log_probs
    if lp.ndim != 2:
        raise ValueError(f"log_probs must be [T, C], got shape {tuple(lp.shape)}")
    T, L = lp.shape[0], len(targets)
    if L == 0:
        return []
    needed = L + sum(1 for a, b in zip(targets, targets[1:]) if a == b)
    if T < needed:
        raise ValueError(f"{T} steps cannot hold {L} CTC targets (at least {needed} steps needed)")
    ext = np.full(2 * L + 1, blank, dtype=np.int64)
    ext[1::2] = targets
    S = len(ext)
    # skip s-2 -> s only into a non-blank that differs from the symbol two states back
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -np.inf
    alpha = np.full(S, neg)
    alpha[0], alpha[1] = lp[0, ext[0]], lp[0, ext[1]]
    back = np.zeros((T, S), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, T):
        stay = alpha
        one = np.concatenate(([neg], alpha[:-1]))
        two = np.where(skip, np.concatenate(([neg, neg], alpha[:-2])), neg)
        stacked = np.stack([stay, one, two])
        choice = stacked.argmax(axis=0)
        alpha = stacked[choice, np.arange(S)] + lp[t, ext]
        back[t] = choice
    s = S - 1 if alpha[S - 1] >= alpha[S - 2] else S - 2
    if not math.isfinite(alpha[s]):
        raise ValueError("no CTC path holds the targets")
    first = [0] * L
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            first[s // 2] = t  # walking back: the last write is the first step of the symbol
        s -= int(back[t, s])
    return first


def piece_symbols(tokenizer, text: str) -> tuple[list[int], list[int], list[str]]:
    """The text's pieces (the ids `tokenizer` gives it) and, per piece, the index of the first phoneme symbol
    it starts (-1 for a piece with none: a word boundary or a stress mark), with the text's phoneme symbols.

    Needs the `espeak-ipa` front-end: pieces are substrings of the phoneme string, so their characters map onto
    `phoneme_symbols`' symbols exactly."""
    if getattr(tokenizer, "text_frontend", None) != "espeak-ipa":
        raise ValueError(
            "text alignment needs a tokenizer with text_frontend='espeak-ipa' (its pieces are phonemes), got "
            f"{getattr(tokenizer, 'text_frontend', None)!r}"
        )
    from ..tokenizer.phonemes import phonemize

    ipa = phonemize(text)
    pieces = tokenizer.sp_model.encode(ipa, out_type=str)
    # symbol index of every character (-1: space or stress mark), following `phoneme_symbols`
    owner: list[int] = []
    symbols: list[str] = []
    tied = False
    for ch in ipa:
        if ch.isspace() or ch in STRESS_MARKS:
            owner.append(-1)
            continue
        joins = (tied or ch == LENGTH_MARK or "\u0300" <= ch <= "\u036f") and bool(symbols)
        tied = ch == "\u0361"
        if joins:
            symbols[-1] += ch
            owner.append(-(len(symbols) - 1) - 2)  # continues symbol len-1: not a start
        else:
            symbols.append(ch)
            owner.append(len(symbols) - 1)
    text_of = "".join(pieces).replace("\u2581", " ")
    offset = len(text_of) - len(text_of.lstrip(" ")) if not ipa.startswith(" ") else 0
    if text_of[offset:] != ipa:
        raise ValueError(f"the tokenizer's pieces of {text!r} do not spell its phonemes {ipa!r}")
    starts: list[int] = []
    pos = -offset
    for p in pieces:
        span = owner[max(0, pos) : pos + len(p)]
        starts.append(next((o for o in span if o >= 0), -1))
        pos += len(p)
    ids = [int(tokenizer.sp_model.piece_to_id(p)) for p in pieces]
    return ids, starts, symbols


def piece_frames(starts: list[int], symbol_frames: list[int | None], num_frames: int) -> list[int]:
    """Frame of each piece from its first symbol's frame; pieces without a (known) symbol take the next
    piece's frame (the last ones the previous'); the result never decreases and lies in [0, num_frames)."""
    frames: list[int | None] = [symbol_frames[s] if s >= 0 else None for s in starts]
    nxt: int | None = None
    for i in range(len(frames) - 1, -1, -1):
        if frames[i] is None:
            frames[i] = nxt
        else:
            nxt = frames[i]
    prev = 0
    out: list[int] = []
    for f in frames:
        f = prev if f is None else min(max(int(f), prev), num_frames - 1)
        out.append(f)
        prev = f
    return out


@dataclass
class AlignStats:
    aligned: int = 0
    proportional: int = 0  # too few steps for a CTC path: pieces spread evenly over the frames
    no_text: int = 0


def align_text_frames(
    scorer, codec, tokenizer, codes: list, texts: list[str], stats: AlignStats | None = None
):
    """Per example, the frame index of every text piece (`[]` where there is no text or no audio).

    Args:
        scorer: a `PhonemeScorer` of `codec`'s codes.
        codec: the tokenizer's codec (`tokenizer.codec`).
        tokenizer: a `JepaSpeechTokenizer` with the espeak-ipa front-end.
        codes: per example, packed codes [T, G] (nested lists or tensors).
        texts: per example, the transcript.
        stats: counts, updated in place.
    """
    from ..tokenizer.phonemes import phonemize_many

    scorer.check_codec(codec)
    stats = stats if stats is not None else AlignStats()
    phonemize_many([(t or "").strip() for t in texts])  # espeak-ng calls up front, in parallel (cached)
    out: list[list[int]] = []
    for c, text in zip(codes, texts):
        text = (text or "").strip()
        c = torch.as_tensor(np.asarray(c) if isinstance(c, list) else c, dtype=torch.long)
        if not text or c.numel() == 0:
            stats.no_text += 1
            out.append([])
            continue
        c = c.reshape(-1, c.shape[-1])
        ids, starts, symbols = piece_symbols(tokenizer, text)
        known = [k for k, s in enumerate(symbols) if s in scorer.symbol_ids]
        T = c.shape[0]
        symbol_frames: list[int | None] = [None] * len(symbols)
        try:
            lp = scorer.log_probs(scorer.code_latents(codec, [c])[0])
            steps = ctc_forced_align(lp, [scorer.symbol_ids[symbols[k]] for k in known])
            for k, step in zip(known, steps):
                symbol_frames[k] = step // scorer.probe.upsample
            stats.aligned += 1
        except ValueError:
            for j, k in enumerate(known):
                symbol_frames[k] = j * T // max(1, len(known))
            stats.proportional += 1
        out.append(piece_frames(starts, symbol_frames, T))
    return out


def reading_rate(text_frames: list[list[int]]) -> float:
    """Text pieces per codec frame while speaking: all pieces over the frames up to each row's last piece
    (trailing silence left out). The generation pipeline's reading schedule for an interleaved LM
    (`config.jepatok["pieces_per_frame"]`, written by train-lm)."""
    rows = [f for f in text_frames if f]
    if not rows:
        raise ValueError("no row has text frames: cannot measure a reading rate")
    return sum(len(f) for f in rows) / sum(int(f[-1]) + 1 for f in rows)


class TextFramesMismatch(ValueError):
    """`text_frames` that are not one non-decreasing frame per text piece."""


def interleave_tts_ids(tokenizer, text_ids: list[int], codes, frames: list[int]) -> list[int]:
    """`<bos> <text> pieces <audio>` then, frame by frame, the pieces aligned to the frame and its audio ids,
    then `<eos>` (pieces aligned past the last frame come just before it)."""
    audio = tokenizer.codes_to_ids(codes)
    G = int(tokenizer.tokens_per_frame)
    T = len(audio) // G
    if len(frames) != len(text_ids):
        raise TextFramesMismatch(f"{len(frames)} text frames for {len(text_ids)} text pieces")
    if any(b < a for a, b in zip(frames, frames[1:])):
        raise TextFramesMismatch(f"text frames must not decrease, got {frames}")
    ids = [
        int(tokenizer.bos_token_id),
        int(tokenizer.text_token_id),
        *text_ids,
        int(tokenizer.audio_token_id),
    ]
    j = 0
    for t in range(T):
        while j < len(text_ids) and frames[j] <= t:
            ids.append(int(text_ids[j]))
            j += 1
        ids.extend(audio[t * G : (t + 1) * G])
    ids.extend(int(i) for i in text_ids[j:])
    ids.append(int(tokenizer.eos_token_id))
    return ids


# --- CLI ------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codec", required=True, help="tokenizer directory (with its codec) the data was made with"
    )
    parser.add_argument("--data", required=True, help="pre-tokenized dataset (jepatok pretokenize)")
    parser.add_argument("--out", required=True, help="where to write the dataset with a text_frames column")
    parser.add_argument(
        "--phoneme-scorer", default="small", help="PhonemeScorer directory, or 'small' (the shipped one)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="rows per datasets.map batch")


def run(args: argparse.Namespace) -> int:
    from datasets import DatasetDict, load_from_disk

    from ..data.pretokenized import check_codec_identity
    from ..tokenizer.tokenization import JepaSpeechTokenizer
    from .rerank import load_phoneme_scorer

    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new --out (nothing was written)")
    tokenizer = JepaSpeechTokenizer.from_pretrained(args.codec)
    scorer = load_phoneme_scorer(args.phoneme_scorer)
    codec = tokenizer.codec
    scorer.check_codec(codec)
    check_codec_identity(args.data, tokenizer)
    data = load_from_disk(args.data)
    splits = dict(data) if hasattr(data, "keys") else {"train": data}
    t0 = time.time()
    stats = AlignStats()
    aligned = {}
    for name, split in splits.items():
        if "audio_codes" not in split.column_names or "text" not in split.column_names:
            raise ValueError(f"split {name!r} needs audio_codes and text columns, has {split.column_names}")

        def add(batch, _stats=stats):
            return {
                TEXT_FRAMES_COLUMN: align_text_frames(
                    scorer, codec, tokenizer, batch["audio_codes"], batch["text"], _stats
                )
            }

        aligned[name] = split.map(add, batched=True, batch_size=args.batch_size, desc=f"align {name}")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    result = DatasetDict(aligned) if hasattr(data, "keys") else aligned["train"]
    try:
        result.save_to_disk(str(tmp))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = {
        "aligned": stats.aligned,
        "proportional": stats.proportional,
        "no_text": stats.no_text,
        "seconds": round(time.time() - t0, 1),
        "out": str(out),
    }
    print(json.dumps(report))
    return 0
