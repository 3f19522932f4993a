"""Precision (macro by default over classes), an `evaluate` metric module shipped with tlhub."""

import datasets
import evaluate
from sklearn.metrics import precision_score


class Precision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Precision from scikit-learn; average='macro' treats every class alike.",
            citation="",
            inputs_description="predictions and references: lists of class ids; average, labels, zero_division.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="macro", labels=None, zero_division=0):
        value = precision_score(references, predictions, average=average, labels=labels, zero_division=zero_division)
        return {"precision": float(value) if average is not None else value.tolist()}
