"""`evaluate` module: corpus-level WER and CER after Whisper's English normaliser (whisper-normalizer + jiwer).

Loads offline from the installed jepatok package: `evaluate.load(jepatok.eval.hf_metrics.module_path("jepatok_wer"))`.
"""

import evaluate

from jepatok.eval.asr import error_rates
from jepatok.eval.hf_metrics._common import text_metric_info

_DESCRIPTION = (
    "Word and character error rates of transcripts, both sides normalised with Whisper's English normaliser."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis transcripts (ASR output).
    references: list of reference transcripts.
Returns:
    wer: word edits over reference words; cer: character edits over reference characters;
    words: reference words scored (pairs with an empty normalised reference are left out).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NormalizedWer(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references):
        rates = error_rates(list(references), list(predictions))
        return {"wer": rates.wer, "cer": rates.cer, "words": rates.words}
