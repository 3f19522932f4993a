"""Recall (macro by default over classes), an `evaluate` metric module shipped with tlhub."""

import datasets
import evaluate
from sklearn.metrics import recall_score


class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Recall from scikit-learn; average='macro' treats every class alike.",
            citation="",
            inputs_description="predictions and references: lists of class ids; average, labels, zero_division.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro", labels=None, zero_division=0):
        value = recall_score(references, predictions, average=average, labels=labels, zero_division=zero_division)
        return {"recall": float(value) if average is not None else value.tolist()}
