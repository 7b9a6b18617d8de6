"""`jepatok compare-tts`: is one `eval-tts` run really better than another? A paired bootstrap over sentences.

Two runs of `jepatok eval-tts` on the same sentences (two LMs, or one LM at two temperatures) differ by a
WER figure, but 20 or 60 sentences leave that figure noisy. This command re-scores both runs' stored
transcripts sentence by sentence (`metrics.json` keeps them), then resamples the sentences with replacement
(the same draw for both runs, so a hard sentence counts against both) and reports:

* each run's corpus WER and CER with a 95% percentile interval;
* the difference B - A with its 95% interval and the share of resamples in which B is better;
* how many sentences B got right more often (fewer edits), A did, or neither.

A difference whose interval excludes 0 is one the sentence sample supports; one whose interval straddles 0 is
not (score more sentences). The sampling noise of the LM itself (one sample per sentence) is inside this
spread, not added to it; runs made with `eval-tts --samples K` are compared on each sentence's mean edits over its
K samples, which averages that noise down. Runs must hold the same sentences in the same order (same `--data`, `--split`,
`--max-sentences`, word limits); their sampling settings may differ and are printed.

    jepatok compare-tts runs/tts_tenth runs/tts_ipa --out runs/tts_ipa/compare.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: Which transcript of each sentence is scored: the LM's speech, the recording, or the codec's resynthesis.
TRANSCRIPT_FIELDS = {
    "tts": "tts_transcript",
    "recording": "recording_transcript",
    "resynthesis": "resynthesis_transcript",
}


def sentence_counts(per_sentence: list[dict], what: str = "tts") -> dict[str, np.ndarray]:
    """Per-sentence edit counts of one run's `what` transcripts: arrays `word_edits`, `words`, `char_edits`,
    `chars` (one entry per sentence, in the run's order). For a run made with `eval-tts --samples K` the TTS
    edits are the mean over the K transcripts (`tts_transcripts`), so the arrays are float.

    Args:
        per_sentence: `metrics.json["per_sentence"]` of an `eval-tts` run.
        what: one of `TRANSCRIPT_FIELDS`.
    """
    from .asr import sentence_edits

    if what not in TRANSCRIPT_FIELDS:
        raise ValueError(f"what must be one of {sorted(TRANSCRIPT_FIELDS)}, got {what!r}")
    if not per_sentence:
        raise ValueError("the run has no per-sentence results")
    field = TRANSCRIPT_FIELDS[what]
    rows = []
    for i, r in enumerate(per_sentence):
        if field not in r or r[field] is None:
            raise ValueError(f"sentence {i} has no {field!r} (was the run made with --no-resynthesis?)")
        hyps = (r.get("tts_transcripts") or [r[field]]) if what == "tts" else [r[field]]
        edits = [sentence_edits(r["text"], h) for h in hyps]
        e = edits[0]
        word_edits = float(np.mean([x.word_edits for x in edits]))
        char_edits = float(np.mean([x.char_edits for x in edits]))
        rows.append((word_edits, e.words, char_edits, e.chars))
    a = np.asarray(rows, dtype=np.float64)
    return {"word_edits": a[:, 0], "words": a[:, 1], "char_edits": a[:, 2], "chars": a[:, 3]}


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a 95% interval, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1.0 - level) / 2.0 * 100.0
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]


def _resampled_rates(numerators: np.ndarray, totals: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """sum(numerators) / sum(totals) over each of `resamples` draws of the items with replacement."""
    if np.any(totals < 0) or totals.sum() <= 0:
        raise ValueError("totals must be non-negative with a positive sum")
    idx = _draws(numerators.size, resamples, seed)
    denom = totals[idx].sum(1)  # a draw of only zero-length items has no rate: it counts as 0
    return np.divide(numerators[idx].sum(1), denom, out=np.zeros(resamples), where=denom > 0)


def bootstrap_rate_ci(
    edits: np.ndarray, totals: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile interval of the corpus rate sum(edits) / sum(totals) when sentences are resampled.

    Args:
        edits / totals: per-item numerators and denominators (edit counts and reference lengths, or any
            amounts such as nats and seconds); totals non-negative with a positive sum.
        resamples: bootstrap draws (>= 100).
        seed: seed of the draws.
        level: interval coverage.
    """
    edits, totals = np.asarray(edits, dtype=np.float64), np.asarray(totals, dtype=np.float64)
    if edits.shape != totals.shape or edits.ndim != 1 or edits.size == 0:
        raise ValueError(
            f"edits and totals must be equal-length 1-D arrays, got {edits.shape} and {totals.shape}"
        )
    return _interval(_resampled_rates(edits, totals, resamples, seed), level)


def paired_difference(
    edits_a: np.ndarray, edits_b: np.ndarray, totals: np.ndarray, resamples: int = 2000, seed: int = 0
) -> dict:
    """B's corpus rate minus A's over the same sentences, with a paired-bootstrap 95% interval and the share of
    resamples in which B's rate is lower (better).

    Args:
        edits_a / edits_b: per-sentence edit counts of the two runs.
        totals: per-sentence reference lengths (shared: the same sentences).
        resamples / seed: bootstrap draws and their seed.
    """
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (edits_a, edits_b, totals))
    if not (a.shape == b.shape == t.shape) or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need equal-length 1-D arrays, got {a.shape}, {b.shape}, {t.shape}")
    diffs = _resampled_rates(b - a, t, resamples, seed)  # the same draw for both runs: paired
    return {
        "difference": float((b.sum() - a.sum()) / t.sum()),
        "ci95": _interval(diffs),
        "b_better_share": float(np.mean(diffs < 0)),
    }


