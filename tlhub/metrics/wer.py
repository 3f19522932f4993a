"""Word error rate: word-level edit distance over the number of reference words (no jiwer needed)."""

import datasets
import evaluate

from ._edit_distance import edit_distance


class Wer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Word error rate, summed over the corpus.",
            citation="",
            inputs_description="predictions and references: lists of strings.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        errors = sum(edit_distance(p.split(), r.split()) for p, r in zip(predictions, references))
        words = sum(len(r.split()) for r in references)
        return {"wer": errors / max(words, 1)}
