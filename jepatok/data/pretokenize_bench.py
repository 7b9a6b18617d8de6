"""Pre-tokenization throughput benchmark (audio hours per CPU hour) for the JEPA codec (arXiv 2512.07168).

`jepatok pretokenize --benchmark [--bench-preset small] [--codec DIR]` writes synthetic speech-like WAVs
(harmonic tone with vibrato and a syllable-rate envelope, plus noise) and runs the real pipeline on them:
file decoding, feature extraction, codec encode, datasets.map. CPU time counts this process and its
workers (getrusage), so the figure is per CPU core-hour whatever `num_proc` is.
"""

from __future__ import annotations

import os

import numpy as np

from .pretokenize import PretokenizeReport, pretokenize_dataset


def benchmark(
    codec_dir: str | None = None,
    preset: str = "small",
    clips: int = 24,
    seconds: float = 10.0,
    num_proc: int = 1,
    encode_batch_size: int = 8,
    num_threads: int | None = None,
) -> PretokenizeReport:
    """Pre-tokenization throughput on synthetic speech-like WAVs (harmonics + noise, 16-bit files on disk).

    Args:
        codec_dir: Codec folder; `None` builds a randomly initialised codec of `preset` (same speed).
        preset: Codec preset when `codec_dir` is None.
        clips, seconds: Amount of synthetic audio.
        num_proc, encode_batch_size, num_threads: As in `pretokenize_dataset`.
    """
    import tempfile

    from ..tokenizer.configuration import JepaCodecConfig
    from ..tokenizer.modeling import JepaCodecModel
    from .audio import write_wav
    from .sources import folder_dataset

    with tempfile.TemporaryDirectory() as tmp:
        if codec_dir is None:
            codec_dir = os.path.join(tmp, "codec")
            JepaCodecModel(JepaCodecConfig.from_preset(preset)).save_pretrained(codec_dir)
        rate = int(JepaCodecModel.config_class.from_pretrained(codec_dir).sampling_rate)
        rng = np.random.default_rng(0)
        for k in range(clips):
            t = np.arange(int(seconds * rate)) / rate
            f0 = 100 + 60 * rng.random()
            wave = sum(
                np.sin(2 * np.pi * f0 * h * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / h
                for h in range(1, 6)
            )
            wave = 0.2 * wave * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2) + 0.01 * rng.standard_normal(
                t.size
            )
            write_wav(os.path.join(tmp, "audio", f"clip{k:04d}.wav"), wave.astype(np.float32), rate)
        dataset = folder_dataset(os.path.join(tmp, "audio"))
        _, report = pretokenize_dataset(
            dataset,
            codec_dir,
            None,
            num_proc=num_proc,
            encode_batch_size=encode_batch_size,
            source="benchmark",
            num_threads=num_threads,
        )
    return report


__all__ = ["benchmark"]
