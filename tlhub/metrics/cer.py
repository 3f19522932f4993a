"""Character error rate: character-level edit distance over the number of reference characters."""

import datasets
import evaluate


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


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
