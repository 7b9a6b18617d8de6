"""Can best-of-N help text to speech? Every candidate transcribed, so the scorer's pick meets the oracle's.

For each of N held-out sentences (chosen as `jepatok eval-tts` chooses them), the LM samples `--candidates`
candidates in one batch with the same seed and settings as `eval-tts --num-candidates` (sentence i: seed i,
`--temperature` 0.8 and `--top-k` 50 by default, max_seconds min(12, 1 + 0.6 * words)). Each candidate is scored
by the phoneme scorer (`jepatok.lm.rerank`: `per` and `nll`) and transcribed by the bundled Whisper. The corpus
WER is printed for: candidate 0, the mean over candidates (one random sample), each metric's pick (what
`--num-candidates` would keep) and last choice, and the oracle (the candidate with the fewest edits), with the
per-sentence rank correlation between each score and the edits. The JSON keeps every candidate's ids, scores and
transcript.

    python scripts/rerank_oracle.py --lm small --scorer small --data corpus/v17h16 --out rerank.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="small")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument(
        "--scorer", required=True, help="PhonemeScorer directory or 'small' (the shipped one)"
    )
    parser.add_argument("--data", required=True, help="audio folder with transcripts, or saved dataset dir")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--max-sentences", type=int, default=48)
    parser.add_argument(
        "--reading-slack", type=int, default=0, help="an interleaved LM's reading slack (pipeline default 0)"
    )
    parser.add_argument("--out", required=True, help="per-sentence JSON")
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from jepatok.eval.asr import SpeechRecognizer, error_rates
    from jepatok.eval.clips import load_clips
    from jepatok.eval.evaluate_tts import load_lm_and_tokenizer, pick_sentences
    from jepatok.lm.generation import SpeechGenerationPipeline
    from jepatok.lm.rerank import load_phoneme_scorer

    tok, lm = load_lm_and_tokenizer(args.lm, args.tokenizer, "cpu")
    scorer = load_phoneme_scorer(args.scorer)
    clips = pick_sentences(load_clips(args.data), args.max_sentences, 4, 16)
    pipe = SpeechGenerationPipeline(model=lm, tokenizer=tok, device=lm.device)
    asr = SpeechRecognizer(cpu_threads=max(1, torch.get_num_threads()))
    n = args.candidates
    rows, t0 = [], time.time()
    for i, clip in enumerate(clips):
        prompt = pipe.preprocess(clip.text)
        max_s = min(12.0, 1.0 + 0.6 * len(clip.text.split()))
        with torch.inference_mode():
            gen = pipe._generate(
                [prompt] * n,
                args.temperature,
                args.top_k,
                1.0,
                True,
                max_s,
                1,
                i,
                1.0,
                None,
                args.reading_slack,
            )
        audio_ids = [
            [x for x in g if tok.is_audio_id(x)] for g in gen
        ]  # an interleaved LM's rows hold text too
        codes = [tok.ids_to_codes(a) for a in audio_ids]
        nll = scorer.score_codes(tok.codec, codes, clip.text).tolist()
        per = scorer.score_codes(tok.codec, codes, clip.text, metric="per").tolist()
        waves = tok.batch_decode_audio(audio_ids)
        hyps = [asr.transcribe(w, sr) if len(w) else "" for w, sr in waves]
        rates = [error_rates([clip.text], [h]) for h in hyps]
        rows.append(
            {
                "text": clip.text,
                "words": rates[0].words,
                "nll": nll,
                "per": per,
                "ids": gen,
                "edits": [r.wer * r.words for r in rates],
                "hyps": hyps,
                "seconds": [len(w) / sr for w, sr in waves],
                "recording_seconds": clip.duration,
            }
        )
        print(f"{i + 1}/{len(clips)} {time.time() - t0:.0f}s", flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    words = sum(r["words"] for r in rows)

    def wer(pick) -> float:
        return sum(pick(r) for r in rows) / words

    print(f"{len(rows)} sentences, {n} candidates each, {words} words")
    print(f"WER candidate 0          {wer(lambda r: r['edits'][0]):.3f}")
    print(f"WER mean candidate       {wer(lambda r: float(np.mean(r['edits']))):.3f}")
    for metric in ("nll", "per"):
        print(
            f"WER scorer's pick ({metric})  {wer(lambda r, m=metric: r['edits'][int(np.argmin(r[m]))]):.3f}"
        )
        print(
            f"WER scorer's last ({metric})  {wer(lambda r, m=metric: r['edits'][int(np.argmax(r[m]))]):.3f}"
        )
    print(f"WER oracle               {wer(lambda r: min(r['edits'])):.3f}")
    for metric in ("nll", "per"):
        rho = [
            spearmanr(r[metric], r["edits"]).correlation
            for r in rows
            if len(set(r["edits"])) > 1 and len(set(r[metric])) > 1
        ]
        print(
            f"spearman({metric}, edits) per sentence, mean: {float(np.nanmean(rho)):.3f} over {len(rho)} sentences"
        )


if __name__ == "__main__":
    main()
