"""`jepatok probe-phonemes`: how much of the spoken phoneme sequence can be read back from a codec's codes?

A TTS LM can only follow its text as far as the codes carry the text's sounds in a learnable form. This probe
measures that directly, on a pre-tokenized dataset: the codes of each utterance are turned back into the
quantized latents (`codec.dequantize`, what the LM's tokens stand for), and a small recogniser (a linear map that
spreads each 0.4 s frame over `upsample` sub-steps, a bidirectional GRU, CTC over espeak-ng IPA phonemes of the
transcript) is trained on the train split and scored on another by phoneme error rate (PER, edits / reference
phonemes, greedy CTC decoding). The same probe trained on **control** features (each utterance's latents replaced
by those of another utterance with the same number of frames) gives the PER that length and phoneme priors alone
reach; the gap between the two is what the codes tell about the phonemes.

    jepatok probe-phonemes --codec jepatok/pretrained/small/tokenizer --data runs/pretok --minutes 10
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: Marks dropped from espeak-ng's IPA (stress) and the length mark, which joins the symbol before it.
STRESS_MARKS = ("ˈ", "ˌ")
LENGTH_MARK = "ː"


def phoneme_symbols(ipa: str) -> list[str]:
    """IPA string -> phoneme symbols: one per character, stress marks and spaces dropped, the length mark and
    combining marks joined to the symbol before them, and a tie bar joining the characters on both sides."""
    out: list[str] = []
    tied = False  # the previous character was a tie bar: this one joins the same symbol
    for ch in ipa:
        if ch.isspace() or ch in STRESS_MARKS:
            continue
        joins = tied or ch == LENGTH_MARK or "\u0300" <= ch <= "\u036f"
        tied = ch == "\u0361"
        if joins and out:
            out[-1] += ch
        elif not joins:
            out.append(ch)
    return out


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two sequences (substitutions, insertions, deletions cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def greedy_ctc(log_probs: torch.Tensor, length: int, blank: int = 0) -> list[int]:
    """Best-path CTC decoding of [T, C] log-probabilities (first `length` steps): collapse repeats, drop blanks."""
    best = log_probs[:length].argmax(-1).tolist()
    out, last = [], None
    for b in best:
        if b != last and b != blank:
            out.append(b)
        last = b
    return out


class PhonemeProbe(nn.Module):
    """Frame latents [B, T, D] -> CTC log-probabilities [B, T * upsample, n_symbols + 1] (index 0 = blank)."""

    def __init__(self, dim: int, n_symbols: int, hidden: int = 128, upsample: int = 10):
        super().__init__()
        self.hidden, self.upsample = hidden, upsample
        self.spread = nn.Linear(dim, hidden * upsample)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, n_symbols + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = torch.relu(self.spread(x)).reshape(b, t * self.upsample, self.hidden)
        h, _ = self.rnn(h)
        return self.out(h).log_softmax(-1)


@dataclass
class ProbeData:
    """Features and targets of one split: per utterance latents [T, D] and symbol ids (1-based)."""

    features: list[torch.Tensor]
    targets: list[list[int]]


def control_features(features: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    """Each utterance's features replaced by another's with the same number of frames (a random derangement
    within each length group; a group of one keeps its own, counted by the caller as a leak if wanted)."""
    g = torch.Generator().manual_seed(seed)
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        groups.setdefault(len(f), []).append(i)
    out = list(features)
    for members in groups.values():
        if len(members) < 2:
            continue
        shift = 1 + int(
            torch.randint(len(members) - 1, (1,), generator=g)
        )  # a cyclic shift: nobody keeps its own
        perm = torch.randperm(len(members), generator=g).tolist()
        order = [members[p] for p in perm]
        for k, i in enumerate(order):
            out[i] = features[order[(k + shift) % len(order)]]
    return out


def _batches(n: int, size: int, lengths: list[int], g: torch.Generator) -> list[list[int]]:
    """Length-sorted batches in random order (little padding, no fixed curriculum)."""
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    chunks = [order[i : i + size] for i in range(0, n, size)]
    return [chunks[i] for i in torch.randperm(len(chunks), generator=g).tolist()]


def _pad(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(f) for f in feats])
    x = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[-1])
    for i, f in enumerate(feats):
        x[i, : len(f)] = f
    return x, lengths


def fit_probe(
    train: ProbeData,
    n_symbols: int,
    steps: int = 2000,
    minutes: float | None = None,
    batch_size: int = 32,
    lr: float = 2e-3,
    hidden: int = 128,
    upsample: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> tuple[PhonemeProbe, torch.Tensor, torch.Tensor, dict]:
    """Train a `PhonemeProbe` on `train` (CTC) for `steps` steps or `minutes`, whichever ends first.

    Args:
        train: features and 1-based symbol targets.
        n_symbols: size of the symbol inventory.
        steps / minutes: training budget.
        batch_size, lr, hidden, upsample: probe settings (upsample sub-steps per frame must cover the phoneme
            rate: 10 per 0.4 s frame gives 25 steps per second).
        seed: initialisation and batch order.
        progress: progress bar.
    Returns: (probe in eval mode, feature mean [D], feature std [D], training details); the probe reads
        features normalised as (x - mean) / std.
    """
    from tqdm.auto import tqdm

    if not train.features:
        raise ValueError("the probe needs train utterances")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dim = train.features[0].shape[-1]
    stacked = torch.cat(train.features)
    mu, sd = stacked.mean(0), stacked.std(0).clamp_min(1e-6)
    tr_x = [(f - mu) / sd for f in train.features]
    probe = PhonemeProbe(dim, n_symbols, hidden, upsample)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    lengths = [len(f) for f in tr_x]
    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    step, epoch, losses = 0, 0, []
    bar = tqdm(total=steps, desc="probe-phonemes", unit="step", disable=not progress)
    while step < steps and (deadline is None or time.monotonic() < deadline):
        for idx in _batches(len(tr_x), batch_size, lengths, g):
            x, xl = _pad([tr_x[i] for i in idx])
            ys = [train.targets[i] for i in idx]
            y = torch.tensor([s for t in ys for s in t], dtype=torch.long)
            yl = torch.tensor([len(t) for t in ys])
            lp = probe(x).transpose(0, 1)  # [T', B, C]
            loss = ctc(lp, y, xl * upsample, yl)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if step >= steps or (deadline is not None and time.monotonic() >= deadline):
                break
        epoch += 1
    bar.close()
    probe.eval()
    stats = {
        "steps": step,
        "epochs": epoch,
        "final_train_ctc": float(sum(losses[-50:]) / max(1, len(losses[-50:]))) if losses else math.nan,
    }
    return probe, mu, sd, stats


def phoneme_error_rate(
    probe: PhonemeProbe, mu: torch.Tensor, sd: torch.Tensor, test: ProbeData, batch_size: int = 32
) -> dict:
    """Greedy-CTC phoneme error rate of a trained probe on `test` (edits / reference phonemes)."""
    if not test.features:
        raise ValueError("the probe needs test utterances")
    te_x = [(f - mu) / sd for f in test.features]
    edits = refs = 0
    with torch.no_grad():
        for start in range(0, len(te_x), batch_size):
            x, xl = _pad(te_x[start : start + batch_size])
            lp = probe(x)
            for k, target in enumerate(test.targets[start : start + batch_size]):
                hyp = greedy_ctc(lp[k], int(xl[k]) * probe.upsample)
                edits += edit_distance(target, hyp)
                refs += len(target)
    return {"per": edits / max(refs, 1), "test_utterances": len(te_x), "test_phonemes": refs}


def train_and_score(
    train: ProbeData, test: ProbeData, n_symbols: int, batch_size: int = 32, **settings
) -> dict:
    """`fit_probe` on `train`, then `phoneme_error_rate` on `test`: the PER and training details."""
    if not train.features or not test.features:
        raise ValueError("the probe needs train and test utterances")
    probe, mu, sd, stats = fit_probe(train, n_symbols, batch_size=batch_size, **settings)
    return {**phoneme_error_rate(probe, mu, sd, test, batch_size), **stats}


def load_split(codec, rows, max_rows: int | None, symbols: dict[str, int], grow: bool) -> ProbeData:
    """Latents and phoneme ids of up to `max_rows` rows with text (those whose phonemes outnumber the CTC
    steps are dropped). With `grow`, unseen symbols get new ids; without, they are skipped."""
    from ..tokenizer.phonemes import phonemize_many

    n = len(rows) if max_rows is None else min(len(rows), max_rows)
    subset = rows.select(range(n))  # a datasets.Dataset with "text" and "audio_codes"
    texts = [(t or "").strip() for t in subset["text"]]
    unique = sorted({t for t in texts if t})
    ipa = dict(zip(unique, phonemize_many(unique)))  # espeak-ng in parallel
    feats, targets = [], []
    for i in range(n):
        text = texts[i]
        codes = torch.as_tensor(subset[i]["audio_codes"], dtype=torch.long)
        if not text or codes.numel() == 0:
            continue
        ids = []
        for s in phoneme_symbols(ipa[text]):
            if s not in symbols and grow:
                symbols[s] = len(symbols) + 1
            if s in symbols:
                ids.append(symbols[s])
        if not ids:
            continue
        with torch.no_grad():
            feats.append(codec.dequantize(codes[None]).float()[0])
        targets.append(ids)
    return ProbeData(feats, targets)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codec", required=True, help="tokenizer or codec directory of the codes' codec")
    parser.add_argument("--data", required=True, help="pre-tokenized dataset directory (jepatok pretokenize)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="validation")
    parser.add_argument("--max-train", type=int, default=None, help="train utterances used (default: all)")
    parser.add_argument("--max-test", type=int, default=400)
    parser.add_argument("--steps", type=int, default=3000, help="probe training steps (each probe)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock cap per probe")
    parser.add_argument("--no-control", action="store_true", help="skip the control probe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    parser.add_argument(
        "--save-scorer",
        default=None,
        help="save the codes probe as a PhonemeScorer here (best-of-N TTS reranking, jepatok.lm.rerank)",
    )
    parser.add_argument("--hidden", type=int, default=128, help="probe GRU width")


def run(args: argparse.Namespace) -> int:
    from datasets import DatasetDict, load_from_disk

    from ..lm.args import atomic_write_text
    from ..tokenizer.modeling import JepaCodecModel

    codec_dir = Path(args.codec)
    if (codec_dir / "codec").is_dir():  # a tokenizer directory holds its codec in a subfolder
        codec_dir = codec_dir / "codec"
    if not (codec_dir / "config.json").is_file():
        raise FileNotFoundError(f"--codec {args.codec!r} is neither a codec nor a tokenizer directory")
    codec = JepaCodecModel.from_pretrained(str(codec_dir)).eval()
    data = load_from_disk(args.data)
    if not isinstance(data, DatasetDict):
        raise ValueError(
            f"{args.data} is a single dataset; the probe needs a DatasetDict with train and test splits"
        )
    for split in (args.train_split, args.test_split):
        if split not in data:
            raise ValueError(f"split {split!r} not in {args.data} (has {sorted(data)})")
    from ..data.pretokenized import check_codec_identity
    from ..tokenizer.modeling import codec_identity

    check_codec_identity(args.data, codec_identity(codec))
    symbols: dict[str, int] = {}
    train = load_split(codec, data[args.train_split], args.max_train, symbols, grow=True)
    test = load_split(codec, data[args.test_split], args.max_test, symbols, grow=False)
    settings = dict(steps=args.steps, minutes=args.minutes, seed=args.seed, hidden=args.hidden)
    probe, mu, sd, stats = fit_probe(train, len(symbols), **settings)
    result = {
        "codec": args.codec,
        "data": args.data,
        "symbols": len(symbols),
        "train_utterances": len(train.features),
        "codes": {**phoneme_error_rate(probe, mu, sd, test), **stats},
    }
    if args.save_scorer:
        from ..lm.rerank import PhonemeScorer

        scorer = PhonemeScorer.from_probe(probe, mu, sd, symbols, codec_identity(codec)["codes_hash"])
        scorer.save_pretrained(args.save_scorer)
        result["scorer"] = args.save_scorer
    if not args.no_control:
        control_train = ProbeData(control_features(train.features, args.seed), train.targets)
        control_test = ProbeData(control_features(test.features, args.seed + 1), test.targets)
        result["control"] = train_and_score(control_train, control_test, len(symbols), **settings)
    line = f"phoneme error rate from the codes: {result['codes']['per']:.3f}"
    if "control" in result:
        line += f"  (control, another utterance's codes of the same length: {result['control']['per']:.3f})"
    print(
        f"{result['train_utterances']} train / {result['codes']['test_utterances']} test utterances, "
        f"{len(symbols)} phoneme symbols"
    )
    print(line)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
