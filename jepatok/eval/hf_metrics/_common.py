"""Shared pieces of the jepatok `evaluate` modules (feature schema, pairwise scoring loop).

The module files import this by absolute import (`from jepatok.eval.hf_metrics._common import ...`):
`evaluate.load` copies each module file into its own cache before importing it, so a relative import
would not resolve there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import datasets
import evaluate
import numpy as np

from jepatok.eval.metrics import MetricUnavailable


def metric_info(
    description: str, inputs_description: str, value: datasets.features.FeatureType
) -> evaluate.MetricInfo:
    """MetricInfo whose `predictions` and `references` features both have the type `value`.

    Args:
        description: the module's one-line description.
        inputs_description: the module's Args/Returns text.
        value: feature type of one prediction (and one reference).
    """
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": value, "references": value}),
    )


def signal_metric_info(description: str, inputs_description: str) -> evaluate.MetricInfo:
    """MetricInfo of a signal metric: predictions and references are float32 waveforms (float lists)."""
    return metric_info(description, inputs_description, datasets.Sequence(datasets.Value("float32")))


def text_metric_info(description: str, inputs_description: str) -> evaluate.MetricInfo:
    """MetricInfo of a transcript metric: predictions and references are strings."""
    return metric_info(description, inputs_description, datasets.Value("string"))


def score_pairs(
    key: str,
    score_fn: Callable[[np.ndarray, np.ndarray], float],
    predictions: Iterable,
    references: Iterable,
) -> dict:
    """Score each (prediction, reference) pair and summarise.

    Args:
        key: name of the mean in the result (e.g. "pesq").
        score_fn: `score_fn(reference, prediction) -> float` on float64 arrays; raises MetricUnavailable
            where a pair cannot be scored.
        predictions: decoded waveforms.
        references: clean waveforms, same order.

    Returns:
        {key: mean over the scored pairs (None if none), "scores": per-pair values (None where not
        scorable), "skipped": the MetricUnavailable reasons of the None entries}.
    """
    scores, skipped = [], []
    for pred, ref in zip(predictions, references):
        pred = np.asarray(pred, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        try:
            scores.append(float(score_fn(ref, pred)))
        except MetricUnavailable as err:
            scores.append(None)
            skipped.append(str(err))
    valid = [s for s in scores if s is not None]
    return {key: float(np.mean(valid)) if valid else None, "scores": scores, "skipped": skipped}
