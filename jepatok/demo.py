"""`make demo` / `python -m jepatok.demo`: the whole mission with the shipped `small` checkpoints, offline, on CPU.

Steps (each with a progress bar):

1. build a small evaluation set with `jepatok build-corpus` (seed 0: its validation and test sentences are
   the ones the shipped models never saw in training; half of those clips use voices held out of training);
2. encode and decode it with the shipped codec and run `eval-codec` beside the Codec2 700C, Codec2 1200 and
   Opus 6 kbit/s baselines (same clips, same metrics);
3. speak three held-out sentences with the speech LM (text -> speech) and score them with the same ASR as
   the recordings of those sentences (TTS WER vs ground-truth WER);
4. continue two held-out speech prompts (speech -> speech);
5. write the WAVs, `OUT/report.html`, `OUT/summary.json` and print a summary table.

When the shipped checkpoints are missing the demo stops with a message saying so; it never substitutes
random weights.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Baselines of the demo (the issue's targets compare against these).
DEMO_BASELINES = "codec2-700C,codec2-1200,opus-6k"
#: Metrics skipped in the demo to keep it under 10 minutes on 2 cores (model-based MOS / similarity).
DEMO_SKIP = "visqol,distillmos,dnsmos,speaker_sim,pesq_nb,mcd"


@dataclass
class DemoSample:
    """One generated utterance of the demo."""

    kind: str  # "tts" or "continuation"
    wav: str  # path relative to the output folder
    seconds: float
    text: str = ""  # sentence spoken (TTS) or transcript of the prompt's clip (continuation)
    transcript: str = ""  # ASR of the generated audio
    wer: float | None = None  # TTS: WER of `transcript` against `text`
    reference_wav: str = ""  # the corpus recording of the same sentence / the prompt
    reference_transcript: str = ""
    reference_wer: float | None = None
    extra: dict = field(default_factory=dict)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def eval_voices(recorded) -> tuple[list[str] | None, list[str] | None]:
    """(voices, held-out voices) for the evaluation corpus from a checkpoint's `TrainingVoices` (None: the
    corpus builder's defaults). Voices not installed here are named on stderr and left out."""
    if recorded is None:
        return None, None
    from .data.voices import voice_available

    missing = [v for v in recorded.all if not voice_available(v)]
    if missing:
        print(f"jepatok demo: voices of the checkpoint not installed here, left out: {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
    training = [v for v in recorded.training if v not in missing]
    held = [v for v in recorded.held_out if v not in missing]
    if not training:
        raise RuntimeError(
            f"none of the checkpoint's training voices {list(recorded.training)} is installed here"
        )
    return training + held, held


def build_eval_set(
    out: Path, hours: float, seed: int, jobs: int | None, voices=None
) -> tuple[Path, list[dict], list[str]]:
    """Build the corpus and gather its validation + test clips (held-out sentences) into one folder.

    `voices`: the checkpoint's `TrainingVoices` (`read_training_voices`); None uses the builder's defaults.
    Returns (folder with metadata.csv, metadata rows, held-out voices).
    """
    from .data.corpus import build_corpus

    corpus = out / "eval_corpus"
    names, held = eval_voices(voices)
    build_corpus(corpus, hours, voices=names, held_out_voices=held, seed=seed, jobs=jobs)
    held_out = [v for v in (corpus / "held_out_voices.txt").read_text().split() if v]
    eval_dir = out / "eval_set"
    eval_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for split in ("validation", "test"):
        meta = corpus / split / "metadata.csv"
        if not meta.is_file():
            continue
        with open(meta, newline="") as f:
            for row in csv.DictReader(f):
                src = corpus / split / row["file_name"]
                dst = eval_dir / row["file_name"]
                if not dst.exists():
                    shutil.copyfile(src, dst)
                rows.append(dict(row))
    if not rows:
        raise RuntimeError(f"the evaluation corpus {corpus} has no validation/test clips; raise --hours")
    fields = list(rows[0].keys())
    tmp = eval_dir / "metadata.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, eval_dir / "metadata.csv")
    return eval_dir, rows, held_out


def _voice_of(row: dict) -> str:
    from .eval.evaluate_codec import voice_of

    return row.get("voice") or voice_of(row.get("speaker", ""))


def run_codec_eval(codec_dir: Path, eval_dir: Path, out: Path, max_clips: int, held_out: list[str]) -> dict:
    """`jepatok eval-codec` on the evaluation set with the demo's baselines; returns metrics.json's dict."""
    from .eval.baselines import parse_baselines
    from .eval.clips import load_clips
    from .eval.evaluate_codec import evaluate_codec, load_codec
    from .eval.scoring import Scorers

    clips = load_clips(eval_dir, max_clips=max_clips, split="all")
    codec = load_codec(str(codec_dir))
    scorers = Scorers(skip=DEMO_SKIP.split(","), cpu_threads=1)
    return evaluate_codec(
        codec,
        clips,
        out / "codec_eval",
        baselines=parse_baselines(DEMO_BASELINES),
        scorers=scorers,
        report_clips=3,
        codec_spec=str(codec_dir),
        held_out_voices=held_out,
    )


def _held_out_means(metrics: dict) -> dict[str, dict[str, float]]:
    """Per-system means over the clips of held-out voices (eval-codec's `voice_groups`), with the clip count;
    empty when the corpus held no voice out (a machine with a single voice installed)."""
    if "voice_groups" not in metrics:
        return {}
    group = metrics["voice_groups"]["held_out"]
    return {name: {**vals, "clips": group["clips"]} for name, vals in group.items() if name != "clips"}


#: Text-to-speech settings of the demo, the best measured on 48 test sentences of `corpus/v17h16` with 8 samples
#: each (README, "Best-of-N text to speech"): temperature 0.5 and the best of 8 candidates by the shipped phoneme
#: scorer's phoneme error rate.
TTS_TEMPERATURE = 0.5
TTS_CANDIDATES = 8


def generate_samples(
    tokenizer,
    lm,
    rows: list[dict],
    eval_dir: Path,
    out: Path,
    seed: int,
    num_candidates: int = 1,
    phoneme_scorer=None,
) -> list[DemoSample]:
    """Three TTS sentences and two continuations from held-out sentences (and voices for the prompts).

    TTS samples at `TTS_TEMPERATURE`; with `num_candidates` > 1 each sentence is the best of N candidates by
    `phoneme_scorer` (`jepatok.lm.rerank`, phoneme error rate)."""
    import torch
    from tqdm.auto import tqdm

    from .data.audio import load_audio, write_wav
    from .lm.generation import SpeechGenerationPipeline

    pipe = SpeechGenerationPipeline(model=lm, tokenizer=tokenizer, device=torch.device("cpu"))
    from .lm.rerank import best_of_n_settings

    rerank = best_of_n_settings(num_candidates, phoneme_scorer, "per")
    by_len = sorted(rows, key=lambda r: len(r["text"].split()))
    # Short held-out sentences (the small LM is trained on ~2 h): the three shortest distinct texts.
    tts_rows, seen = [], set()
    for r in by_len:
        if r["text"] not in seen and len(r["text"].split()) >= 4:
            tts_rows.append(r)
            seen.add(r["text"])
        if len(tts_rows) == 3:
            break
    prompt_rows = [r for r in rows if r not in tts_rows][:2]
    samples: list[DemoSample] = []
    gen_dir = out / "generated"
    gen_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(tts_rows) + len(prompt_rows), desc="speech LM", unit="utt")
    for i, r in enumerate(tts_rows):
        words = len(r["text"].split())
        res = pipe(
            r["text"],
            max_seconds=min(12.0, 1.0 + 0.6 * words),
            temperature=TTS_TEMPERATURE,
            top_k=50,
            seed=seed + i,
            **rerank,
        )
        path = gen_dir / f"tts_{i}.wav"
        write_wav(path, res["audio"], res["sampling_rate"])
        samples.append(
            DemoSample(
                "tts",
                str(path.relative_to(out)),
                len(res["audio"]) / res["sampling_rate"],
                text=r["text"],
                reference_wav=str((eval_dir / r["file_name"]).relative_to(out)),
                extra={"candidates": num_candidates, "chosen": res.get("chosen", 0)},
            )
        )
        bar.update(1)
    for i, r in enumerate(prompt_rows):
        wave, sr = load_audio(eval_dir / r["file_name"])
        prompt = wave[: int(1.6 * sr)]
        prompt_path = gen_dir / f"prompt_{i}.wav"
        write_wav(prompt_path, prompt, sr)
        res = pipe(
            {"audio": prompt, "sampling_rate": sr},
            max_seconds=6.0,
            temperature=0.8,
            top_k=50,
            seed=seed + 10 + i,
            include_prompt_audio=True,
        )
        path = gen_dir / f"continuation_{i}.wav"
        write_wav(path, res["audio"], res["sampling_rate"])
        samples.append(
            DemoSample(
                "continuation",
                str(path.relative_to(out)),
                len(res["audio"]) / res["sampling_rate"],
                text=r["text"],
                reference_wav=str(prompt_path.relative_to(out)),
                extra={"speaker": r.get("speaker", ""), "prompt_seconds": len(prompt) / sr},
            )
        )
        bar.update(1)
    bar.close()
    return samples


