"""Speech corpora as `datasets.Dataset`s with an `Audio` column plus `text`, `speaker` and `file_name`.

`load_source(SOURCE)` accepts:
- a folder of audio files, with transcripts from any of: `metadata.csv` (audiofolder style, a header with
  `file_name` and optionally `text`/`transcription`/`speaker`; the corpus builder writes this), LJSpeech's
  header-less pipe-separated `metadata.csv` + `wavs/`, LibriSpeech `*.trans.txt`, LibriTTS
  `<id>.normalized.txt` / `<id>.original.txt`, or `.txt` / `.lab` files beside the audio;
- a single audio file;
- a `save_to_disk` folder (Dataset or DatasetDict);
- an HF Hub dataset name (needs network; loaded with `datasets.load_dataset`).

The `audio` column is `Audio(decode=False)` ({"path", "bytes"}): decoding happens in the pre-tokenization
workers with soundfile, so a corrupt file becomes a reported, skipped row instead of a crash. Every source
gets a deterministic fingerprint (file names, sizes, mtimes, transcripts) so cached work can be reused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict, Features, Value

from .audio import AUDIO_EXTENSIONS, AudioReadError, list_audio_files, load_audio, resample, to_mono

TEXT_COLUMNS = ("text", "transcription", "transcript", "sentence", "normalized_text", "text_normalized")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")
SPLIT_NAMES = ("train", "validation", "test")
FEATURES = Features(
    {
        "audio": Audio(decode=False),
        "text": Value("string"),
        "speaker": Value("string"),
        "file_name": Value("string"),
    }
)


def read_audio_cell(entry: Any) -> tuple[np.ndarray, int]:
    """An Audio cell ({"array", "sampling_rate"} decoded, or {"path", "bytes"}) -> (mono float32, its rate).

    Raises AudioReadError (a ValueError) naming what was wrong when the cell cannot be read.
    """
    if not isinstance(entry, dict):
        raise AudioReadError(f"audio cell must be a dict with array/path/bytes, got {type(entry).__name__}")
    if entry.get("array") is not None:
        audio, sr = to_mono(np.asarray(entry["array"])), int(entry["sampling_rate"])
    elif entry.get("bytes"):
        try:
            audio, sr = sf.read(io.BytesIO(entry["bytes"]), dtype="float32", always_2d=False)
        except Exception as err:  # soundfile raises several types
            raise AudioReadError(f"cannot decode embedded audio bytes: {err}") from err
        audio = to_mono(audio)
    elif entry.get("path"):
        audio, sr = load_audio(entry["path"])
    else:
        raise AudioReadError("audio cell has neither array, bytes nor path")
    if audio.size == 0:
        raise AudioReadError("audio cell holds no samples")
    return audio, int(sr)


def decode_audio_cell(entry: Any, sampling_rate: int) -> np.ndarray:
    """An Audio cell -> mono float32 at `sampling_rate`; AudioReadError if unreadable or non-finite."""
    audio, sr = read_audio_cell(entry)
    audio = resample(audio, sr, sampling_rate)
    if not np.isfinite(audio).all():
        raise AudioReadError("audio holds NaN or infinite samples")
    return audio


def _read_metadata_csv(csv_path: Path, texts: dict[Path, str], speakers: dict[Path, str]) -> None:
    """audiofolder `metadata.csv` (header with file_name) or LJSpeech's pipe-separated one."""
    root = csv_path.parent
    with open(csv_path, encoding="utf-8", newline="") as f:
        first = f.readline()
        f.seek(0)
        if "file_name" in first.split(",") or "file_name" in first.strip().split(","):
            for row in csv.DictReader(f):
                name = row.get("file_name")
                if not name:
                    continue
                path = (root / name).resolve()
                text = next((row[c] for c in TEXT_COLUMNS if row.get(c)), None)
                if text is not None:
                    texts[path] = text
                speaker = next((row[c] for c in SPEAKER_COLUMNS if row.get(c)), None)
                if speaker is not None:
                    speakers[path] = speaker
        elif "|" in first:  # LJSpeech: id|raw text|normalized text, audio in wavs/<id>.wav
            for line in f:
                parts = line.rstrip("\n").split("|")
                if len(parts) < 2 or not parts[0]:
                    continue
                text = parts[2] if len(parts) > 2 and parts[2] else parts[1]
                for folder in (root / "wavs", root):
                    for ext in AUDIO_EXTENSIONS:
                        path = (folder / f"{parts[0]}{ext}").resolve()
                        texts[path] = text
        else:
            raise ValueError(
                f"{str(csv_path)!r}: unrecognised metadata.csv (expected a header with file_name, or LJSpeech "
                f"'id|text|normalized' lines); first line: {first.strip()[:80]!r}"
            )


