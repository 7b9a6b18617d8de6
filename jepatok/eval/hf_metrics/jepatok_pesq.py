"""`evaluate` module: ITU-T P.862 PESQ (wide band at 16 kHz or narrow band at 8 kHz; inputs are resampled) of decoded audio against the clean reference.

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_pesq"))`.
"""

import evaluate

from jepatok.eval.hf_metrics._common import score_pairs, signal_metric_info
from jepatok.eval.metrics import pesq_score

_DESCRIPTION = "ITU-T P.862 PESQ (wide band at 16 kHz or narrow band at 8 kHz; inputs are resampled) of decoded audio against the clean reference."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of decoded waveforms (lists of floats, mono).
    references: list of clean waveforms, same order and rate.
    sampling_rate: rate of every waveform (default 16000).
    mode: "wb" (default) or "nb".
Returns:
    pesq: mean over the pairs that could be scored; scores: per-pair values (None where not scorable);
    skipped: reasons for the None entries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pesq(evaluate.Metric):
    def _info(self):
        return signal_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, sampling_rate: int = 16000, mode: str = "wb"):
        return score_pairs(
            "pesq", lambda ref, pred: pesq_score(ref, pred, sampling_rate, mode), predictions, references
        )
