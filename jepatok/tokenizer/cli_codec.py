"""`jepatok encode` / `jepatok decode`: audio files <-> a versioned codes file (.jtok).

A .jtok file is a safetensors file: one int32 tensor `codes_<i>` [T_i, G] per input clip, and string metadata
`format` ("jepatok-codes"), `format_version`, `codec_identity` (JSON of `codec_identity(model)`) and `items`
(JSON list of {name, num_samples, source_sampling_rate}). `decode` refuses a file whose codec identity
(`codes_hash`; config_hash and weights_hash for files written before it) differs from the codec it is given:
a codec whose decoder was retrained still decodes them. Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration import PRESETS, JepaCodecConfig
from .modeling import JepaCodecModel, codec_identity

FORMAT_NAME = "jepatok-codes"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
PRESET_SEED = 0


@dataclass
class CodesFile:
    """Contents of a .jtok file."""

    codes: list[torch.Tensor]  # one [T_i, G] long tensor per clip
    identity: dict  # codec_identity of the codec that produced the codes
    items: list[dict] = field(default_factory=list)  # {name, num_samples, source_sampling_rate} per clip
    format_version: int = FORMAT_VERSION


def save_codes(path: str | os.PathLike, data: CodesFile) -> None:
    """Write `data` atomically to `path` (safetensors with JSON metadata)."""
    if len(data.codes) != len(data.items):
        raise ValueError(f"{len(data.codes)} code tensors but {len(data.items)} item records")
    tensors = {f"codes_{i}": c.to(torch.int32).contiguous() for i, c in enumerate(data.codes)}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(data.format_version),
        "codec_identity": json.dumps(data.identity, sort_keys=True),
        "items": json.dumps(data.items),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would leave the codes unreadable to other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_codes(path: str | os.PathLike) -> CodesFile:
    """Read a .jtok file; raises ValueError when it is not one or has an unsupported version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codes file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for non-safetensors input
        raise ValueError(f"{path} is not a jepatok codes file (not readable as safetensors: {err})") from err
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path} is not a jepatok codes file (format {meta.get('format')!r}, want {FORMAT_NAME!r})"
        )
    version = int(meta.get("format_version", "-1"))
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{path} has codes format version {version}; this jepatok reads {SUPPORTED_VERSIONS}"
        )
    items = json.loads(meta["items"])
    codes = [tensors[f"codes_{i}"].long() for i in range(len(items))]
    return CodesFile(
        codes=codes, identity=json.loads(meta["codec_identity"]), items=items, format_version=version
    )


def check_identity(expected: dict, actual: dict, what: str = "codes") -> None:
    """Raise ValueError naming both hashes when the codes in a file (identity `expected`) were not made by a codec
    that makes the same codes as `actual` (`identity_mismatch`: a retrained decoder may decode them)."""
    from .modeling import identity_mismatch

    diff = identity_mismatch(expected, actual)
    if diff is not None:
        key, in_file, given = diff
        raise ValueError(
            f"these {what} were made by a different codec: {key} {in_file} (in the file) != "
            f"{given} (codec given); decode them with the codec that encoded them"
        )


def load_codec(spec: str) -> JepaCodecModel:
    """A codec from a `save_pretrained` directory (or a tokenizer folder with a `codec/` subfolder), or a
    preset name (randomly initialised with a fixed seed, so the same preset always gives the same codec)."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "codec" / "config.json").is_file():
            path = path / "codec"
        if not (path / "config.json").is_file():
            raise ValueError(f"{spec} is a directory without a codec config.json (nor codec/config.json)")
        return JepaCodecModel.from_pretrained(str(path)).eval()
    if spec in PRESETS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PRESET_SEED)
            return JepaCodecModel(JepaCodecConfig.from_preset(spec)).eval()
    raise ValueError(
        f"--codec {spec!r} is neither a codec directory nor a preset ({', '.join(sorted(PRESETS))})"
    )


_CODEC_HELP = (
    "a codec directory (JepaCodecModel.save_pretrained output, or a tokenizer folder with codec/) or a preset "
    f"name ({', '.join(sorted(PRESETS))}); a preset gives a RANDOMLY INITIALISED codec (fixed seed "
    f"{PRESET_SEED}): useful for testing the pipeline, its audio is noise"
)


def add_encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="+", help="audio files (any format soundfile reads; resampled)")
    parser.add_argument("--codec", required=True, help=_CODEC_HELP)
    parser.add_argument("--out", required=True, help="output codes file (.jtok, safetensors + metadata)")
    parser.add_argument(
        "--chunk-seconds", type=float, default=60.0, help="encode in windows of this length (bounded memory)"
    )


def run_encode(args: argparse.Namespace) -> int:
    from ..data.audio import load_audio, resample

    codec = load_codec(args.codec)
    sr = codec.config.sampling_rate
    codes, items = [], []
    for name in args.audio:
        audio, source_sr = load_audio(name)
        if len(audio) == 0:
            raise ValueError(f"{name} holds no audio samples")
        resampled = resample(audio, source_sr, sr) if source_sr != sr else audio
        x = torch.from_numpy(np.ascontiguousarray(resampled, dtype=np.float32)).view(1, 1, -1)
        chunk = args.chunk_seconds if x.shape[-1] > args.chunk_seconds * sr else None
        with torch.no_grad():
            out = codec.encode(x, chunk_length_s=chunk)
        codes.append(out.audio_codes[0].cpu())
        items.append(
            {"name": Path(name).name, "num_samples": int(x.shape[-1]), "source_sampling_rate": source_sr}
        )
        print(
            f"{name}: {x.shape[-1] / sr:.2f} s -> {out.audio_codes.shape[1]} frames x {out.audio_codes.shape[2]} tokens"
        )
    save_codes(args.out, CodesFile(codes=codes, identity=codec_identity(codec), items=items))
    print(f"wrote {args.out}")
    return 0


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("codes", help="a .jtok file written by `jepatok encode`")
    parser.add_argument("--codec", required=True, help=_CODEC_HELP)
    parser.add_argument(
        "--out", required=True, help="output WAV (one clip) or directory (several clips: <name>.wav each)"
    )
    parser.add_argument(
        "--chunk-seconds", type=float, default=60.0, help="decode in windows of this length (bounded memory)"
    )


def run_decode(args: argparse.Namespace) -> int:
    from ..data.audio import write_wav

    data = load_codes(args.codes)
    codec = load_codec(args.codec)
    check_identity(data.identity, codec_identity(codec))
    sr = codec.config.sampling_rate
    out = Path(args.out)
    several = len(data.codes) > 1
    if several:
        out.mkdir(parents=True, exist_ok=True)
    for codes, item in zip(data.codes, data.items):
        chunk = (
            args.chunk_seconds if codes.shape[0] * codec.config.hop_length > args.chunk_seconds * sr else None
        )
        with torch.no_grad():
            audio = codec.decode(codes.unsqueeze(0), chunk_length_s=chunk).audio_values
        audio = codec.trim_audio(audio, [item["num_samples"]])[0].cpu().numpy()
        target = out / (Path(item["name"]).stem + ".wav") if several else out
        write_wav(target, audio, sr)
        print(f"wrote {target} ({len(audio) / sr:.2f} s at {sr} Hz)")
    return 0
