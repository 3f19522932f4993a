"""Text: classification with encoders (BERT, RoBERTa, DistilBERT, DeBERTa, MiniLM) and decoder
language models (GPT-2, Llama, Qwen, SmolLM), and T5-style text-to-text generation here; the
tasks of text alone that bring their own side (causal_lm, token_classification:
``Task.text``) are delegated to it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from torch import nn
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
)

from tlhub.data import text_column
from tlhub.errors import ConfigError, DataError
from tlhub.loading import fit_tokenizer, input_length, label_head, load_auto_model, load_config, model_error, source_kwargs
from tlhub.modalities.base import MODALITIES, Modality
from tlhub.settings import check
from tlhub.tasks import TASKS, get_task
from tlhub.tasks.base import TextSide

if TYPE_CHECKING:
    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)


class BucketedPadding:
    """Pads each batch to the shortest of a few lengths that holds its longest row: powers of
    two from 16 up to `max_length`, and `max_length` itself. torch.compile specialises a graph
    for each input shape, so padding to the longest row of each batch recompiles for nearly
    every batch; with buckets it compiles once per bucket (five for 128 tokens)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.buckets = sorted({*(2**k for k in range(4, max_length.bit_length()) if 2**k < max_length), max_length})

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(f["input_ids"]) for f in features)
        length = next((b for b in self.buckets if b >= longest), longest)
        return DataCollatorWithPadding(self.tokenizer, padding="max_length", max_length=length)(features)


class WithoutDocuments:
    """A collator for windows of long texts (``data.long_inputs: chunk``): the rows' ``document``
    (which text a window is from) is read by the scorer from the split, not by the model."""

    def __init__(self, collator: Callable[[list[dict]], dict]) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collator([{k: v for k, v in f.items() if k != "document"} for f in features])


def chunked(cfg: RunConfig) -> bool:
    """Whether long texts are read as windows (``data.long_inputs: chunk``; checked to be text classification)."""
    return cfg.data.long_inputs == "chunk"


def window_room(processor: Any, length: int, stride: int) -> int:
    """The text tokens of one window: `length` less the special tokens; refused when
    ``data.stride`` leaves no new tokens in a window."""
    room = length - processor.num_special_tokens_to_add(pair=False)
    if stride >= room:
        raise ConfigError(f"data.stride: {stride} tokens shared by windows of {room} text tokens (data.max_length={length}); "
                          f"use fewer, e.g. {room // 4}")  # fmt: skip
    return room


def windows_of(tokens: int, room: int, stride: int) -> int:
    """How many windows a text of `tokens` text tokens becomes (the tokenizer's overflow)."""
    return 1 if tokens <= room else 1 + math.ceil((tokens - room) / (room - stride))


def text_side(cfg: RunConfig) -> TextSide | None:
    """The task's own side of the text modality, where it brings one."""
    return get_task(cfg.task).text


