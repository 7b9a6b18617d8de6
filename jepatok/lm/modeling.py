"""Speech-LM builders: a plain `transformers` Llama-family causal LM over jepatok token ids (arXiv 2512.07168).

The LM is an ordinary `LlamaForCausalLM` (saved with `save_pretrained`, loaded with `AutoModelForCausalLM`)
whose vocabulary is `len(tokenizer)`. It never sees codec internals: only integer ids, the vocab size and the
tokenizer's special/audio ids (STYLE.md §5). What the LM was trained on is recorded under the config key
`jepatok` (codec hashes, audio offset, tokens per frame) so that generation can refuse a mismatched tokenizer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

# Architecture presets. `tiny`: tests (< 1 s a step on CPU); `small`: trainable on 2 CPU cores;
# `base`: a ~250 M-parameter GPU model (FSDP/DeepSpeed configs in recipes/accelerate/lm_*.yaml).
LM_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
    ),
    "base": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=8192,
    ),
}

# Tokenizer attributes the LM relies on (interfaces.md, "Tokenizer").
_REQUIRED_TOKENIZER_ATTRS = (
    "audio_offset",
    "tokens_per_frame",
    "slot_sizes",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "audio_token_id",
)


def lm_metadata(tokenizer) -> dict[str, Any]:
    """What an LM must agree on with its tokenizer; stored in `config.jepatok`.

    Args:
        tokenizer: a `JepaSpeechTokenizer` (or any object with the interfaces.md attributes).
    """
    missing = [a for a in _REQUIRED_TOKENIZER_ATTRS if getattr(tokenizer, a, None) is None]
    if missing:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} lacks required attributes {missing}")
    identity = dict(getattr(tokenizer, "codec_identity", None) or {})
    return {
        "vocab_size": len(tokenizer),
        "audio_offset": int(tokenizer.audio_offset),
        "tokens_per_frame": int(tokenizer.tokens_per_frame),
        "slot_sizes": [int(s) for s in tokenizer.slot_sizes],
        "frame_rate": float(getattr(tokenizer, "frame_rate", 0.0) or 0.0),
        "codec_config_hash": identity.get("config_hash"),
        "codec_weights_hash": identity.get("weights_hash"),
        "codec_codes_hash": identity.get("codes_hash"),
    }


def build_lm_config(preset: str | dict[str, Any], tokenizer, **overrides: Any) -> LlamaConfig:
    """A `LlamaConfig` sized by preset with `vocab_size = len(tokenizer)` and the tokenizer's special ids.

    Args:
        preset: a name in `LM_PRESETS` (`tiny`, `small`, `base`) or a dict of LlamaConfig architecture fields.
        tokenizer: the speech tokenizer the LM is trained with.
        **overrides: LlamaConfig fields that replace the preset's values (e.g. `num_hidden_layers=4`).
    """
    if isinstance(preset, str):
        if preset not in LM_PRESETS:
            raise ValueError(f"unknown LM preset {preset!r}; expected one of {sorted(LM_PRESETS)}")
        arch = dict(LM_PRESETS[preset])
    elif isinstance(preset, dict):
        arch = dict(preset)
    else:
        raise ValueError(
            f"preset must be a preset name or a dict of LlamaConfig fields, got {type(preset).__name__}"
        )
    arch.update(overrides)
    hidden, heads = arch.get("hidden_size"), arch.get("num_attention_heads")
    if hidden is None or heads is None or hidden % heads != 0:
        raise ValueError(f"hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads})")
    kv = arch.get("num_key_value_heads") or heads
    if heads % kv != 0:
        raise ValueError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})")
    meta = lm_metadata(tokenizer)
    return LlamaConfig(
        vocab_size=meta["vocab_size"],
        bos_token_id=int(tokenizer.bos_token_id),
        eos_token_id=int(tokenizer.eos_token_id),
        pad_token_id=int(tokenizer.pad_token_id),
        tie_word_embeddings=arch.pop("tie_word_embeddings", False),
        jepatok=meta,
        **arch,
    )


def build_lm(preset: str | dict[str, Any] | LlamaConfig, tokenizer, seed: int | None = None, **overrides):
    """A freshly initialised `LlamaForCausalLM` for `tokenizer` (float32).

    Args:
        preset: preset name, dict of LlamaConfig fields, or a ready `LlamaConfig` (checked against the tokenizer).
        tokenizer: the speech tokenizer.
        seed: when given, initialisation is reproducible (`torch.manual_seed(seed)` before building).
        **overrides: LlamaConfig field overrides (ignored when `preset` is a LlamaConfig).
    """
    if isinstance(preset, LlamaConfig):
        config = preset
    else:
        config = build_lm_config(preset, tokenizer, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    check_lm_tokenizer(model, tokenizer)
    return model


def check_lm_tokenizer(model: PreTrainedModel, tokenizer, check_codec: bool = True) -> None:
    """Raise ValueError when `model` was not built for `tokenizer` (vocab size, audio layout, codec hashes).

    Args:
        model: a causal LM (or a peft model wrapping one).
        tokenizer: the speech tokenizer to use with it.
        check_codec: also require the codec the LM was trained on to make the tokenizer's codes (False: only the
            id layout must agree, for a warm start on another codec's tokens).
    """
    config = model.config
    n_vocab = len(tokenizer)
    if config.vocab_size != n_vocab:
        raise ValueError(
            f"LM vocab_size {config.vocab_size} != len(tokenizer) {n_vocab}; wrong tokenizer for this LM"
        )
    stored = getattr(config, "jepatok", None)
    if not stored:
        return  # a plain HF LM without jepatok metadata: vocab size is all we can check
    current = lm_metadata(tokenizer)
    for key in ("audio_offset", "tokens_per_frame", "slot_sizes"):
        if stored.get(key) is not None and stored[key] != current[key]:
            raise ValueError(f"LM was trained with {key}={stored[key]} but the tokenizer has {current[key]}")
    if not check_codec:
        return
    from ..tokenizer.modeling import identity_mismatch

    def as_identity(meta: dict) -> dict:
        return {k: meta.get(f"codec_{k}") for k in ("config_hash", "weights_hash", "codes_hash")}

    diff = identity_mismatch(as_identity(stored), as_identity(current), lenient=True)
    if diff is not None:
        key, lm_value, tok_value = diff
        raise ValueError(
            f"LM was trained on tokens of a different codec: codec_{key} {lm_value} (LM) != {tok_value} (tokenizer)"
        )


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def initial_loss_estimate(vocab_size: int) -> float:
    """Cross-entropy of a uniform predictor, ln(vocab): what an untrained LM should score."""
    return math.log(vocab_size)


def load_speech_lm(path: str, **kwargs):
    """A saved jepatok speech LM of either architecture: `LlamaForCausalLM` (flat, `AutoModelForCausalLM`) or
    `FrameLevelSpeechLM` (`model_type` `jepatok_frame_lm`, `AutoModel`). `kwargs` go to `from_pretrained`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    import jepatok  # noqa: F401  (registers the frame LM with the Auto classes)

    config = AutoConfig.from_pretrained(path, local_files_only=kwargs.get("local_files_only", False))
    if config.model_type == "jepatok_frame_lm":
        return AutoModel.from_pretrained(path, **kwargs)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def _stored_metadata(model) -> dict:
    """`config.jepatok` of `model` (possibly wrapped by DDP/Accelerate), {} when absent."""
    inner = getattr(model, "module", model)
    return getattr(getattr(inner, "config", None), "jepatok", None) or {}


def tts_layout(model) -> str:
    """The TTS layout a flat LM was trained on (`config.jepatok["tts_layout"]`; "prefix" when not recorded)."""
    from .data import TTS_LAYOUTS

    layout = _stored_metadata(model).get("tts_layout", "prefix")
    if layout not in TTS_LAYOUTS:
        raise ValueError(f"the LM's config records tts_layout={layout!r}; known layouts: {TTS_LAYOUTS}")
    return layout


def lm_reading_rate(model) -> float | None:
    """The pieces per frame an interleaved LM recorded from its training data (None when not recorded)."""
    rate = _stored_metadata(model).get("pieces_per_frame")
    return None if rate is None else float(rate)


def is_frame_lm(model) -> bool:
    """Whether `model` (possibly wrapped by DDP/Accelerate) is a frame-level speech LM."""
    inner = getattr(model, "module", model)
    return getattr(getattr(inner, "config", None), "model_type", None) == "jepatok_frame_lm"
