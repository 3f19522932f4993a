"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures from Google's `rouge_score`, the
implementation behind `evaluate`'s own ``rouge`` (its tokeniser: lower-cased, runs of
letters and digits; ROUGE-Lsum over the newline-separated sentences), averaged over examples.
Shipped as a local module so that it loads offline."""

import datasets
import evaluate
from rouge_score import rouge_scorer

KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L/Lsum F-measure (rouge_score), averaged over examples.",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description="predictions and references: lists of strings (ROUGE-Lsum: sentences separated by newlines).",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        scorer = rouge_scorer.RougeScorer(list(KEYS))
        totals = dict.fromkeys(KEYS, 0.0)
        for pred, ref in zip(predictions, references):
            scores = scorer.score(ref, pred)  # (target, prediction)
            for key in KEYS:
                totals[key] += scores[key].fmeasure
        count = max(len(references), 1)
        return {key: totals[key] / count for key in KEYS}
