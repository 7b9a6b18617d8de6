"""JepaSpeechTokenizer / JepaSpeechProcessor with the tiny codec: audio ids, save/load, Auto classes, remote code."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, AutoTokenizer

from jepatok import JepaCodecConfig, JepaSpeechProcessor, JepaSpeechTokenizer
from jepatok.tokenizer.modeling import JepaCodecModel, codec_identity

RATE = 8000  # tiny preset


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return JepaCodecModel(JepaCodecConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def tok(codec):
    return JepaSpeechTokenizer.from_codec(
        codec, texts=["hello world", "a short test sentence"], text_vocab_size=300
    )


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("speech_tok")
    JepaSpeechProcessor(tok.feature_extractor, tok).save_pretrained(str(path))
    return path


def clip(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    return (0.4 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(n)).astype(
        np.float32
    )


def test_encode_decode_audio(tok, codec):
    ids = tok.encode_audio(clip(250), RATE)
    hop = codec.config.hop_length
    frames = -(-250 // hop)
    assert len(ids) == frames * tok.tokens_per_frame and all(tok.is_audio_id(i) for i in ids)
    # ids -> codes -> ids exact, and equal to the codec's own codes.
    codes = tok.ids_to_codes(ids)
    assert tok.codes_to_ids(codes) == ids
    feats = tok.feature_extractor(clip(250), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        direct = codec.encode(feats["input_values"], feats["padding_mask"]).audio_codes[0, :frames]
    assert torch.equal(codes, direct)
    wave, rate = tok.decode_audio([tok.bos_token_id, tok.audio_token_id, *ids, tok.eos_token_id])
    assert rate == RATE and wave.shape == (frames * hop,) and wave.dtype == np.float32
    with torch.no_grad():
        expected = codec.decode(direct[None]).audio_values[0, 0].numpy()
    np.testing.assert_allclose(wave, expected, atol=1e-6)


def test_batch_encode_equals_one_by_one(tok):
    clips = [clip(n, seed=i) for i, n in enumerate((300, 45, 170, 16))]
    batched = tok.batch_encode_audio(clips, RATE, batch_size=3)
    assert batched == [tok.encode_audio(c, RATE) for c in clips]
    # Resampled input: 16 kHz in gives codes of the same length as the 8 kHz clip.
    up = np.repeat(clips[0], 2)
    assert len(tok.encode_audio(up, 16000)) == len(batched[0])
    decoded = tok.batch_decode_audio(batched)
    for ids, (wave, _) in zip(batched, decoded):
        np.testing.assert_allclose(wave, tok.decode_audio(ids)[0], atol=1e-6)


def test_audio_template_call(tok):
    clips = [clip(100), clip(60, seed=1)]
    batch = tok(
        text=["hello", "world"], audio=clips, sampling_rate=RATE, return_labels=True, return_tensors="pt"
    )
    for row, (t, c) in enumerate(zip(["hello", "world"], clips)):
        expected = tok.build_tts_ids(t, tok.ids_to_codes(tok.encode_audio(c, RATE)))
        mask = batch["attention_mask"][row].bool()
        assert batch["input_ids"][row][mask].tolist() == expected


def test_bad_audio_inputs(tok):
    with pytest.raises(ValueError, match="empty"):
        tok.encode_audio(np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(ValueError):
        tok.encode_audio(np.array([0.1, np.nan, 0.2], dtype=np.float32), RATE)
    with pytest.raises(ValueError, match="must be a numpy array"):
        tok.encode_audio("not audio", RATE)
    with pytest.raises(ValueError, match=r"\[channels, samples\]"):
        tok.encode_audio(np.zeros((1, 2, 30), dtype=np.float32), RATE)
    with pytest.raises(ValueError, match="no audio tokens"):
        tok.decode_audio([tok.bos_token_id, tok.eos_token_id])
    with pytest.raises(ValueError, match="truncated frame"):
        tok.decode_audio(tok.encode_audio(clip(40), RATE)[:-2])


def test_save_load_auto_classes(tok, saved, tmp_path):
    files = set(os.listdir(saved))
    assert {
        "spm.model",
        "tokenizer_config.json",
        "processor_config.json",
        "jepatok_remote.py",
        "codec",
    } <= files
    assert {"config.json", "model.safetensors"} <= set(os.listdir(saved / "codec"))
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["auto_map"]["AutoTokenizer"][0] == "jepatok_remote.JepaSpeechTokenizer"
    assert config["codec_identity"] == tok.codec_identity
    loaded = AutoTokenizer.from_pretrained(str(saved))
    assert type(loaded) is JepaSpeechTokenizer
    assert len(loaded) == len(tok) and loaded.get_vocab() == tok.get_vocab()
    assert loaded.audio_offset == tok.audio_offset and loaded.text_token_id == tok.text_token_id
    text = "hello world, a test"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.encode_audio(clip(90), RATE) == tok.encode_audio(clip(90), RATE)  # codec loaded lazily
    proc = AutoProcessor.from_pretrained(str(saved))
    assert type(proc) is JepaSpeechProcessor
    a = proc(text="hello", audio=clip(70), sampling_rate=RATE, return_labels=True)
    b = tok(text="hello", audio=clip(70), sampling_rate=RATE, return_labels=True)
    assert dict(a) == dict(b)
    # A loaded tokenizer saved elsewhere carries its codec along.
    again = tmp_path / "again"
    loaded.save_pretrained(str(again))
    reloaded = AutoTokenizer.from_pretrained(str(again))
    assert (
        reloaded.codec_identity == tok.codec_identity and codec_identity(reloaded.codec) == tok.codec_identity
    )
    # Pickling (datasets.map workers) keeps the vocabulary and reloads the codec from its folder.
    clone = pickle.loads(pickle.dumps(loaded))
    assert clone.encode(text) == tok.encode(text) and clone.encode_audio(clip(90), RATE) == tok.encode_audio(
        clip(90), RATE
    )


def test_codec_identity_is_enforced_on_load(tok, saved, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(saved, copy)
    weights = load_file(str(copy / "codec" / "model.safetensors"))
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1.0
    save_file(weights, str(copy / "codec" / "model.safetensors"), metadata={"format": "pt"})
    loaded = JepaSpeechTokenizer.from_pretrained(str(copy))
    assert loaded.encode("hello") == tok.encode("hello")  # ids need no codec
    with pytest.raises(ValueError, match="weights_hash"):
        loaded.encode_audio(clip(50), RATE)
    assert codec_identity(tok.codec) == tok.codec_identity


def test_fresh_process_trust_remote_code(saved, tmp_path):
    """A process that never imports jepatok loads tokenizer and processor through auto_map."""
    script = textwrap.dedent(
        f"""
        import sys
        from transformers import AutoProcessor, AutoTokenizer
        assert "jepatok" not in sys.modules
        tok = AutoTokenizer.from_pretrained({str(saved)!r}, trust_remote_code=True)
        proc = AutoProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        print(type(tok).__name__, type(proc).__name__, len(tok), tok.encode("hello world"))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    name, proc_name, size, ids = result.stdout.strip().split(" ", 3)
    loaded = AutoTokenizer.from_pretrained(str(saved))
    assert (name, proc_name, int(size)) == ("JepaSpeechTokenizer", "JepaSpeechProcessor", len(loaded))
    assert ids == str(loaded.encode("hello world"))


