"""`evaluate` module: Mel-cepstral distortion (dB, speech frames of the reference) of decoded audio against the clean reference.

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_mcd"))`.
"""

import datasets
import evaluate
import numpy as np

from jepatok.eval.metrics import MetricUnavailable, mel_cepstral_distortion

_DESCRIPTION = "Mel-cepstral distortion (dB, speech frames of the reference) of decoded audio against the clean reference."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of decoded waveforms (lists of floats, mono).
    references: list of clean waveforms, same order and rate.
    sampling_rate: rate of every waveform (default 16000).
Returns:
    mcd: mean over the pairs that could be scored; scores: per-pair values (None where not scorable);
    skipped: reasons for the None entries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MelCepstralDistortion(evaluate.Metric):
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
                scores.append(float(mel_cepstral_distortion(ref, pred, sampling_rate)))
            except MetricUnavailable as err:
                scores.append(None)
                skipped.append(str(err))
        valid = [s for s in scores if s is not None]
        return {"mcd": float(np.mean(valid)) if valid else None, "scores": scores, "skipped": skipped}
