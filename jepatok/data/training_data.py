"""Codec training data: audio folders or HF datasets -> random crops, augmentation, length-bucketed batches.

The pipeline follows the authors' trainer (arXiv 2512.07168 §3.1): mono audio resampled to the codec rate,
random crops of at most `crop_seconds`, gain x U(0.8, 1.2) with p = 0.3 and Gaussian noise (sigma 1e-3)
with p = 0.2, clamped to [-1, 1]. Batches are padded to the longest clip (at least `min_pad_seconds`) and
rounded up to a multiple of the hop, with a `padding_mask` (the reference code has none).

Determinism (exact resume): the sampler yields `(epoch, index)` keys and every random choice for an item
(crop offset, gain, noise) comes from a generator seeded with (seed, epoch, index); the batch order of an
epoch is a function of (seed, epoch). A trainer that knows how many micro-batches it consumed can restart
at exactly the next one without replaying the data.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .audio import AudioReadError, list_audio_files, resample, to_mono


@dataclass
class AugmentConfig:
    """Waveform augmentation (paper defaults; set the probabilities to 0 to disable).

    Args:
        gain_prob (`float`, defaults to 0.3): Probability of a random gain.
        gain_range (`tuple[float, float]`, defaults to (0.8, 1.2)): Uniform gain range.
        noise_prob (`float`, defaults to 0.2): Probability of additive Gaussian noise.
        noise_std (`float`, defaults to 1e-3): Noise standard deviation.
    """

    gain_prob: float = 0.3
    gain_range: tuple[float, float] = (0.8, 1.2)
    noise_prob: float = 0.2
    noise_std: float = 1e-3


# ----------------------------------------------------------------------------------------------------
# Sources: an indexable list of clips with (optional) durations
# ----------------------------------------------------------------------------------------------------
@dataclass
class AudioSource:
    """Clips to train on. `items[i]` is a file path or a dataset row index; `durations[i]` in s (or None)."""

    kind: str  # "files" or "dataset"
    items: list
    durations: list[float | None]
    dataset: object | None = None  # datasets.Dataset when kind == "dataset"
    audio_column: str | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.items)


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _find_audio_column(ds, audio_column: str | None) -> str:
    from datasets import Audio

    if audio_column is not None:
        if audio_column not in ds.column_names:
            raise ValueError(f"audio column {audio_column!r} not in dataset columns {ds.column_names}")
        return audio_column
    for name, feature in ds.features.items():
        if isinstance(feature, Audio):
            return name
    raise ValueError(f"no Audio column in dataset (columns: {ds.column_names}); pass audio_column=")


def _dataset_source(ds, audio_column: str | None, description: str) -> AudioSource:
    from datasets import Audio

    column = _find_audio_column(ds, audio_column)
    ds = ds.cast_column(column, Audio(decode=False))  # decode ourselves with soundfile (no torchcodec)
    durations = list(ds["duration"]) if "duration" in ds.column_names else [None] * len(ds)
    return AudioSource("dataset", list(range(len(ds))), durations, ds, column, description)


def load_audio_source(
    source: str | os.PathLike,
    split: str = "train",
    audio_column: str | None = None,
    min_seconds: float = 0.0,
) -> AudioSource:
    """Resolve SOURCE (audio folder, `save_to_disk` dataset directory, or HF dataset name) into clips.

    A folder with a `split` sub-folder (the corpus builder's train/validation/test layout) uses that
    sub-folder; otherwise the whole folder is searched recursively. Clips with a known duration below
    `min_seconds` are dropped.

    Args:
        source: Folder, dataset directory or dataset name.
        split (`str`, defaults to "train"): Split / sub-folder to use.
        audio_column (`str`, *optional*): Audio column of a dataset (default: the first `Audio` feature).
        min_seconds (`float`, defaults to 0): Minimum clip duration.
    """
    path = Path(source)
    if path.is_dir() and _is_saved_dataset(path):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"dataset at {str(path)!r} has splits {list(ds)}, not {split!r}")
            ds = ds[split]
        src = _dataset_source(ds, audio_column, f"dataset {path}")
    elif path.exists():
        root = path / split if (path / split).is_dir() else path
        files = list_audio_files(root)
        durations: list[float | None] = []
        for f in files:
            try:
                info = sf.info(str(f))
                durations.append(info.frames / info.samplerate)
            except Exception as err:  # soundfile raises several types
                raise AudioReadError(f"cannot read audio header of {str(f)!r}: {err}") from err
        src = AudioSource("files", files, durations, description=f"folder {root}")
    else:
        if os.sep in str(source) or str(source).startswith("."):
            raise FileNotFoundError(f"data source {str(source)!r} does not exist")
        from datasets import load_dataset

        ds = load_dataset(str(source), split=split)
        src = _dataset_source(ds, audio_column, f"hub dataset {source}")
    if min_seconds > 0:
        keep = [i for i, d in enumerate(src.durations) if d is None or d >= min_seconds]
        src.items = [src.items[i] for i in keep]
        src.durations = [src.durations[i] for i in keep]
    if len(src) == 0:
        raise ValueError(f"no usable audio in {src.description or source} (min_seconds={min_seconds})")
    return src


# ----------------------------------------------------------------------------------------------------
# Dataset: (epoch, index) -> cropped, augmented waveform
# ----------------------------------------------------------------------------------------------------
def _item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + index) % (2**63 - 1))


class AudioTrainingDataset(torch.utils.data.Dataset):
    """Map-style dataset over `AudioSource`; keys are `(epoch, index)` pairs from `BucketBatchSampler`.

    Args:
        source (`AudioSource`): The clips.
        sampling_rate (`int`): Codec rate to resample to.
        crop_seconds (`float`): Maximum clip length (random crop).
        augment (`AugmentConfig`, *optional*): Augmentation (None = none).
        seed (`int`, defaults to 0): Base seed of all per-item randomness.
    """

    def __init__(
        self,
        source: AudioSource,
        sampling_rate: int,
        crop_seconds: float,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        if crop_seconds <= 0:
            raise ValueError(f"crop_seconds must be positive, got {crop_seconds}")
        self.source = source
        self.sampling_rate = int(sampling_rate)
        self.crop_seconds = float(crop_seconds)
        self.augment = augment
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.source)

    def lengths(self) -> list[float]:
        """Expected clip lengths after cropping (s), for bucketing; unknown durations count as full crops."""
        return [
            min(d, self.crop_seconds) if d is not None else self.crop_seconds for d in self.source.durations
        ]

    def _read(self, i: int, gen: torch.Generator) -> np.ndarray:
        """Read clip i, cropping before resampling when the file allows seeking."""
        item = self.source.items[i]
        if self.source.kind == "files":
            info = sf.info(str(item))
            crop = int(math.ceil(self.crop_seconds * info.samplerate))
            start = 0
            if info.frames > crop:
                start = int(torch.randint(0, info.frames - crop + 1, (1,), generator=gen))
            audio, sr = sf.read(str(item), start=start, frames=min(crop, info.frames), dtype="float32")
            return self._finish(to_mono(audio), sr, gen, cropped=True)
        row = self.source.dataset[item][self.source.audio_column]
        data = row.get("bytes") if isinstance(row, dict) else None
        target = io.BytesIO(data) if data else (row.get("path") if isinstance(row, dict) else None)
        if target is None:
            raise AudioReadError(f"dataset row {item} has neither audio bytes nor a path")
        try:
            audio, sr = sf.read(target, dtype="float32")
        except Exception as err:  # soundfile raises several types
            raise AudioReadError(f"cannot decode dataset row {item}: {err}") from err
        return self._finish(to_mono(audio), sr, gen, cropped=False)

    def _finish(self, audio: np.ndarray, sr: int, gen: torch.Generator, cropped: bool) -> np.ndarray:
        if audio.size == 0:
            raise AudioReadError("empty audio clip")
        audio = resample(audio, sr, self.sampling_rate)
        crop = int(math.ceil(self.crop_seconds * self.sampling_rate))
        if audio.shape[0] > crop:
            start = 0 if cropped else int(torch.randint(0, audio.shape[0] - crop + 1, (1,), generator=gen))
            audio = audio[start : start + crop]
        return np.ascontiguousarray(audio, dtype=np.float32)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, i = key
        gen = _item_generator(self.seed, epoch, i)
        wav = torch.from_numpy(self._read(i, gen))
        aug = self.augment
        if aug is not None:
            u_gain, u_noise, u = torch.rand(3, generator=gen).tolist()
            if u_gain < aug.gain_prob:
                wav = wav * (aug.gain_range[0] + (aug.gain_range[1] - aug.gain_range[0]) * u)
            if u_noise < aug.noise_prob:
                wav = (wav + aug.noise_std * torch.randn(wav.shape, generator=gen)).clamp(-1.0, 1.0)
        return wav  # [L] float32


# ----------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------
@dataclass
class AudioBatch:
    """A padded batch of waveforms."""

    input_values: torch.Tensor  # [B, 1, L] float32, L a multiple of the hop
    padding_mask: torch.Tensor  # [B, L] long, 1 = real sample
    lengths: torch.Tensor  # [B] long, real samples per clip

    def to(self, device) -> AudioBatch:
        return AudioBatch(self.input_values.to(device), self.padding_mask.to(device), self.lengths.to(device))

    @property
    def num_samples(self) -> int:
        return int(self.lengths.sum())


@dataclass
class AudioCollator:
    """Pad to the longest clip (at least `min_samples`), rounded up to a multiple of `hop_length`."""

    hop_length: int
    min_samples: int = 0

    def __call__(self, clips: list[torch.Tensor]) -> AudioBatch:
        if not clips:
            raise ValueError("cannot collate an empty batch")
        longest = max(max(int(c.shape[-1]) for c in clips), self.min_samples, 1)
        length = int(math.ceil(longest / self.hop_length) * self.hop_length)
        values = torch.zeros(len(clips), 1, length)
        mask = torch.zeros(len(clips), length, dtype=torch.long)
        for b, clip in enumerate(clips):
            values[b, 0, : clip.shape[-1]] = clip
            mask[b, : clip.shape[-1]] = 1
        lengths = torch.tensor([int(c.shape[-1]) for c in clips], dtype=torch.long)
        return AudioBatch(values, mask, lengths)


@dataclass
class BucketBatchSampler:
    """Deterministic per-epoch batches of `(epoch, index)` keys for one process of `num_replicas`.

    Each epoch is a seeded permutation; with `bucket=True` windows of `bucket_window` global batches are
    sorted by length so a batch holds clips of similar length (less padding), and the batch order is then
    shuffled. Every process gets the same number of batches (global batches are dropped when incomplete;
    a source smaller than one global batch is repeated).

    Args:
        lengths (`list[float]`): Clip lengths used for bucketing.
        batch_size (`int`): Clips per process per batch.
        num_replicas (`int`, defaults to 1), rank (`int`, defaults to 0): Data-parallel layout.
        seed (`int`, defaults to 0): Seed of the epoch permutations.
        bucket (`bool`, defaults to True): Length bucketing on/off.
        bucket_window (`int`, defaults to 32): Global batches per sorted window.
    """

    lengths: list[float]
    batch_size: int
    num_replicas: int = 1
    rank: int = 0
    seed: int = 0
    bucket: bool = True
    bucket_window: int = 32
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_replicas - 1}")
        if not self.lengths:
            raise ValueError("BucketBatchSampler needs at least one clip")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_replicas

    def __len__(self) -> int:
        n = max(len(self.lengths), self.global_batch)
        return n // self.global_batch

    def batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This process's batches of epoch `epoch`."""
        if epoch in self._cache:
            return self._cache[epoch]
        gen = torch.Generator().manual_seed(self.seed * 10_007 + epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=gen).tolist()
        while len(order) < self.global_batch:
            order += torch.randperm(n, generator=gen).tolist()
        usable = (len(order) // self.global_batch) * self.global_batch
        order = order[:usable]
        if self.bucket:
            window = self.global_batch * self.bucket_window
            order = [
                i
                for s in range(0, usable, window)
                for i in sorted(order[s : s + window], key=lambda j: self.lengths[j])
            ]
        global_batches = [order[s : s + self.global_batch] for s in range(0, usable, self.global_batch)]
        perm = torch.randperm(len(global_batches), generator=gen).tolist()
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        mine = [[(epoch, i) for i in global_batches[p][lo:hi]] for p in perm]
        self._cache = {epoch: mine}
        return mine


def iterate_batches(
    dataset: AudioTrainingDataset,
    sampler: BucketBatchSampler,
    collator: AudioCollator,
    start: int = 0,
    num_workers: int = 0,
):
    """Endless stream of `AudioBatch`es starting at global micro-batch position `start`.

    Yields `(position, batch)`; position p is epoch p // len(sampler), batch p % len(sampler).
    """
    per_epoch = len(sampler)
    epoch, offset = divmod(start, per_epoch)
    while True:
        batches = sampler.batches(epoch)[offset:]
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collator,
            num_workers=num_workers,
            generator=torch.Generator(),  # keeps the global RNG untouched (exact resume)
        )
        for j, batch in enumerate(loader):
            yield epoch * per_epoch + offset + j, batch
        epoch, offset = epoch + 1, 0
