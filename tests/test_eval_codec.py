"""`jepatok eval-codec` end to end on the tiny codec and 3 espeak clips: metrics.json schema, report.html
with its PNGs and WAVs, skipped metrics with reasons, and clip loading from folders and datasets."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_eval_metrics import speak

from jepatok.cli import main
from jepatok.data.audio import write_wav
from jepatok.eval.clips import load_clips
from jepatok.eval.scoring import MEAN_KEYS

SENTENCES = ["The birch canoe slid.", "Glue the sheet.", "It is easy to tell."]
SCHEMA_TOP = {"codec", "baselines", "reference", "clips", "skipped"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus-builder-like folder: test/ with metadata.csv (file_name,text,speaker,duration), plus train/."""
    root = tmp_path_factory.mktemp("corpus")
    for split, n in (("test", 3), ("train", 1)):
        rows = []
        for i, text in enumerate(SENTENCES[:n]):
            voice = "en-us+f3" if i == 1 else "en-us"
            audio = speak(text, 16000, voice=voice, speed=170)
            name = f"{voice.replace('+', '_')}/{split}_{i}.wav"
            write_wav(root / split / name, audio, 16000)
            rows.append(
                {"file_name": name, "text": text, "speaker": voice, "duration": f"{audio.size / 16000:.2f}"}
            )
        with open(root / split / "metadata.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["file_name", "text", "speaker", "duration"])
            writer.writeheader()
            writer.writerows(rows)
    return root


def test_load_clips_from_folder_splits(corpus):
    clips = load_clips(
        corpus
    )  # picks test/; files sorted by path: en-us/test_0, en-us/test_2, en-us_f3/test_1
    order = [SENTENCES[0], SENTENCES[2], SENTENCES[1]]
    assert [c.text for c in clips] == order
    assert clips[2].speaker == "en-us+f3" and clips[0].sampling_rate == 16000
    assert len({c.clip_id for c in clips}) == 3
    assert len(load_clips(corpus, split="all")) == 4
    assert [c.text for c in load_clips(corpus, max_clips=2)] == [order[0], order[2]]  # spread evenly
    with pytest.raises(ValueError, match="split"):
        load_clips(corpus, split="dev")


def test_load_clips_from_saved_dataset(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"audio": [str(p) for p in sorted((corpus / "test").rglob("*.wav"))], "text": ["a b", "c", "d"]}
    ).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(tmp_path / "ds"))
    clips = load_clips(tmp_path / "ds", max_clips=2)
    assert [c.text for c in clips] == ["a b", "d"]
    assert clips[0].audio.ndim == 1 and clips[0].audio.size > 8000


def _check_metrics(out: Path, baselines: list[str]) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert SCHEMA_TOP <= set(metrics)
    assert set(metrics["baselines"]) == set(baselines)
    for name, means in [("codec", metrics["codec"]), *metrics["baselines"].items()]:
        assert set(means) - {"codebook_usage", "codebook_entropy"} <= set(MEAN_KEYS)
        for key in (
            "stoi",
            "pesq_wb",
            "si_sdr",
            "mel_distance",
            "mcd",
            "bitrate",
            "frame_rate",
            "encode_rtf",
            "decode_rtf",
        ):
            assert key in means, (name, key)
            assert np.isfinite(means[key])
        # every mean key is either present or skipped with a reason, never both
        for key in MEAN_KEYS:
            assert (key in means) != (key in metrics["skipped"][name]), (name, key)
    codec = metrics["codec"]
    assert codec["tokens_per_second"] == pytest.approx(codec["frame_rate"] * 19)
    assert 0 < codec["codebook_usage"] <= 1
    assert len(metrics["tokens"]["usage"]) == 19
    assert len(metrics["clips"]) == 3
    row = metrics["clips"][0]
    assert {"clip_id", "duration", "text", "reference", "codec", "baselines"} <= set(row)
    assert set(row["baselines"]) == set(baselines)
    return metrics


