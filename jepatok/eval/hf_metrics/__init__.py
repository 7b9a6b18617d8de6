"""The evaluation metrics as Hugging Face `evaluate` modules that load from the installed package, offline.

`evaluate.load("pesq")` fetches a script from the Hub and fails offline; these modules are local files:

    import evaluate
    from jepatok.eval.hf_metrics import module_path
    pesq = evaluate.load(module_path("jepatok_pesq"))
    pesq.compute(predictions=[decoded], references=[clean], sampling_rate=16000, mode="wb")

or simply `jepatok.eval.hf_metrics.load("jepatok_pesq")`. Modules: jepatok_si_sdr, jepatok_pesq,
jepatok_stoi, jepatok_mel_distance, jepatok_mcd (signals as float lists, `sampling_rate` keyword) and
jepatok_wer (normalised WER/CER of transcripts).
"""

from __future__ import annotations

from pathlib import Path

MODULES = (
    "jepatok_si_sdr",
    "jepatok_pesq",
    "jepatok_stoi",
    "jepatok_mel_distance",
    "jepatok_mcd",
    "jepatok_wer",
)


def module_path(name: str) -> str:
    """Absolute path of the module file to pass to `evaluate.load`.

    Args:
        name: one of MODULES (the "jepatok_" prefix may be left out).
    """
    key = name if name.startswith("jepatok_") else f"jepatok_{name}"
    if key not in MODULES:
        raise ValueError(f"unknown jepatok evaluate module {name!r}; expected one of {list(MODULES)}")
    return str(Path(__file__).with_name(f"{key}.py"))


def load(name: str, **kwargs):
    """`evaluate.load` of a jepatok metric module (no Hub access).

    Args:
        name: module name (see MODULES).
        **kwargs: passed to `evaluate.load`.
    """
    import evaluate

    return evaluate.load(module_path(name), **kwargs)
