"""Data sources and datasets.map pre-tokenization with the tiny codec: layouts, num_proc, resume, identity, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Audio, Dataset

from jepatok import JepaCodecConfig, JepaSpeechTokenizer
from jepatok.cli import main as cli_main
from jepatok.data import pretokenize as pt
from jepatok.data.audio import write_wav
from jepatok.data.pretokenize import check_codec_identity, pretokenize_dataset, read_codec_identity
from jepatok.data.sources import folder_dataset, load_source
from jepatok.tokenizer.modeling import JepaCodecModel

RATE = 8000


def wav(path, n: int, seed: int = 0, rate: int = RATE) -> None:
    rng = np.random.default_rng(seed)
    write_wav(path, (0.3 * rng.standard_normal(n)).astype(np.float32), rate)


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("codec")
    JepaCodecModel(JepaCodecConfig.from_preset("tiny")).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Plain folder: 7 clips (two at 16 kHz), .txt/.lab transcripts, one corrupt file."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(7):
        wav(root / f"spk{i % 2}" / f"utt{i}.wav", 60 + 37 * i, seed=i, rate=16000 if i in (2, 5) else RATE)
        (root / f"spk{i % 2}" / f"utt{i}{'.lab' if i % 2 else '.txt'}").write_text(f"utterance {i}")
    (root / "spk0" / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    return root


@pytest.fixture(scope="module")
def reference(corpus, codec_dir):
    """In-memory single-process run (shards of 3 rows): the rows every other run must reproduce."""
    return pretokenize_dataset(folder_dataset(corpus), codec_dir, None, shard_rows=3)


def test_source_layouts(tmp_path):
    # Corpus-builder / audiofolder: split folders with metadata.csv (file_name,text,speaker,duration).
    split = tmp_path / "built" / "train"
    wav(split / "a.wav", 50)
    wav(split / "b.wav", 50)
    (split / "metadata.csv").write_text(
        'file_name,text,speaker,duration\na.wav,"Hello, there.",alice,0.1\nb.wav,Bye.,bob,0.1\n'
    )
    ds = load_source(tmp_path / "built", split="train")
    assert ds["text"] == ["Hello, there.", "Bye."] and ds["speaker"] == ["alice", "bob"]
    with pytest.raises(ValueError, match="split 'test' requested"):
        load_source(tmp_path / "built", split="test")
    # LibriSpeech: <spk>/<chapter>/<spk>-<chapter>.trans.txt
    chapter = tmp_path / "libri" / "19" / "198"
    wav(chapter / "19-198-0001.flac", 40)
    wav(chapter / "19-198-0002.flac", 40)
    (chapter / "19-198.trans.txt").write_text("19-198-0001 NORTHANGER ABBEY\n19-198-0002 CHAPTER ONE\n")
    ds = load_source(tmp_path / "libri")
    assert ds["text"] == ["NORTHANGER ABBEY", "CHAPTER ONE"] and ds["speaker"] == ["19", "19"]
    # LibriTTS: <id>.normalized.txt beside <id>.wav
    tts = tmp_path / "libritts" / "84" / "121123"
    wav(tts / "84_121123_000007_000001.wav", 40)
    (tts / "84_121123_000007_000001.normalized.txt").write_text("Hello there.")
    (tts / "84_121123_000007_000001.original.txt").write_text("hello there")
    ds = load_source(tmp_path / "libritts")
    assert ds["text"] == ["Hello there."] and ds["speaker"] == ["84"]
    # LJSpeech: pipe-separated metadata.csv (id|raw|normalized) + wavs/
    lj = tmp_path / "LJSpeech"
    wav(lj / "wavs" / "LJ001-0001.wav", 40)
    (lj / "metadata.csv").write_text("LJ001-0001|Printing, in the 1st sense|Printing, in the first sense\n")
    ds = load_source(lj)
    assert ds["text"] == ["Printing, in the first sense"] and ds["file_name"] == ["wavs/LJ001-0001.wav"]
    # A saved HF dataset with a decoded Audio column and a `sentence` column.
    hf = Dataset.from_dict({"audio": [str(split / "a.wav")], "sentence": ["from hf"]}).cast_column(
        "audio", Audio()
    )
    hf.save_to_disk(str(tmp_path / "hf"))
    ds = load_source(tmp_path / "hf")
    assert (
        ds["text"] == ["from hf"]
        and ds[0]["audio"]["path"].endswith("a.wav")
        and ds["file_name"] == ["a.wav"]
    )
    with pytest.raises(FileNotFoundError):
        load_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        load_source(tmp_path / "empty")


def test_folder_fingerprint_is_deterministic(corpus):
    a, b = folder_dataset(corpus), folder_dataset(corpus)
    assert a._fingerprint == b._fingerprint and len(a) == 8
    assert a["text"][a["file_name"].index("spk1/utt1.wav")] == "utterance 1"


def test_pretokenize_rows_codes_identity_and_skips(corpus, codec_dir, reference, tmp_path):
    dataset = folder_dataset(corpus)
    out1, rep1 = reference
    out2, _ = pretokenize_dataset(
        dataset, codec_dir, tmp_path / "np2", num_proc=2, shard_rows=5, batch_size=2
    )
    assert out1.to_list() == out2.to_list()  # num_proc=2 (and other shard/batch sizes) give the same rows
    assert len(out1) == 7 and rep1.kept == 7 and len(out1["file_name"]) == len(set(out1["file_name"]))
    assert [s["file_name"] for s in rep1.skipped] == ["spk0/broken.wav"]
    assert "cannot decode" in rep1.skipped[0]["reason"]
    assert set(out1.column_names) == {"audio_codes", "text", "speaker", "file_name", "duration"}
    # Rows hold exactly what the tokenizer's encoder gives, with transcripts kept.
    tok = JepaSpeechTokenizer.from_codec(str(codec_dir), texts=["utterance"], text_vocab_size=300)
    row = out1[out1["file_name"].index("spk0/utt2.wav")]
    from jepatok.data.audio import load_audio

    audio, rate = load_audio(corpus / "spk0" / "utt2.wav")
    assert rate == 16000 and row["text"] == "utterance 2"
    assert tok.codes_to_ids(row["audio_codes"]) == tok.encode_audio(audio, rate)
    assert row["duration"] == pytest.approx(len(audio) / rate, abs=1e-3)
    assert rep1.tokens == sum(len(c) for c in out1["audio_codes"]) * 19
    # Identity recorded in the dataset info; a different codec is refused.
    assert read_codec_identity(tmp_path / "np2") == tok.codec_identity
    check_codec_identity(tmp_path / "np2", tok)
    other = dict(tok.codec_identity, codes_hash="0" * 64)
    with pytest.raises(ValueError, match="codec mismatch.*codes_hash"):
        check_codec_identity(out1, other)
    # A retrained decoder (other weights_hash, same codes_hash) keeps the dataset valid; without codes_hash on
    # one side the whole codec must match.
    check_codec_identity(out1, dict(tok.codec_identity, weights_hash="0" * 64))
    legacy = {k: v for k, v in tok.codec_identity.items() if k != "codes_hash"}
    with pytest.raises(ValueError, match="codec mismatch.*weights_hash"):
        check_codec_identity(out1, dict(legacy, weights_hash="0" * 64))
    with pytest.raises(ValueError, match="no jepatok codec identity"):
        read_codec_identity(dataset)
    report = json.loads((tmp_path / "np2" / pt.REPORT_FILE).read_text())
    assert report["kept"] == 7 and report["skipped"] == rep1.skipped


def test_interrupted_run_resumes_without_lost_or_duplicated_rows(
    corpus, codec_dir, reference, tmp_path, monkeypatch
):
    dataset = folder_dataset(corpus)
    reference = reference[0]
    real_save = pt._save_atomic
    calls = []

    def crash_after_first(ds, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        real_save(ds, target)

    monkeypatch.setattr(pt, "_save_atomic", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        pretokenize_dataset(dataset, codec_dir, tmp_path / "out", shard_rows=3)
    monkeypatch.setattr(pt, "_save_atomic", real_save)
    assert len(list((tmp_path / "out.partial").glob("shard-*"))) == 1
    resumed, report = pretokenize_dataset(dataset, codec_dir, tmp_path / "out", shard_rows=3)
    assert report.resumed_shards == 1 and resumed.to_list() == reference.to_list()
    assert 0 < report.processed_tokens < report.tokens  # speed counts only the shards encoded now
    assert not (tmp_path / "out.partial").exists()
    again, report2 = pretokenize_dataset(
        dataset, codec_dir, tmp_path / "out", shard_rows=3
    )  # finished: reused
    assert again.to_list() == reference.to_list() and report2.kept == report.kept
    with pytest.raises(FileExistsError, match="not made by this run"):
        pretokenize_dataset(dataset, codec_dir, tmp_path / "out", shard_rows=2)


def test_cli_summary_splits_and_benchmark(codec_dir, tmp_path, capsys):
    import datasets

    built = tmp_path / "built"  # corpus-builder layout: split folders with metadata.csv
    for split, n in (("train", 2), ("validation", 1)):
        rows = ["file_name,text,speaker,duration"]
        for i in range(n):
            wav(built / split / f"{split}{i}.wav", 50 + 20 * i, seed=i)
            rows.append(f"{split}{i}.wav,{split} sentence {i},alice,0.01")
        (built / split / "metadata.csv").write_text("\n".join(rows) + "\n")
    (built / "train" / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    code = cli_main(
        ["pretokenize", "--codec", str(codec_dir), "--data", str(built), "--out", str(tmp_path / "o")]
    )
    out = capsys.readouterr().out
    assert (
        code == 0 and "== train" in out and "2 tokenized, 1 skipped" in out and "skipped corrupt.wav" in out
    )
    assert "audio hours per CPU hour" in out and "tokens/s" in out
    saved = datasets.load_from_disk(str(tmp_path / "o"))
    assert isinstance(saved, datasets.DatasetDict) and {k: len(v) for k, v in saved.items()} == {
        "train": 2,
        "validation": 1,
    }
    assert saved["validation"]["text"] == ["validation sentence 0"]
    check_codec_identity(tmp_path / "o", read_codec_identity(saved["train"]))
    assert cli_main(["pretokenize", "--codec", str(codec_dir), "--data", str(built)]) == 2  # --out missing
    assert "missing required option(s): --out" in capsys.readouterr().err
    code = cli_main(
        [
            "pretokenize",
            "--benchmark",
            "--bench-preset",
            "tiny",
            "--bench-clips",
            "2",
            "--bench-seconds",
            "0.05",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "benchmark (preset tiny" in out and "audio hours per CPU hour" in out


def test_embedded_audio_bytes(codec_dir, tmp_path):
    """HF datasets that embed the audio bytes (no path) decode from memory; bad bytes are reported by row."""
    from jepatok.data.sources import normalize_hf_dataset

    wav(tmp_path / "a.wav", 120, seed=3)
    cells = [{"bytes": (tmp_path / "a.wav").read_bytes(), "path": None}, {"bytes": b"garbage", "path": None}]
    ds = Dataset.from_dict({"audio": cells, "text": ["ok", "bad"]}).cast_column("audio", Audio(decode=False))
    out, report = pretokenize_dataset(normalize_hf_dataset(ds), codec_dir, None, num_threads=1)
    assert out["text"] == ["ok"] and len(out[0]["audio_codes"]) == -(
        -120 // JepaCodecConfig.from_preset("tiny").hop_length
    )
    assert report.skipped[0]["file_name"] == "row 1" and "embedded audio bytes" in report.skipped[0]["reason"]


def test_read_audio_cell_every_form(tmp_path):
    import io

    import numpy as np
    import soundfile as sf

    from jepatok.data.audio import AudioReadError
    from jepatok.data.sources import decode_audio_cell, read_audio_cell

    wave = (0.3 * np.sin(np.arange(1600) / 3.0)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(str(path), wave, 16000, subtype="FLOAT")
    buf = io.BytesIO()
    sf.write(buf, np.stack([wave, wave], 1), 16000, subtype="FLOAT", format="WAV")
    for cell in ({"array": wave, "sampling_rate": 16000}, {"path": str(path)}, {"bytes": buf.getvalue()}):
        audio, sr = read_audio_cell(cell)
        assert sr == 16000 and np.allclose(audio, wave, atol=1e-6)
    assert decode_audio_cell({"path": str(path)}, 8000).shape == (800,)
    for bad, message in (
        ("a.wav", "must be a dict"),
        ({}, "neither array, bytes nor path"),
        ({"bytes": b"not audio"}, "cannot decode embedded audio bytes"),
        ({"array": np.zeros(0, np.float32), "sampling_rate": 16000}, "no samples"),
        ({"array": np.full(10, np.nan, np.float32), "sampling_rate": 8000}, "NaN"),
    ):
        with pytest.raises(AudioReadError, match=message):
            decode_audio_cell(bad, 8000)
