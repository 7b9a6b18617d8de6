"""Run configuration for speech-LM training: `LMTrainArgs`, built from a recipe YAML plus `key=value` overrides.

Recipes live in `recipes/lm/` (`tiny`, `small`, `base`); a recipe may name a parent with `extends:` (a base
YAML plus small overlays). The architecture (preset + overrides) is saved with the weights in `config.json`;
everything else here is run configuration and is written to `OUTPUT_DIR/train_args.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import TTS_LAYOUTS

RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "lm"


@dataclass
class LMTrainArgs:
    """Speech-LM run configuration (see recipes/lm/*.yaml).

    Args:
        architecture (str, "flat"): "flat" (a `LlamaForCausalLM` stepping once per token: 19 steps per codec
            frame) or "frame" (`FrameLevelSpeechLM`: the backbone steps once per frame, a depth transformer
            predicts the frame's 19 values). In frame mode `block_size` counts steps (text tokens + frames), one
            example per batch row, and `max_eval_blocks` caps the evaluation examples.
        frame_value_split (int, 128): the frame LM's `value_split` (each slot value predicted as value // S then
            value % S; 0 = one softmax over all values).
        frame_value_radix (int, 0): R > 0 = the frame LM works on the base-R digits of each slot value (its
            `value_radix`: one-hot FSQ digits in, digit-by-digit 4-way softmaxes out); replaces
            `frame_value_split`. 4 for the `small` codec.
        frame_input_dropout (float, 0.0): the frame LM's `frame_dropout`: in training, each frame input of a TTS
            row is replaced by a learned mask vector with this probability, so the LM has to read its text
            (added to an `init_from` model that lacks it); 0 = off.
        frame_align_weight (float, 0.0): weight of the frame LM's guided attention loss (`align_layer`: the
            first head of backbone layer `frame_align_layer` is pulled toward the text-speech diagonal in TTS
            rows); 0 = off. Evaluation metrics never include it.
        frame_align_layer (int, 2): the backbone layer of that head.
        frame_ctc_weight (float, 0.0): weight of the frame LM's speech-to-text CTC loss (per text token; the
            model gets a `ctc_substeps` head, added to an `init_from` model that has none); 0 = off.
        frame_ctc_substeps (int, 8): CTC symbols per frame (a 400 ms frame spans up to ~6 phoneme pieces).
        model_preset (str, "tiny"): LM architecture preset (`tiny`, `small`, `base`; the frame LM's backbone).
        model_overrides (dict, {}): LlamaConfig fields replacing the preset's values.
        init_from (str | None, None): start from a saved LM directory instead of random init (fine-tuning/LoRA).
        init_from_other_codec (bool, False): let `init_from` be an LM trained on another codec's tokens (same id
            layout: vocabulary, audio offset, slots); a warm start when a codec's codes change. The saved LM
            records the new tokenizer's codec.
        sequence_mode (str, "both"): "tts", "continuation" or "both".
        mask_text_labels (bool, True): no loss on the TTS prompt (`<bos> <text> text <audio>`).
        tts_layout (str, "prefix"): "prefix" (`<bos> <text> text <audio> audio <eos>`) or "interleaved": each text
            piece also comes inside the audio part, just before the frame it is spoken in (`jepatok.lm.align`;
            needs a `text_frames` column from `jepatok align-text`); recorded in the saved LM's config, which the
            generation pipeline reads. The in-audio pieces are scored, the prefix is not.
        block_size (int, 512): tokens per packed block.
        per_device_batch_size (int, 8): blocks per micro-batch on each process.
        gradient_accumulation_steps (int, 1): micro-batches per optimizer step.
        learning_rate (float, 3e-4): peak learning rate.
        min_lr_ratio (float, 0.1): final LR of the cosine as a fraction of the peak.
        warmup_steps (int, 100): linear warmup steps.
        weight_decay (float, 0.1): AdamW weight decay on matrices (not on norms/biases).
        adam_beta1 (float, 0.9), adam_beta2 (float, 0.95), adam_eps (float, 1e-8): AdamW.
        max_grad_norm (float, 1.0): gradient clipping (0 disables).
        max_steps (int, 1000): optimizer steps (the schedule's horizon).
        logging_steps (int, 10), eval_steps (int, 200), save_steps (int, 200): intervals in steps (0 = never).
        save_total_limit (int, 3): checkpoints kept in OUTPUT_DIR/checkpoints.
        max_eval_blocks (int, 64): cap on validation blocks per evaluation.
        eval_text_gain_examples (int, 64): validation examples with text on which each evaluation also measures
            the text gain (`jepatok.lm.text_gain`: audio bits per second the text saves); 0 = off. Not measured
            for `tts_layout="interleaved"` (the measure compares prefix-layout prompts).
        eval_split (str, "validation"): dataset split to evaluate on (skipped when absent).
        mixed_precision (str, "no"): "no", "bf16" or "fp16" (Accelerate).
        seed (int, 0): init, shuffling.
        report_to (str, "tensorboard"): Accelerate tracker ("none" disables).
        lora (str | None, None): "r,alpha,targets" (see `jepatok.lm.lora.parse_lora_spec`).
        audio_digit_radix (int, 0): digit-factorized audio embeddings (`jepatok.lm.factorized`): each audio id's
            input/output embedding also gets the sum of learned vectors of its base-radix digits (4 for 4-level
            FSQ), shared by all ids; folded into plain weights when saved. 0 = off.
        data (str), tokenizer (str), output_dir (str): paths (from the command line).
    """

    architecture: str = "flat"
    frame_value_split: int = 128
    frame_value_radix: int = 0
    frame_input_dropout: float = 0.0
    frame_align_weight: float = 0.0
    frame_align_layer: int = 2
    frame_ctc_weight: float = 0.0
    frame_ctc_substeps: int = 8
    model_preset: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    init_from: str | None = None
    init_from_other_codec: bool = False
    sequence_mode: str = "both"
    mask_text_labels: bool = True
    tts_layout: str = "prefix"
    block_size: int = 512
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    logging_steps: int = 10
    eval_steps: int = 200
    save_steps: int = 200
    save_total_limit: int = 3
    max_eval_blocks: int = 64
    eval_text_gain_examples: int = 64
    eval_split: str = "validation"
    mixed_precision: str = "no"
    seed: int = 0
    report_to: str = "tensorboard"
    lora: str | None = None
    audio_digit_radix: int = 0
    data: str = ""
    tokenizer: str = ""
    output_dir: str = ""

    def __post_init__(self):
        positive = ("block_size", "per_device_batch_size", "gradient_accumulation_steps", "max_steps")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        nonnegative = ("warmup_steps", "logging_steps", "eval_steps", "save_steps", "save_total_limit")
        for name in (*nonnegative, "eval_text_gain_examples"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.sequence_mode not in ("tts", "continuation", "both"):
            raise ValueError(f"sequence_mode must be tts, continuation or both, got {self.sequence_mode!r}")
        if self.tts_layout not in TTS_LAYOUTS:
            raise ValueError(f"tts_layout must be one of {TTS_LAYOUTS}, got {self.tts_layout!r}")
        if self.tts_layout == "interleaved" and self.architecture != "flat":
            raise ValueError("tts_layout=interleaved is a flat-LM layout; architecture=frame needs prefix")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"model_overrides must be a mapping, got {self.model_overrides!r}")
        if self.audio_digit_radix != 0 and self.audio_digit_radix < 2:
            raise ValueError(f"audio_digit_radix must be 0 (off) or >= 2, got {self.audio_digit_radix}")
        if not 0.0 <= self.frame_input_dropout < 1.0:
            raise ValueError(f"frame_input_dropout must be in [0, 1), got {self.frame_input_dropout}")
        if self.frame_value_radix < 0 or self.frame_value_radix == 1:
            raise ValueError(f"frame_value_radix must be 0 (off) or >= 2, got {self.frame_value_radix}")
        if self.architecture not in ("flat", "frame"):
            raise ValueError(f"architecture must be flat or frame, got {self.architecture!r}")
        if self.architecture == "frame":
            unsupported = {
                "audio_digit_radix": self.audio_digit_radix,
                "lora": self.lora,
                "init_from_other_codec": self.init_from_other_codec,
            }
            used = sorted(k for k, v in unsupported.items() if v)
            if used:
                raise ValueError(f"architecture=frame does not support {used} (flat LM options)")
            if not self.mask_text_labels:
                raise ValueError(
                    "architecture=frame never scores the text prompt: mask_text_labels must be true"
                )
        if self.audio_digit_radix and self.lora:
            raise ValueError(
                "audio_digit_radix trains the embedding tables, which LoRA freezes; use one or the other"
            )

    @classmethod
    def from_recipe(cls, recipe: str, overrides: list[str] | None = None, **values: Any) -> LMTrainArgs:
        """Args: recipe: name in recipes/lm or a YAML path; overrides: "key=value" strings (YAML values,
        dotted keys for dicts, e.g. `model_overrides.num_hidden_layers=4`); **values: explicit fields (CLI)."""
        data = load_recipe(recipe)
        for item in overrides or []:
            key, value = parse_override(item)
            _set_dotted(data, key, value)
        data.update({k: v for k, v in values.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known options: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the args as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def load_recipe(recipe: str) -> dict[str, Any]:
    """A recipe as a dict, with its `extends:` chain resolved. Args: recipe: a name in recipes/lm or a path."""
    path = Path(recipe)
    if not path.suffix:
        path = RECIPE_DIR / f"{recipe}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")) if RECIPE_DIR.is_dir() else []
        raise FileNotFoundError(f"recipe {recipe!r} not found (looked for {path}); available: {names}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    # A bare name ("tiny") is a recipe of recipes/lm; a file name is relative to the overlay's folder.
    base = load_recipe(parent if not Path(parent).suffix else str(path.parent / parent))
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def parse_override(item: str) -> tuple[str, Any]:
    """ "key=value" -> (key, YAML-parsed value)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override {item!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {key!r}: {part!r} is not a mapping")
    node[parts[-1]] = value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Coerce YAML scalars to the field's type (e.g. 3e-4 read as a string by YAML 1.1, ints for floats)."""
    if value is None:
        return None
    target = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        target = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if target is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if target in (int, float):
            return target(value)
        if target is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"option {name}={value!r} is not a valid {getattr(target, '__name__', target)}"
        ) from None
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and os.replace.

    The file gets mode 0644 like a plain write (mkstemp's temporary files are 0600: shipped or shared files
    would be unreadable to other users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def add_rerank_arguments(parser) -> None:
    """Best-of-N text-to-speech options shared by `jepatok generate` and `jepatok eval-tts` (`jepatok.lm.rerank`)."""
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=1,
        help="best-of-N text to speech: sample N candidates per text, keep the phoneme scorer's first (default 1)",
    )
    parser.add_argument(
        "--phoneme-scorer",
        default=None,
        help="PhonemeScorer directory or 'small' (the shipped one), needed with --num-candidates > 1",
    )
    parser.add_argument(
        "--rerank-metric",
        default="per",
        choices=["per", "nll"],
        help="what ranks the candidates (default per)",
    )


def add_reading_arguments(parser) -> None:
    """The interleaved LM's reading schedule (`tts_layout="interleaved"`), shared by `jepatok generate` and
    `jepatok eval-tts`; ignored by prefix-layout LMs."""
    parser.add_argument(
        "--reading-rate",
        type=float,
        default=None,
        help="text pieces read per frame (default: the rate the interleaved LM recorded from its training data)",
    )
    parser.add_argument(
        "--reading-slack",
        type=int,
        default=None,
        help="pieces the LM may read ahead of or behind that schedule, deciding itself when (default 0; large = "
        "the LM decides alone)",
    )
