"""`jepatok eval-tts`: text-to-speech intelligibility of a speech LM on held-out sentences, beside its ceilings.

For each of N sentences of an evaluation set (distinct texts, spread evenly over the split) the LM speaks the
text (seeded per sentence, so a sentence's sample does not depend on N), and the same deterministic ASR
(bundled Whisper tiny.en by default) transcribes three things:

* the generated speech -> **TTS WER**;
* the recording of the sentence -> **ground-truth WER** (what the ASR itself gets wrong);
* the recording encoded and decoded by the LM's codec -> **resynthesis WER**, the codec's ceiling on TTS: an LM
  that predicted the recording's own tokens would score this.

`tts` in `metrics.json` also carries sentence-bootstrap 95% intervals (`wer_ci95`, `cer_ci95`); to compare
two runs on the same sentences use `jepatok compare-tts` (a paired bootstrap). The issue-7 target reads "TTS WER at most twice the ground-truth WER"; `metrics.json` records the limit and
whether it is met, plus how many samples ended with the LM's end-of-speech token (the rest ran to
`max_seconds`) and the generated-to-recording duration ratio. Outputs: `OUT/metrics.json`,
`OUT/sentences.csv`, `OUT/tts/NNN.wav` (generated) and `OUT/resynth/NNN.wav`; each file written atomically.

One sample per sentence leaves the TTS WER at the mercy of a few samples the ASR hallucinates on (on the shipped
LM, the same 48 sentences gave corpus WERs from 1.19 to 1.72 depending on which of 8 samples was scored). With
`--samples K` every sentence is spoken K times (one batch seeded seed + i; extra files `tts/NNN_k.wav`), all K
transcripts are scored, and the TTS WER/CER and their intervals are over the mean edits per sentence.

    jepatok eval-tts --lm small --data corpus/small2 --out runs/tts_eval --max-sentences 20
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class SentenceResult:
    """One sentence's three transcripts and what the LM produced."""

    index: int
    text: str
    speaker: str
    source: str
    recording_seconds: float
    generated_seconds: float  # with --samples K: the mean over the K samples
    ended_with_eos: bool  # sample 0
    tts_transcript: str = ""  # sample 0
    recording_transcript: str = ""
    resynthesis_transcript: str = ""
    tts_wer: float = float("nan")  # with --samples K: the mean of the K samples' WERs
    recording_wer: float = float("nan")
    resynthesis_wer: float = float("nan")
    # with num_candidates > 1: the index of the candidate the scorer kept (sample 0)
    chosen_candidate: int = 0
    tts_transcripts: list[str] = field(default_factory=list)  # with --samples K > 1: all K transcripts
    ended_with_eos_share: float = float("nan")  # the share of the samples that ended with <eos>


def pick_sentences(clips: list, max_sentences: int, min_words: int, max_words: int) -> list:
    """Clips with distinct transcripts of `min_words`..`max_words` words, `max_sentences` of them spread
    evenly over the (sorted) list; raises when none qualifies."""
    from .clips import _pick_indices

    if max_sentences <= 0:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    if min_words < 1 or max_words < min_words:
        raise ValueError(
            f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}"
        )
    seen, pool = set(), []
    for clip in clips:
        words = len(clip.text.split())
        if clip.text and min_words <= words <= max_words and clip.text not in seen:
            seen.add(clip.text)
            pool.append(clip)
    if not pool:
        raise ValueError(
            f"no clip has a transcript of {min_words}..{max_words} words; eval-tts needs texts "
            "(metadata.csv with a text column, or a dataset with a text column)"
        )
    return [pool[i] for i in _pick_indices(len(pool), max_sentences)]


