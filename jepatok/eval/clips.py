"""Evaluation clips from an audio folder (with optional metadata.csv transcripts) or a `datasets` dataset.

An audio folder is searched recursively; its transcripts are read as the training data reads them
(`data.sources.folder_transcripts`): every `metadata.csv` below it (audiofolder columns file_name, text,
optionally speaker, as the corpus builder writes; or LJSpeech's), LibriSpeech `*.trans.txt`, and sidecar
text files. A folder holding `train/validation/test` sub-folders is evaluated on
`test` unless another split is asked for. A directory written by `Dataset.save_to_disk` /
`DatasetDict.save_to_disk` is read with `datasets.load_from_disk`; any other string is tried as a
`datasets.load_dataset` name (needs network unless cached). Audio is decoded with soundfile, not
torchcodec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.audio import list_audio_files, load_audio
from ..data.sources import SPEAKER_COLUMNS, TEXT_COLUMNS, folder_transcripts, read_audio_cell, transcript_of


@dataclass
class EvalClip:
    """One utterance to reconstruct and score."""

    clip_id: str  # unique, file-name safe
    audio: np.ndarray  # [L] float32 mono
    sampling_rate: int
    text: str = ""  # transcript ("" when unknown)
    speaker: str = ""
    source: str = ""  # file path or dataset row
    extra: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.audio.size / self.sampling_rate


def _safe_id(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return out.strip("._") or "clip"


def _pick_indices(n: int, max_clips: int | None) -> list[int]:
    """All indices, or `max_clips` spread evenly over the sorted list (covers every speaker/split part)."""
    if max_clips is None or max_clips >= n:
        return list(range(n))
    if max_clips <= 0:
        raise ValueError(f"max_clips must be positive, got {max_clips}")
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_clips)})


def _first(row: dict, names: tuple[str, ...]) -> str:
    for n in names:
        if row.get(n) not in (None, ""):
            return str(row[n])
    return ""


def load_folder_clips(
    folder: str | os.PathLike, max_clips: int | None = None, split: str | None = None
) -> list[EvalClip]:
    """Clips from an audio folder (see module docstring).

    Args:
        folder: root directory (or a single audio file).
        max_clips: keep at most this many, evenly spread over the sorted file list.
        split: sub-folder to use; None picks `test` when present, "all" uses everything.
    """
    root = Path(folder)
    if root.is_dir() and split != "all":
        if split is None and (root / "test").is_dir():
            split = "test"
        if split is not None:
            if not (root / split).is_dir():
                raise ValueError(f"split {split!r} not found: {root / split} is not a directory")
            root = root / split
    files = list_audio_files(root)
    if not files:
        raise ValueError(f"no audio files (.wav, .flac, .mp3, .ogg, .opus) found under {str(root)!r}")
    texts, speakers = folder_transcripts(root) if root.is_dir() else ({}, {})
    clips, used = [], set()
    for i in _pick_indices(len(files), max_clips):
        path = files[i]
        audio, sr = load_audio(path)
        text, speaker = transcript_of(path, texts, speakers)
        rel = path.relative_to(root) if root.is_dir() else Path(path.name)
        clip_id = _safe_id(str(rel.with_suffix("")).replace(os.sep, "_"))
        while clip_id in used:
            clip_id += "_"
        used.add(clip_id)
        clips.append(
            EvalClip(
                clip_id,
                audio,
                sr,
                text=text,
                speaker=speaker,
                source=str(path),
            )
        )
    return clips


def load_dataset_clips(
    dataset, max_clips: int | None = None, audio_column: str | None = None
) -> list[EvalClip]:
    """Clips from a `datasets.Dataset` with an audio column.

    Args:
        dataset: the dataset (rows with an Audio feature).
        max_clips: keep at most this many, evenly spread.
        audio_column: column to read; default the first `Audio` feature.
    """
    from datasets import Audio

    if audio_column is None:
        audio_column = next((k for k, f in dataset.features.items() if isinstance(f, Audio)), None)
        if audio_column is None:
            raise ValueError(f"dataset has no Audio column (columns: {list(dataset.column_names)})")
    if audio_column not in dataset.column_names:
        raise ValueError(f"audio column {audio_column!r} not in dataset columns {list(dataset.column_names)}")
    if isinstance(dataset.features[audio_column], Audio):
        dataset = dataset.cast_column(audio_column, Audio(decode=False))  # soundfile, not torchcodec
    clips = []
    for i in _pick_indices(len(dataset), max_clips):
        row = dataset[i]
        audio, sr = read_audio_cell(row[audio_column])
        if audio.size == 0:
            raise ValueError(f"dataset row {i} holds an empty waveform")
        name = row.get("file_name") or row.get("id") or f"row{i:06d}"
        clips.append(
            EvalClip(
                _safe_id(f"{i:05d}_{Path(str(name)).stem}"),
                audio,
                sr,
                text=_first(row, TEXT_COLUMNS),
                speaker=_first(row, SPEAKER_COLUMNS),
                source=f"row {i}",
            )
        )
    return clips


def load_clips(
    source: str | os.PathLike, max_clips: int | None = None, split: str | None = None
) -> list[EvalClip]:
    """Clips from an audio folder, a saved dataset directory, or a dataset name.

    Args:
        source: folder / file / `save_to_disk` directory / dataset name.
        max_clips: keep at most this many.
        split: folder split or dataset split (None: `test` when present, else everything / the first split).
    """
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            name = split or ("test" if "test" in ds else next(iter(ds)))
            if name not in ds:
                raise ValueError(f"split {name!r} not in dataset splits {list(ds)}")
            ds = ds[name]
        return load_dataset_clips(ds, max_clips)
    if path.exists():
        return load_folder_clips(path, max_clips, split)
    from datasets import load_dataset

    ds = load_dataset(str(source), split=split or "test")
    return load_dataset_clips(ds, max_clips)
