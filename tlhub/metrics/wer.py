"""Word error rate over the corpus (jiwer): word edits summed over all rows, over the number of
reference words. A row whose reference is empty counts each predicted word as an insertion
(jiwer refuses empty references)."""

import datasets
import evaluate

from ._jiwer import error_rate


class Wer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Word error rate, summed over the corpus (jiwer).",
            citation="",
            inputs_description="predictions and references: lists of strings.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return {"wer": error_rate(predictions, references, characters=False)}
