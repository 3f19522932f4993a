"""Character error rate over the corpus (jiwer): character edits summed over all rows, over the
number of reference characters (spaces included, as jiwer counts them)."""

import datasets
import evaluate

from ._jiwer import error_rate


class Cer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Character error rate, summed over the corpus (jiwer).",
            citation="",
            inputs_description="predictions and references: lists of strings.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return {"cer": error_rate(predictions, references, characters=True)}
