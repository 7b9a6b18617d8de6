"""`evaluate` module: Short-time objective intelligibility (0..1; extended=True for ESTOI) of decoded audio against the clean reference.

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_stoi"))`.
"""

import evaluate

from jepatok.eval.hf_metrics._common import score_pairs, signal_metric_info
from jepatok.eval.metrics import stoi_score

_DESCRIPTION = "Short-time objective intelligibility (0..1; extended=True for ESTOI) of decoded audio against the clean reference."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of decoded waveforms (lists of floats, mono).
    references: list of clean waveforms, same order and rate.
    sampling_rate: rate of every waveform (default 16000).
    extended: ESTOI instead of STOI.
Returns:
    stoi: mean over the pairs that could be scored; scores: per-pair values (None where not scorable);
    skipped: reasons for the None entries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Stoi(evaluate.Metric):
    def _info(self):
        return signal_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, sampling_rate: int = 16000, extended: bool = False):
        return score_pairs(
            "stoi",
            lambda ref, pred: stoi_score(ref, pred, sampling_rate, extended=extended),
            predictions,
            references,
        )
