"""`jepatok encode` / `jepatok decode`: round trip through a versioned .jtok file and refusal of foreign codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from jepatok import JepaCodecConfig, JepaCodecModel, codec_identity
from jepatok.cli import main
from jepatok.tokenizer.cli_codec import FORMAT_VERSION, CodesFile, load_codec, load_codes, save_codes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread avoids OpenMP stalls on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture
def wavs(tmp_path):
    t = np.arange(4000) / 16000
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "b.flac", (0.1 * rng.standard_normal((1203, 2))).astype(np.float32), 8000)
    return [tmp_path / "a.wav", tmp_path / "b.flac"]


def test_encode_decode_round_trip(tmp_path, wavs, capsys):
    codes_path = tmp_path / "out" / "codes.jtok"
    assert main(["encode", *map(str, wavs), "--codec", "tiny", "--out", str(codes_path)]) == 0
    data = load_codes(codes_path)
    assert data.format_version == FORMAT_VERSION
    assert data.identity == codec_identity(load_codec("tiny"))  # a preset is seeded: same codec every time
    assert [item["num_samples"] for item in data.items] == [2000, 1203]  # lengths at the codec rate (8 kHz)
    assert [c.shape for c in data.codes] == [(125, 19), (76, 19)]
    assert all(c.dtype == torch.long and int(c.max()) < 4**7 for c in data.codes)

    out_dir = tmp_path / "decoded"
    assert main(["decode", str(codes_path), "--codec", "tiny", "--out", str(out_dir)]) == 0
    a, sr = sf.read(out_dir / "a.wav")
    b, _ = sf.read(out_dir / "b.wav")
    assert sr == 8000 and len(a) == 2000 and len(b) == 1203


def test_single_clip_decodes_to_the_given_wav_and_chunking_matches(tmp_path, wavs):
    one = tmp_path / "one.jtok"
    chunked = tmp_path / "chunked.jtok"
    assert main(["encode", str(wavs[0]), "--codec", "tiny", "--out", str(one)]) == 0
    assert (
        main(["encode", str(wavs[0]), "--codec", "tiny", "--out", str(chunked), "--chunk-seconds", "0.1"])
        == 0
    )
    same = (load_codes(one).codes[0] == load_codes(chunked).codes[0]).all(dim=-1).float().mean()
    assert same >= 0.99
    assert main(["decode", str(one), "--codec", "tiny", "--out", str(tmp_path / "x.wav")]) == 0
    assert sf.info(tmp_path / "x.wav").frames == 2000


def test_decode_refuses_codes_from_another_codec(tmp_path, wavs, capsys):
    codes_path = tmp_path / "codes.jtok"
    main(["encode", str(wavs[0]), "--codec", "tiny", "--out", str(codes_path)])
    # Same architecture, different weights: a saved codec directory.
    torch.manual_seed(123)
    other = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    other.save_pretrained(tmp_path / "other")
    capsys.readouterr()
    rc = main(
        ["decode", str(codes_path), "--codec", str(tmp_path / "other"), "--out", str(tmp_path / "x.wav")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "different codec" in err and "codes_hash" in err
    assert load_codes(codes_path).identity["codes_hash"] in err and codec_identity(other)["codes_hash"] in err
    assert not (tmp_path / "x.wav").exists()
    # Different architecture: another preset.
    rc = main(["decode", str(codes_path), "--codec", "small", "--out", str(tmp_path / "x.wav")])
    assert rc == 2 and "codes_hash" in capsys.readouterr().err


def test_decode_with_the_saved_codec_directory(tmp_path, wavs):
    codec = load_codec("tiny")
    codec.save_pretrained(tmp_path / "codec")
    codes_path = tmp_path / "codes.jtok"
    assert main(["encode", str(wavs[1]), "--codec", str(tmp_path / "codec"), "--out", str(codes_path)]) == 0
    assert main(["decode", str(codes_path), "--codec", "tiny", "--out", str(tmp_path / "b.wav")]) == 0


def test_codes_file_validation(tmp_path):
    not_codes = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(not_codes), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="not a jepatok codes file"):
        load_codes(not_codes)
    (tmp_path / "garbage.jtok").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a jepatok codes file"):
        load_codes(tmp_path / "garbage.jtok")
    with pytest.raises(FileNotFoundError):
        load_codes(tmp_path / "missing.jtok")
    future = tmp_path / "future.jtok"
    save_codes(
        future, CodesFile(codes=[torch.zeros(1, 19, dtype=torch.long)], identity={}, items=[{"name": "x"}])
    )
    meta_ok = load_codes(future)
    assert meta_ok.items == [{"name": "x"}]
    assert (future.stat().st_mode & 0o777) == 0o644  # readable like a plain write, not mkstemp's 0600
    save_file(
        {"codes_0": torch.zeros(1, 19, dtype=torch.int32)},
        str(future),
        metadata={
            "format": "jepatok-codes",
            "format_version": "99",
            "codec_identity": "{}",
            "items": json.dumps([{}]),
        },
    )
    with pytest.raises(ValueError, match="version 99"):
        load_codes(future)


def test_unknown_codec_spec(tmp_path):
    with pytest.raises(ValueError, match="neither a codec directory nor a preset"):
        load_codec("no-such-preset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without a codec config.json"):
        load_codec(str(tmp_path / "empty"))


def test_help_says_presets_are_random(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "RANDOMLY INITIALISED" in " ".join(capsys.readouterr().out.split())
