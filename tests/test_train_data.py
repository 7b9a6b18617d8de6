"""Codec training data: sources (folder, split sub-folder, saved dataset), crops, augmentation, batching."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from _train_utils import make_audio_folder, one_thread  # noqa: F401

from jepatok.data.training_data import (
    AudioCollator,
    AudioTrainingDataset,
    AugmentConfig,
    BucketBatchSampler,
    iterate_batches,
    load_audio_source,
)


def test_folder_source_recursive_split_and_min_length(tmp_path):
    root = make_audio_folder(tmp_path / "wavs", n=4, seconds=0.15)
    src = load_audio_source(root)
    assert len(src) == 4 and src.kind == "files"
    assert sorted(round(d, 2) for d in src.durations) == [0.15, 0.17, 0.19, 0.21]
    assert len(load_audio_source(root, min_seconds=0.18)) == 2
    make_audio_folder(tmp_path / "corpus" / "train", n=2)
    make_audio_folder(tmp_path / "corpus" / "test", n=3)
    assert len(load_audio_source(tmp_path / "corpus")) == 2  # the train/ split only
    with pytest.raises(ValueError, match="no usable audio"):
        load_audio_source(root, min_seconds=5.0)
    with pytest.raises(FileNotFoundError):
        load_audio_source(str(tmp_path / "missing" / "dir"))


def test_saved_dataset_source(tmp_path):
    from datasets import Audio, Dataset

    files = make_audio_folder(tmp_path / "wavs", n=3)
    paths = sorted(str(p) for p in files.rglob("*.wav"))
    ds = Dataset.from_dict({"audio": paths, "duration": [0.2, 0.2, 0.2]}).cast_column("audio", Audio())
    ds.save_to_disk(str(tmp_path / "ds"))
    src = load_audio_source(tmp_path / "ds")
    assert src.kind == "dataset" and len(src) == 3 and src.audio_column == "audio"
    data = AudioTrainingDataset(src, 16000, crop_seconds=0.1, seed=0)
    clip = data[(0, 1)]
    assert clip.shape == (1600,)  # resampled 8 kHz -> 16 kHz, cropped to 0.1 s
    ref, _ = sf.read(paths[1], dtype="float32")
    assert float(torch.from_numpy(ref).abs().max()) > 0.3 and float(clip.abs().max()) > 0.3


def test_crops_and_augmentation_are_deterministic_per_epoch_and_index(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(str(path), np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32), 8000)
    src = load_audio_source(path)
    data = AudioTrainingDataset(
        src, 8000, crop_seconds=0.1, augment=AugmentConfig(1.0, (0.5, 0.6), 1.0, 0.01), seed=1
    )
    a, b, c = data[(0, 0)], data[(0, 0)], data[(1, 0)]
    assert a.shape == (800,) and torch.equal(a, b) and not torch.equal(a, c)
    plain = AudioTrainingDataset(src, 8000, crop_seconds=0.1, augment=None, seed=1)[(0, 0)]
    assert float(a.abs().max()) < float(plain.abs().max())  # gain <= 0.6 applied
    assert float(a.abs().max()) <= 1.0


def test_sampler_shards_buckets_and_resumes():
    lengths = [0.1 * (i % 7 + 1) for i in range(40)]
    ranks = [BucketBatchSampler(lengths, 4, num_replicas=2, rank=r, seed=3) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5
    e0 = [ranks[r].batches(0) for r in range(2)]
    seen = [i for r in range(2) for batch in e0[r] for _, i in batch]
    assert sorted(seen) == list(range(40))  # disjoint shards covering the epoch
    spread = [max(lengths[i] for _, i in b) - min(lengths[i] for _, i in b) for b in e0[0]]
    assert max(spread) <= 0.31  # bucketing groups similar lengths
    assert e0[0] == BucketBatchSampler(lengths, 4, 2, 0, seed=3).batches(0)
    assert e0[0] != ranks[0].batches(1)
    tiny = BucketBatchSampler([1.0, 1.0, 1.0], 4)
    assert len(tiny) == 1 and len(tiny.batches(0)[0]) == 4  # a small source is repeated


def test_collate_and_stream_position(tmp_path):
    batch = AudioCollator(hop_length=16, min_samples=40)([torch.ones(10), torch.ones(33)])
    assert batch.input_values.shape == (2, 1, 48) and batch.padding_mask.shape == (2, 48)
    assert batch.lengths.tolist() == [10, 33] and int(batch.padding_mask.sum()) == 43
    assert float(batch.input_values[0, 0, 10:].abs().sum()) == 0.0
    root = make_audio_folder(tmp_path / "wavs", n=6)
    src = load_audio_source(root)
    data = AudioTrainingDataset(src, 8000, 0.1, seed=0)
    sampler = BucketBatchSampler(AudioTrainingDataset(src, 8000, 0.1).lengths(), 2, seed=0)
    collate = AudioCollator(16)
    stream = iterate_batches(data, sampler, collate)
    first = [next(stream) for _ in range(5)]  # crosses the epoch boundary (3 batches per epoch)
    assert [p for p, _ in first] == [0, 1, 2, 3, 4]
    restarted = iterate_batches(data, sampler, collate, start=4)
    pos, again = next(restarted)
    assert pos == 4 and torch.equal(again.input_values, first[4][1].input_values)
