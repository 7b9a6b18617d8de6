"""`evaluate` module: Scale-invariant signal-to-distortion ratio (dB) of decoded audio against the clean reference.

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_si_sdr"))`.
"""

import evaluate

from jepatok.eval.hf_metrics._common import score_pairs, signal_metric_info
from jepatok.eval.metrics import si_sdr

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
        return signal_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, sampling_rate: int = 16000):
        return score_pairs("si_sdr", si_sdr, predictions, references)
