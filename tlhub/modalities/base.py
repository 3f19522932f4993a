"""The modality interface (:class:`Modality`) and its registry.

Kept apart from the package's ``__init__`` so that the modality modules import it
without importing the package that imports them: imports run one way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from torch import nn

from tlhub.errors import DataError
from tlhub.registry import Registry
from tlhub.settings import check

if TYPE_CHECKING:
    from tlhub.config import RunConfig


class Modality:
    """The interface the pipeline, the strategies and `tlhub predict` use."""

    name: str = ""
    tasks: tuple[str, ...] = ()

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        """Config key -> column name, for every column the task reads."""
        raise NotImplementedError

    def check(self, cfg: RunConfig) -> None:
        """Refuse, naming the key, a setting this modality does not read for this task (when the
        config is read, before any data)."""
        check(cfg.data.long_inputs == "truncate", "data.long_inputs",
              f"chunk reads long texts as windows, for text classification; the {self.name} modality does not read it: remove it")  # fmt: skip

    def length_report(self, splits: dict[str, datasets.Dataset], processor: Any, cfg: RunConfig) -> dict[str, Any]:
        """What the model will not read whole (texts longer than data.max_length), logged, and
        its counts for the results; empty where nothing is cut."""
        return {}

    def problem_types(self, cfg: RunConfig) -> bool:
        """Whether the run's labels follow ``data.problem_type`` (single-label, multi-label,
        regression: tlhub.labels); the task says."""
        from tlhub.tasks import get_task

        return get_task(cfg.task).problem_types

    def class_column(self, cfg: RunConfig) -> str | None:
        """The column whose values are the classes the model learns (their names become
        label_names), or None for a task without classes (text2text, speech recognition)."""
        return cfg.data.label_column if cfg.task == "classification" else None

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        """Read a folder of examples (e.g. ``<label>/<file>``) into a Dataset."""
        raise DataError(
            f"{key}: {path} is a folder; the {self.name} modality reads a file (.csv .tsv .json .jsonl .parquet) "
            "or a folder written by Dataset.save_to_disk"
        )

    def read_file(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset | None:
        """Read a file of the modality's own format (a .ts file of series); None: a table,
        which tlhub.data reads."""
        return None

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        """Check rows (and resolve paths); return the dataset and how many rows were skipped.
        Messages name the split by `origin` (``data.train (reviews.csv)``)."""
        return ds, 0

    def split(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> tuple[datasets.Dataset, datasets.Dataset] | None:
        """Hold out validation rows from train when the config gives none: (train, validation),
        or None for tlhub.data's seeded (stratified) split. Rows ordered in time (forecast
        windows) are split by time instead, so no window is both trained and scored on."""
        return None

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The tokenizer / image processor / feature extractor (from `source` or the model)."""
        raise NotImplementedError

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        """The task model with a new head sized to `label_names`, pretrained or from scratch."""
        raise NotImplementedError

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        """A `Dataset.set_transform` function: a batch of raw rows -> model inputs (+ labels)."""
        raise NotImplementedError

    def ready(self, ds: datasets.Dataset, processor: Any, cfg: RunConfig, train: bool) -> datasets.Dataset:
        """A split as the Trainer reads it: by default the rows with :meth:`transform` applied
        lazily (set_transform); a task whose rows become several model inputs maps them eagerly."""
        return ds.with_transform(self.transform(processor, cfg, train))

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        """Pads a list of transformed examples into a batch."""
        raise NotImplementedError

    def min_classes(self, cfg: RunConfig) -> int:
        """The fewest classes the training data may hold (a detector may learn one class)."""
        return 2

    def body(self, model: nn.Module, task: str) -> nn.Module | None:
        """The pretrained body that feature_extraction freezes and partial unfreezes in part, where
        the model says so (a detector: its convolutional backbone); None: found by shape."""
        return None

    def blocks(self, model: nn.Module) -> list[nn.ModuleList] | None:
        """The model's stacks of blocks for `partial`; None lets the strategy find them."""
        return None

    def inner_heads(self, model: nn.Module, task: str) -> list[str]:
        """Heads the model keeps inside its base model (RT-DETR's per-layer class and box heads),
        which lora trains in full beside those it finds next to the base model (``head_names``)."""
        return []

    def peft_task_type(self, task: str) -> str | None:
        """PEFT's task type for this modality and task (None: a plain PeftModel)."""
        return None

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        """One raw row for `tlhub predict` from a command-line input (text, or a file path)."""
        raise NotImplementedError

    def input_rows(self, value: str, cfg: RunConfig) -> list[tuple[str, dict[str, Any]]]:
        """The rows of one `tlhub predict` input, each with the name its output line shows: one
        row by default; a file of several examples (a table of series) gives a row each."""
        return [(value, self.input_row(value, cfg))]


MODALITIES: Registry[type[Modality]] = Registry("modality", "modality")


def get_modality(name: str) -> Modality:
    """The registered modality called `name`, ready to use."""
    return MODALITIES.get(name)()
