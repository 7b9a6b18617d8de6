"""`evaluate` module: Scale-invariant signal-to-distortion ratio (dB) of decoded audio against the clean reference.

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_si_sdr"))`.
"""

import datasets
import evaluate
import numpy as np

from jepatok.eval.metrics import MetricUnavailable, si_sdr

_DESCRIPTION = "Scale-invariant signal-to-distortion ratio (dB) of decoded audio against the clean reference."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of decoded waveforms (lists of floats, mono).
    references: list of clean waveforms, same order and rate.
    sampling_rate: rate of every waveform (default 16000).
Returns:
    si_sdr: mean over the pairs that could be scored; scores: per-pair values (None where not scorable);
    skipped: reasons for the None entries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SiSdr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, sampling_rate: int = 16000):
        scores, skipped = [], []
        for pred, ref in zip(predictions, references):
            pred = np.asarray(pred, dtype=np.float64)
            ref = np.asarray(ref, dtype=np.float64)
            try:
                scores.append(float(si_sdr(ref, pred)))
            except MetricUnavailable as err:
                scores.append(None)
                skipped.append(str(err))
        valid = [s for s in scores if s is not None]
        return {"si_sdr": float(np.mean(valid)) if valid else None, "scores": scores, "skipped": skipped}
