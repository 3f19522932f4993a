"""Classification: one class per example (a sentence, an image, a clip), scored by accuracy
and macro precision, recall and F1."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tlhub.tasks.base import TASKS, Task, combined, first

if TYPE_CHECKING:
    import torch

    from tlhub.config import RunConfig


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    metrics = ("accuracy", "f1", "precision", "recall")
    main_metric = ("accuracy", True)
    pipeline_tags = {"text": "text-classification", "image": "image-classification", "audio": "audio-classification"}

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        metrics = combined(self.metrics)

        def compute(pred: Any) -> dict[str, float]:
            return metrics.compute(predictions=np.argmax(first(pred.predictions), axis=-1), references=pred.label_ids)

        return compute

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        probabilities = run.model(**batch).logits.softmax(-1)
        scores, ids = probabilities.max(-1)
        names = run.label_names or [str(i) for i in range(probabilities.shape[-1])]
        return [{"input": v, "label": names[i], "score": float(s)} for v, i, s in zip(inputs, ids.tolist(), scores)]

    def describe(self, row: dict[str, Any]) -> str:
        return f"{row['label']}\t{row['score']:.4f}\t{row['input']}"