def _check_same_sentences(a: list[dict], b: list[dict]) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"the runs hold {len(a)} and {len(b)} sentences; compare runs made with the same --data, --split, "
            "--max-sentences and word limits"
        )
    for i, (ra, rb) in enumerate(zip(a, b)):
        if ra["text"] != rb["text"]:
            raise ValueError(
                f"sentence {i} differs between the runs ({ra['text']!r} vs {rb['text']!r}); compare runs made "
                "with the same --data, --split, --max-sentences and word limits"
            )


def compare_tts(
    metrics_a: dict, metrics_b: dict, what: str = "tts", resamples: int = 2000, seed: int = 0
) -> dict:
    """The comparison of two `eval-tts` metrics dicts (module docstring): per-run rates with intervals, the
    paired difference B - A for WER and CER, and per-sentence wins.

    Args:
        metrics_a / metrics_b: the runs' `metrics.json` contents (same sentences, same order).
        what: which transcripts to score (`TRANSCRIPT_FIELDS`).
        resamples / seed: bootstrap draws and their seed (the same draws serve every figure).
    """
    pa, pb = metrics_a.get("per_sentence"), metrics_b.get("per_sentence")
    if not pa or not pb:
        raise ValueError("both runs need per-sentence results (metrics.json from jepatok eval-tts)")
    _check_same_sentences(pa, pb)
    ca, cb = sentence_counts(pa, what), sentence_counts(pb, what)
    out: dict = {"what": what, "sentences": len(pa), "words": int(ca["words"].sum()), "resamples": resamples}
    for name, c, m in (("a", ca, metrics_a), ("b", cb, metrics_b)):
        out[name] = {
            "settings": m.get("settings"),
            "wer": float(c["word_edits"].sum() / c["words"].sum()),
            "wer_ci95": bootstrap_rate_ci(c["word_edits"], c["words"], resamples, seed),
            "cer": float(c["char_edits"].sum() / c["chars"].sum()),
            "cer_ci95": bootstrap_rate_ci(c["char_edits"], c["chars"], resamples, seed),
        }
    out["wer_difference"] = paired_difference(
        ca["word_edits"], cb["word_edits"], ca["words"], resamples, seed
    )
    out["cer_difference"] = paired_difference(
        ca["char_edits"], cb["char_edits"], ca["chars"], resamples, seed
    )
    wins = np.sign(cb["word_edits"] - ca["word_edits"])
    out["sentences_b_better"] = int((wins < 0).sum())
    out["sentences_a_better"] = int((wins > 0).sum())
    out["sentences_tied"] = int((wins == 0).sum())
    return out


def summary_lines(cmp: dict, label_a: str = "A", label_b: str = "B") -> list[str]:
    """Printable lines of a `compare_tts` result."""
    lines = [
        f"{cmp['sentences']} sentences, {cmp['words']} words, {cmp['what']} transcripts, {cmp['resamples']} resamples"
    ]
    width = max(len(label_a), len(label_b))
    for key, label in (("a", label_a), ("b", label_b)):
        r = cmp[key]
        lines.append(
            f"{label:<{width}}  WER {r['wer']:.3f} [{r['wer_ci95'][0]:.3f}, {r['wer_ci95'][1]:.3f}]  "
            f"CER {r['cer']:.3f} [{r['cer_ci95'][0]:.3f}, {r['cer_ci95'][1]:.3f}]  settings {r['settings']}"
        )
    for metric in ("wer", "cer"):
        d = cmp[f"{metric}_difference"]
        verdict = (
            f"{label_b} better"
            if d["ci95"][1] < 0
            else f"{label_a} better"
            if d["ci95"][0] > 0
            else "not resolved"
        )
        lines.append(
            f"{metric.upper()} {label_b} - {label_a}: {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            f"  ({label_b} lower in {d['b_better_share']:.0%} of resamples; {verdict})"
        )
    lines.append(
        f"sentences with fewer word edits: {label_b} {cmp['sentences_b_better']}, {label_a} "
        f"{cmp['sentences_a_better']}, tied {cmp['sentences_tied']}"
    )
    return lines


def _load_metrics(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    if not p.is_file():
        raise FileNotFoundError(f"{path!r} is neither an eval-tts output directory nor its metrics.json")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON ({err})") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", help="eval-tts output directory (or its metrics.json): the reference run A")
    parser.add_argument("run_b", help="eval-tts output directory (or its metrics.json): the candidate run B")
    parser.add_argument(
        "--what", choices=sorted(TRANSCRIPT_FIELDS), default="tts", help="transcripts to score"
    )
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap draws (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument(
        "--labels", nargs=2, metavar=("A", "B"), default=None, help="names printed for the runs"
    )
    parser.add_argument("--out", default=None, help="also write the comparison as JSON here")


def run(args: argparse.Namespace) -> int:
    from ..lm.args import atomic_write_text

    cmp = compare_tts(
        _load_metrics(args.run_a), _load_metrics(args.run_b), args.what, args.resamples, args.seed
    )
    cmp["a"]["run"], cmp["b"]["run"] = args.run_a, args.run_b
    labels = args.labels or ["A", "B"]
    print("\n".join(summary_lines(cmp, *labels)))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(cmp, indent=2))
        print(f"wrote {args.out}")
    return 0