def load_lm_and_tokenizer(lm: str, tokenizer: str | None, device: str):
    """(tokenizer, LM) from a shipped checkpoint name (`small`), an LM directory (+ tokenizer directory), or a
    train-lm checkpoint folder `OUTPUT_DIR/checkpoints/step_NNNNNN` (`jepatok.lm.train.load_checkpoint_lm`)."""
    from ..pretrained import KNOWN_PRETRAINED, load_pretrained

    if lm in KNOWN_PRETRAINED and not Path(lm).exists():
        if tokenizer is not None:
            raise ValueError(f"--tokenizer cannot be combined with the shipped checkpoint {lm!r}")
        return load_pretrained(lm, device=device)
    from transformers import AutoTokenizer

    import jepatok  # noqa: F401  (registers the tokenizer class)

    from ..lm.modeling import load_speech_lm

    if (Path(lm) / "trainer_state.json").is_file():
        from ..lm.train import load_checkpoint_lm

        return load_checkpoint_lm(lm, tokenizer, device)
    for name, path in (("lm", lm), ("tokenizer", tokenizer)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(
                f"--{name} {path!r} is neither a directory nor a shipped checkpoint {list(KNOWN_PRETRAINED)}"
            )
    model = load_speech_lm(lm).to(device).eval()
    return AutoTokenizer.from_pretrained(tokenizer or lm), model


def evaluate_tts(
    tokenizer,
    lm,
    clips: list,
    out: str | os.PathLike,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int = 50,
    max_seconds: float = 12.0,
    asr=None,
    resynthesis: bool = True,
    guidance_scale: float = 1.0,
    num_candidates: int = 1,
    phoneme_scorer=None,
    samples: int = 1,
    rerank_metric: str = "per",
    reading_rate: float | None = None,
    reading_slack: int | None = None,
) -> dict:
    """Speak each clip's text with `lm`, transcribe it, its recording and (with `resynthesis`) the codec's
    resynthesis of the recording; write the outputs (module docstring) and return the metrics.

    Args:
        tokenizer: `JepaSpeechTokenizer` with its codec.
        lm: causal LM over the tokenizer's ids.
        clips: `EvalClip`s with transcripts (see `pick_sentences`).
        out: output directory (created).
        seed: sentence i is sampled with seed + i.
        temperature / top_k: sampling settings.
        max_seconds: cap on generated speech; sentence i gets min(max_seconds, 1 + 0.6 * words).
        asr: a `SpeechRecognizer` (default: the bundled Whisper tiny.en).
        resynthesis: also score the codec's resynthesis of each recording.
        guidance_scale: classifier-free guidance toward the text (1 = off; `jepatok.lm.guidance`).
        num_candidates: best-of-N (`jepatok.lm.rerank`): sample N candidates per sentence and keep the one the
            phoneme scorer ranks first (the ASR never sees the other candidates).
        phoneme_scorer: scorer for num_candidates > 1 (`PhonemeScorer`, its directory, or "small").
        rerank_metric: what ranks the candidates ("per" or "nll", `SpeechGenerationPipeline`).
        samples: outputs per sentence (one batch seeded seed + i); the TTS rates are over all of them.
        reading_rate / reading_slack: an interleaved LM's reading schedule (`SpeechGenerationPipeline`; None:
            the pipeline's defaults).
    """
    import torch
    from tqdm.auto import tqdm

    from ..data.audio import write_wav
    from ..lm.args import atomic_write_text
    from ..lm.generation import SpeechGenerationPipeline
    from .asr import SpeechRecognizer, error_rates
    from .compare_tts import bootstrap_rate_ci, sentence_counts

    if not clips:
        raise ValueError("evaluate_tts needs at least one clip with a transcript")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    out = Path(out)
    (out / "tts").mkdir(parents=True, exist_ok=True)
    if resynthesis:
        (out / "resynth").mkdir(parents=True, exist_ok=True)
    asr = asr or SpeechRecognizer(cpu_threads=max(1, torch.get_num_threads()))
    device = next(lm.parameters()).device
    pipe = SpeechGenerationPipeline(model=lm, tokenizer=tokenizer, device=device)
    from ..lm.rerank import best_of_n_settings

    rerank = best_of_n_settings(num_candidates, phoneme_scorer, rerank_metric)
    eos = int(tokenizer.eos_token_id)
    results: list[SentenceResult] = []
    for i, clip in enumerate(tqdm(clips, desc="eval-tts", unit="sentence")):
        words = len(clip.text.split())
        settings = dict(
            max_seconds=min(max_seconds, 1.0 + 0.6 * words),
            temperature=temperature,
            top_k=top_k,
            seed=seed + i,
            guidance_scale=guidance_scale,
            reading_rate=reading_rate,
            reading_slack=reading_slack,
            **rerank,
        )
        # K samples in one batch (one seed): a second batch would repeat the first one's draws
        gens = (
            [pipe(clip.text, **settings)]
            if samples == 1
            else pipe([clip.text] * samples, batch_size=samples, **settings)
        )
        transcripts, seconds, ended = [], [], []
        for k, gen in enumerate(gens):
            audio, sr = np.asarray(gen["audio"], dtype=np.float32), int(gen["sampling_rate"])
            write_wav(out / "tts" / (f"{i:03d}.wav" if k == 0 else f"{i:03d}_{k}.wav"), audio, sr)
            transcripts.append(asr.transcribe(audio, sr) if audio.size else "")
            seconds.append(audio.size / sr)
            ended.append(bool(gen["ids"]) and gen["ids"][-1] == eos)
        r = SentenceResult(
            index=i,
            text=clip.text,
            speaker=clip.speaker,
            source=clip.source,
            recording_seconds=clip.duration,
            generated_seconds=float(np.mean(seconds)),
            ended_with_eos=ended[0],
            chosen_candidate=int(gens[0].get("chosen", 0)),
            tts_transcripts=transcripts if samples > 1 else [],
            ended_with_eos_share=float(np.mean(ended)),
        )
        r.tts_transcript = transcripts[0]
        r.recording_transcript = asr.transcribe(clip.audio, clip.sampling_rate)
        r.tts_wer = float(np.mean([error_rates([clip.text], [t]).wer for t in transcripts]))
        r.recording_wer = error_rates([clip.text], [r.recording_transcript]).wer
        if resynthesis:
            wave, rsr = tokenizer.decode_audio(tokenizer.encode_audio(clip.audio, clip.sampling_rate))
            write_wav(out / "resynth" / f"{i:03d}.wav", wave, rsr)
            r.resynthesis_transcript = asr.transcribe(wave, rsr)
            r.resynthesis_wer = error_rates([clip.text], [r.resynthesis_transcript]).wer
        results.append(r)
    texts = [r.text for r in results]

    def corpus_rates(attr: str) -> dict:
        rates = error_rates(texts, [getattr(r, attr) for r in results])
        return {"wer": rates.wer, "cer": rates.cer}

    gt = corpus_rates("recording_transcript")
    all_tts = [(r.text, t) for r in results for t in (r.tts_transcripts or [r.tts_transcript])]
    rates = error_rates([a for a, _ in all_tts], [b for _, b in all_tts])  # = the mean over the samples
    tts = {"wer": rates.wer, "cer": rates.cer}
    # Sentence-resampled 95% intervals of the TTS rates (how far 20-60 sentences pin them down);
    # `jepatok compare-tts` does the paired version for two runs.
    per_sentence = [asdict(r) for r in results]
    counts = sentence_counts(per_sentence, "tts")
    tts["wer_ci95"] = bootstrap_rate_ci(counts["word_edits"], counts["words"], seed=seed)
    tts["cer_ci95"] = bootstrap_rate_ci(counts["char_edits"], counts["chars"], seed=seed)
    metrics = {
        "sentences": len(results),
        "reference_words": error_rates(texts, texts).words,
        "asr": getattr(asr, "name", type(asr).__name__),
        "settings": {
            "seed": seed,
            "temperature": temperature,
            "top_k": top_k,
            "max_seconds": max_seconds,
            "guidance_scale": guidance_scale,
            "num_candidates": num_candidates,
            "rerank_metric": rerank_metric if num_candidates > 1 else None,
            "samples": samples,
            "reading_rate": reading_rate,
            "reading_slack": reading_slack,
        },
        "tts": tts,
        "ground_truth": gt,
        "resynthesis": corpus_rates("resynthesis_transcript") if resynthesis else None,
        "target": {
            "rule": "TTS WER <= 2 x ground-truth WER",
            "limit": 2.0 * gt["wer"],
            "met": bool(tts["wer"] <= 2.0 * gt["wer"]),
        },
        "ended_with_eos": float(np.mean([r.ended_with_eos_share for r in results])),  # over all samples
        "duration_ratio": float(
            np.mean([r.generated_seconds / max(r.recording_seconds, 1e-6) for r in results])
        ),
        "per_sentence": per_sentence,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
    buf = io.StringIO()
    fields = [f for f in asdict(results[0]) if f != "source"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(asdict(r) for r in results)
    atomic_write_text(out / "sentences.csv", buf.getvalue())
    return metrics


def summary_lines(metrics: dict) -> list[str]:
    """A few printable lines: the three WERs, the target, EOS rate and duration ratio."""
    lines = [f"{metrics['sentences']} sentences, {metrics['reference_words']} words, ASR {metrics['asr']}"]
    t = metrics["tts"]
    ci = f" [95% CI {t['wer_ci95'][0]:.3f}, {t['wer_ci95'][1]:.3f}]" if "wer_ci95" in t else ""
    lines.append(f"TTS WER            {t['wer']:.3f}{ci}  (CER {t['cer']:.3f})")
    if metrics.get("resynthesis"):
        r = metrics["resynthesis"]
        lines.append(
            f"codec resynthesis  {r['wer']:.3f}  (CER {r['cer']:.3f})  <- the codec's ceiling for TTS"
        )
    g = metrics["ground_truth"]
    lines.append(f"recordings         {g['wer']:.3f}  (CER {g['cer']:.3f})")
    t = metrics["target"]
    lines.append(f"target {t['rule']}: limit {t['limit']:.3f} -> {'met' if t['met'] else 'MISSED'}")
    lines.append(
        f"ended with end-of-speech: {metrics['ended_with_eos']:.0%}; generated/recording duration "
        f"{metrics['duration_ratio']:.2f}"
    )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..lm.args import add_reading_arguments, add_rerank_arguments

    parser.add_argument(
        "--lm", default="small", help="LM directory or shipped checkpoint name (default: small)"
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the --lm directory)")
    parser.add_argument("--data", required=True, help="audio folder with transcripts, or saved dataset dir")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default=None, help="split (default: test when present)")
    parser.add_argument("--max-sentences", type=int, default=20, help="sentences to speak (default 20)")
    parser.add_argument("--min-words", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="sentence i is sampled with seed + i")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument(
        "--guidance-scale", type=float, default=1.0, help="classifier-free guidance toward the text (1 = off)"
    )
    add_rerank_arguments(parser)
    add_reading_arguments(parser)
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        help="outputs per sentence, all scored (e.g. 8: a WER that one lucky or unlucky sample cannot move)",
    )
    parser.add_argument("--max-seconds", type=float, default=12.0)
    parser.add_argument(
        "--asr", default=None, help="faster-whisper model dir or name (default: bundled tiny.en)"
    )
    parser.add_argument("--no-resynthesis", action="store_true", help="skip the codec-resynthesis ceiling")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from .asr import SpeechRecognizer
    from .clips import load_clips

    tokenizer, lm = load_lm_and_tokenizer(args.lm, args.tokenizer, args.device)
    clips = pick_sentences(
        load_clips(args.data, split=args.split), args.max_sentences, args.min_words, args.max_words
    )
    metrics = evaluate_tts(
        tokenizer,
        lm,
        clips,
        args.out,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        max_seconds=args.max_seconds,
        asr=SpeechRecognizer(args.asr),
        resynthesis=not args.no_resynthesis,
        guidance_scale=args.guidance_scale,
        num_candidates=args.num_candidates,
        phoneme_scorer=args.phoneme_scorer,
        samples=args.samples,
        rerank_metric=args.rerank_metric,
        reading_rate=args.reading_rate,
        reading_slack=args.reading_slack,
    )
    print("\n".join(summary_lines(metrics)))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0
