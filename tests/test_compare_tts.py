"""`jepatok compare-tts`: per-sentence edit counts, bootstrap intervals, the paired difference, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jepatok.cli import main
from jepatok.eval.asr import error_rates, sentence_edits
from jepatok.eval.compare_tts import (
    bootstrap_rate_ci,
    compare_tts,
    paired_difference,
    sentence_counts,
    summary_lines,
)

TEXTS = [
    "the cat sat on the mat",
    "please call me after lunch",
    "we will meet at the station tomorrow",
    "she sold three red boxes",
    "it is raining again today",
    "open the window a little",
]


def run_metrics(transcripts: list[str], temperature: float = 0.8) -> dict:
    per = [{"index": i, "text": t, "tts_transcript": h} for i, (t, h) in enumerate(zip(TEXTS, transcripts))]
    return {"settings": {"temperature": temperature}, "per_sentence": per}


def test_sentence_edits_sum_to_corpus_rates():
    hyps = [
        "the cat sat on a mat",
        "",
        "we will meet at the station tomorrow morning",
        "she sold 3 red boxes",
        "it is raining",
        "open a window",
    ]
    edits = [sentence_edits(r, h) for r, h in zip(TEXTS, hyps)]
    corpus = error_rates(TEXTS, hyps)
    assert sum(e.word_edits for e in edits) / sum(e.words for e in edits) == pytest.approx(corpus.wer)
    assert sum(e.char_edits for e in edits) / sum(e.chars for e in edits) == pytest.approx(corpus.cer)
    assert edits[1].word_edits == edits[1].words == 5  # an empty transcript deletes every word
    assert edits[3].word_edits == 0  # normalisation: "3" == "three"
    with pytest.raises(ValueError, match="no word after normalisation"):
        sentence_edits("?!", "hello")


def test_bootstrap_interval_brackets_the_rate_and_shrinks_with_more_sentences():
    rng = np.random.default_rng(1)
    words = rng.integers(5, 12, 40)
    edits = rng.binomial(words, 0.4)
    rate = edits.sum() / words.sum()
    lo, hi = bootstrap_rate_ci(edits, words, resamples=1000, seed=0)
    assert lo < rate < hi
    lo4, hi4 = bootstrap_rate_ci(np.tile(edits, 4), np.tile(words, 4), resamples=1000, seed=0)
    assert hi4 - lo4 < hi - lo
    assert bootstrap_rate_ci(edits, words, 500, seed=3) == bootstrap_rate_ci(edits, words, 500, seed=3)
    with pytest.raises(ValueError, match="at least 100"):
        bootstrap_rate_ci(edits, words, resamples=10)
    with pytest.raises(ValueError, match="equal-length"):
        bootstrap_rate_ci(edits, words[:-1])


def test_paired_difference_sign_and_resolution():
    words = np.full(30, 8)
    a = np.full(30, 4)
    same = paired_difference(a, a, words, resamples=500)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["b_better_share"] == 0.0
    better = paired_difference(a, a - 2, words, resamples=500)  # B has 2 fewer edits on every sentence
    assert (
        better["difference"] == pytest.approx(-0.25)
        and better["ci95"][1] < 0
        and better["b_better_share"] == 1
    )
    rng = np.random.default_rng(0)
    noisy = paired_difference(a, a + rng.integers(-3, 4, 30), words, resamples=1000)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1]  # unresolved: its interval straddles zero


def test_compare_tts_counts_wins_and_labels_verdict():
    a = run_metrics(["the cat", "please call me", "we meet", "she sold", "it is", "open"])
    b = run_metrics(TEXTS[:4] + ["it is", "open the window a little"], temperature=0.5)
    cmp = compare_tts(a, b, resamples=500)
    ca, cb = sentence_counts(a["per_sentence"]), sentence_counts(b["per_sentence"])
    assert cmp["a"]["wer"] == pytest.approx(ca["word_edits"].sum() / ca["words"].sum())
    assert cmp["b"]["wer"] == pytest.approx(cb["word_edits"].sum() / cb["words"].sum())
    assert cmp["wer_difference"]["difference"] == pytest.approx(cmp["b"]["wer"] - cmp["a"]["wer"])
    assert (cmp["sentences_b_better"], cmp["sentences_a_better"], cmp["sentences_tied"]) == (5, 0, 1)
    assert cmp["b"]["settings"] == {"temperature": 0.5}
    lines = summary_lines(cmp, "tenth", "ipa")
    assert any(line.startswith("WER ipa - tenth") and line.endswith("ipa better)") for line in lines)


def test_compare_tts_refuses_different_sentences():
    a = run_metrics(TEXTS)
    b = run_metrics(TEXTS)
    b["per_sentence"][2]["text"] = "another sentence entirely"
    with pytest.raises(ValueError, match="sentence 2 differs"):
        compare_tts(a, b)
    b["per_sentence"] = b["per_sentence"][:3]
    with pytest.raises(ValueError, match="6 and 3 sentences"):
        compare_tts(a, b)
    with pytest.raises(ValueError, match="no-resynthesis"):
        compare_tts(a, a, what="resynthesis")


def test_cli_writes_json_and_reports_bad_paths(tmp_path, capsys):
    for name, hyps in (("a", ["x"] * 6), ("b", TEXTS)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(run_metrics(hyps)))
    out = tmp_path / "cmp.json"
    rc = main(
        [
            "compare-tts",
            str(tmp_path / "a"),
            str(tmp_path / "b" / "metrics.json"),
            "--resamples",
            "200",
            "--out",
            str(out),
            "--labels",
            "old",
            "new",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "WER new - old" in printed and "new better" in printed
    saved = json.loads(out.read_text())
    assert saved["b"]["wer"] == 0.0 and saved["a"]["wer"] == 1.0 and saved["a"]["run"] == str(tmp_path / "a")
    assert main(["compare-tts", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "neither an eval-tts output directory" in capsys.readouterr().err


def test_rates_of_fractional_totals_are_not_clamped():
    # Totals below 1 (seconds of audio, say) must divide as they are.
    lo, hi = bootstrap_rate_ci(np.array([0.2, 0.4, 0.3]), np.array([0.1, 0.2, 0.15]), resamples=200)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    d = paired_difference(np.zeros(3), np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.1]), resamples=200)
    assert d["difference"] == pytest.approx(1.0) and d["ci95"] == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="positive sum"):
        bootstrap_rate_ci(np.ones(3), np.zeros(3), resamples=200)
