"""Extractive question answering: the answer is a span of the context, as transformers'
question-answering example (run_qa.py, utils_qa.py) trains and scores it.

Rows are a context, a question and an answer (``data.context_column``, ``data.question_column``,
``data.answer_column``). The answer is SQuAD's ``{text: [...], answer_start: [...]}`` (empty
lists: no answer), or a plain string, found in the context: verbatim first, else with the spaces
of both normalised (a tokenised passage reads "Earth ' s" where the answer reads "Earth's"), and
mapped back to characters of the original context. A string not found is skipped and counted
(refused over ``data.max_bad_fraction``); an ``answer_start`` that does not point at its text is
an error naming the row. An empty answer, or ``data.no_answer`` (``unknown``), trains the null
answer, the first ([CLS]) token, as SQuAD 2.0 does.

A long context is cut into overlapping windows of ``data.max_length`` tokens (384 by default)
sharing ``data.doc_stride`` tokens; each window is one model input, its answer positions found
through the tokenizer's offset mapping ([CLS] where the answer is not inside the window).
Evaluation maps every window's start and end logits back to its question (post-processing): the
best span of at most ``data.max_answer_length`` tokens among the ``data.n_best_size`` best starts
and ends of each window, or no answer when the null score beats it by more than
``data.null_score_diff_threshold``. Scores are SQuAD's exact match and F1 (``eval_exact_match``,
``eval_f1``; ``HasAns_``/``NoAns_`` parts where some questions have no answer).

`tlhub predict RUN "question ||| context"` prints the answer, its score (start x end
probability over the window's context tokens and [CLS], as transformers' question-answering
pipeline scored it) and its character span. transformers 5 removed that pipeline; the run folder
loads with ``AutoModelForQuestionAnswering`` and ``AutoTokenizer``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import nn
from transformers import AutoModelForQuestionAnswering

from tlhub.data import text_column
from tlhub.errors import ConfigError, DataError
from tlhub.loading import UNSET_LENGTH, load_auto_model
from tlhub.tasks.base import TASKS, RowScorer, Task, TextSide, combined

if TYPE_CHECKING:
    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)

ANSWERS = "answers"  # the prepared rows' answers, SQuAD's shape
QA_MAX_LENGTH = 384  # run_qa.py's max_seq_length
MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")
ANSWER_FEATURE = datasets.Features({"text": datasets.Sequence(datasets.Value("string")), "answer_start": datasets.Sequence(datasets.Value("int32"))})


# --------------------------------------------------------------------------- answers in the context


def find_answer(context: str, answer: str) -> int | None:
    """Where `answer` starts in `context`: its first verbatim occurrence, else the first once
    whitespace is ignored in both (mapped back to the original characters); None if absent."""
    where = context.find(answer)
    if where >= 0:
        return where
    squeezed = re.sub(r"\s+", "", answer)
    if not squeezed:
        return None
    kept = [i for i, ch in enumerate(context) if not ch.isspace()]  # position in context of each non-space character
    where = "".join(context[i] for i in kept).find(squeezed)
    return kept[where] if where >= 0 else None


def answer_span(context: str, answer: str) -> tuple[int, str] | None:
    """(start, text as the context writes it) of `answer` in `context`, or None."""
    start = find_answer(context, answer)
    if start is None:
        return None
    if context.startswith(answer, start):
        return start, answer
    squeezed, end, seen = re.sub(r"\s+", "", answer), start, 0
    while seen < len(squeezed):  # walk the context until every non-space character of the answer is covered
        seen += not context[end].isspace()
        end += 1
    return start, context[start:end]


def unanswerable(value: Any, no_answer: str | None) -> bool:
    """Whether a plain answer cell means "no answer": empty, missing, or data.no_answer."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and (not value.strip() or (no_answer is not None and value.strip() == no_answer))


# --------------------------------------------------------------------------- windows


