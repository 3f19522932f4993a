"""Entity-level precision, recall and F1 of tagged sequences, seqeval's definition (the
conlleval rules of the CoNLL shared tasks): an entity is a chunk of one type, from a B- tag
(or an I- tag after O or after another type) to its last I- tag; it counts as found only when
the prediction has the same span and type. Overall scores are micro-averaged over entities;
each type has its own (`PER_f1`, ...), and ``accuracy`` is per token. A dependency-free
`evaluate` module shipped with tlhub, so it works offline."""

import datasets
import evaluate


def split_tag(tag):
    """("B", "PER") of "B-PER"; ("O", "") of "O"; a tag without a prefix reads as inside ("I", tag)."""
    if tag == "O":
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_":
        return tag[0], tag[2:]
    return "I", tag


def end_of_chunk(prev_tag, tag, prev_type, type_):
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def start_of_chunk(prev_tag, tag, prev_type, type_):
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def entities(tags):
    """The (type, first, last) chunks of one sequence of tags."""
    found, begin = [], 0
    prev_tag, prev_type = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        kind, type_ = split_tag(tag)
        if end_of_chunk(prev_tag, kind, prev_type, type_):
            found.append((prev_type, begin, i - 1))
        if start_of_chunk(prev_tag, kind, prev_type, type_):
            begin = i
        prev_tag, prev_type = kind, type_
    return found


def _scores(true, predicted):
    hits = len(true & predicted)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(true) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision, recall and F1 (exact span and type), per type and overall.",
            citation="",
            inputs_description="predictions and references: lists of tag sequences (B-/I-/O tags).",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        true = {(row, *entity) for row, tags in enumerate(references) for entity in entities(tags)}
        predicted = {(row, *entity) for row, tags in enumerate(predictions) for entity in entities(tags)}
        precision, recall, f1 = _scores(true, predicted)
        tokens = sum(len(tags) for tags in references)
        correct = sum(p == r for pred, ref in zip(predictions, references) for p, r in zip(pred, ref))
        out = {"precision": precision, "recall": recall, "f1": f1, "accuracy": correct / tokens if tokens else 0.0}
        for type_ in sorted({entity[1] for entity in true | predicted}):
            p, r, f = _scores({e for e in true if e[1] == type_}, {e for e in predicted if e[1] == type_})
            out.update({f"{type_}_precision": p, f"{type_}_recall": r, f"{type_}_f1": f, f"{type_}_number": sum(e[1] == type_ for e in true)})
        return out
