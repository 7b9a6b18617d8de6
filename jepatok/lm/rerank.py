"""Best-of-N text-to-speech: a phoneme CTC scorer over codec latents picks the candidate that spells the text.

A speech LM that barely reads its text (README, "Does the LM use its text?") still samples some candidates that
follow it better than others. `PhonemeScorer` is a small recogniser trained on the codec's own codes (the
`jepatok probe-phonemes` architecture: the quantized latents of each 0.4 s frame spread over `upsample` sub-steps,
a bidirectional GRU, CTC over espeak-ng IPA phoneme symbols). For a candidate's codes and the prompt's text it
gives the CTC negative log-likelihood of the text's phonemes: how well the codes spell the text. The generation
pipeline (`num_candidates=N`) samples N candidates per TTS prompt and keeps the one with the lowest score. No ASR
model is involved, so Whisper-based WERs (`eval-tts`) stay an independent measure.

A scorer belongs to one codec's codes: its config records the codec's `codes_hash`, and `check_codec` refuses
another codec. Train and save one with

    jepatok probe-phonemes --codec TOKENIZER_DIR --data PRETOK_DIR --no-control --save-scorer OUT_DIR

Files: `config.json` (architecture, phoneme symbols, `codes_hash`) and `model.safetensors` (probe weights and
the feature mean/std the probe was trained with).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..eval.phonetic_probe import PhonemeProbe, edit_distance, greedy_ctc, phoneme_symbols

#: What `score_codes` measures: the CTC NLL of the text's phonemes, or the phoneme error rate of the greedy CTC
#: transcript against them.
SCORE_METRICS = ("nll", "per")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SCORER_TYPE = "jepatok_phoneme_scorer"


class PhonemeScorer(nn.Module):
    """CTC phoneme scorer over a codec's quantized latents.

    Args:
        dim: latent width (the codec's FSQ dimensions per frame).
        symbols: phoneme symbols; symbol k has CTC id k + 1 (0 is the blank).
        hidden / upsample: `PhonemeProbe` settings.
        codes_hash: `codec_identity(codec)["codes_hash"]` of the codec whose codes it was trained on.
    """

    def __init__(
        self,
        dim: int,
        symbols: list[str],
        hidden: int = 128,
        upsample: int = 10,
        codes_hash: str | None = None,
    ):
        super().__init__()
        if not symbols:
            raise ValueError("a PhonemeScorer needs at least one phoneme symbol")
        self.dim, self.symbols, self.codes_hash = int(dim), list(symbols), codes_hash
        self.symbol_ids = {s: k + 1 for k, s in enumerate(self.symbols)}
        self.probe = PhonemeProbe(self.dim, len(self.symbols), hidden, upsample)
        self.register_buffer("feature_mean", torch.zeros(self.dim))
        self.register_buffer("feature_std", torch.ones(self.dim))
        self.eval()

    @classmethod
    def from_probe(
        cls,
        probe: PhonemeProbe,
        mean: torch.Tensor,
        std: torch.Tensor,
        symbols: dict[str, int],
        codes_hash: str | None,
    ) -> PhonemeScorer:
        """Wrap a probe trained by `fit_probe` (its 1-based `symbols` map and feature normalisation)."""
        ordered = [s for s, _ in sorted(symbols.items(), key=lambda kv: kv[1])]
        if [symbols[s] for s in ordered] != list(range(1, len(ordered) + 1)):
            raise ValueError("symbol ids must be 1..n without gaps")
        scorer = cls(probe.spread.in_features, ordered, probe.hidden, probe.upsample, codes_hash)
        scorer.probe.load_state_dict(probe.state_dict())
        scorer.feature_mean.copy_(mean)
        scorer.feature_std.copy_(std)
        return scorer

    # --- scoring -----------------------------------------------------------------------------------
    def target_ids(self, text: str) -> list[int]:
        """The text's phoneme ids (espeak-ng IPA; symbols the scorer never saw are left out)."""
        from ..tokenizer.phonemes import phonemize

        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the scorer needs a non-empty text, got {text!r}")
        ids = [self.symbol_ids[s] for s in phoneme_symbols(phonemize(text)) if s in self.symbol_ids]
        if not ids:
            raise ValueError(f"no known phoneme in {text!r}: nothing to score against")
        return ids

    @torch.no_grad()
    def nll(self, latents: list[torch.Tensor], targets: list[list[int]]) -> torch.Tensor:
        """CTC negative log-likelihood (nats) of each target under its latents [T_i, D]; +inf where the latents
        are too short to hold the target (an empty candidate included)."""
        if len(latents) != len(targets):
            raise ValueError(f"{len(latents)} latent sequences for {len(targets)} targets")
        out = torch.full((len(latents),), math.inf)
        keep = [i for i, x in enumerate(latents) if len(x)]
        if not keep:
            return out
        for i in keep:
            if latents[i].dim() != 2 or latents[i].shape[-1] != self.dim:
                raise ValueError(f"latents must be [T, {self.dim}], got {list(latents[i].shape)}")
        lengths = torch.tensor([len(latents[i]) for i in keep])
        x = torch.zeros(len(keep), int(lengths.max()), self.dim)
        for k, i in enumerate(keep):
            x[k, : lengths[k]] = (latents[i].float().cpu() - self.feature_mean) / self.feature_std
        lp = self.probe(x).transpose(0, 1)  # [T', B, C]
        ys = [targets[i] for i in keep]
        y = torch.tensor([s for t in ys for s in t], dtype=torch.long)
        loss = nn.functional.ctc_loss(
            lp,
            y,
            lengths * self.probe.upsample,
            torch.tensor([len(t) for t in ys]),
            blank=0,
            reduction="none",
            zero_infinity=False,
        )
        out[keep] = loss.float()
        return out

    @torch.no_grad()
    def phoneme_error_rate(self, latents: list[torch.Tensor], targets: list[list[int]]) -> torch.Tensor:
        """Each latent sequence's greedy CTC transcript scored against its target: edits / target phonemes
        (1.0 for an empty sequence, which transcribes as nothing)."""
        if len(latents) != len(targets):
            raise ValueError(f"{len(latents)} latent sequences for {len(targets)} targets")
        out = torch.ones(len(latents))
        for i, (x, target) in enumerate(zip(latents, targets)):
            if not len(x):
                continue
            if x.dim() != 2 or x.shape[-1] != self.dim:
                raise ValueError(f"latents must be [T, {self.dim}], got {list(x.shape)}")
            lp = self.log_probs(x)
            out[i] = edit_distance(target, greedy_ctc(lp, lp.shape[0])) / len(target)
        return out

    @torch.no_grad()
    def log_probs(self, latents: torch.Tensor) -> torch.Tensor:
        """CTC log-probabilities [T * upsample, symbols + 1] of one latent sequence [T, D] (index 0 = blank)."""
        return self.probe(((latents.float().cpu() - self.feature_mean) / self.feature_std)[None])[0]

    @torch.no_grad()
    def code_latents(self, codec, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """The codec's quantized latents [T_i, D] of packed codes [T_i, G] (an empty candidate gives [0, D])."""
        return [
            codec.dequantize(c.long().reshape(1, -1, c.shape[-1])).float()[0]
            if c.numel()
            else torch.zeros(0, self.dim)
            for c in codes
        ]

    def score_codes(self, codec, codes: list[torch.Tensor], text: str, metric: str = "nll") -> torch.Tensor:
        """How badly each candidate's packed codes [T_i, G] spell `text` (lower is better): the CTC NLL of its
        phonemes (`metric="nll"`) or the phoneme error rate of the greedy transcript (`"per"`)."""
        if metric not in SCORE_METRICS:
            raise ValueError(f"metric must be one of {SCORE_METRICS}, got {metric!r}")
        self.check_codec(codec)
        target = self.target_ids(text)
        score = self.nll if metric == "nll" else self.phoneme_error_rate
        return score(self.code_latents(codec, codes), [target] * len(codes))

    def check_codec(self, codec) -> None:
        """Raise unless `codec` makes the codes this scorer was trained on."""
        from ..tokenizer.modeling import codec_identity

        if self.codes_hash is None:
            return
        found = codec_identity(codec)["codes_hash"]
        if found != self.codes_hash:
            raise ValueError(
                f"the phoneme scorer was trained on codes of codec {self.codes_hash[:12]}, but the tokenizer's "
                f"codec makes codes {found[:12]}: train a scorer for this codec (jepatok probe-phonemes "
                "--save-scorer)"
            )

    # --- files -------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` + `model.safetensors` (into a temporary folder first, then moved into place)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
        try:
            config = {
                "model_type": SCORER_TYPE,
                "dim": self.dim,
                "hidden": self.probe.hidden,
                "upsample": self.probe.upsample,
                "symbols": self.symbols,
                "codes_hash": self.codes_hash,
            }
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
            state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME))
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            os.chmod(tmp, 0o755)
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> PhonemeScorer:
        """Load a scorer written by `save_pretrained` (safetensors only)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"{str(directory)!r} holds no phoneme scorer ({CONFIG_NAME} is missing)")
        config = json.loads(config_path.read_text())
        if config.get("model_type") != SCORER_TYPE:
            raise ValueError(
                f"{config_path} is not a phoneme scorer config (model_type {config.get('model_type')!r}, "
                f"expected {SCORER_TYPE!r})"
            )
        scorer = cls(
            config["dim"], config["symbols"], config["hidden"], config["upsample"], config.get("codes_hash")
        )
        state = load_file(str(directory / WEIGHTS_NAME))
        scorer.load_state_dict(state)  # strict: a missing or extra tensor is an error
        return scorer.eval()


def best_of_n_settings(num_candidates: int, phoneme_scorer=None, rerank_metric: str = "per") -> dict:
    """The pipeline's best-of-N arguments with the scorer loaded once: `{}` for one candidate, else
    `num_candidates`, `phoneme_scorer` (a `PhonemeScorer`) and `rerank_metric`. Raises when N > 1 has no scorer."""
    if num_candidates == 1:
        return {}
    if phoneme_scorer is None:
        raise ValueError(
            "num_candidates > 1 needs a phoneme_scorer (a PhonemeScorer, its directory, or 'small')"
        )
    return {
        "num_candidates": num_candidates,
        "phoneme_scorer": load_phoneme_scorer(phoneme_scorer),
        "rerank_metric": rerank_metric,
    }


def load_phoneme_scorer(scorer: str | os.PathLike | PhonemeScorer) -> PhonemeScorer:
    """A `PhonemeScorer` from an instance, a directory written by `save_pretrained`, or a shipped checkpoint's
    name (`"small"`: `jepatok/pretrained/small/phoneme_scorer`)."""
    if isinstance(scorer, PhonemeScorer):
        return scorer
    from ..pretrained import KNOWN_PRETRAINED, pretrained_paths

    if isinstance(scorer, str) and scorer in KNOWN_PRETRAINED and not Path(scorer).exists():
        return PhonemeScorer.from_pretrained(pretrained_paths(scorer).scorer_dir)
    return PhonemeScorer.from_pretrained(scorer)
