"""Pretrained jepatok checkpoints shipped inside the package (offline, no model hub).

Layout of a shipped checkpoint (`jepatok/pretrained/<name>/`):

    tokenizer/          JepaSpeechTokenizer.save_pretrained (spm.model, tokenizer_config.json, ...)
    tokenizer/codec/    the JepaCodecModel (config.json + model.safetensors)
    lm/                 the speech LM (LlamaForCausalLM: config.json + model.safetensors)
    phoneme_scorer/     best-of-N TTS reranker over the codec's codes (`jepatok.lm.rerank.PhonemeScorer`)
    training_voices.json  the corpus voices the checkpoint trained on and those held out of training
    README.md           model card: data, steps, wall time, measured metrics

Each folder loads with the plain `from_pretrained` classes (`JepaSpeechTokenizer` / `AutoTokenizer`,
`JepaCodecModel` / `AutoModel`, `AutoModelForCausalLM`); `load_pretrained(name)` does all of it.

    import jepatok
    tokenizer, lm = jepatok.load_pretrained("small")
    ids = tokenizer.encode_audio(wave, sampling_rate=16000)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Folder holding the shipped checkpoints (one sub-folder per name).
PRETRAINED_ROOT = Path(__file__).resolve().parent

#: Names that can be shipped (a name whose folder is missing raises `PretrainedNotFoundError`).
KNOWN_PRETRAINED = ("small",)


class PretrainedNotFoundError(FileNotFoundError):
    """A shipped checkpoint folder (or a file in it) does not exist."""


@dataclass(frozen=True)
class PretrainedPaths:
    """Where the parts of a shipped checkpoint live."""

    name: str
    root: Path  # jepatok/pretrained/<name>
    tokenizer_dir: Path  # root/tokenizer (JepaSpeechTokenizer)
    codec_dir: Path  # root/tokenizer/codec (JepaCodecModel)
    lm_dir: Path  # root/lm (LlamaForCausalLM)
    scorer_dir: Path  # root/phoneme_scorer (PhonemeScorer; optional)
    model_card: Path  # root/README.md
    voices_file: Path  # root/training_voices.json (optional)


def pretrained_paths(name: str = "small", root: str | os.PathLike | None = None) -> PretrainedPaths:
    """Paths of a shipped checkpoint, whether or not they exist.

    Args:
        name: checkpoint name (one of `KNOWN_PRETRAINED`).
        root: folder holding the checkpoints (default: the package's `jepatok/pretrained`).
    """
    if name not in KNOWN_PRETRAINED:
        raise ValueError(f"unknown pretrained checkpoint {name!r}; expected one of {list(KNOWN_PRETRAINED)}")
    base = Path(root) if root is not None else PRETRAINED_ROOT
    ckpt = base / name
    return PretrainedPaths(
        name=name,
        root=ckpt,
        tokenizer_dir=ckpt / "tokenizer",
        codec_dir=ckpt / "tokenizer" / "codec",
        lm_dir=ckpt / "lm",
        scorer_dir=ckpt / "phoneme_scorer",
        model_card=ckpt / "README.md",
        voices_file=ckpt / "training_voices.json",
    )


@dataclass(frozen=True)
class TrainingVoices:
    """The corpus voices (`jepatok.data.voices.VOICES` names) a checkpoint trained on and held out."""

    training: tuple[str, ...]
    held_out: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.training + self.held_out


def read_training_voices(name: str = "small", root: str | os.PathLike | None = None) -> TrainingVoices | None:
    """The voices recorded with a shipped checkpoint (`training_voices.json`), or None when it records none.

    Installing more corpus voices changes what `build-corpus` picks by default (its voices and the seed's
    held-out choice); evaluation sets built from these lists stay the same and keep the held-out voices unseen.

    Args:
        name: checkpoint name.
        root: folder holding the checkpoints (default: the package's).
    """
    path = pretrained_paths(name, root).voices_file
    if not path.is_file():
        return None
    expected = 'an object {"training_voices": [names], "held_out_voices": [names]}'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected {expected}") from err
    lists = {}
    for key in ("training_voices", "held_out_voices"):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(
                f"{path}: {key!r} must be a list of voice names; expected {expected}, got {data!r}"
            )
        lists[key] = tuple(value)
    if not lists["training_voices"]:
        raise ValueError(f"{path}: 'training_voices' is empty; a checkpoint trains on at least one voice")
    both = set(lists["training_voices"]) & set(lists["held_out_voices"])
    if both:
        raise ValueError(f"{path}: voices {sorted(both)} are listed as both training and held-out voices")
    return TrainingVoices(training=lists["training_voices"], held_out=lists["held_out_voices"])


def corpus_training_voices(corpus: str | os.PathLike) -> TrainingVoices:
    """The voices a `jepatok build-corpus` folder trains on (those with train audio in `summary.json`) and
    holds out (`held_out_voices.txt`); the builder sorts voices, so their order does not matter.

    Args:
        corpus: the corpus folder.
    """
    corpus = Path(corpus)
    summary, held_file = corpus / "summary.json", corpus / "held_out_voices.txt"
    for path in (summary, held_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; expected a folder written by `jepatok build-corpus`"
            )
    hours = json.loads(summary.read_text(encoding="utf-8")).get("hours_per_voice")
    if not isinstance(hours, dict):
        raise ValueError(
            f"{summary} has no 'hours_per_voice' object; expected `jepatok build-corpus`'s summary"
        )
    held = tuple(v for v in held_file.read_text(encoding="utf-8").split() if v)
    training = tuple(v for v, h in hours.items() if v not in held and float(h.get("train", 0.0)) > 0)
    return TrainingVoices(training=training, held_out=held)


def write_training_voices(voices: TrainingVoices, checkpoint_dir: str | os.PathLike) -> Path:
    """Write `training_voices.json` into a checkpoint folder (atomically); returns its path.

    Args:
        voices: e.g. `corpus_training_voices(corpus)` of the corpus the checkpoint trained on.
        checkpoint_dir: the checkpoint folder (`jepatok/pretrained/<name>` layout).
    """
    from ..lm.args import atomic_write_text

    path = Path(checkpoint_dir) / "training_voices.json"
    data = {"training_voices": list(voices.training), "held_out_voices": list(voices.held_out)}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


_REQUIRED = {
    "tokenizer_dir": ("tokenizer_config.json", "spm.model"),
    "codec_dir": ("config.json", "model.safetensors"),
    "lm_dir": ("config.json", "model.safetensors"),
}


def missing_files(paths: PretrainedPaths) -> list[str]:
    """Required files of a shipped checkpoint that do not exist (empty when it is complete).

    Args:
        paths: see `pretrained_paths`.
    """
    missing = []
    for attr, names in _REQUIRED.items():
        folder = getattr(paths, attr)
        missing += [str(folder / n) for n in names if not (folder / n).is_file()]
    return missing


def is_available(name: str = "small", root: str | os.PathLike | None = None) -> bool:
    """True when every required file of the shipped checkpoint `name` exists.

    Args:
        name: checkpoint name.
        root: folder holding the checkpoints (default: the package's).
    """
    return not missing_files(pretrained_paths(name, root))


def check_pretrained(name: str = "small", root: str | os.PathLike | None = None) -> PretrainedPaths:
    """The checkpoint's paths; raises `PretrainedNotFoundError` listing missing files when incomplete.

    Args:
        name: checkpoint name.
        root: folder holding the checkpoints (default: the package's).
    """
    paths = pretrained_paths(name, root)
    missing = missing_files(paths)
    if missing:
        raise PretrainedNotFoundError(
            f"the shipped {name!r} checkpoint is not available: missing {', '.join(missing)}. "
            "Train it (see recipes/small/README.md) and copy the tokenizer (with codec/) and the LM into "
            f"{paths.root}, or reinstall a jepatok release that ships it."
        )
    return paths


def load_pretrained(name: str = "small", device: str = "cpu", root: str | os.PathLike | None = None):
    """Load a shipped checkpoint offline: `(tokenizer, lm)`.

    The tokenizer is a `JepaSpeechTokenizer` whose codec (`tokenizer.codec`, loaded on first audio use,
    checked against the recorded hashes) is the shipped `JepaCodecModel`; the LM is a
    `LlamaForCausalLM` (or a `FrameLevelSpeechLM`, whichever the checkpoint holds) in eval mode. Nothing is downloaded (`local_files_only=True`).

    Args:
        name: checkpoint name (`"small"`).
        device: torch device for the LM.
        root: folder holding the checkpoints (default: the package's).
    """
    from ..lm.modeling import load_speech_lm
    from ..tokenizer.tokenization import JepaSpeechTokenizer

    paths = check_pretrained(name, root)
    tokenizer = JepaSpeechTokenizer.from_pretrained(str(paths.tokenizer_dir), local_files_only=True)
    lm = load_speech_lm(str(paths.lm_dir), local_files_only=True).to(device).eval()
    if lm.config.vocab_size < len(tokenizer):
        raise ValueError(
            f"shipped LM vocabulary ({lm.config.vocab_size}) is smaller than the tokenizer's ({len(tokenizer)})"
        )
    return tokenizer, lm


__all__ = [
    "KNOWN_PRETRAINED",
    "PRETRAINED_ROOT",
    "PretrainedNotFoundError",
    "PretrainedPaths",
    "TrainingVoices",
    "check_pretrained",
    "corpus_training_voices",
    "is_available",
    "load_pretrained",
    "missing_files",
    "pretrained_paths",
    "read_training_voices",
    "write_training_voices",
]
