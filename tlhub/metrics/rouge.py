"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures with whitespace tokenisation, lower-cased.

A dependency-free version of the `rouge` metric: no nltk or rouge_score needed, so it
works offline. Scores are averaged over examples.
"""

import re
from collections import Counter

import datasets
import evaluate


def _tokens(text):
    return re.findall(r"\w+", text.lower())


def _f(overlap, n_pred, n_ref):
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L F-measure, averaged over examples.",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description="predictions and references: lists of strings.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        totals = Counter()
        for pred, ref in zip(predictions, references):
            p, r = _tokens(pred), _tokens(ref)
            for n in (1, 2):
                pn, rn = _ngrams(p, n), _ngrams(r, n)
                totals[f"rouge{n}"] += _f(sum((pn & rn).values()), sum(pn.values()), sum(rn.values()))
            totals["rougeL"] += _f(_lcs(p, r), len(p), len(r))
        count = max(len(references), 1)
        return {key: totals[key] / count for key in ("rouge1", "rouge2", "rougeL")}
