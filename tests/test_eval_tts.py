"""`jepatok eval-tts`: sentence choice, the three WERs and the target, outputs, seeding, CLI (tiny codec + LM)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from lm_helpers import save_lm_dir, single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)

from jepatok.eval.asr import error_rates, normalize_text
from jepatok.eval.clips import EvalClip, load_clips
from jepatok.eval.evaluate_tts import evaluate_tts, pick_sentences, summary_lines

TEXTS = [
    "hello world this is speech",
    "a bird in the hand",
    "hello world this is speech",
    "too short",
    "one two three four five",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts_eval") / "test"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "text", "speaker"])
        for i, text in enumerate(TEXTS):
            sf.write(root / f"{i}.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
            w.writerow([f"{i}.wav", text, f"v{i % 2}-0"])
    return root.parent


class FixedASR:
    """Transcribes everything as one fixed text (the WER arithmetic is then known per sentence)."""

    name = "fixed"

    def __init__(self, text: str):
        self.text, self.calls = text, 0

    def transcribe(self, audio, sampling_rate=16000):
        assert np.asarray(audio).size > 0
        self.calls += 1
        return self.text


def test_pick_sentences_distinct_texts_in_word_range(folder):
    clips = load_clips(folder)
    picked = pick_sentences(clips, max_sentences=10, min_words=4, max_words=16)
    assert [c.text for c in picked] == [
        "hello world this is speech",
        "a bird in the hand",
        "one two three four five",
    ]
    assert len(pick_sentences(clips, 2, 4, 16)) == 2
    with pytest.raises(ValueError, match="no clip has a transcript of 9..16 words"):
        pick_sentences(clips, 5, 9, 16)
    with pytest.raises(ValueError, match="min_words <= max_words"):
        pick_sentences(clips, 5, 6, 5)
    no_text = [EvalClip("a", np.zeros(10, np.float32), 16000)]
    with pytest.raises(ValueError, match="needs texts"):
        pick_sentences(no_text, 1, 1, 4)


def test_evaluate_writes_outputs_and_scores(folder, tmp_path):
    tok = speech_tokenizer()
    clips = pick_sentences(load_clips(folder), 3, 4, 16)
    asr = FixedASR("hello world")
    max_s = 3 / tok.frame_rate
    m = evaluate_tts(tok, tiny_lm(tok), clips, tmp_path / "a", seed=0, max_seconds=max_s, asr=asr)
    assert asr.calls == 3 * len(clips)  # generated, recording, resynthesis
    texts = [c.text for c in clips]
    expected = error_rates(texts, ["hello world"] * len(clips))
    for key in ("tts", "ground_truth", "resynthesis"):
        assert m[key]["wer"] == pytest.approx(expected.wer) and m[key]["cer"] == pytest.approx(expected.cer)
    assert m["target"]["limit"] == pytest.approx(2 * expected.wer)
    assert m["settings"]["guidance_scale"] == 1.0
    lo, hi = m["tts"]["wer_ci95"]  # sentence-bootstrap interval around the corpus WER
    assert lo <= m["tts"]["wer"] <= hi and lo < hi  # the three sentences' WERs differ
    assert m["target"]["met"] is True  # equal WERs are within twice
    assert m["reference_words"] == sum(len(normalize_text(t).split()) for t in texts)  # "one two" -> "12"
    hop = round(tok.sampling_rate / tok.frame_rate)
    for r in m["per_sentence"]:
        i = r["index"]
        assert r["tts_wer"] == pytest.approx(error_rates([r["text"]], ["hello world"]).wer)
        data, sr = sf.read(tmp_path / "a" / "tts" / f"{i:03d}.wav")
        assert sr == tok.sampling_rate and len(data) % hop == 0 and 1 <= len(data) // hop <= 3
        assert r["generated_seconds"] == pytest.approx(len(data) / sr)
        resynth, _ = sf.read(tmp_path / "a" / "resynth" / f"{i:03d}.wav")
        assert abs(len(resynth) - 4000 * tok.sampling_rate / 16000) < hop
    assert 0.0 <= m["ended_with_eos"] <= 1.0
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert on_disk["tts"] == m["tts"] and len(on_disk["per_sentence"]) == 3
    rows = list(csv.DictReader(open(tmp_path / "a" / "sentences.csv")))
    assert [r["text"] for r in rows] == texts
    assert not list((tmp_path / "a").rglob("*.tmp*"))
    assert any(line.endswith("-> met") for line in summary_lines(m))
    # Sentence i is sampled with seed + i: a run on the last sentence alone reproduces its audio.
    evaluate_tts(
        tok,
        tiny_lm(tok),
        clips[2:],
        tmp_path / "b",
        seed=2,
        max_seconds=max_s,
        asr=FixedASR("x"),
        resynthesis=False,
    )
    a, _ = sf.read(tmp_path / "a" / "tts" / "002.wav")
    b, _ = sf.read(tmp_path / "b" / "tts" / "000.wav")
    np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "b" / "resynth").exists()


def test_target_missed_when_tts_is_worse(folder, tmp_path):
    tok = speech_tokenizer()
    clips = pick_sentences(load_clips(folder), 1, 4, 16)

    class ByLength(FixedASR):  # recordings (16 kHz, 4000 samples) are read right, the rest wrong
        def transcribe(self, audio, sampling_rate=16000):
            return clips[0].text if np.asarray(audio).size == 4000 and sampling_rate == 16000 else "zzz"

    m = evaluate_tts(
        tok,
        tiny_lm(tok),
        clips,
        tmp_path,
        max_seconds=3 / tok.frame_rate,
        asr=ByLength(""),
        resynthesis=False,
    )
    assert m["ground_truth"]["wer"] == 0.0 and m["tts"]["wer"] == 1.0
    assert m["target"] == {"rule": "TTS WER <= 2 x ground-truth WER", "limit": 0.0, "met": False}
    assert m["resynthesis"] is None


def test_cli_with_the_bundled_asr(folder, tmp_path, capsys):
    from jepatok.cli import main

    tok = speech_tokenizer()
    lm_dir = save_lm_dir(tmp_path / "lm")
    out = tmp_path / "out"
    argv = [
        "eval-tts",
        "--lm",
        str(lm_dir),
        "--data",
        str(folder),
        "--out",
        str(out),
        "--max-sentences",
        "2",
        "--max-seconds",
        str(3 / tok.frame_rate),
        "--no-resynthesis",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "TTS WER" in printed and "recordings" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["sentences"] == 2 and m["asr"].startswith("whisper-tiny.en")
    assert (
        main(["eval-tts", "--lm", str(tmp_path / "missing"), "--data", str(folder), "--out", str(out)]) != 0
    )
    assert "neither a directory nor a shipped checkpoint" in capsys.readouterr().err


def test_best_of_n_keeps_the_scorers_candidate_and_records_it(folder, tmp_path):
    import torch

    from jepatok.lm.rerank import PhonemeScorer

    class LastScorer(PhonemeScorer):  # ranks the last candidate first
        def score_codes(self, codec, codes, text, metric="per"):
            return -torch.arange(len(codes), dtype=torch.float32)

    tok = speech_tokenizer()
    clips = pick_sentences(load_clips(folder), 2, 4, 16)
    dim = tok.codec.dequantize(torch.zeros(1, 1, tok.tokens_per_frame, dtype=torch.long)).shape[-1]
    max_s = 3 / tok.frame_rate
    kw = dict(seed=0, max_seconds=max_s, asr=FixedASR("x"), resynthesis=False)
    m = evaluate_tts(
        tok,
        tiny_lm(tok),
        clips,
        tmp_path / "n3",
        num_candidates=3,
        phoneme_scorer=LastScorer(dim, ["a"]),
        **kw,
    )
    assert m["settings"]["num_candidates"] == 3
    assert [r["chosen_candidate"] for r in m["per_sentence"]] == [2, 2]
    single = evaluate_tts(tok, tiny_lm(tok), clips, tmp_path / "n1", **kw)
    assert [r["chosen_candidate"] for r in single["per_sentence"]] == [0, 0]
    # Candidate 0 of the best-of-3 batch is not what the single run keeps: the kept audio differs.
    a, _ = sf.read(tmp_path / "n3" / "tts" / "000.wav")
    b, _ = sf.read(tmp_path / "n1" / "tts" / "000.wav")
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_samples_score_every_output_of_every_sentence(folder, tmp_path):
    from jepatok.eval.compare_tts import sentence_counts

    class Cycling(FixedASR):  # hears the TTS outputs as "hello", "hello world", "x", ... in turn
        texts = ["hello", "hello world", "x"]

        def transcribe(self, audio, sampling_rate=16000):
            self.calls += 1
            return self.texts[(self.calls - 1) % 3]

    tok = speech_tokenizer()
    clips = pick_sentences(load_clips(folder), 2, 4, 16)
    max_s = 3 / tok.frame_rate
    m = evaluate_tts(
        tok,
        tiny_lm(tok),
        clips,
        tmp_path,
        seed=0,
        max_seconds=max_s,
        asr=Cycling(""),
        resynthesis=False,
        samples=3,
    )
    # Per sentence: 3 TTS transcripts (calls 1-3, 5-7), then the recording's (call 4, 8).
    heard = [["hello", "hello world", "x"], ["hello world", "x", "hello"]]
    assert [r["tts_transcripts"] for r in m["per_sentence"]] == heard
    assert [r["recording_transcript"] for r in m["per_sentence"]] == ["hello", "hello world"]
    refs = [c.text for c in clips for _ in range(3)]
    expected = error_rates(refs, [h for hs in heard for h in hs])
    assert m["tts"]["wer"] == pytest.approx(expected.wer) and m["settings"]["samples"] == 3
    for r, hs in zip(m["per_sentence"], heard):
        assert r["tts_transcript"] == hs[0]
        assert r["tts_wer"] == pytest.approx(np.mean([error_rates([r["text"]], [h]).wer for h in hs]))
    counts = sentence_counts(m["per_sentence"], "tts")  # compare-tts: mean edits over the samples
    assert counts["word_edits"].sum() / counts["words"].sum() == pytest.approx(expected.wer)
    names = sorted(p.name for p in (tmp_path / "tts").iterdir())
    assert names == ["000.wav", "000_1.wav", "000_2.wav", "001.wav", "001_1.wav", "001_2.wav"]
    a, _ = sf.read(tmp_path / "tts" / "000.wav")
    b, _ = sf.read(tmp_path / "tts" / "000_1.wav")
    assert a.shape != b.shape or not np.array_equal(a, b)  # the samples differ
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        evaluate_tts(tok, tiny_lm(tok), clips, tmp_path / "bad", asr=Cycling(""), samples=0)
