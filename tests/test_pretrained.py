"""Shipped `small` checkpoints (jepatok/pretrained/small) and the demo.

The round-trip tests skip only when the shipped checkpoint folders are absent (a source tree without the
weights); a partial checkpoint fails. `test_make_demo` (slow) runs the `make demo` target end to end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jepatok.lm.modeling import check_lm_tokenizer
from jepatok.pretrained import (
    PretrainedNotFoundError,
    check_pretrained,
    is_available,
    load_pretrained,
    pretrained_paths,
)

PATHS = pretrained_paths("small")
SHIPPED = PATHS.tokenizer_dir.exists() or PATHS.lm_dir.exists()
needs_shipped = pytest.mark.skipif(not SHIPPED, reason=f"no shipped checkpoint folders under {PATHS.root}")
REPO = Path(__file__).resolve().parents[1]


def _clip(seconds: float, sr: int) -> np.ndarray:
    """A voiced-like test signal: a 140 Hz pulse train with two formant-ish partials and an amplitude envelope."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 25))
    wave *= 0.5 + 0.5 * np.sin(2 * math.pi * 1.5 * t) ** 2
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_unknown_name_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown pretrained checkpoint"):
        pretrained_paths("huge")
    assert not is_available("small", root=tmp_path)
    with pytest.raises(PretrainedNotFoundError, match="model.safetensors"):
        check_pretrained("small", root=tmp_path)
    with pytest.raises(PretrainedNotFoundError):
        load_pretrained("small", root=tmp_path)


def test_demo_refuses_without_checkpoint(tmp_path, capsys):
    from jepatok.demo import main

    rc = main(["--out", str(tmp_path / "out"), "--pretrained-root", str(tmp_path)])
    assert rc == 2
    assert "not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was built or faked


@needs_shipped
def test_shipped_files_are_safetensors_and_small():
    paths = check_pretrained("small")  # a partial checkpoint fails here instead of skipping
    files = [p for p in paths.root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent for p in weights} == {paths.codec_dir, paths.lm_dir, paths.scorer_dir}
    total = sum(p.stat().st_size for p in files)
    assert total < 150 * 2**20, f"shipped checkpoint is {total / 2**20:.1f} MiB (limit 150)"
    assert paths.model_card.is_file() and "640" in paths.model_card.read_text()


@needs_shipped
def test_shipped_round_trip():
    torch.manual_seed(0)
    tokenizer, lm = load_pretrained("small")
    sr = tokenizer.sampling_rate
    hop = int(round(sr / tokenizer.frame_rate))
    wave = _clip(1.3, sr)
    ids = tokenizer.encode_audio(wave, sampling_rate=sr)
    frames = math.ceil(wave.size / hop)
    assert len(ids) == frames * tokenizer.tokens_per_frame
    codes = tokenizer.ids_to_codes(ids)
    assert codes.shape == (frames, tokenizer.tokens_per_frame)
    sizes = torch.tensor(tokenizer.slot_sizes)
    assert bool(((codes >= 0) & (codes < sizes)).all())
    other = tokenizer.ids_to_codes(tokenizer.encode_audio(np.zeros_like(wave), sampling_rate=sr))
    assert not torch.equal(codes, other)  # the codes depend on the input
    audio, rate = tokenizer.decode_audio(ids)
    assert rate == sr and audio.shape == (frames * hop,)
    assert np.isfinite(audio).all() and float(np.abs(audio).max()) > 1e-4
    # the LM scores the same ids (continuation template) and is tied to this codec
    from jepatok.lm.text_gain import audio_nll

    seq = list(tokenizer.build_continuation_ids(codes))
    nll = audio_nll(lm, seq, seq.index(tokenizer.audio_token_id) + 1, tokenizer)  # flat or frame-level LM
    uniform = len(codes) * sum(math.log(s) for s in tokenizer.slot_sizes)
    assert math.isfinite(nll) and 0 < nll < uniform  # the trained LM beats a uniform guess
    recorded = lm.config.jepatok  # the LM was trained on this codec's tokens (its decoder may be newer)
    assert recorded["codec_codes_hash"] == tokenizer.codec_identity["codes_hash"]
    check_lm_tokenizer(lm, tokenizer)


