"""Token classification: a tag per word (named entities, BIO tags), as transformers'
token-classification example trains it.

Rows are a sentence's words and tags: a CoNLL-style file (``word<TAB>tag`` lines, a blank
line between sentences, read by :func:`tlhub.data.read_conll`), or columns of lists
(``data.tokens_column``, ``data.tags_column``: tag names or ClassLabel ids). The tag names
come from the training data. Words are split into sub-word tokens; the first token of a word
carries its tag and the others are -100, ignored by the loss (``data.label_all_tokens``: every
token carries it, a B- tag continuing as I-). Scores are entity-level, seqeval's definition:
precision, recall and F1 of exact spans of the right type, overall (``eval_f1``) and per type.
`tlhub predict` prints the entities with their character spans, found by transformers'
token-classification pipeline (``aggregation_strategy="simple"``), which loads the run as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import nn
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from tlhub.data import is_sequence
from tlhub.errors import DataError
from tlhub.loading import input_length, label_head, load_auto_model
from tlhub.tasks.base import TASKS, Task, TextSide, combined, first

if TYPE_CHECKING:
    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)


def repaired(tags: list[str]) -> tuple[list[str], int]:
    """BIO tags with every I- tag that no B- or I- of its type precedes read as a B- (an entity
    must begin), and how many were so repaired."""
    out, fixed, previous = [], 0, "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag, fixed = "B-" + tag[2:], fixed + 1
        out.append(tag)
        previous = tag
    return out, fixed


class TokenClassificationText(TextSide):
    """The text modality's side of token_classification."""

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        return {"data.tokens_column": cfg.data.tokens_column, "data.tags_column": cfg.data.tags_column}

    def class_column(self, cfg: RunConfig) -> str | None:
        return cfg.data.tags_column

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> tuple[datasets.Dataset, int]:
        """Each row checked (words and tags, as many of each, none empty) and its tags as names,
        I- tags that begin an entity read as B- (counted in a warning)."""
        data = cfg.data
        feature = ds.features[data.tags_column]
        inner = getattr(feature, "feature", None)
        names = inner.names if isinstance(inner, datasets.ClassLabel) else None
        if not is_sequence(feature):
            raise DataError(f"{origin}: column '{data.tags_column}' (data.tags_column) must hold a list of tags per sentence")
        words_out, tags_out, fixes, where = [], [], 0, []
        for row, (words, tags) in enumerate(zip(ds[data.tokens_column], ds[data.tags_column]), 1):
            if not isinstance(words, list) or not words:
                raise DataError(f"{origin}: row {row}: an empty sentence in column '{data.tokens_column}'; drop the row")
            if not isinstance(tags, list) or len(tags) != len(words):
                count = len(tags) if isinstance(tags, list) else 0
                raise DataError(f"{origin}: row {row}: {len(words)} words but {count} tags; give each word one tag")
            if any(not isinstance(w, str) or not w.strip() for w in words):
                raise DataError(f"{origin}: row {row}: an empty word in column '{data.tokens_column}'; drop it")
            tags = [names[t] if names is not None else str(t) for t in tags]
            tags, fixed = repaired(tags)
            if fixed:
                fixes, where = fixes + fixed, where + [row]
            words_out.append(list(words))
            tags_out.append(tags)
        if fixes:
            logger.warning("%s: %d I- tag(s) began an entity and were read as B- (rows %s)", origin, fixes, ", ".join(map(str, where[:10])))
        return datasets.Dataset.from_dict({data.tokens_column: words_out, data.tags_column: tags_out}), 0

    def load_model(self, cfg: RunConfig, label_names: list[str] | None, pad_token_id: int | None) -> nn.Module:
        assert label_names is not None
        return load_auto_model(
            AutoModelForTokenClassification,
            cfg.model,
            **label_head(label_names),
        )

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        data = cfg.data
        length = input_length(data.max_length, processor)

        every_token = data.label_all_tokens and train  # evaluation scores each word once, on its first token

        def apply(batch: dict[str, list]) -> dict[str, list]:
            out = processor(batch[data.tokens_column], is_split_into_words=True, truncation=True, max_length=length)
            if "labels" in batch:
                out["labels"] = [aligned(out.word_ids(i), tags, every_token) for i, tags in enumerate(batch["labels"])]
            return dict(out)

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        return TagCollator(processor, model.config.label2id)

    def peft_task_type(self) -> str | None:
        return "TOKEN_CLS"

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        return {cfg.data.tokens_column: value.split()}


CONTINUED = -1000  # a word's later sub-word token carrying its tag: CONTINUED - tag id (far from -100), resolved by TagCollator


def aligned(word_ids: list[int | None], tags: list[int], every_token: bool) -> list[int]:
    """A word's tag on its first sub-word token and -100 on the others and on special tokens,
    as transformers' example aligns them; with `every_token` the later tokens carry the tag too,
    marked as continued (``CONTINUED - id``) so that the collator reads a B- there as I-."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(tags[word])
        else:
            labels.append(CONTINUED - tags[word] if every_token else -100)
        previous = word
    return labels


class TagCollator:
    """transformers' token-classification collator (tokens padded, labels padded with -100),
    then a continued B- tag read as its I- (transformers' example's ``b_to_i_label``): an
    entity has one beginning, on its first word's first token."""

    def __init__(self, tokenizer: Any, label2id: dict[str, int]) -> None:
        self.pad = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=-100)
        names = {i: name for name, i in label2id.items()}
        self.inside = torch.tensor([label2id.get("I-" + names[i][2:], i) if names[i].startswith("B-") else i for i in sorted(names)])

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad(features)
        labels = batch.get("labels")
        if labels is not None:
            continued = labels <= CONTINUED
            if bool(continued.any()):
                ids = (CONTINUED - labels).clamp(0, len(self.inside) - 1)
                batch["labels"] = torch.where(continued, self.inside[ids], labels)
        return batch


@TASKS.register("token_classification")
class TokenClassification(Task):
    name = "token_classification"
    metrics = ("seqeval",)
    main_metric = ("f1", True)
    pipeline_tags = {"text": "token-classification"}
    text = TokenClassificationText()

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        metrics = combined(self.metrics)
        names = label_names or []

        def compute(pred: Any) -> dict[str, float]:
            ids = np.argmax(first(pred.predictions), axis=-1)
            predictions, references = [], []
            for predicted, truth in zip(ids, pred.label_ids):
                kept = truth != -100
                predictions.append([names[i] for i in predicted[kept]])
                references.append([names[i] for i in truth[kept]])
            return metrics.compute(predictions=predictions, references=references)

        return compute

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        from transformers import pipeline

        tagger = pipeline("token-classification", model=run.model, tokenizer=run.processor, aggregation_strategy="simple",
                          device=next(run.model.parameters()).device)  # fmt: skip
        return [{"input": text, "entities": [{**e, "score": float(e["score"])} for e in tagger(text)]} for text in inputs]

    def describe(self, row: dict[str, Any]) -> str:
        found = "; ".join(f"{e['entity_group']} '{e['word']}' [{e['start']}:{e['end']}] {e['score']:.3f}" for e in row["entities"])
        return f"{found or '-'}\t{row['input']}"

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        return "from transformers import pipeline\npipe = pipeline('token-classification', model=RUN_DIR, aggregation_strategy='simple')"