def score_samples(samples: list[DemoSample], out: Path) -> dict[str, float]:
    """ASR (bundled Whisper tiny.en) of the generated audio and of the recordings of the same sentences."""
    from tqdm.auto import tqdm

    from .data.audio import load_audio
    from .eval.asr import SpeechRecognizer, error_rates

    asr = SpeechRecognizer(cpu_threads=1)
    for s in tqdm(samples, desc="ASR", unit="utt"):
        wave, sr = load_audio(out / s.wav)
        s.transcript = asr.transcribe(wave, sr) if wave.size else ""
        if s.kind == "tts":
            s.wer = error_rates([s.text], [s.transcript]).wer
            ref, rsr = load_audio(out / s.reference_wav)
            s.reference_transcript = asr.transcribe(ref, rsr)
            s.reference_wer = error_rates([s.text], [s.reference_transcript]).wer
    tts = [s for s in samples if s.kind == "tts"]
    if not tts:
        return {}
    texts = [s.text for s in tts]
    return {
        "tts_wer": error_rates(texts, [s.transcript for s in tts]).wer,
        "ground_truth_wer": error_rates(texts, [s.reference_transcript for s in tts]).wer,
        "candidates": int((tts[0].extra or {}).get("candidates", 1)),
    }


def summary_table(metrics: dict, held_out_means: dict, tts: dict) -> str:
    """Plain-text table: ours vs the baselines (all eval clips, and held-out voices only), TTS WER."""
    systems = {"jepatok small": metrics["codec"], **metrics["baselines"]}
    head = f"{'system':<15}{'tokens/s':>9}{'bit/s':>8}{'STOI':>7}{'PESQ-WB':>9}{'WER':>7}{'F0 GPE':>8}"
    head += f"{'STOI*':>8}{'PESQ*':>7}{'WER*':>7}"
    lines = [head, "-" * len(head)]
    for name, m in systems.items():
        h = held_out_means.get("codec" if name == "jepatok small" else name, {})
        tps = m.get("tokens_per_second")

        def f(d, k, w, p=3):
            v = d.get(k)
            return f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

        lines.append(
            f"{name:<15}{(f'{tps:.1f}' if tps else '-'):>9}{m.get('bitrate', 0):>8.0f}"
            + f(m, "stoi", 7)
            + f(m, "pesq_wb", 9, 2)
            + f(m, "wer", 7)
            + f(m, "f0_gpe", 8)
            + f(h, "stoi", 8)
            + f(h, "pesq_wb", 7, 2)
            + f(h, "wer", 7)
        )
    ref = metrics.get("reference", {})
    if "wer" in ref:
        lines.append(f"original recordings: WER {ref['wer']:.3f}")
    n_ho = next(iter(held_out_means.values()), {}).get("clips", 0)
    lines.append(f"* = the {n_ho} clips of voices held out of training; all clips: held-out sentences")
    lines.append(
        "F0 GPE: share of the frames voiced in both whose pitch is more than 20 % off the original's"
    )
    if tts:
        n = tts.get("candidates", 1)
        how = f", best of {n} by the phoneme scorer" if n > 1 else ""
        lines.append(
            f"TTS (3 held-out sentences{how}): WER {tts['tts_wer']:.3f} vs ground-truth recordings "
            f"{tts['ground_truth_wer']:.3f}"
        )
    return "\n".join(lines)


