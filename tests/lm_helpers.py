"""Shared builders for the speech-LM tests (tests/test_lm_*.py): a real tiny JepaSpeechTokenizer, random codes."""

from __future__ import annotations

import functools

import pytest
import torch

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world this is a small speech test",
    "a bird in the hand is worth two in the bush",
    "every cloud has a silver lining they said",
] * 10


#: Tiny-recipe train-lm settings that finish in seconds (tests of `jepatok train-lm`).
FAST_TRAIN = dict(
    block_size=96,
    per_device_batch_size=1,
    warmup_steps=1,
    logging_steps=1,
    eval_steps=3,
    save_steps=1,
    max_eval_blocks=2,
    max_steps=3,
)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run a test module on one intra-op thread (restored afterwards).

    These tests are dominated by many small ops (generation steps, tiny LM layers); on a shared 2-core machine
    two OpenMP threads spin against each other and were measured ~5x slower than one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def speech_tokenizer(seed: int = 0):
    """The real `JepaSpeechTokenizer` on a seeded tiny codec (cached: tests must not mutate it)."""
    from jepatok import JepaCodecConfig
    from jepatok.tokenizer.modeling import JepaCodecModel
    from jepatok.tokenizer.tokenization import JepaSpeechTokenizer

    torch.manual_seed(seed)
    codec = JepaCodecModel(JepaCodecConfig.from_preset("tiny"))
    return JepaSpeechTokenizer.from_codec(codec, texts=TEXTS)


@functools.lru_cache(maxsize=2)
def ipa_speech_tokenizer(seed: int = 0):
    """Like `speech_tokenizer` with the espeak-ipa text front-end (pieces of phonemes; needs espeak-ng)."""
    from jepatok.tokenizer.tokenization import JepaSpeechTokenizer

    codec = speech_tokenizer(seed).codec
    return JepaSpeechTokenizer.from_codec(codec, texts=TEXTS, text_vocab_size=320, text_frontend="espeak-ipa")


def random_codes(tokenizer, n_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random valid packed codes [n_frames, G] (each slot within its size)."""
    sizes = torch.tensor(tokenizer.slot_sizes, dtype=torch.long)
    u = torch.rand(n_frames, len(sizes), generator=generator)
    return (u * sizes).long().clamp_max(sizes - 1)


def tiny_lm(tokenizer, seed: int = 0, **overrides):
    from jepatok.lm.modeling import build_lm

    return build_lm("tiny", tokenizer, seed=seed, **overrides)


def save_lm_dir(path, seed: int = 0):
    """A tiny LM saved with its tokenizer in one directory (what train-lm writes to OUTPUT_DIR/final)."""
    tok = speech_tokenizer()
    tiny_lm(tok, seed=seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_pretokenized(tokenizer, path, splits=None, seed: int = 0, identity: dict | None = None) -> str:
    """Save a small pre-tokenized DatasetDict (random codes, short texts) with the codec-identity header.

    Args:
        tokenizer: the speech tokenizer whose codec identity is recorded (unless `identity` is given).
        path: output folder.
        splits: {split name: number of rows}; default 24 train + 6 validation.
        seed: random codes seed.
        identity: codec identity to record instead of the tokenizer's.
    """
    from datasets import Dataset, DatasetDict, DatasetInfo

    from jepatok.data.pretokenized import make_header

    header = make_header(identity or dict(tokenizer.codec_identity), "lm-tests", {})
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, n in (splits or {"train": 24, "validation": 6}).items():
        frames = torch.randint(1, 5, (n,), generator=g).tolist()
        codes = [random_codes(tokenizer, f, g).tolist() for f in frames]
        texts = [TEXTS[i % len(TEXTS)] if i % 3 else "" for i in range(n)]
        data = {
            "audio_codes": codes,
            "text": texts,
            "duration": [f / tokenizer.frame_rate for f in frames],
        }
        out[name] = Dataset.from_dict(data, info=DatasetInfo(description=header))
    DatasetDict(out).save_to_disk(str(path))
    return str(path)


def one_hot_probe_data(n: int, g: torch.Generator):
    """`ProbeData` whose 10-dim frames each carry two symbols of 1..5 as one-hot halves (plus a little noise): a
    phoneme probe can spell them exactly (tests of `probe-phonemes` and of the phoneme scorer)."""
    from jepatok.eval.phonetic_probe import ProbeData

    feats, targets = [], []
    for _ in range(n):
        frames = int(torch.randint(2, 5, (1,), generator=g))
        sym = torch.randint(1, 6, (frames, 2), generator=g)
        f = torch.zeros(frames, 10)
        f[torch.arange(frames), sym[:, 0] - 1] = 1.0
        f[torch.arange(frames), 5 + sym[:, 1] - 1] = 1.0
        feats.append(f + 0.05 * torch.randn(frames, 10, generator=g))
        targets.append(sym.flatten().tolist())
    return ProbeData(feats, targets)
