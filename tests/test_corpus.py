"""Offline corpus builder: text pool filtering and splitting, voices, and a 2-voice end-to-end build."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jepatok.data import corpus as corpus_mod
from jepatok.data.grammar import generate_sentences
from jepatok.data.text_pool import (
    build_text_pool,
    filter_sentences,
    gcide_quotations,
    is_speakable,
    split_sentences,
    truecase_verse,
)
from jepatok.data.voices import VOICES, available_voices, synthesize, voice_available

SENTENCES = [
    "The little boat drifted slowly toward the quiet harbor.",
    "She opened the window to let the morning air inside.",
    "Every evening the old farmer counted his sheep twice.",
    "A bright lamp was burning in the window of the cottage.",
    "We walked along the river until the sun went down.",
]
E2E_VOICES = ["flite-slt", "flite-kal16"]
needs_e2e_voices = pytest.mark.skipif(
    not all(voice_available(v) for v in E2E_VOICES), reason="flite voices not installed (make install)"
)


# ---------------------------------------------------------------- text pool


@pytest.mark.parametrize(
    "sentence, ok",
    [
        ("The cat sat on the warm mat.", True),
        ("Did you see the river this morning?", True),
        ("Too short.", False),  # < 4 words
        ("the cat sat on the mat.", False),  # no capital
        ("The cat sat on the mat", False),  # no final punctuation
        ("The cat sat on 3 mats.", False),  # digit
        ("The cat [sic] sat on the mat.", False),  # bracket
        ("Dr. Smith sat on the mat today.", False),  # abbreviation
        ("The cat sat . . . on the mat.", False),  # ellipsis
        ("The NATO cat sat on the mat.", False),  # acronym
        ('He said "wait for me by the gate.', False),  # unbalanced quote
        (" ".join(["word"] * 26).capitalize() + ".", False),  # > 25 words
    ],
)
def test_is_speakable(sentence, ok):
    assert is_speakable(sentence) is ok


def test_filter_normalizes_and_dedupes_case_insensitively():
    kept = filter_sentences(
        [
            "The  cat sat on the mat .",
            "the cat sat on the mat.",
            "THE CAT SAT ON THE MAT.",
            "Bad 42 one here.",
        ]
    )
    assert kept == ["The cat sat on the mat."]


def test_split_sentences_is_disjoint_complete_and_seeded():
    pool = generate_sentences(200, seed=1)
    a = split_sentences(pool, (0.8, 0.1, 0.1), seed=5)
    assert [len(a[s]) for s in ("train", "validation", "test")] == [160, 20, 20]
    assert sorted(a["train"] + a["validation"] + a["test"]) == sorted(pool)
    assert not set(a["train"]) & set(a["validation"]) and not set(a["validation"]) & set(a["test"])
    assert split_sentences(pool, (0.8, 0.1, 0.1), seed=5) == a
    assert split_sentences(pool, (0.8, 0.1, 0.1), seed=6)["validation"] != a["validation"]
    tiny = split_sentences(SENTENCES, (0.9, 0.05, 0.05))
    assert [len(tiny[s]) for s in ("train", "validation", "test")] == [3, 1, 1]
    with pytest.raises(ValueError, match="at least 3"):
        split_sentences(SENTENCES[:2])
    with pytest.raises(ValueError, match="summing to 1"):
        split_sentences(SENTENCES, (0.5, 0.1, 0.1))


def test_grammar_sentences_are_distinct_deterministic_and_speakable():
    a = generate_sentences(500, seed=3)
    assert (
        len(set(a)) == 500 and a == generate_sentences(500, seed=3) and a != generate_sentences(500, seed=4)
    )
    assert len(filter_sentences(a)) >= 490  # the grammar writes speakable English


def test_gcide_parser_keeps_attributed_quotations_only(tmp_path):
    # A dictionary entry in the dict-gcide layout, with made-up quotations.
    entry = (
        'Lantern \\Lan"tern\\, n.\n   1. Something that gives light.\n      [1913 Webster]\n\n'
        "            The lantern swung above the quiet gate all night.\n"
        "                                                  --Ann Author.\n      [1913 Webster]\n\n"
        "            A table of figures without any author\n            at the end.\n      [1913 Webster]\n\n"
        "            Bring the lantern. It is dark in the cellar. --B. Writer.\n      [1913 Webster]\n"
    )
    path = tmp_path / "gcide.dict.dz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(entry)
    quotes = gcide_quotations(path)
    assert quotes == [
        "The lantern swung above the quiet gate all night.",
        "Bring the lantern. It is dark in the cellar.",
    ]
    with pytest.raises(FileNotFoundError, match="dict-gcide"):
        gcide_quotations(tmp_path / "missing.dict.dz")


def test_truecase_verse_lowers_line_capitals_but_keeps_names():
    text = [
        "The dog ran home.",
        "We saw Jerusalem when the Dog ran, and I slept.",
        "Jerusalem was far.",
        "A dog.",
    ]
    out = truecase_verse(text)
    assert out[1] == "We saw Jerusalem when the dog ran, and I slept."  # "dog" is mostly lower case
    assert out[0] == text[0] and out[2] == text[2]
    assert truecase_verse(text[:3])[1] == text[1]  # a tie keeps the capital


def test_text_pool_from_file_and_fingerprint(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("# comment\n" + "\n".join(SENTENCES + [SENTENCES[0], "no"]) + "\n")
    pool = build_text_pool(text_file=path)
    assert pool.sentences == SENTENCES and pool.sources == {"file": 5}
    assert pool.fingerprint == build_text_pool(text_file=path).fingerprint
    with pytest.raises(ValueError, match="unknown text sources"):
        build_text_pool(["webster"])


# ---------------------------------------------------------------- voices


@pytest.mark.parametrize("name", list(VOICES))
def test_each_voice_speaks(name):
    if not voice_available(name):
        pytest.skip(f"{name} not installed ({VOICES[name].package}); `make install` installs it")
    text = "Open the door please."
    audio, sr = synthesize(name, text)
    assert audio.dtype == np.float32 and sr >= 8000 and 0.5 < len(audio) / sr < 5.0
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01
    if VOICES[name].native_tempo:
        fast, _ = synthesize(name, text, tempo=1.25)
        assert len(fast) < 0.95 * len(audio)
    if VOICES[name].engine == "piper":  # the subprocess engines are deterministic; piper needs zero noise
        again, _ = synthesize(name, text)
        assert np.array_equal(again, audio)


def _median_f0(audio: np.ndarray, sr: int) -> float:
    """Median autocorrelation F0 (60-400 Hz) over the voiced 40 ms frames."""
    n, found = int(0.04 * sr), []
    lo, hi = int(sr / 400), int(sr / 60)
    for i in range(0, len(audio) - n, n):
        x = audio[i : i + n] - audio[i : i + n].mean()
        if np.sqrt((x**2).mean()) < 0.02:
            continue
        c = np.correlate(x, x, "full")[n - 1 :]
        k = lo + int(np.argmax(c[lo:hi]))
        if c[k] > 0.3 * c[0]:
            found.append(sr / k)
    return float(np.median(found))


@pytest.mark.parametrize(
    "name", [n for n, v in VOICES.items() if v.engine == "festival" and v.native_pitch and v.base_f0 > 0]
)
def test_festival_pitch_follows_the_pitch_factor(name):
    """Festival's diphone and MBROLA voices take an absolute F0 target: the speaker's pitch factor moves it."""
    if not voice_available(name):
        pytest.skip(f"{name} not installed ({VOICES[name].package}); `make install` installs it")
    text = "The quick brown fox jumps over the lazy dog."
    low, high = (_median_f0(*synthesize(name, text, pitch=p)) for p in (0.8, 1.25))
    assert 1.3 < high / low < 1.9, (low, high)  # 1.25 / 0.8 = 1.56
    assert 0.6 * VOICES[name].base_f0 < low < VOICES[name].base_f0


def test_synthesize_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown voice"):
        synthesize("nobody", "Hello there my friend.")
    name = available_voices()[0] if available_voices() else "flite-slt"
    with pytest.raises(ValueError, match="empty"):
        synthesize(name, "   ")
    with pytest.raises(ValueError, match="tempo"):
        synthesize(name, "Hello there my friend.", tempo=3.0)


def test_default_held_out_keeps_each_engine_in_train():
    names = list(VOICES)
    for seed in range(6):
        held = corpus_mod.default_held_out(names, seed)
        assert len(held) == round(len(names) / 5) and "piper-joe" not in held  # piper's only voice stays
        train_engines = {VOICES[v].engine for v in names if v not in held}
        assert {VOICES[v].engine for v in held} <= train_engines
    assert corpus_mod.default_held_out(["flite-slt"], 0) == []
    assert len(corpus_mod.default_held_out(["piper-joe", "flite-slt"], 0)) == 1


def test_trim_silence_keeps_speech_and_margin():
    sr = 16000
    tone = 0.5 * np.sin(np.linspace(0, 2000, sr)).astype(np.float32)
    audio = np.concatenate([np.zeros(sr, np.float32), tone, np.zeros(2 * sr, np.float32)])
    out = corpus_mod.trim_silence(audio, sr, pad_s=0.1)
    assert len(out) == pytest.approx(sr + 0.2 * sr, abs=0.02 * sr)
    assert np.abs(out).max() == pytest.approx(0.5, abs=1e-3)
    assert len(corpus_mod.trim_silence(np.zeros(100, np.float32), sr)) == 100


# ---------------------------------------------------------------- end to end

HOURS = 0.006  # with (0.5, 0.25, 0.25): about 4 train, 2 validation, 2 test utterances of 5 sentences


def _build(out, seed=0, jobs=1, hours=HOURS, **kw):
    return corpus_mod.build_corpus(
        out, hours, voices=E2E_VOICES, seed=seed, jobs=jobs, text_file=kw.pop("text_file"),
        split_fractions=(0.5, 0.25, 0.25), variants_per_voice=2, progress=False, **kw,
    )  # fmt: skip


def _rows(split_dir: Path) -> list[dict]:
    with open(split_dir / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not all(voice_available(v) for v in E2E_VOICES):
        pytest.skip("flite voices not installed (make install)")
    root = tmp_path_factory.mktemp("corpus")
    text_file = root / "sentences.txt"
    text_file.write_text("\n".join(SENTENCES) + "\n")
    summary = _build(root / "a", text_file=text_file)
    return root, text_file, summary


@needs_e2e_voices
def test_build_writes_audio_folders_with_correct_metadata(built):
    root, _, summary = built
    out = root / "a"
    counts = summary.utterances_per_split
    assert counts["train"] >= 2 and counts["validation"] >= 2 and counts["test"] >= 2
    assert summary.made == sum(counts.values()) and summary.skipped == 0 and not summary.failed
    held = (out / "held_out_voices.txt").read_text().split()
    assert len(held) == 1 and held[0] in E2E_VOICES
    texts = {}
    for split in corpus_mod.SPLITS:
        rows = _rows(out / split)
        assert len(rows) == counts[split] and len({r["file_name"] for r in rows}) == len(rows)
        assert list(rows[0]) == ["file_name", "text", "speaker", "duration", "voice"]
        texts[split] = {r["text"] for r in rows}
        for r in rows:
            info = sf.info(str(out / split / r["file_name"]))
            assert info.samplerate == 16000 and info.channels == 1
            assert float(r["duration"]) == pytest.approx(info.frames / info.samplerate, abs=1e-4)
            assert r["text"] in SENTENCES and r["speaker"].startswith(r["voice"] + "-")
        voices = {r["voice"] for r in rows}
        if split == "train":
            assert held[0] not in voices  # held-out voices never reach train
        else:
            assert held[0] in voices  # odd indices of validation/test use held-out voices
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]  # split by sentence
    total = sum(summary.hours_per_split.values())
    assert total == pytest.approx(sum(sum(h.values()) for h in summary.hours_per_voice.values()), abs=1e-3)


@needs_e2e_voices
def test_build_is_deterministic_for_a_seed(built):
    root, text_file, _ = built
    _build(root / "b", text_file=text_file, jobs=2)  # worker processes give the same files
    for split in corpus_mod.SPLITS:
        rows_a, rows_b = _rows(root / "a" / split), _rows(root / "b" / split)
        assert rows_a == rows_b
        for r in rows_a:
            assert (root / "a" / split / r["file_name"]).read_bytes() == (
                root / "b" / split / r["file_name"]
            ).read_bytes()
    _build(root / "c", seed=1, text_file=text_file)
    assert [_rows(root / "c" / s) for s in corpus_mod.SPLITS] != [
        _rows(root / "a" / s) for s in corpus_mod.SPLITS
    ]


@needs_e2e_voices
def test_rerun_skips_existing_and_resumes_interrupted(built):
    root, text_file, _ = built
    out = root / "b"
    victim = out / "train" / _rows(out / "train")[1]["file_name"]
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    victim.unlink()
    stale = out / "train" / ".000009-x.wav.tmp-123"
    stale.write_bytes(b"half")
    summary = _build(out, text_file=text_file)
    assert summary.made == 1 and summary.skipped == len(mtimes) - 1
    assert victim.exists() and not stale.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != victim)
    with pytest.raises(ValueError, match="other settings"):
        _build(out, seed=7, text_file=text_file)


@needs_e2e_voices
def test_larger_hours_extend_and_stray_files_extend_nothing(built):
    root, text_file, first = built
    out = root / "e"
    small = _build(out, text_file=text_file)
    stray = out / "train" / "000099-bogus-0.wav"
    stray.write_bytes((out / "train" / _rows(out / "train")[0]["file_name"]).read_bytes())
    again = _build(out, text_file=text_file)
    assert (
        again.made == 0 and again.utterances_per_split == small.utterances_per_split and again.unplanned == 1
    )
    stray.unlink()
    big = _build(out, text_file=text_file, hours=2 * HOURS)
    assert big.made > 0 and big.skipped == sum(small.utterances_per_split.values())
    rerun = _build(out, text_file=text_file)  # the smaller request keeps what the larger one made
    assert rerun.made == 0 and rerun.utterances_per_split == big.utterances_per_split
    assert _rows(out / "train")[: len(_rows(root / "a" / "train"))] == _rows(root / "a" / "train")


@needs_e2e_voices
def test_loads_with_datasets_audiofolder(built, tmp_path):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("torchcodec")
    root, _, _ = built
    ds = datasets.load_dataset("audiofolder", data_dir=str(root / "a"), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation", "test"}
    for split in corpus_mod.SPLITS:
        assert ds[split].num_rows == len(_rows(root / "a" / split))
    assert {"audio", "text", "speaker", "duration"} <= set(ds["train"].column_names)
    row = ds["validation"][0]
    samples = row["audio"].get_all_samples()
    assert samples.sample_rate == 16000
    assert samples.data.shape[-1] / 16000 == pytest.approx(row["duration"], abs=1e-3)


def test_cli_rejects_unknown_voice_and_lists_voices(tmp_path, capsys):
    from jepatok.cli import main

    assert main(["build-corpus", "--list-voices"]) == 0
    assert "flite-slt" in capsys.readouterr().out
    assert main(["build-corpus", "--out", str(tmp_path), "--hours", "0.01", "--voices", "nobody"]) == 2
    assert "unknown voice" in capsys.readouterr().err
    assert main(["build-corpus", "--out", str(tmp_path), "--hours", "0"]) == 2