def _read_trans_txt(path: Path, texts: dict[Path, str], speakers: dict[Path, str]) -> None:
    """LibriSpeech: `<speaker>-<chapter>-<utt> TEXT` per line, audio `<id>.flac` beside it."""
    for line in path.read_text(encoding="utf-8").splitlines():
        utt, _, text = line.strip().partition(" ")
        if not utt:
            continue
        for ext in AUDIO_EXTENSIONS:
            audio = (path.parent / f"{utt}{ext}").resolve()
            texts[audio] = text
            speakers[audio] = utt.split("-")[0]


def _sidecar_text(audio: Path) -> tuple[str | None, str | None]:
    """(text, speaker) from LibriTTS `<id>.normalized.txt`/`.original.txt` or plain `.txt`/`.lab` beside the file."""
    for suffix, libritts in (
        (".normalized.txt", True),
        (".original.txt", True),
        (".txt", False),
        (".lab", False),
    ):
        side = audio.with_name(audio.stem + suffix)
        if side.is_file():
            speaker = audio.stem.split("_")[0] if libritts and "_" in audio.stem else None
            return side.read_text(encoding="utf-8").strip(), speaker
    return None, None


def folder_transcripts(folder: Path) -> tuple[dict[Path, str], dict[Path, str]]:
    """(texts, speakers) keyed by resolved audio path, from every `metadata.csv` (audiofolder or LJSpeech) and
    LibriSpeech `*.trans.txt` below `folder`."""
    texts: dict[Path, str] = {}
    speakers: dict[Path, str] = {}
    for csv_path in sorted(folder.rglob("metadata.csv")):
        _read_metadata_csv(csv_path, texts, speakers)
    for trans in sorted(folder.rglob("*.trans.txt")):
        _read_trans_txt(trans, texts, speakers)
    return texts, speakers


def transcript_of(path: Path, texts: dict[Path, str], speakers: dict[Path, str]) -> tuple[str, str]:
    """(text, speaker) of one audio file: from `folder_transcripts`' tables, else from a sidecar text file beside
    it (LibriTTS, .txt, .lab); "" where unknown."""
    resolved = path.resolve()
    text, speaker = texts.get(resolved), speakers.get(resolved)
    if text is None:
        text, side_speaker = _sidecar_text(path)
        speaker = speaker or side_speaker
    return text or "", speaker or ""


def folder_dataset(root: str | os.PathLike, split: str | None = None) -> Dataset:
    """An audio folder (any of the layouts in the module docstring) -> Dataset sorted by file name.

    Args:
        root: Folder (or one audio file).
        split: Use only the `root/<split>/` subfolder (corpus-builder and audiofolder layouts).
    """
    root = Path(root)
    if split is not None:
        if not (root / split).is_dir():
            raise ValueError(f"split {split!r} requested but {str(root / split)!r} is not a folder")
        root = root / split
    files = list_audio_files(root)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {str(root)!r}")
    search = root if root.is_dir() else root.parent
    texts, speakers = folder_transcripts(search)
    rows: dict[str, list] = {"audio": [], "text": [], "speaker": [], "file_name": []}
    hasher = hashlib.sha256()
    for path in files:
        resolved = path.resolve()
        text, speaker = transcript_of(path, texts, speakers)
        rel = str(path.relative_to(search)) if path != search else path.name
        rows["audio"].append({"path": str(resolved), "bytes": None})
        rows["text"].append(text)
        rows["speaker"].append(speaker)
        rows["file_name"].append(rel)
        stat = path.stat()
        hasher.update(json.dumps([rel, stat.st_size, stat.st_mtime_ns, text, speaker]).encode())
    table = datasets.table.InMemoryTable.from_pydict(rows, schema=FEATURES.arrow_schema)
    return Dataset(table, info=datasets.DatasetInfo(features=FEATURES), fingerprint=hasher.hexdigest()[:32])


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{what} column {wanted!r} not in the dataset's columns {columns}")
        return wanted
    return next((c for c in candidates if c in columns), None)