@needs_shipped
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_shipped_phoneme_scorer_reads_the_shipped_codes(tmp_path):
    """The shipped scorer belongs to the shipped codec and, on speech it never saw (espeak-ng sentences coded by
    the shipped codec), ranks each sentence's own audio above the other sentence's audio."""
    from jepatok.data.audio import load_audio
    from jepatok.lm.rerank import load_phoneme_scorer

    tokenizer, _ = load_pretrained("small")
    scorer = load_phoneme_scorer("small")
    assert scorer.codes_hash == tokenizer.codec_identity["codes_hash"]
    texts = [
        "the old man walked slowly along the quiet river bank",
        "please bring seven fresh eggs and a jar of honey",
    ]
    codes = []
    for i, text in enumerate(texts):
        wav = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        wave, sr = load_audio(wav, target_sr=tokenizer.sampling_rate)
        codes.append(tokenizer.ids_to_codes(tokenizer.encode_audio(wave, sampling_rate=sr)))
    for i, text in enumerate(texts):
        per = scorer.score_codes(tokenizer.codec, codes, text, metric="per")
        nll = scorer.score_codes(tokenizer.codec, codes, text, metric="nll")
        assert int(per.argmin()) == i and float(per[i]) < 0.8, (text, per)
        assert int(nll.argmin()) == i, (text, nll)


@needs_shipped
def test_shipped_loads_with_plain_from_pretrained():
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from jepatok.tokenizer.modeling import JepaCodecModel, codec_identity

    paths = check_pretrained("small")
    tok = AutoTokenizer.from_pretrained(str(paths.tokenizer_dir), local_files_only=True)
    codec = AutoModel.from_pretrained(str(paths.codec_dir), local_files_only=True)
    assert isinstance(codec, JepaCodecModel)
    assert codec_identity(codec)["weights_hash"] == tok.codec_identity["weights_hash"]
    lm = AutoModelForCausalLM.from_pretrained(str(paths.lm_dir), local_files_only=True)
    assert lm.config.vocab_size >= len(tok)


@pytest.mark.slow
@pytest.mark.skipif(not is_available("small"), reason="the shipped small checkpoint is absent")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo(tmp_path):
    out = tmp_path / "demo_out"
    env = dict(os.environ, DEMO_ARGS=f"--out {out}", PYTHON=sys.executable)
    proc = subprocess.run(["make", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TTS (3 held-out sentences, best of 8 by the phoneme scorer)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert {"codec2-700C", "codec2-1200", "opus-6k"} <= set(summary["baselines"])
    assert 0.0 <= summary["codec"]["stoi"] <= 1.0 and summary["codec"]["bitrate"] == pytest.approx(640, abs=1)
    tts = [s for s in summary["samples"] if s["kind"] == "tts"]
    assert len(tts) == 3 and all(s["extra"]["candidates"] == 8 for s in tts)
    assert all(0 <= s["extra"]["chosen"] < 8 for s in tts) and summary["tts"]["candidates"] == 8
    assert len([s for s in summary["samples"] if s["kind"] == "continuation"]) == 2
    for sample in summary["samples"]:
        assert (out / sample["wav"]).is_file()
    assert (out / "report.html").is_file() and (out / "codec_eval" / "metrics.json").is_file()


def test_demo_held_out_means_with_and_without_held_out_voices():
    from jepatok.demo import _held_out_means, summary_table

    codec = {
        "tokens_per_second": 47.5,
        "bitrate": 640.0,
        "stoi": 0.7,
        "pesq_wb": 1.1,
        "wer": 0.9,
        "f0_gpe": 0.25,
    }
    groups = {"held_out": {"clips": 2, "codec": {"stoi": 0.6, "wer": 1.0}}, "seen": {"clips": 1, "codec": {}}}
    metrics = {"codec": codec, "baselines": {}, "reference": {}, "voice_groups": groups}
    ho = _held_out_means(metrics)
    assert ho == {"codec": {"stoi": 0.6, "wer": 1.0, "clips": 2}}
    table = summary_table(metrics, ho, {})
    assert "the 2 clips of voices held out" in table
    assert "F0 GPE" in table and "0.250" in table.splitlines()[2]
    alone = {k: v for k, v in metrics.items() if k != "voice_groups"}  # no voice was held out
    assert _held_out_means(alone) == {}
    assert "the 0 clips of voices held out" in summary_table(alone, {}, {})
    best = summary_table(metrics, ho, {"tts_wer": 1.0, "ground_truth_wer": 0.1, "candidates": 8})
    assert "TTS (3 held-out sentences, best of 8 by the phoneme scorer): WER 1.000" in best
    one = summary_table(metrics, ho, {"tts_wer": 1.0, "ground_truth_wer": 0.1, "candidates": 1})
    assert "TTS (3 held-out sentences): WER 1.000 vs ground-truth recordings 0.100" in one


def test_read_training_voices(tmp_path):
    from jepatok.data.voices import VOICES
    from jepatok.pretrained import read_training_voices

    shipped = read_training_voices("small")
    if SHIPPED:  # the shipped checkpoint records its voices, all of them known to the registry
        assert shipped is not None and shipped.training and shipped.held_out
        assert set(shipped.all) <= set(VOICES) and not set(shipped.training) & set(shipped.held_out)
    assert read_training_voices("small", root=tmp_path) is None  # no file: the builder's defaults
    path = pretrained_paths("small", root=tmp_path).voices_file
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"training_voices": ["flite-slt", "pico-en-us"], "held_out_voices": ["flite-awb"]})
    )
    voices = read_training_voices("small", root=tmp_path)
    assert voices.training == ("flite-slt", "pico-en-us") and voices.all[-1] == "flite-awb"
    for bad, match in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a list of voice names"),
        (
            json.dumps({"training_voices": "flite-slt", "held_out_voices": []}),
            "'training_voices' must be a list",
        ),
        (json.dumps({"training_voices": [], "held_out_voices": []}), "is empty"),
        (json.dumps({"training_voices": ["a"], "held_out_voices": ["a"]}), "both training and held-out"),
    ]:
        path.write_text(bad)
        with pytest.raises(ValueError, match=match):
            read_training_voices("small", root=tmp_path)


