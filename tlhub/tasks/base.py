"""The task interface (:class:`Task`) and its registry.

A task is what the model is trained to output, whatever the modality: classes, text, a
transcript, a completion, a tag per word. It knows its metrics and which one decides
"better", whether the model generates its outputs at evaluation, how a prediction reads, and
the Hugging Face pipeline that serves it. Kept apart from the package's ``__init__`` so the
task modules import it without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import datasets
import numpy as np
from torch import nn

from tlhub.metrics import load_metric
from tlhub.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import EvalPrediction

    from tlhub.config import RunConfig


class TextSide:
    """What a task of text alone brings to the text modality (which delegates to it): the
    columns it reads, its checks of the rows, its model class and how rows become tensors."""

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        raise NotImplementedError

    def class_column(self, cfg: RunConfig) -> str | None:
        """The column of the classes it learns (label_names), or None."""
        return None

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> tuple[datasets.Dataset, int]:
        return ds, 0

    def load_model(self, cfg: RunConfig, label_names: list[str] | None, pad_token_id: int | None) -> nn.Module:
        raise NotImplementedError

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        raise NotImplementedError

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        raise NotImplementedError

    def peft_task_type(self) -> str | None:
        return None

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        return {cfg.data.text_column: value}

    def ready(self, ds: datasets.Dataset, processor: Any, cfg: RunConfig, train: bool) -> datasets.Dataset:
        """A split as the Trainer reads it: the rows, preprocessed lazily by :meth:`transform`
        (one model input per row). A task whose rows become several inputs maps them eagerly."""
        return ds.with_transform(self.transform(processor, cfg, train))


class RowScorer:
    """A `compute_metrics` that reads the rows it scores besides the predictions (question
    answering maps each window's logits back to its question and context):
    :class:`tlhub.trainer.TlhubTrainer` sets `dataset` to the evaluated split before each evaluation."""

    dataset: datasets.Dataset | None = None

    def __call__(self, pred: EvalPrediction) -> dict[str, float]:
        raise NotImplementedError


class ImageSide:
    """What an image task other than classification brings to the image modality (which
    delegates to it): how a folder is read, its checks of the rows, its processor, model
    class, transforms and collator, and which part of its model is the pretrained body."""

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        raise NotImplementedError

    def class_column(self, cfg: RunConfig) -> str | None:
        return None

    def min_classes(self, cfg: RunConfig) -> int:
        """The fewest classes the training data may hold."""
        return 2

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        raise NotImplementedError

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        return ds, 0

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        raise NotImplementedError

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        raise NotImplementedError

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        raise NotImplementedError

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        raise NotImplementedError

    def body(self, model: nn.Module) -> nn.Module | None:
        """The pretrained body that feature_extraction freezes and partial unfreezes in part."""
        return None

    def inner_heads(self, model: nn.Module) -> list[str]:
        """Heads inside the base model that lora trains in full (besides those next to it)."""
        return []


class AudioSide:
    """What an audio task other than classification brings to the audio modality (which
    delegates to it): the columns it reads, its checks of the rows, its processor, model
    class, labels and how they are batched. The modality keeps the clips (decoding,
    augmentation, Whisper's window); a task names the class (:attr:`Task.audio`) and the
    modality holds one per run, since a side may keep what the training rows taught it (a
    CTC vocabulary)."""

    # Whether augmentation and cropping may move a clip in time: not when its label is what
    # is said in it (a transcript), which a random offset would cut.
    time_shift: ClassVar[bool] = True

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        raise NotImplementedError

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        raise NotImplementedError

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> datasets.Dataset:
        """The rows (their clips already checked) as the task reads them."""
        return ds

    def load_processor(self, cfg: RunConfig, name: str, pretrained: dict[str, Any], source: str | None) -> Any:
        """The processor, from `name` with `pretrained` (revision, remote code); `source`: a finished run's folder."""
        raise NotImplementedError

    def load_model(self, cfg: RunConfig) -> nn.Module:
        raise NotImplementedError

    def labels(self, batch: dict[str, list], processor: Any, cfg: RunConfig) -> list | None:
        """A batch of rows' labels as the model reads them, or None where the rows hold none."""
        return None

    def label_padder(self, processor: Any, model: nn.Module) -> Callable[[list], torch.Tensor] | None:
        """What batches the labels of several rows (None: class ids, as a tensor)."""
        return None


class Task:
    """What the pipeline, the model card and `tlhub predict` ask of a task."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()  # evaluate modules (shipped in tlhub.metrics)
    main_metric: ClassVar[tuple[str, bool]] = ("", True)  # the metric that decides "better", and whether larger is
    pipeline_tags: ClassVar[dict[str, str]] = {}  # modality -> transformers pipeline task
    text: ClassVar[TextSide | None] = None  # a task of text alone: its side of the text modality
    image: ClassVar[ImageSide | None] = None  # an image task other than classification: its side of the image modality
    audio: ClassVar[type[AudioSide] | None] = None  # an audio task other than classification: its side of the audio modality, one per run
    training_defaults: ClassVar[dict[str, Any]] = {}  # TrainingArguments this task needs unless the config sets them
    prompted: ClassVar[bool] = False  # generates from a prompt inside its input (a decoder LM), not seq2seq
    label_names: ClassVar[tuple[str, ...]] = ("labels",)  # the batch keys the Trainer reads as labels (TrainingArguments.label_names)
    metrics_read_inputs: ClassVar[bool] = False  # compute_metrics reads the inputs too (a forecast's history)
    problem_types: ClassVar[bool] = False  # reads data.problem_type: single-label, multi-label or regression (tlhub.labels)
    generation_settings: ClassVar[bool] = False  # the training section takes Seq2SeqTrainingArguments' generation keys
    domain_adaptation: ClassVar[bool] = False  # a domain_adaptation section applies (scored by accuracy on the target)

    def best_metric(self, cfg: RunConfig) -> tuple[str, bool]:
        """The metric that decides "better" for this run (early stopping), and whether larger is."""
        return self.main_metric

    def loss_function(self, cfg: RunConfig, label_names: list[str] | None, train: datasets.Dataset | None) -> Callable[..., Any] | None:
        """A Trainer ``compute_loss_func`` replacing the model's own loss (class weights), or None."""
        return None

    def tune(self, cfg: RunConfig, trainer: Any) -> dict[str, Any]:
        """After training, before the final evaluation: settings chosen on the validation split
        (a multi-label decision threshold), written into `cfg` and returned for the results."""
        return {}

    def derived_metrics(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Metrics computed from the Trainer's own (a language model's perplexity from its loss)."""
        return {}

    def generates(self, cfg: RunConfig, source: str | None = None) -> bool:
        """Whether the model generates its outputs at evaluation (Seq2Seq generation)."""
        return False

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[EvalPrediction], dict[str, float]]:
        """The Trainer's `compute_metrics` for this task."""
        raise NotImplementedError

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        """One result per input of a batch (`tlhub predict`), from a finished run's model."""
        raise NotImplementedError

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        """The model card's code that loads a plain run folder (strategies adapt it: LoRA's merged/)."""
        return f"from transformers import pipeline\npipe = pipeline({pipeline_tag!r}, model=RUN_DIR)"

    def plot(self, rows: list[dict[str, Any]], path: Path) -> None:
        """`tlhub predict --plot PATH`: a picture of the predictions (a forecast over its history)."""
        from tlhub.errors import ConfigError

        raise ConfigError(f"--plot: draws forecasts over their history (task: forecasting), not {self.name}; leave it out")

    def draw(self, row: dict[str, Any], path: Path) -> None:
        """`tlhub predict --draw`: a copy of the input with the prediction drawn on it."""
        from tlhub.errors import ConfigError

        raise ConfigError(f"predict --draw: draws predicted boxes, for object_detection; this run is {self.name}")

    def describe(self, row: dict[str, Any]) -> str:
        """One line of `tlhub predict`'s output."""
        return f"{row['text']}\t{row['input']}"

    def prediction_step(self, trainer: Any, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool) -> tuple[Any, Any, Any] | None:
        """(loss, predictions, labels) of an evaluation batch the task scores itself, or None: the
        Trainer's own step (Seq2SeqTrainer's generation where the model generates)."""
        return None


TASKS: Registry[type[Task]] = Registry("task", "task")


def get_task(name: str) -> Task:
    """The registered task called `name`, ready to use."""
    return TASKS.get(name)()


def combined(names: tuple[str, ...]) -> Any:
    """The `evaluate` modules `names`, combined so that one `compute` returns them all."""
    import evaluate

    return evaluate.combine([load_metric(name) for name in names])


def first(predictions: Any) -> np.ndarray:
    """The logits or ids of an EvalPrediction whose model returned a tuple."""
    return predictions[0] if isinstance(predictions, tuple) else predictions