def normalize_hf_dataset(
    dataset: Dataset,
    audio_column: str | None = None,
    text_column: str | None = None,
    speaker_column: str | None = None,
) -> Dataset:
    """An HF dataset with some audio column -> the standard columns (audio undecoded, text, speaker, file_name)."""
    columns = list(dataset.column_names)
    if audio_column is None:
        audio_column = next((c for c, f in dataset.features.items() if isinstance(f, Audio)), None)
        if audio_column is None:
            raise ValueError(f"no Audio column in the dataset (columns {columns}); pass audio_column")
    elif audio_column not in columns:
        raise ValueError(f"audio column {audio_column!r} not in the dataset's columns {columns}")
    text_column = _pick(columns, text_column, TEXT_COLUMNS, "text")
    speaker_column = _pick(columns, speaker_column, SPEAKER_COLUMNS, "speaker")
    ds = dataset.cast_column(audio_column, Audio(decode=False))

    def standardize(batch: dict) -> dict:
        n = len(batch[audio_column])
        audio = [{"path": a.get("path"), "bytes": a.get("bytes")} for a in batch[audio_column]]
        names = (
            batch["file_name"] if "file_name" in batch else [os.path.basename(a["path"] or "") for a in audio]
        )
        return {
            "audio": audio,
            "text": [str(t or "") for t in batch[text_column]] if text_column else [""] * n,
            "speaker": [str(s) for s in batch[speaker_column]] if speaker_column else [""] * n,
            "file_name": [str(x) for x in names],
        }

    fingerprint = hashlib.sha256(
        f"{ds._fingerprint}|{audio_column}|{text_column}|{speaker_column}".encode()
    ).hexdigest()[:32]
    return ds.map(
        standardize,
        batched=True,
        remove_columns=columns,
        features=FEATURES,
        new_fingerprint=fingerprint,
        desc="standardize columns",
    )


def source_splits(source: str | os.PathLike) -> list[str] | None:
    """Splits a SOURCE holds (`train`/`validation`/`test` sub-folders holding all its audio, or the keys of
    a saved DatasetDict); `None` for a single-split source."""
    path = Path(source)
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file():
        return list(json.loads((path / "dataset_dict.json").read_text())["splits"])
    if (path / "dataset_info.json").is_file():
        return None
    found = [s for s in SPLIT_NAMES if (path / s).is_dir()]
    if not found or len(list_audio_files(path)) != sum(len(list_audio_files(path / s)) for s in found):
        return None
    return found


def load_source(
    source: str | os.PathLike,
    split: str | None = None,
    audio_column: str | None = None,
    text_column: str | None = None,
    speaker_column: str | None = None,
) -> Dataset:
    """Any supported SOURCE (see module docstring) -> Dataset(audio, text, speaker, file_name).

    Args:
        source: Folder, audio file, `save_to_disk` folder or HF Hub dataset name.
        split: Split to use (folder `<split>/` subfolder, DatasetDict key, or Hub split; Hub default "train").
        audio_column, text_column, speaker_column: Column names for HF datasets (auto-detected when omitted).
    """
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split is None:
                if len(loaded) != 1:
                    raise ValueError(f"{str(path)!r} holds splits {list(loaded)}; pass split")
                split = next(iter(loaded))
            if split not in loaded:
                raise ValueError(f"split {split!r} not in {str(path)!r} (has {list(loaded)})")
            loaded = loaded[split]
        return normalize_hf_dataset(loaded, audio_column, text_column, speaker_column)
    if path.exists():
        return folder_dataset(path, split=split)
    if str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise FileNotFoundError(f"data source {str(source)!r} does not exist")
    hub = datasets.load_dataset(str(source), split=split or "train")
    return normalize_hf_dataset(hub, audio_column, text_column, speaker_column)


__all__ = [
    "FEATURES",
    "decode_audio_cell",
    "folder_dataset",
    "load_source",
    "normalize_hf_dataset",
    "source_splits",
]
