"""Audio file helpers shared by training, pre-tokenization and evaluation: find, read, resample, write.

Files are read with soundfile (torchaudio's load/save need torchcodec); mp3 goes through soundfile's
libsndfile >= 1.1 support, and anything soundfile cannot read raises `AudioReadError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus")


class AudioReadError(ValueError):
    """A file that exists but cannot be decoded as audio."""


def list_audio_files(root: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """All audio files below `root` (recursively), sorted for determinism."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"audio folder {str(root)!r} does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    return files


def iter_audio_files(root: str | os.PathLike) -> Iterator[Path]:
    yield from list_audio_files(root)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[L] or [L, C] (soundfile layout) -> [L] float32, channels averaged."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise ValueError(f"expected audio of shape [samples] or [samples, channels], got {audio.shape}")
    return audio.astype(np.float32, copy=False)


def resample(audio: np.ndarray | torch.Tensor, orig_sr: int, target_sr: int) -> np.ndarray | torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio); returns the input type."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sampling rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return audio
    is_np = isinstance(audio, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)) if is_np else audio.float()
    y = AF.resample(x, int(orig_sr), int(target_sr))
    return y.numpy() if is_np else y


def load_audio(path: str | os.PathLike, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file as mono float32 in [-1, 1]; resample to `target_sr` when given. Returns (audio, rate)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file {str(path)!r} does not exist")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as err:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioReadError(f"cannot decode {str(path)!r} as audio: {err}") from err
    audio = to_mono(audio)
    if audio.size == 0:
        raise AudioReadError(f"{str(path)!r} holds no samples")
    if target_sr is not None and sr != target_sr:
        audio = resample(audio, sr, target_sr)
        sr = target_sr
    return audio, int(sr)


def write_wav(path: str | os.PathLike, audio: np.ndarray | torch.Tensor, sampling_rate: int) -> None:
    """Write mono 16-bit PCM atomically (a temp file renamed into place: no half-written outputs)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0), int(sampling_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
