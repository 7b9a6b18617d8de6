"""Digit-factorized audio-token embeddings for the flat speech LM (`train-lm ... audio_digit_radix=4`).

An audio id packs `group_size` FSQ indices (mixed radix, `jepatok.tokenizer.packing`): with 4-level FSQ and
groups of 7, each of the 16384 ids is 7 base-4 digits. A plain embedding table learns every id on its own,
and on a small corpus most ids are seen only a handful of times. Here the input embedding (and the output
projection, when untied) of audio id v is

    W[offset + v] + sum_j F[j, digit_j(v)]        digit_j(v) = (v // radix**j) % radix

with the per-digit vectors F [n_digits, radix, hidden] shared by every id (they start at zero, so a trained
LM is unchanged when they are added). Ids that share digits share statistics, which is what the FSQ grid
means. It is a `torch.nn.utils.parametrize` parametrization: checkpoints hold `W` and `F` (resume is exact),
and `materialize` folds `F` into plain weights before `save_pretrained`, so the saved model is an ordinary
`LlamaForCausalLM` (generation, pipelines and `from_pretrained` see no difference).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def digit_count(codebook_size: int, radix: int) -> int:
    """n with radix**n == codebook_size; ValueError when the audio vocabulary is not a power of `radix`."""
    if radix < 2:
        raise ValueError(f"audio_digit_radix must be >= 2 (the FSQ levels, e.g. 4), got {radix}")
    n, size = 0, 1
    while size < codebook_size:
        size, n = size * radix, n + 1
    if size != codebook_size:
        raise ValueError(
            f"the audio vocabulary ({codebook_size} ids) is not a power of audio_digit_radix={radix}; "
            "use the codec's FSQ level count (4 for the shipped presets)"
        )
    return n


class AudioDigitFactors(nn.Module):
    """Parametrization weight [V, H] -> weight with the per-digit vectors added to the audio rows.

    Args:
        hidden (`int`): embedding width. audio_offset (`int`): first audio id. codebook_size (`int`): audio
            ids. radix (`int`): digit base (the FSQ levels).
    """

    def __init__(self, hidden: int, audio_offset: int, codebook_size: int, radix: int):
        super().__init__()
        self.audio_offset, self.codebook_size, self.radix = audio_offset, codebook_size, radix
        n = digit_count(codebook_size, radix)
        self.factors = nn.Parameter(torch.zeros(n, radix, hidden))
        ids = torch.arange(codebook_size)
        place = radix ** torch.arange(n)
        self.register_buffer("digits", (ids.unsqueeze(1) // place) % radix, persistent=False)  # [N, n]

    def delta(self) -> torch.Tensor:
        """The per-digit sum for every audio id [codebook_size, hidden]."""
        out = self.factors[0][self.digits[:, 0]]
        for j in range(1, self.factors.shape[0]):
            out = out + self.factors[j][self.digits[:, j]]
        return out

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        a, b = self.audio_offset, self.audio_offset + self.codebook_size
        if weight.shape[0] < b:
            raise ValueError(f"embedding has {weight.shape[0]} rows but the audio ids end at {b}")
        return torch.cat([weight[:a], weight[a:b] + self.delta().to(weight.dtype), weight[b:]])


def _embeddings(model) -> list[nn.Module]:
    out = model.get_output_embeddings()
    return [model.get_input_embeddings()] + ([] if out is None else [out])


def add_audio_digit_factors(model, audio_offset: int, codebook_size: int, radix: int):
    """Register `AudioDigitFactors` on the audio rows of the model's input embedding and output projection
    (each gets its own vectors); returns the model. Tied embeddings are refused (the output would share the
    table but not the vectors)."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if out is not None and out.weight is inp.weight:
        raise ValueError("audio_digit_radix needs untied input/output embeddings (tie_word_embeddings=False)")
    for mod in _embeddings(model):
        if parametrize.is_parametrized(mod, "weight"):
            raise ValueError("the LM's embeddings are already parametrized")
        factors = AudioDigitFactors(mod.weight.shape[1], audio_offset, codebook_size, radix)
        parametrize.register_parametrization(mod, "weight", factors.to(mod.weight.device))
    return model


def materialize(model):
    """Fold the per-digit vectors into plain weights (in place; a no-op without them); returns the model."""
    for mod in _embeddings(model):
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
    return model