def test_eval_codec_cli_end_to_end(corpus, tmp_path, capsys):
    out = tmp_path / "eval"
    skip = "asr,speaker_sim,visqol,distillmos,dnsmos"
    rc = main(
        [
            "eval-codec",
            "--codec",
            "tiny",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--baselines",
            "codec2-1200",
            "--asr",
            "none",
            "--skip",
            skip,
            "--report-clips",
            "2",
        ]
    )
    assert rc == 0
    metrics = _check_metrics(out, ["codec2-1200"])
    assert metrics["skipped"]["codec"]["wer"] == "ASR disabled (--asr none)"
    assert metrics["skipped"]["codec"]["visqol"] == "disabled on the command line"
    # a random-weight codec is far worse than Codec2 on STOI: the pipeline really scores the outputs
    assert metrics["baselines"]["codec2-1200"]["stoi"] > metrics["codec"]["stoi"]
    html = (out / "report.html").read_text()
    for ref in re.findall(r'src="([^"]+)"|src=\'([^\']+)\'', html):
        path = ref[0] or ref[1]
        assert (out / path).is_file(), path
    assert html.count("<audio") == 2 * 3  # 2 clips x (original, codec, codec2-1200)
    assert "plots/bitrate_quality.png" in html and "plots/token_slots.png" in html
    assert "codec2-1200" in capsys.readouterr().out


def test_eval_codec_rejects_bad_arguments(corpus, tmp_path):
    assert main(["eval-codec", "--codec", "nope", "--data", str(corpus), "--out", str(tmp_path)]) == 2
    assert (
        main(
            [
                "eval-codec",
                "--codec",
                "tiny",
                "--data",
                str(corpus),
                "--out",
                str(tmp_path),
                "--baselines",
                "mp3",
            ]
        )
        == 2
    )
    assert (
        main(
            ["eval-codec", "--codec", "tiny", "--data", str(corpus), "--out", str(tmp_path), "--skip", "bleu"]
        )
        == 2
    )
    assert (
        main(["eval-codec", "--codec", "tiny", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)])
        == 2
    )


@pytest.mark.slow
def test_eval_codec_all_metrics_and_baselines(corpus, tmp_path):
    """Every metric and the four default baselines (ASR, speaker, ViSQOL, DistillMOS, DNSMOS included)."""
    out = tmp_path / "full"
    assert main(["eval-codec", "--codec", "tiny", "--data", str(corpus), "--out", str(out)]) == 0
    metrics = _check_metrics(out, ["codec2-700C", "codec2-1200", "codec2-3200", "opus-6k"])
    for means in [metrics["codec"], *metrics["baselines"].values()]:
        for key in ("wer", "cer", "speaker_sim", "visqol", "distillmos", "dnsmos", "pesq_nb"):
            assert key in means
    assert {"wer", "cer", "distillmos", "dnsmos"} <= set(metrics["reference"])
    # a random-weight codec is unintelligible: no better than the original or Opus
    assert metrics["reference"]["wer"] <= metrics["codec"]["wer"]
    assert metrics["baselines"]["opus-6k"]["wer"] <= metrics["codec"]["wer"]
    assert metrics["codec"]["speaker_sim"] < metrics["baselines"]["opus-6k"]["speaker_sim"]


def test_load_codec_from_directory_and_preset(tmp_path):
    from jepatok.eval.evaluate_codec import load_codec
    from jepatok.tokenizer.modeling import codec_identity

    a, b = load_codec("tiny", seed=3), load_codec("tiny", seed=3)
    assert codec_identity(a) == codec_identity(b)  # a preset's random weights are seeded
    assert codec_identity(load_codec("tiny", seed=4))["weights_hash"] != codec_identity(a)["weights_hash"]
    a.save_pretrained(tmp_path / "ckpt")
    loaded = load_codec(str(tmp_path / "ckpt"))
    assert codec_identity(loaded) == codec_identity(a)
    assert not loaded.training