@MODALITIES.register("text")
class TextModality(Modality):
    name = "text"
    tasks = ("classification", "text2text", *(name for name in TASKS.names() if TASKS.get(name).text is not None))

    def __init__(self) -> None:
        self.pad_token_id: int | None = None  # set by load_processor(): what the model's config records

    def class_column(self, cfg: RunConfig) -> str | None:
        if side := text_side(cfg):
            return side.class_column(cfg)
        return super().class_column(cfg)

    def check(self, cfg: RunConfig) -> None:
        if not chunked(cfg):
            return
        check(cfg.task == "classification", "data.long_inputs",
              f"chunk reads long texts as windows for task: classification; {cfg.task} does not read it: remove it")  # fmt: skip
        check(not cfg.data.text_pair_column, "data.long_inputs",
              "chunk splits one text into windows; with data.text_pair_column (pairs of texts) use truncate")  # fmt: skip
        check(cfg.domain_adaptation is None, "data.long_inputs", "chunk is not available with domain_adaptation; use truncate")

    def length_report(self, splits: dict[str, datasets.Dataset], processor: Any, cfg: RunConfig) -> dict[str, Any]:
        """How many texts of each split are longer than data.max_length tokens, logged with what
        happens to them (cut, or read as windows), for classification; ``<split>_texts_over_max_length``."""
        if cfg.task != "classification" or text_side(cfg):
            return {}
        data = cfg.data
        length = input_length(data.max_length, processor)
        out: dict[str, Any] = {}
        for name, ds in splits.items():
            pairs = list(ds[data.text_pair_column]) if data.text_pair_column else None
            sizes = [len(ids) for ids in processor(list(ds[data.text_column]), pairs, verbose=False)["input_ids"]]
            over = [n - length for n in sizes if n > length]
            out[f"{name}_texts_over_max_length"] = len(over)
            if not over:
                continue
            share = f"{len(over)} of {len(sizes)} {name} texts ({len(over) / len(sizes):.0%}) are longer than data.max_length={length} tokens"
            if chunked(cfg):
                room = window_room(processor, length, data.stride)
                special = processor.num_special_tokens_to_add(pair=False)
                count = sum(windows_of(n - special, room, data.stride) for n in sizes)
                logger.warning("data.long_inputs: chunk: %s; the %d texts are read as %d windows (data.stride=%d)", share, len(sizes), count, data.stride)
                out[f"{name}_windows"] = count
            else:
                logger.warning("data.long_inputs: truncate: %s and are cut: they lose %.0f tokens on average (%.0f%% of each), up to %d. "
                               "data.long_inputs: chunk reads them whole", share, sum(over) / len(over),
                               100 * sum(o / (o + length) for o in over) / len(over), max(over))  # fmt: skip
        return out

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        if side := text_side(cfg):
            return side.required_columns(cfg)
        data = cfg.data
        columns = {"data.text_column": data.text_column}
        if data.text_pair_column:
            columns["data.text_pair_column"] = data.text_pair_column
        if cfg.task == "classification" or data.label_words:
            columns["data.label_column"] = data.label_column
        else:
            columns["data.target_column"] = data.target_column
        return columns

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        if side := text_side(cfg):
            return side.prepare(ds, cfg, origin)
        data = cfg.data
        for column in filter(None, (data.text_column, data.text_pair_column)):
            ds = text_column(ds, column, origin)
        if cfg.task == "text2text" and data.label_words:
            words = data.label_words

            def to_target(batch: dict[str, list]) -> dict[str, list]:
                targets = []
                for value in batch[data.label_column]:
                    label = str(int(value)) if isinstance(value, (int, float)) else str(value)
                    if label not in words:
                        raise DataError(f"{origin}: label '{label}' has no entry in data.label_words ({', '.join(words)})")
                    targets.append(words[label])
                return {data.target_column: targets}

            ds = ds.map(to_target, batched=True)
        return ds, 0

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The tokenizer (from the model, a GGUF file, or a finished run's folder), with the
        model's limit recorded and ``data.max_length`` checked against it, and a pad token
        where it has none (decoder LMs: their end-of-sequence token)."""
        try:
            tokenizer = AutoTokenizer.from_pretrained(source or cfg.model.name_or_path, **source_kwargs(cfg.model, source))
            config = None if source else load_config(cfg.model)  # a finished run's tokenizer recorded the limit
        except (OSError, ValueError) as exc:
            raise model_error(cfg.model, exc) from None
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 and Llama have none; padding is masked out anyway
        self.pad_token_id = tokenizer.pad_token_id
        return fit_tokenizer(tokenizer, config, cfg.data.max_length, f"'{cfg.model.name_or_path}'") if config is not None else tokenizer

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        if self.pad_token_id is None:  # the tokenizer decides the pad token the model's config records
            self.load_processor(cfg)
        if side := text_side(cfg):
            return side.load_model(cfg, label_names, self.pad_token_id)
        if cfg.task == "text2text":
            return load_auto_model(AutoModelForSeq2SeqLM, cfg.model)
        assert label_names is not None
        return load_auto_model(
            AutoModelForSequenceClassification,
            cfg.model,
            **label_head(label_names, cfg.data.problem_type),
            pad_token_id=self.pad_token_id,  # decoder classifiers read the last token that is not padding
        )

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        if side := text_side(cfg):
            return side.transform(processor, cfg, train)
        data = cfg.data
        length = input_length(data.max_length, processor)

        def classify(batch: dict[str, list]) -> dict[str, list]:
            pairs = batch[data.text_pair_column] if data.text_pair_column else None
            out = processor(batch[data.text_column], pairs, truncation=True, max_length=length)
            if "labels" in batch:
                out["labels"] = batch["labels"]
            return dict(out)

        def windows(batch: dict[str, list], indices: list[int] | None = None) -> dict[str, list]:
            # every window of every text, and which text (`document`: its row, or its place in the batch)
            out = processor(batch[data.text_column], truncation=True, max_length=length, stride=data.stride, return_overflowing_tokens=True)
            source = out.pop("overflow_to_sample_mapping")
            windowed = {k: list(v) for k, v in out.items()}
            windowed["document"] = [indices[j] if indices is not None else j for j in source]
            if "labels" in batch:
                windowed["labels"] = [batch["labels"][j] for j in source]
            return windowed

        def text2text(batch: dict[str, list]) -> dict[str, list]:
            sources = [data.source_prefix + s for s in batch[data.text_column]]
            out = processor(sources, truncation=True, max_length=length)
            if data.target_column in batch:
                out["labels"] = processor(text_target=batch[data.target_column], truncation=True, max_length=data.max_target_length)[
                    "input_ids"
                ]
            return dict(out)

        if cfg.task == "text2text":
            return text2text
        if not chunked(cfg):
            return classify
        if not processor.is_fast:
            raise ConfigError(f"data.long_inputs: chunk needs a fast tokenizer (tokenizer.json); {cfg.model.name_or_path} has none: use truncate")
        window_room(processor, length, data.stride)  # once, before any batch: a stride that leaves no new tokens is refused
        return windows

    def ready(self, ds: datasets.Dataset, processor: Any, cfg: RunConfig, train: bool) -> datasets.Dataset:
        if side := text_side(cfg):
            return side.ready(ds, processor, cfg, train)
        if chunked(cfg):  # a text becomes one or more windows: mapped now; evaluation keeps which text each is from
            windows = ds.map(self.transform(processor, cfg, train), batched=True, with_indices=True, remove_columns=ds.column_names)
            return windows.remove_columns("document") if train else windows
        return super().ready(ds, processor, cfg, train)

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        if side := text_side(cfg):
            return side.collator(processor, cfg, model)
        if cfg.task == "text2text":
            return DataCollatorForSeq2Seq(processor, model=model, label_pad_token_id=-100)
        if cfg.training_args.torch_compile:  # a few padded lengths: compiled once each, not once per batch length
            padding: Callable[[list[dict]], dict] = BucketedPadding(processor, input_length(cfg.data.max_length, processor))
        else:
            padding = DataCollatorWithPadding(processor)
        return WithoutDocuments(padding) if chunked(cfg) else padding

    def peft_task_type(self, task: str) -> str | None:
        if side := get_task(task).text:
            return side.peft_task_type()
        return "SEQ_2_SEQ_LM" if task == "text2text" else "SEQ_CLS"

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        if side := text_side(cfg):
            return side.input_row(value, cfg)
        if cfg.data.text_pair_column:
            first, _, second = value.partition(" ||| ")
            return {cfg.data.text_column: first, cfg.data.text_pair_column: second}
        return {cfg.data.text_column: value}
