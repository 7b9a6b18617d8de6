"""Run configuration of the codec trainers (arXiv 2512.07168 stages 1 and 2): `TrainArgs` and recipes.

The run config is kept apart from the architecture config saved with the weights: `TrainArgs` is a
dataclass whose fields carry their help text; it is built from a recipe YAML (`inherit:` chains a base file
and overlays, e.g. `recipes/stage1/small.yaml` -> `stage1/base.yaml` -> `codec_base.yaml`) plus
`key=value` overrides (YAML values; dotted keys reach nested dicts such as `codec.daam_config.enabled`),
and written to `<output_dir>/run_config.yaml`. Unknown keys and wrongly typed values are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ..data.training_data import AugmentConfig
from .configuration import JepaCodecConfig

RUN_CONFIG_FILE = "run_config.yaml"


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with help text (mutable defaults through default_factory)."""
    if isinstance(default, (dict, list)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainArgs:
    """Run configuration shared by both stages (paper values where the paper gives them)."""

    # codec architecture
    preset: str = _f("tiny", "codec preset: tiny | small | paper")
    codec: dict = _f({}, "overrides passed to JepaCodecConfig.from_preset (sub-configs as nested dicts)")
    # data
    data_split: str = _f("train", "split (or sub-folder of an audio folder) to train on")
    audio_column: str | None = _f(None, "audio column of an HF dataset (default: first Audio feature)")
    crop_seconds: float = _f(15.0, "random crop length in seconds (paper: 15)")
    min_seconds: float = _f(0.0, "drop clips shorter than this (s)")
    min_pad_seconds: float = _f(1.6, "pad each batch to at least this length (s); paper: 1.6")
    gain_prob: float = _f(0.3, "probability of a random gain")
    gain_min: float = _f(0.8, "lower bound of the random gain")
    gain_max: float = _f(1.2, "upper bound of the random gain")
    noise_prob: float = _f(0.2, "probability of additive Gaussian noise")
    noise_std: float = _f(1e-3, "std of the additive noise")
    bucket: bool = _f(True, "length bucketing of batches")
    num_workers: int = _f(0, "DataLoader worker processes")
    num_threads: int | None = _f(
        None, "torch CPU threads per process (None = torch default); 1 is often fastest on a busy CPU"
    )
    # optimisation
    seed: int = _f(0, "seed of initialisation, data order, masks and augmentation")
    max_steps: int = _f(24000, "optimizer steps (sets the cosine schedule length)")
    batch_size: int = _f(32, "clips per process per micro-batch")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    lr: float = _f(1.5e-4, "peak learning rate")
    weight_decay: float = _f(1e-3, "AdamW weight decay")
    adam_beta1: float = _f(0.8, "AdamW beta1")
    adam_beta2: float = _f(0.99, "AdamW beta2")
    warmup_steps: int = _f(1000, "linear warmup steps")
    min_lr_ratio: float = _f(0.0, "final lr of the cosine decay as a fraction of lr")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    mixed_precision: str = _f("no", "no | bf16 | fp16 (fp16 needs CUDA; uses a grad scaler)")
    # logging and checkpoints
    log_every: int = _f(50, "log metrics every N steps")
    save_every: int = _f(1000, "save a resumable checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _f(3, "checkpoints kept (oldest deleted; 0 = keep all)")
    tracker: str = _f("tensorboard", "tensorboard | none")
    halt_after_steps: int | None = _f(None, "stop after this step as if killed (tests, time-boxed jobs)")

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no | bf16 | fp16, got {self.mixed_precision!r}")
        if self.tracker not in ("tensorboard", "none"):
            raise ValueError(f"tracker must be tensorboard | none, got {self.tracker!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(
                f"num_threads must be >= 1 (or null for the torch default), got {self.num_threads}"
            )
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(
                f"need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {self.warmup_steps}, {self.min_lr_ratio}"
            )

    def codec_config(self) -> JepaCodecConfig:
        return JepaCodecConfig.from_preset(self.preset, **self.codec)

    def augment(self) -> AugmentConfig | None:
        if self.gain_prob <= 0 and self.noise_prob <= 0:
            return None
        return AugmentConfig(self.gain_prob, (self.gain_min, self.gain_max), self.noise_prob, self.noise_std)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------------
# Recipes: YAML with `inherit:` + key=value overrides
# ----------------------------------------------------------------------------------------------------
def recipes_dir() -> Path:
    """`$JEPATOK_RECIPES` or the repository's `recipes/` folder."""
    env = os.environ.get("JEPATOK_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "recipes"


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Load a recipe YAML, resolving `inherit:` (a path or list of paths relative to the file) first."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"recipe inheritance cycle through {path}")
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
    parents = data.pop("inherit", None) or []
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _deep_merge(merged, read_recipe(path.parent / parent, _seen + (path,)))
    return _deep_merge(merged, data)


def resolve_recipe(name_or_path: str, stage: str) -> Path:
    """A YAML path as given, or `recipes/<stage>/<name>.yaml`."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = recipes_dir() / stage / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(q.stem for q in (recipes_dir() / stage).glob("*.yaml") if q.stem != "base")
        raise ValueError(
            f"unknown {stage} recipe {name_or_path!r}; choose one of {known} or pass a YAML path"
        )
    return candidate


def parse_overrides(pairs: list[str]) -> dict:
    """["a=1", "codec.daam_config.enabled=false"] -> nested dict; values parsed as YAML scalars/lists."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} must look like key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {pair!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return out


def _coerce(name: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    if value is None:
        return None
    if hint is float or text in ("float", "float | None"):
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is int or text in ("int", "int | None"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def build_args(cls: type[TrainArgs], values: dict) -> TrainArgs:
    """Instantiate `cls` from a dict, rejecting unknown keys and coercing numbers."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown run-config keys {unknown}; valid keys: {sorted(names)}")
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def load_args(
    cls: type[TrainArgs], recipe: str, stage: str, overrides: list[str] | None = None, **cli
) -> TrainArgs:
    """Recipe YAML -> merged with `key=value` overrides and explicit CLI values (not None) -> `cls`."""
    values = read_recipe(resolve_recipe(recipe, stage))
    values = _deep_merge(values, parse_overrides(overrides or []))
    values.update({k: v for k, v in cli.items() if v is not None})
    return build_args(cls, values)


def write_yaml_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