def test_load_clips_reads_librispeech_and_sidecar_transcripts(tmp_path):
    """Eval clips read transcripts as the training data does (data.sources.folder_transcripts)."""
    audio = 0.1 * np.sin(np.linspace(0, 300, 1600)).astype(np.float32)
    write_wav(tmp_path / "19" / "198" / "19-198-0001.wav", audio, 16000)
    (tmp_path / "19" / "198" / "19-198.trans.txt").write_text("19-198-0001 NORTHANGER ABBEY\n")
    write_wav(tmp_path / "side" / "a.wav", audio, 16000)
    (tmp_path / "side" / "a.txt").write_text("a sidecar line\n")
    clips = {c.clip_id: c for c in load_clips(tmp_path)}
    assert clips["19_198_19-198-0001"].text == "NORTHANGER ABBEY"
    assert clips["19_198_19-198-0001"].speaker == "19"
    assert clips["side_a"].text == "a sidecar line"


def test_voice_groups_split_clips_by_held_out_voice(tmp_path):
    from jepatok.eval.evaluate_codec import read_held_out_voices, voice_group_means, voice_of

    assert voice_of("flite-awb-3") == "flite-awb" and voice_of("en-us+f3") == "en-us+f3"
    assert voice_of("speaker-7", {"speaker-7"}) == "speaker-7"  # a label that is itself a voice stays whole
    clips = [
        {"speaker": "a-0", "codec": {"stoi": 0.5, "wer": 1.0}, "baselines": {"b": {"stoi": 0.9}}},
        {"speaker": "a-1", "codec": {"stoi": 0.7, "wer": 0.0}, "baselines": {"b": {"stoi": 0.8}}},
        {"speaker": "c-0", "codec": {"stoi": 0.2}, "baselines": {"b": {}}},
    ]
    g = voice_group_means({"clips": clips, "baselines": {"b": {}}}, ["a"])
    assert g["held_out"]["clips"] == 2 and g["seen"]["clips"] == 1
    assert g["held_out"]["codec"] == pytest.approx({"stoi": 0.6, "wer": 0.5})
    assert g["held_out"]["b"] == pytest.approx({"stoi": 0.85}) and g["seen"]["b"] == {}
    assert g["seen"]["codec"] == pytest.approx({"stoi": 0.2})
    assert read_held_out_voices(None, tmp_path) is None  # no held_out_voices.txt
    (tmp_path / "held_out_voices.txt").write_text("x\ny\n")
    assert read_held_out_voices(None, tmp_path) == ["x", "y"]
    assert read_held_out_voices("none", tmp_path) is None
    assert read_held_out_voices("p, q", tmp_path) == ["p", "q"]
    with pytest.raises(ValueError, match="names no voice"):
        read_held_out_voices(" , ", tmp_path)


def test_eval_codec_cli_reports_voice_groups(corpus, tmp_path, capsys):
    data = tmp_path / "corpus"
    shutil.copytree(corpus, data)
    (data / "held_out_voices.txt").write_text("en-us+f3\n")  # what build-corpus writes
    out = tmp_path / "eval"
    argv = [
        "eval-codec",
        "--codec",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--baselines",
        "codec2-1200",
    ]
    assert (
        main([*argv, "--asr", "none", "--skip", "asr,speaker_sim,visqol,distillmos,dnsmos", "--no-report"])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    groups = metrics["voice_groups"]
    assert groups["held_out_voices"] == ["en-us+f3"]
    assert groups["held_out"]["clips"] == 1 and groups["seen"]["clips"] == 2
    held = [c for c in metrics["clips"] if c["speaker"] == "en-us+f3"][0]
    assert groups["held_out"]["codec"]["stoi"] == pytest.approx(held["codec"]["stoi"])
    assert groups["held_out"]["codec2-1200"]["f0_gpe"] == pytest.approx(
        held["baselines"]["codec2-1200"]["f0_gpe"]
    )
    assert groups["held_out"]["codec2-1200"]["stoi"] == pytest.approx(
        held["baselines"]["codec2-1200"]["stoi"]
    )
    assert "per-clip means by voice group" in capsys.readouterr().out