def qa_length(cfg: RunConfig, tokenizer: Any) -> int:
    """Tokens per window: data.max_length, or 384 (the model's limit where smaller)."""
    if cfg.data.max_length is not None:
        return cfg.data.max_length
    recorded = getattr(tokenizer, "model_max_length", None)
    return min(QA_MAX_LENGTH, recorded) if isinstance(recorded, int) and 0 < recorded < UNSET_LENGTH else QA_MAX_LENGTH


def question_first(tokenizer: Any) -> bool:
    """Whether the question comes first in a window (it does unless the tokenizer pads on the left)."""
    return getattr(tokenizer, "padding_side", "right") == "right"


def context_room(tokenizer: Any, questions: list[str], length: int) -> list[int]:
    """The context tokens each window of these questions has room for."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    return [length - special - len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]


def windows(tokenizer: Any, questions: list[str], contexts: list[str], length: int, stride: int) -> Any:
    """The overlapping windows of each (question, context) (run_qa.py's tokenization): the
    question whole, the context cut into pieces sharing `stride` tokens."""
    first = question_first(tokenizer)
    return tokenizer(
        questions if first else contexts,
        contexts if first else questions,
        truncation="only_second" if first else "only_first",
        max_length=length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def span_positions(sequence_ids: list[int | None], offsets: list[tuple[int, int]], context_id: int, answer: dict[str, list]) -> tuple[int, int]:
    """The (start, end) token positions of `answer` in one window, or (0, 0), the null answer
    ([CLS]), when it has none or when the answer is not wholly inside the window."""
    if not answer["text"]:
        return 0, 0
    start_char = answer["answer_start"][0]
    end_char = start_char + len(answer["text"][0])
    first = sequence_ids.index(context_id)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_id)
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


# --------------------------------------------------------------------------- post-processing


@dataclass
class Decoding:
    """How windows' logits become an answer (data.n_best_size, max_answer_length, null_score_diff_threshold)."""

    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float | None = 0.0

    @classmethod
    def of(cls, cfg: RunConfig) -> Decoding:
        return cls(cfg.data.n_best_size, cfg.data.max_answer_length, cfg.data.null_score_diff_threshold)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def best_answer(context: str, parts: list[tuple[np.ndarray, np.ndarray, list[Any]]], decoding: Decoding) -> dict[str, Any]:
    """The answer to one question from its windows' (start logits, end logits, offsets), the
    offsets None outside the context (utils_qa.py's post-processing).

    In each window, the `n_best` likeliest context tokens to start and to end an answer are
    paired; a pair ending before it starts or longer than `max_answer_length` tokens is left out.
    The best pair over all windows (the largest start + end logit) is the answer, unless null
    answers are allowed (`null_threshold` not None) and the null score, [CLS]'s start + end
    logit in the window where it is smallest, exceeds the best pair's by more than the threshold:
    then the answer is empty. Its score is the start x end probability, softmax over the window's
    context tokens and [CLS] (the null answer's: [CLS]'s, where that is smallest)."""
    best: dict[str, Any] | None = None
    null_logit, null_score = math.inf, 1.0
    for start_logits, end_logits, offsets in parts:
        n = len(offsets)
        start_logits, end_logits = np.asarray(start_logits[:n], dtype=np.float64), np.asarray(end_logits[:n], dtype=np.float64)
        inside = np.array([o is not None for o in offsets])
        allowed = inside.copy()
        allowed[0] = True  # [CLS], the null answer, is part of the softmax
        p_start = softmax(np.where(allowed, start_logits, -1e4))
        p_end = softmax(np.where(allowed, end_logits, -1e4))
        if start_logits[0] + end_logits[0] < null_logit:
            null_logit, null_score = float(start_logits[0] + end_logits[0]), float(p_start[0] * p_end[0])
        positions = np.flatnonzero(inside)
        if not len(positions):
            continue
        starts = positions[np.argsort(-start_logits[positions], kind="stable")[: decoding.n_best]]
        ends = positions[np.argsort(-end_logits[positions], kind="stable")[: decoding.n_best]]
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > decoding.max_answer_length:
                    continue
                logit = float(start_logits[s] + end_logits[e])
                if best is None or logit > best["logit"]:
                    begin, finish = offsets[s][0], offsets[e][1]
                    best = {"logit": logit, "answer": context[begin:finish], "score": float(p_start[s] * p_end[e]), "start": int(begin), "end": int(finish)}
    null = {"answer": "", "score": null_score, "start": 0, "end": 0}
    if best is None:
        return null
    if decoding.null_threshold is not None and null_logit - best["logit"] > decoding.null_threshold:
        return null
    return {k: v for k, v in best.items() if k != "logit"}


def answers_of(
    start_logits: np.ndarray, end_logits: np.ndarray, example_ids: list[int], offsets: list[list[Any]], contexts: list[str], decoding: Decoding
) -> list[dict[str, Any]]:
    """One answer per question, in the order their windows first appear, from per-window logits."""
    grouped: dict[int, list[int]] = {}
    for row, example in enumerate(example_ids):
        grouped.setdefault(example, []).append(row)
    return [
        best_answer(contexts[rows[0]], [(start_logits[r], end_logits[r], offsets[r]) for r in rows], decoding) for rows in grouped.values()
    ]


class SpanScorer(RowScorer):
    """Evaluation's compute_metrics: windows' logits -> one answer per question -> SQuAD scores."""

    def __init__(self, decoding: Decoding) -> None:
        self.decoding = decoding
        self.metric = combined(("squad",))

    def __call__(self, pred: Any) -> dict[str, float]:
        if self.dataset is None:
            raise RuntimeError("question answering: the evaluated windows were not given to the scorer")
        start_logits, end_logits = pred.predictions[0], pred.predictions[1]
        rows = self.dataset
        example_ids = rows["example_index"]
        found = answers_of(start_logits, end_logits, example_ids, rows["offset_mapping"], rows["context"], self.decoding)
        first = {}
        for row, example in enumerate(example_ids):
            first.setdefault(example, row)
        references = rows["references"]
        return self.metric.compute(predictions=[a["answer"] for a in found], references=[references[r] for r in first.values()])


# --------------------------------------------------------------------------- the text side


class SpanCollator:
    """Windows padded into a batch (the model's inputs and answer positions only)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{k: f[k] for k in MODEL_KEYS if k in f and f[k] is not None} for f in features]
        positions = {k: torch.tensor([row.pop(k) for row in rows]) for k in ("start_positions", "end_positions") if k in rows[0]}
        batch = dict(self.tokenizer.pad(rows, return_tensors="pt"))
        return {**batch, **positions}


class QuestionAnsweringText(TextSide):
    """The text modality's side of question_answering."""

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        data = cfg.data
        return {"data.context_column": data.context_column, "data.question_column": data.question_column, "data.answer_column": data.answer_column}

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> tuple[datasets.Dataset, int]:
        """Contexts and questions checked; each answer as SQuAD's {text, answer_start}, found in
        its context where it is a plain string (rows whose answer is nowhere in it skipped and
        counted), its answer_start checked where given."""
        data = cfg.data
        ds = text_column(text_column(ds, data.context_column, origin, "context"), data.question_column, origin, "question")
        keep, answers, missing = [], [], []
        for row, (context, value) in enumerate(zip(ds[data.context_column], ds[data.answer_column]), 1):
            if isinstance(value, dict):
                answer = squad_answer(value, context, origin, row, data.answer_column)
            elif unanswerable(value, data.no_answer):
                answer = {"text": [], "answer_start": []}
            elif isinstance(value, str):
                span = answer_span(context, value.strip())
                if span is None:
                    missing.append(row)
                    continue
                answer = {"text": [span[1]], "answer_start": [span[0]]}
            else:
                raise DataError(f"{origin}: row {row}: column '{data.answer_column}' holds {type(value).__name__}; give the answer "
                                "as text, or as SQuAD's {text: [...], answer_start: [...]}")  # fmt: skip
            keep.append(row - 1)
            answers.append(answer)
        if missing:
            fraction = len(missing) / len(ds)
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            if fraction > data.max_bad_fraction:
                raise DataError(
                    f"{origin}: {len(missing)} of {len(ds)} answers ({fraction:.0%}) are not in their context (rows {shown}), more "
                    f"than data.max_bad_fraction={data.max_bad_fraction}; check data.answer_column and data.context_column"
                )
            logger.warning("%s: skipped %d row(s) whose answer is not in the context: rows %s", origin, len(missing), shown)
        rows = ds.select(keep).remove_columns(data.answer_column)
        features = rows.features.copy()
        features[ANSWERS] = ANSWER_FEATURE
        table = {**{c: rows[c] for c in rows.column_names if c != ANSWERS}, ANSWERS: answers}
        return datasets.Dataset.from_dict(table, features=features), len(missing)

    def load_model(self, cfg: RunConfig, label_names: list[str] | None, pad_token_id: int | None) -> nn.Module:
        return load_auto_model(AutoModelForQuestionAnswering, cfg.model)

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[..., dict[str, list]]:
        """Rows -> windows: the model's inputs and answer positions; at evaluation also what
        post-processing reads (the question each window is from, the offsets of its context
        tokens, the context and the reference answers)."""
        data = cfg.data
        length, first = qa_length(cfg, processor), question_first(processor)
        context_id = 1 if first else 0

        def apply(batch: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            questions = [q.lstrip() for q in batch[data.question_column]]
            contexts = batch[data.context_column]
            for number, room in enumerate(context_room(processor, questions, length), 1):
                if room <= data.doc_stride:  # the tokenizer could not cut its context into windows (ready() skips such rows)
                    raise DataError(f"predict: input {number}: the question leaves no room for the context in {length} tokens "
                                    f"(data.max_length, with data.doc_stride={data.doc_stride}); shorten it")  # fmt: skip
            encoded = windows(processor, questions, contexts, length, data.doc_stride)
            source = encoded.pop("overflow_to_sample_mapping")
            offsets = encoded.pop("offset_mapping")
            out = {k: list(v) for k, v in encoded.items()}
            answers = batch.get(ANSWERS)
            sequences = [encoded.sequence_ids(i) for i in range(len(source))]
            if answers is not None:
                spans = [span_positions(sequences[i], offsets[i], context_id, answers[j]) for i, j in enumerate(source)]
                out["start_positions"], out["end_positions"] = [s for s, _ in spans], [e for _, e in spans]
            if not train:
                out["example_index"] = [indices[j] if indices is not None else j for j in source]
                out["offset_mapping"] = [[list(o) if k == context_id else None for o, k in zip(offsets[i], sequences[i])] for i in range(len(source))]
                out["context"] = [contexts[j] for j in source]
                out["references"] = [list(answers[j]["text"]) if answers is not None else [] for j in source]
            return out

        return apply

    def ready(self, ds: datasets.Dataset, processor: Any, cfg: RunConfig, train: bool) -> datasets.Dataset:
        """The rows as windows, mapped eagerly (a row becomes one or more model inputs); rows whose
        question leaves no room for the context in data.max_length tokens skipped and counted."""
        data = cfg.data
        length = qa_length(cfg, processor)
        if data.doc_stride >= length:
            raise ConfigError(f"data.doc_stride: {data.doc_stride} tokens shared by windows of {length} (data.max_length); use fewer, e.g. {length // 3}")
        room = context_room(processor, list(ds[data.question_column]), length)
        long = [row for row, r in enumerate(room, 1) if r <= data.doc_stride]
        if long:
            split = "training" if train else "evaluation"
            shown = ", ".join(map(str, long[:10])) + (f" and {len(long) - 10} more" if len(long) > 10 else "")
            if len(long) / len(ds) > data.max_bad_fraction or len(long) == len(ds):
                raise DataError(
                    f"data: {len(long)} of {len(ds)} {split} questions (rows {shown}) leave no room for the context in data.max_length="
                    f"{length} tokens (with data.doc_stride={data.doc_stride}); raise data.max_length or shorten the questions"
                )
            logger.warning("%s rows: skipped %d question(s) too long for data.max_length=%d: rows %s", split, len(long), length, shown)
            ds = ds.select([i for i, r in enumerate(room) if r > data.doc_stride])
        return ds.map(self.transform(processor, cfg, train), batched=True, with_indices=True, remove_columns=ds.column_names)

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        return SpanCollator(processor)

    def peft_task_type(self) -> str | None:
        return "QUESTION_ANS"

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        question, separator, context = value.partition(" ||| ")
        if not separator or not question.strip() or not context.strip():
            raise DataError(f"predict: give each input as 'question ||| context', got {value[:60]!r}")
        return {cfg.data.question_column: question.strip(), cfg.data.context_column: context.strip()}


def squad_answer(value: dict[str, Any], context: str, origin: str, row: int, column: str) -> dict[str, list]:
    """SQuAD's {text: [...], answer_start: [...]} checked: as many starts as texts, each start
    pointing at its text in the context."""
    texts, starts = value.get("text"), value.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise DataError(f"{origin}: row {row}: column '{column}' must be {{text: [...], answer_start: [...]}} with one start per text")
    for text, start in zip(texts, starts):
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            there = context[start : start + len(text)] if isinstance(start, int) else start
            raise DataError(f"{origin}: row {row}: answer_start {start} does not point at the answer '{text}' (the context there "
                            f"reads '{there}'); correct answer_start, or give the answer as plain text")  # fmt: skip
    return {"text": list(texts), "answer_start": list(starts)}


# --------------------------------------------------------------------------- the task


@TASKS.register("question_answering")
class QuestionAnswering(Task):
    name = "question_answering"
    metrics = ("squad",)
    main_metric = ("f1", True)
    pipeline_tags = {"text": "question-answering"}  # the Hub's tag (transformers 5 has no such pipeline)
    label_names = ("start_positions", "end_positions")
    text = QuestionAnsweringText()

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        return SpanScorer(Decoding.of(cfg))

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        cfg, tokenizer = run.cfg, run.processor
        rows = [run.modality.input_row(value, cfg) for value in inputs]
        questions, contexts = [r[cfg.data.question_column] for r in rows], [r[cfg.data.context_column] for r in rows]
        length = qa_length(cfg, tokenizer)
        for number, room in enumerate(context_room(tokenizer, questions, length), 1):
            if room <= cfg.data.doc_stride:
                raise DataError(f"predict: input {number}: the question leaves no room for the context in {length} tokens "
                                f"(data.max_length, with data.doc_stride={cfg.data.doc_stride}); shorten it")  # fmt: skip
        encoded = windows(tokenizer, questions, contexts, length, cfg.data.doc_stride)
        context_id = 1 if question_first(tokenizer) else 0
        source = list(encoded["overflow_to_sample_mapping"])
        offsets = [
            [tuple(o) if k == context_id else None for o, k in zip(encoded["offset_mapping"][i], encoded.sequence_ids(i))] for i in range(len(source))
        ]
        model_inputs = [{k: encoded[k][i] for k in MODEL_KEYS if k in encoded} for i in range(len(source))]
        padded = SpanCollator(tokenizer)(model_inputs)
        device = next(run.model.parameters()).device
        with torch.no_grad():
            out = run.model(**{k: v.to(device) for k, v in padded.items()})
        found = answers_of(out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy(), source, offsets, [contexts[j] for j in source],
                           Decoding.of(cfg))  # fmt: skip
        return [{"input": value, **answer} for value, answer in zip(inputs, found)]

    def describe(self, row: dict[str, Any]) -> str:
        answer = row["answer"] or "(no answer)"
        return f"{answer}\t{row['score']:.3f}\t[{row['start']}:{row['end']}]\t{row['input']}"

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        return (
            "from transformers import AutoModelForQuestionAnswering, AutoTokenizer\n"
            "model = AutoModelForQuestionAnswering.from_pretrained(RUN_DIR)\n"
            "tokenizer = AutoTokenizer.from_pretrained(RUN_DIR)\n"
            "# transformers 5 has no question-answering pipeline; `tlhub predict RUN_DIR \"question ||| context\"` prints the answer"
        )


__all__ = ["QuestionAnswering", "answer_span", "best_answer", "find_answer", "span_positions", "windows"]