def test_training_voices_of_a_corpus_round_trip(tmp_path):
    from jepatok.pretrained import corpus_training_voices, read_training_voices, write_training_voices

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        corpus_training_voices(corpus)
    hours = {"flite-slt": {"train": 0.3, "test": 0.01}, "flite-awb": {"train": 0.0, "test": 0.02},
             "pico-en-us": {"train": 0.2}, "espeak-en-gb": {"train": 0.0, "test": 0.01}}  # fmt: skip
    (corpus / "summary.json").write_text(json.dumps({"hours_per_voice": hours}))
    (corpus / "held_out_voices.txt").write_text("flite-awb\n")
    voices = corpus_training_voices(corpus)  # espeak-en-gb: no train audio, not held out -> neither
    assert voices.training == ("flite-slt", "pico-en-us") and voices.held_out == ("flite-awb",)
    root = tmp_path / "root"
    path = write_training_voices(voices, pretrained_paths("small", root=root).root)
    assert path == pretrained_paths("small", root=root).voices_file
    assert read_training_voices("small", root=root) == voices
    (corpus / "summary.json").write_text(json.dumps({"hours": 1}))
    with pytest.raises(ValueError, match="hours_per_voice"):
        corpus_training_voices(corpus)


def test_demo_eval_voices_leave_out_missing_voices(monkeypatch, capsys):
    import jepatok.data.voices as voices_mod
    from jepatok.demo import eval_voices
    from jepatok.pretrained import TrainingVoices

    assert eval_voices(None) == (None, None)
    installed = {"flite-slt", "pico-en-us", "flite-awb"}
    monkeypatch.setattr(voices_mod, "voice_available", lambda v: v in installed)
    recorded = TrainingVoices(
        training=("flite-slt", "mbrola-us1", "pico-en-us"), held_out=("flite-awb", "espeak-en-us")
    )
    names, held = eval_voices(recorded)
    assert names == ["flite-slt", "pico-en-us", "flite-awb"] and held == ["flite-awb"]
    err = capsys.readouterr().err
    assert "mbrola-us1" in err and "espeak-en-us" in err
    with pytest.raises(RuntimeError, match="none of the checkpoint's training voices"):
        eval_voices(TrainingVoices(training=("mbrola-us1",), held_out=()))
