"""LoRA adaptation of a speech LM with peft, keeping the audio-token embeddings and output head trainable.

peft's silent failure for new-token vocabularies: a LoRA on attention/MLP projections leaves `embed_tokens`
and `lm_head` frozen, so the embeddings of audio tokens never adapt to a new voice. Here both are listed in
`modules_to_save` (trainable full copies inside the adapter), `check_audio_embeddings_trainable` asserts it,
and `merge_lora` folds everything back into a plain `LlamaForCausalLM` for `save_pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
EMBEDDING_MODULES = ("embed_tokens", "lm_head")


@dataclass(frozen=True)
class LoraSpec:
    """Parsed `--lora r,alpha,targets`.

    Args:
        r: LoRA rank.
        alpha: LoRA alpha (scaling = alpha / r).
        targets: module names to adapt (e.g. q_proj, v_proj).
    """

    r: int
    alpha: float
    targets: tuple[str, ...] = DEFAULT_TARGETS


def parse_lora_spec(spec: str) -> LoraSpec:
    """Parse "r,alpha[,target,target...]"; targets may also be joined with '+' ("8,16,q_proj+v_proj").

    Args:
        spec: the option value, e.g. "8,16,q_proj,v_proj". Without targets, the attention projections are used.
    """
    parts = [p.strip() for p in str(spec).replace("+", ",").split(",") if p.strip()]
    if len(parts) < 2:
        raise ValueError(f"--lora expects 'r,alpha[,targets...]' (e.g. 8,16,q_proj,v_proj), got {spec!r}")
    try:
        r, alpha = int(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"--lora: r and alpha must be numbers, got {parts[0]!r} and {parts[1]!r}") from None
    if r < 1 or alpha <= 0:
        raise ValueError(f"--lora: need r >= 1 and alpha > 0, got r={r}, alpha={alpha}")
    targets = tuple(parts[2:]) or DEFAULT_TARGETS
    return LoraSpec(r=r, alpha=alpha, targets=targets)


def apply_lora(model: torch.nn.Module, spec: LoraSpec | str, dropout: float = 0.0):
    """Wrap `model` in a peft LoRA model whose embeddings and LM head are trainable too.

    Args:
        model: a `LlamaForCausalLM` (tied or untied embeddings).
        spec: a `LoraSpec` or its string form.
        dropout: LoRA dropout.
    Returns: the `PeftModel`.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(spec, str):
        spec = parse_lora_spec(spec)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in spec.targets if t not in names]
    if missing:
        raise ValueError(
            f"--lora targets {missing} are not modules of this model; e.g. {sorted(DEFAULT_TARGETS)}"
        )
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=dropout,
        target_modules=list(spec.targets),
        # A tied head shares the embedding matrix: saving embed_tokens covers both.
        modules_to_save=["embed_tokens"] if tied else list(EMBEDDING_MODULES),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    check_audio_embeddings_trainable(peft_model)
    return peft_model


def check_audio_embeddings_trainable(model: torch.nn.Module) -> None:
    """Raise ValueError unless the input embeddings (and an untied output head) receive gradients."""
    emb = model.get_input_embeddings()
    if not emb.weight.requires_grad:
        raise ValueError(
            "LoRA setup leaves the input embeddings frozen: audio-token embeddings would never adapt"
        )
    head = model.get_output_embeddings()
    if head is not None and not head.weight.requires_grad:
        raise ValueError("LoRA setup leaves the LM head frozen: audio-token logits would never adapt")


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold LoRA deltas and the trained embedding copies into a plain transformers model (no peft wrappers)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    merged = model.merge_and_unload()
    leftovers = [n for n, _ in merged.named_modules() if "lora_" in n or "modules_to_save" in n]
    if leftovers:
        raise RuntimeError(f"merge left peft modules behind: {leftovers[:3]}")
    return merged


def merge_and_save(model: torch.nn.Module, output_dir: str | Path) -> torch.nn.Module:
    """Merge (when LoRA) and `save_pretrained` to `output_dir` as a plain model (safetensors)."""
    merged = merge_lora(model)
    merged.save_pretrained(str(output_dir))
    return merged
