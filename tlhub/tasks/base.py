"""The task interface (:class:`Task`) and its registry.

A task is what the model is trained to output, whatever the modality: classes, text, a
transcript, a completion, a tag per word. It knows its metrics and which one decides
"better", whether the model generates its outputs at evaluation, how a prediction reads, and
the Hugging Face pipeline that serves it. Kept apart from the package's ``__init__`` so the
task modules import it without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tlhub.metrics import load_metric
from tlhub.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import EvalPrediction

    from tlhub.config import RunConfig


class Task:
    """What the pipeline, the model card and `tlhub predict` ask of a task."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()  # evaluate modules (shipped in tlhub.metrics)
    main_metric: ClassVar[tuple[str, bool]] = ("", True)  # the metric that decides "better", and whether larger is
    pipeline_tags: ClassVar[dict[str, str]] = {}  # modality -> transformers pipeline task
    has_classes: ClassVar[bool] = False  # its labels are names read from the training data (label_names)

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

    def describe(self, row: dict[str, Any]) -> str:
        """One line of `tlhub predict`'s output."""
        return f"{row['text']}\t{row['input']}"


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