def test_with_codec_swaps_a_decoder_but_refuses_other_tokens(tok, codec, tmp_path):
    import copy

    from jepatok.lm.modeling import build_lm, check_lm_tokenizer

    lm = build_lm("tiny", tok, seed=0)
    new_decoder = copy.deepcopy(codec)
    with torch.no_grad():
        new_decoder.decoder.in_proj.bias.add_(0.5)
    swapped = tok.with_codec(new_decoder)
    assert swapped.codec_identity["codes_hash"] == tok.codec_identity["codes_hash"]
    assert swapped.codec_identity["weights_hash"] != tok.codec_identity["weights_hash"]
    assert swapped("hello world")["input_ids"] == tok("hello world")["input_ids"]  # same text ids
    audio = 0.1 * torch.randn(1, 1, RATE).numpy()[0, 0]
    assert swapped.encode_audio(audio, RATE) == tok.encode_audio(audio, RATE)  # same audio ids
    swapped.save_pretrained(tmp_path / "swapped")
    reloaded = JepaSpeechTokenizer.from_pretrained(tmp_path / "swapped")
    torch.testing.assert_close(reloaded.codec.decoder.in_proj.bias, new_decoder.decoder.in_proj.bias)
    check_lm_tokenizer(lm, reloaded)  # an LM trained with the old tokenizer stays valid
    new_encoder = copy.deepcopy(codec)
    with torch.no_grad():
        next(new_encoder.encoder.parameters()).add_(0.5)
    with pytest.raises(ValueError, match="makes different tokens: codes_hash"):
        tok.with_codec(new_encoder)
    legacy = copy.deepcopy(tok)
    del legacy.codec_identity["codes_hash"]
    with pytest.raises(ValueError, match="records no codes_hash"):
        legacy.with_codec(new_decoder)
