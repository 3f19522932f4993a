"""Character error rate: character-level edit distance over the number of reference characters."""

import datasets
import evaluate

from ._edit_distance import edit_distance


class Cer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Character error rate, summed over the corpus.",
            citation="",
            inputs_description="predictions and references: lists of strings.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        errors = sum(edit_distance(p, r) for p, r in zip(predictions, references))
        chars = sum(len(r) for r in references)
        return {"cer": errors / max(chars, 1)}
