"""SQuAD's exact match and F1 of extracted answers, as the official SQuAD 2.0 evaluation script
computes them: answers are compared after lower-casing and removing punctuation, the articles
a/an/the and extra whitespace; F1 is over the words of the prediction and the best-matching
reference; a question without an answer (no reference texts) is right only when the prediction
is empty. Scores are percentages (0-100), as the script and transformers' run_qa.py report
them; where some questions have no answer, ``HasAns_*`` and ``NoAns_*`` score the two kinds
apart. A dependency-free `evaluate` module shipped with tlhub, so it works offline."""

import collections
import re
import string

import datasets
import evaluate

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text):
    """Lower case, no punctuation, no articles, single spaces (the SQuAD 2.0 script's)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(ARTICLES.sub(" ", text).split())


def exact(gold, predicted):
    return int(normalize_answer(gold) == normalize_answer(predicted))


def f1(gold, predicted):
    gold_words, predicted_words = normalize_answer(gold).split(), normalize_answer(predicted).split()
    if not gold_words or not predicted_words:  # no answer: right only if both are empty
        return float(gold_words == predicted_words)
    common = collections.Counter(gold_words) & collections.Counter(predicted_words)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_words), same / len(gold_words)
    return 2 * precision * recall / (precision + recall)


def scores(prediction, references):
    """(exact, f1) of one prediction: the best over its reference texts ("" when it has none)."""
    golds = [r for r in references if normalize_answer(r)] or [""]
    return max(exact(g, prediction) for g in golds), max(f1(g, prediction) for g in golds)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD 2.0 exact match and F1 (percent), overall and for answerable / unanswerable questions apart.",
            citation="Rajpurkar et al., Know What You Don't Know: Unanswerable Questions for SQuAD, ACL 2018.",
            inputs_description="predictions: the predicted answer text per question ('' for no answer); references: the "
            "list of acceptable answer texts per question (an empty list: the question has no answer).",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        rows = [(bool([r for r in refs if normalize_answer(r)]), *scores(p, refs)) for p, refs in zip(predictions, references)]

        def part(kept):
            n = len(kept)
            return {"exact_match": 100.0 * sum(e for _, e, _ in kept) / max(n, 1), "f1": 100.0 * sum(f for _, _, f in kept) / max(n, 1), "total": n}

        out = part(rows)
        answerable = [r for r in rows if r[0]]
        if len(answerable) < len(rows):  # some questions have no answer: SQuAD 2.0's parts
            for name, kept in (("HasAns", answerable), ("NoAns", [r for r in rows if not r[0]])):
                out.update({f"{name}_{key}": value for key, value in part(kept).items()})
        return out