def write_report(out: Path, table: str, samples: list[DemoSample], info: dict) -> Path:
    """`OUT/report.html`: the summary, the generated audio beside its references, a link to eval-codec's report."""

    def audio(path: str) -> str:
        return f'<audio controls preload="none" src="{html.escape(path)}"></audio>'

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>jepatok demo</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;"
        "padding:4px 8px}table{border-collapse:collapse}pre{background:#f6f6f6;padding:1em}</style></head><body>",
        "<h1>jepatok demo: shipped <code>small</code> codec + speech LM</h1>",
        f"<p>{html.escape(info.get('note', ''))}</p>",
        f"<pre>{html.escape(table)}</pre>",
        '<p>Codec evaluation with spectrograms and audio: <a href="codec_eval/report.html">codec_eval/report.html</a></p>',
        "<h2>Text to speech (held-out sentences)</h2><table><tr><th>text</th><th>generated</th><th>ASR</th>"
        "<th>WER</th><th>recording</th><th>ASR of recording</th><th>WER</th></tr>",
    ]
    for s in samples:
        if s.kind != "tts":
            continue
        parts.append(
            f"<tr><td>{html.escape(s.text)}</td><td>{audio(s.wav)}</td><td>{html.escape(s.transcript)}</td>"
            f"<td>{s.wer:.2f}</td><td>{audio(s.reference_wav)}</td><td>{html.escape(s.reference_transcript)}</td>"
            f"<td>{s.reference_wer:.2f}</td></tr>"
        )
    parts.append(
        "</table><h2>Speech continuation (held-out prompts)</h2><table><tr><th>prompt</th>"
        "<th>prompt + continuation</th><th>ASR</th><th>speaker</th></tr>"
    )
    for s in samples:
        if s.kind == "continuation":
            parts.append(
                f"<tr><td>{audio(s.reference_wav)}</td><td>{audio(s.wav)}</td><td>{html.escape(s.transcript)}</td>"
                f"<td>{html.escape(s.extra.get('speaker', ''))}</td></tr>"
            )
    parts.append(f"</table><h2>Run</h2><pre>{html.escape(json.dumps(info, indent=2))}</pre></body></html>")
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the demo.

    Args:
        argv: command-line arguments (`--out`, `--hours`, `--max-clips`, `--seed`, `--jobs`).
    """
    parser = argparse.ArgumentParser(prog="python -m jepatok.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (WAVs, report.html, summary.json)")
    parser.add_argument(
        "--hours", type=float, default=0.15, help="hours of the evaluation corpus (all splits)"
    )
    parser.add_argument("--max-clips", type=int, default=16, help="clips scored by eval-codec")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (0 = the training corpus's split)")
    parser.add_argument("--jobs", type=int, default=None, help="corpus worker processes (default: all cores)")
    parser.add_argument("--checkpoint", default="small", help="shipped checkpoint name")
    parser.add_argument(
        "--tts-candidates",
        type=int,
        default=TTS_CANDIDATES,
        help="best-of-N text to speech with the checkpoint's phoneme scorer (1 = one sample per sentence)",
    )
    parser.add_argument(
        "--pretrained-root", default=None, help="folder of the checkpoints (default: the package's)"
    )
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.max_clips <= 0 or args.tts_candidates <= 0:
        parser.error(
            "--hours, --max-clips and --tts-candidates must be positive, got "
            f"{args.hours}, {args.max_clips} and {args.tts_candidates}"
        )

    from .pretrained import PretrainedNotFoundError, check_pretrained, load_pretrained, read_training_voices

    try:
        paths = check_pretrained(args.checkpoint, args.pretrained_root)
        recorded_voices = read_training_voices(args.checkpoint, args.pretrained_root)
    except (PretrainedNotFoundError, ValueError) as err:
        print(f"jepatok demo: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)  # one thread per process is much faster on a shared CPU
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _step("1/4 building the held-out evaluation set (jepatok build-corpus)")
    eval_dir, rows, held_out = build_eval_set(out, args.hours, args.seed, args.jobs, recorded_voices)
    print(f"{len(rows)} clips with held-out sentences; voices held out of training: {', '.join(held_out)}")
    _step(f"2/4 codec round trip + eval-codec vs {DEMO_BASELINES}")
    metrics = run_codec_eval(paths.codec_dir, eval_dir, out, args.max_clips, held_out)
    ho = _held_out_means(metrics)
    _step("3/4 text to speech (3 held-out sentences) and continuation (2 held-out prompts)")
    tokenizer, lm = load_pretrained(args.checkpoint, root=args.pretrained_root)
    held_rows = [r for r in rows if _voice_of(r) in held_out] + [
        r for r in rows if _voice_of(r) not in held_out
    ]
    candidates = args.tts_candidates
    if candidates > 1 and not paths.scorer_dir.is_dir():
        print(f"no phoneme scorer in {paths.root}: one sample per TTS sentence")
        candidates = 1
    samples = generate_samples(
        tokenizer, lm, held_rows, eval_dir, out, args.seed, candidates, paths.scorer_dir
    )
    _step("4/4 scoring the generated speech (ASR) and writing the report")
    tts = score_samples(samples, out)
    table = summary_table(metrics, ho, tts)
    info = {
        "checkpoint": str(paths.root),
        "eval_clips": metrics["settings"]["num_clips"],
        "eval_audio_seconds": round(metrics["settings"]["audio_seconds"], 1),
        "held_out_voices": held_out,
        "asr": metrics["settings"]["asr"],
        "wall_seconds": round(time.time() - t0, 1),
        "note": "Numbers from this run; see the model card for the training data and steps.",
    }
    summary = {
        "codec": metrics["codec"],
        "baselines": metrics["baselines"],
        "reference": metrics["reference"],
        "held_out_voices_means": ho,
        "tts": tts,
        "samples": [s.__dict__ for s in samples],
        "info": info,
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, out / "summary.json")
    report = write_report(out, table, samples, info)
    print()
    print(table)
    print(
        f"\nwrote {report}, {out / 'summary.json'} and the WAVs under {out}/ in {info['wall_seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
