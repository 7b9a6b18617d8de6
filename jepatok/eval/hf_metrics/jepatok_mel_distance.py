"""`evaluate` module: Multi-resolution log-mel L1 distance (0 for identical audio) of decoded audio against the clean reference.

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_mel_distance"))`.
"""

import evaluate

from jepatok.eval.hf_metrics._common import score_pairs, signal_metric_info
from jepatok.eval.metrics import mel_distance

_DESCRIPTION = "Multi-resolution log-mel L1 distance (0 for identical audio) of decoded audio against the clean reference."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of decoded waveforms (lists of floats, mono).
    references: list of clean waveforms, same order and rate.
    sampling_rate: rate of every waveform (default 16000).
Returns:
    mel_distance: mean over the pairs that could be scored; scores: per-pair values (None where not scorable);
    skipped: reasons for the None entries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MelDistance(evaluate.Metric):
    def _info(self):
        return signal_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, sampling_rate: int = 16000):
        return score_pairs(
            "mel_distance", lambda ref, pred: mel_distance(ref, pred, sampling_rate), predictions, references
        )
