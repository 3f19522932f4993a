"""What a domain-adaptation run reports of the target: its accuracy beside the source-only
baseline's, how its predicted classes drift from the source's label shares (with a warning
where they lean to one class), and ``target_predictions.jsonl``, the labels it gives the target."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import Trainer

from tlhub.domain.target import TARGET_KEY
from tlhub.errors import DataError
from tlhub.io import atomic_write_text

logger = logging.getLogger(__name__)

# target_class_drift above this logs a warning: the model predicts the target's classes in
# proportions far from the source labels' (a collapse to one class of ten is 0.9, of two 0.5)
DRIFT_WARNING = 0.25


def class_drift(predicted: list[int], source: list[int]) -> float:
    """Total variation distance between the shares of two class histograms (the classes
    predicted on the target, the labels of the source): 0 when the model predicts the
    classes in the source's proportions, near 1 when it predicts one class the source rarely has."""
    p, q = torch.tensor(predicted, dtype=torch.float64), torch.tensor(source, dtype=torch.float64)
    return float((p / p.sum().clamp(min=1) - q / q.sum().clamp(min=1)).abs().sum() / 2)


def drift_warning(names: list[str], predicted: list[int], source: list[int]) -> str | None:
    """The warning for a model whose target predictions drift from the source's label shares
    by more than DRIFT_WARNING, naming the class it predicts most beyond its share; else None.
    Most useful where the target has no labels: its histogram is then the only sign of a
    model that adaptation pushed towards one class."""
    drift = class_drift(predicted, source)
    if drift <= DRIFT_WARNING:
        return None
    total_p, total_s = max(sum(predicted), 1), max(sum(source), 1)
    c = max(range(len(predicted)), key=lambda i: predicted[i] / total_p - source[i] / total_s)
    return (
        f"domain_adaptation: the model predicts '{names[c]}' for {100 * predicted[c] / total_p:.0f}% of the target rows, "
        f"where {100 * source[c] / total_s:.0f}% of the source's labels are '{names[c]}' (target_class_drift {drift:.2f}); "
        "unless the target's classes really are that unbalanced, the model leans towards it: check target_predictions.jsonl "
        "and compare with method: source_only (tlhub compare CONFIG --methods source_only,...) before relying on it"
    )


def target_results(
    trainer: Trainer, rows: datasets.Dataset, labelled: bool, baseline: dict[str, Any] | None, method: str, source_counts: list[int]
) -> tuple[dict[str, Any], torch.Tensor]:
    """Target metrics of the trained model on the target `rows` (``target_*``, where the target
    is `labelled`) beside the baseline's (``source_only_target_*``), how far its predicted classes
    drift from the source labels' shares (`source_counts`, per class), and its class
    probabilities on every target row."""
    results: dict[str, Any] = {"domain_adaptation_method": method, "target_samples": len(rows)}
    prediction = trainer.predict(rows, metric_key_prefix="target")
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    probabilities = torch.as_tensor(logits).float().softmax(-1)
    # how often each class is predicted on the target: a model collapsed to one class shows here
    counts = torch.bincount(probabilities.argmax(-1), minlength=probabilities.shape[-1]).tolist()
    names = trainer.model.config.id2label if hasattr(trainer.model, "config") else {}
    results["target_predicted_classes"] = {str(names.get(i, i)): c for i, c in enumerate(counts)}
    results["target_class_drift"] = round(class_drift(counts, source_counts), 4)
    warning = drift_warning([str(names.get(i, i)) for i in range(len(counts))], counts, source_counts)
    if warning:
        logger.warning(warning)
    if not labelled:
        return results, probabilities
    results.update({k: v for k, v in prediction.metrics.items() if not k.endswith(("_runtime", "_per_second"))})
    if baseline is not None:
        results.update({f"source_only_{k}": v for k, v in baseline.items() if k.startswith("target_") and k != "target_samples"})
        if "source_only_target_accuracy" in results and "target_accuracy" in results:
            results["target_accuracy_gain"] = round(results["target_accuracy"] - results["source_only_target_accuracy"], 6)
            logger.warning(
                "target accuracy: source-only %.4f, %s %.4f",
                results["source_only_target_accuracy"],
                method,
                results["target_accuracy"],
            )
    return results, probabilities


def write_target_predictions(path: Path, probabilities: torch.Tensor, label_names: list[str]) -> None:
    """``target_predictions.jsonl``: for every target row (in the order the run read them, after
    ``max_target_samples``), the predicted label and each label's probability: what a user
    adapting to an unlabelled target came for, and what a self_training round's teacher hands on."""
    lines = []
    for row, (best, p) in enumerate(zip(probabilities.argmax(-1).tolist(), probabilities.tolist())):
        line = {"row": row, "label": label_names[best], "probabilities": {n: round(v, 8) for n, v in zip(label_names, p)}}
        lines.append(json.dumps(line))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_target_predictions(path: Path, label_names: list[str], rows: int) -> torch.Tensor:
    """The probabilities :func:`write_target_predictions` wrote, (rows, labels) in `label_names` order."""
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        probabilities = torch.tensor([[line["probabilities"][n] for n in label_names] for line in lines])
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: not the target predictions of a finished run ({error}); remove its folder and train again") from None
    if len(probabilities) != rows:
        raise DataError(f"{path}: {len(probabilities)} rows, but {TARGET_KEY} has {rows}; remove its folder and train again")
    return probabilities
