"""Exact match of generated and reference strings (stripped, case-insensitive by default)."""

import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions that equal their reference after stripping whitespace.",
            citation="",
            inputs_description="predictions and references: lists of strings.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, ignore_case=True):
        def norm(s):
            s = " ".join(s.split())
            return s.lower() if ignore_case else s

        hits = sum(norm(p) == norm(r) for p, r in zip(predictions, references))
        return {"exact_match": hits / max(len(references), 1)}
