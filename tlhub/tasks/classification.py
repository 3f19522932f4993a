"""Classification of a whole example (a sentence, an image, a clip), as one of three problem
types (``data.problem_type``, see :mod:`tlhub.labels`):

- single-label: accuracy, macro precision, recall and F1, and each class's precision, recall
  and F1 (``eval_recall/<class>``: the rare class's recall is what skewed data hides);
- multi-label: sigmoid scores thresholded at ``data.threshold`` (tuned on validation with
  ``data.tune_threshold``): micro, macro and per-sample F1 (``eval_f1_micro``, ``eval_f1_macro``,
  ``eval_f1_samples``), subset accuracy, and each label's precision, recall and F1;
- regression: mean squared and absolute error, Pearson's and Spearman's correlation.

Class weights (``training.class_weights``: none | balanced | {label: weight}) weight the loss
of single- and multi-label runs: cross-entropy's class weights, and binary cross-entropy's
positive weight per label. scikit-learn computes the metrics, scipy the correlations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tlhub.errors import ConfigError
from tlhub.labels import hf_problem_type
from tlhub.tasks.base import TASKS, RowScorer, Task, combined, first

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import EvalPrediction

    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))


def per_label(names: list[str], references: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Each label's precision, recall and F1 (``precision/<label>``, ...): class ids (single-label)
    or multi-hot rows (multi-label)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = None if references.ndim == 2 else list(range(len(names)))
    precision, recall, f1, _ = precision_recall_fscore_support(references, predictions, labels=labels, average=None, zero_division=0)
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        out[f"precision/{name}"] = float(precision[i])
        out[f"recall/{name}"] = float(recall[i])
        out[f"f1/{name}"] = float(f1[i])
    return out


def multi_label_scores(references: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Micro, macro and per-sample F1, micro precision and recall and subset accuracy of
    multi-hot predictions."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    references, predicted = references.astype(int), predicted.astype(int)
    return {
        "f1_micro": float(f1_score(references, predicted, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(references, predicted, average="macro", zero_division=0)),
        "f1_samples": float(f1_score(references, predicted, average="samples", zero_division=0)),
        "precision_micro": float(precision_score(references, predicted, average="micro", zero_division=0)),
        "recall_micro": float(recall_score(references, predicted, average="micro", zero_division=0)),
        "accuracy": float(accuracy_score(references, predicted)),  # every label of the row right
    }


def regression_scores(references: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Mean squared and absolute error, Pearson's r and Spearman's rho (0 where a side is constant)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    references, predicted = references.reshape(len(references), -1), predicted.reshape(len(predicted), -1)
    out = {"mse": float(mean_squared_error(references, predicted)), "mae": float(mean_absolute_error(references, predicted))}
    constant = np.ptp(predicted[:, 0]) == 0 or np.ptp(references[:, 0]) == 0
    out["pearson"] = 0.0 if constant else float(pearsonr(references[:, 0], predicted[:, 0])[0])
    out["spearman"] = 0.0 if constant else float(spearmanr(references[:, 0], predicted[:, 0])[0])
    return out


def best_threshold(references: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """The threshold of THRESHOLD_GRID with the highest micro F1 (ties: the one nearest 0.5),
    and that F1."""
    from sklearn.metrics import f1_score

    scores = [(float(f1_score(references.astype(int), (probabilities >= t).astype(int), average="micro", zero_division=0)), -abs(t - 0.5), t)
              for t in THRESHOLD_GRID]  # fmt: skip
    f1, _, threshold = max(scores)
    return float(threshold), f1


# --------------------------------------------------------------------------- long texts as windows


def aggregate_windows(logits: np.ndarray, documents: np.ndarray, problem: str | None, how: str) -> tuple[np.ndarray, np.ndarray]:
    """One row of scores per text from its windows' (``data.long_inputs: chunk``): the mean or
    the max (`how`) of the windows' class probabilities (softmax; sigmoid for multi-label) or
    values (regression), returned as logits again (log-probabilities, log-odds) so that the
    scorers and `tlhub predict` read them as a model's; and each text's first window, whose
    labels are the text's. Texts come in the order of their `documents` ids."""
    _, first_window, inverse = np.unique(documents, return_index=True, return_inverse=True)
    logits = logits.astype(np.float64)
    if problem == "multi_label":
        scores = sigmoid(logits)
    elif problem == "regression":
        scores = logits
    else:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
    shape = (len(first_window), *scores.shape[1:])
    if how == "max":
        combined_scores = np.full(shape, -np.inf)
        np.maximum.at(combined_scores, inverse, scores)
    else:
        combined_scores = np.zeros(shape)
        np.add.at(combined_scores, inverse, scores)
        combined_scores /= np.bincount(inverse).reshape(-1, *([1] * (scores.ndim - 1)))
    if problem == "multi_label":
        p = np.clip(combined_scores, 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p)), first_window
    if problem == "regression":
        return combined_scores, first_window
    return np.log(np.clip(combined_scores, 1e-12, None)), first_window


class WindowScorer(RowScorer):
    """Scores texts, not windows: each text's windows (the evaluated split's ``document``
    column) combined by :func:`aggregate_windows`, then scored as one prediction."""

    def __init__(self, score: Callable[[Any], dict[str, float]], problem: str | None, how: str) -> None:
        self.score, self.problem, self.how = score, problem, how

    def texts(self, pred: Any) -> EvalPrediction:
        """The prediction per text of a prediction per window of :attr:`dataset`."""
        from transformers import EvalPrediction

        assert self.dataset is not None, "the Trainer sets the evaluated split"
        logits, first_window = aggregate_windows(first(pred.predictions), np.asarray(self.dataset["document"]), self.problem, self.how)
        return EvalPrediction(predictions=logits, label_ids=np.asarray(pred.label_ids)[first_window])

    def __call__(self, pred: Any) -> dict[str, float]:
        return self.score(self.texts(pred))


# --------------------------------------------------------------------------- class weights


def class_weight_values(spec: Any, names: list[str], counts: dict[str, int], problem: str) -> list[float] | None:
    """One weight per label from ``training.class_weights``: none, ``balanced`` (scikit-learn's
    ``n / (classes * count)`` for classes; for multi-label each label's negatives over positives,
    binary cross-entropy's ``pos_weight``), or a mapping of label -> weight (labels left out: 1)."""
    if spec is None or spec == "none":
        return None
    if problem == "regression":
        raise ConfigError("training.class_weights: weights classes, and this run is a regression (data.problem_type); remove it")
    total = sum(counts.values())
    if spec == "balanced":
        if problem == "multi_label":
            return [float((total - n) / n) if n else 1.0 for n in (counts[name] for name in names)]
        present = sum(1 for name in names if counts[name])
        return [float(total / (present * counts[name])) if counts[name] else 1.0 for name in names]
    if isinstance(spec, dict):
        unknown = [str(k) for k in spec if str(k) not in names]
        if unknown:
            raise ConfigError(f"training.class_weights: label '{unknown[0]}' is not a label of this run (labels: {', '.join(names[:20])})")
        weights = {str(k): v for k, v in spec.items()}
        return [float(weights.get(name, 1.0)) for name in names]
    raise ConfigError(f"training.class_weights: expected none, balanced or a mapping of label to weight, got {spec!r}")


def weighted_loss(weights: list[float], problem: str | None) -> Callable[..., torch.Tensor]:
    """A Trainer ``compute_loss_func``: the model's loss for `problem` with `weights` (per class,
    or per label's positives), a mean over the batch."""
    import torch

    from tlhub.models import head_loss

    weight = torch.tensor(weights, dtype=torch.float32)

    def compute(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        return head_loss(logits, labels, hf_problem_type(problem), weight.to(logits.device))

    return compute


# --------------------------------------------------------------------------- the task


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    metrics = ("accuracy", "f1", "precision", "recall")
    main_metric = ("accuracy", True)
    pipeline_tags = {"text": "text-classification", "image": "image-classification", "audio": "audio-classification"}
    problem_types = True
    domain_adaptation = True

    def best_metric(self, cfg: RunConfig) -> tuple[str, bool]:
        return {"multi_label": ("f1_micro", True), "regression": ("mse", False)}.get(cfg.data.problem_type, self.main_metric)

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        score = self.scorer(cfg, label_names)
        if cfg.data.long_inputs == "chunk":  # the split's rows are windows: scored per text
            return WindowScorer(score, cfg.data.problem_type, cfg.data.chunk_aggregation)
        return score

    def scorer(self, cfg: RunConfig, label_names: list[str] | None) -> Callable[[Any], dict[str, float]]:
        """The metrics of one prediction per example, for the run's problem type."""
        problem = cfg.data.problem_type
        names = list(label_names or [])
        if problem == "regression":
            return lambda pred: regression_scores(np.asarray(pred.label_ids, dtype=np.float64), first(pred.predictions).astype(np.float64))
        if problem == "multi_label":
            default = cfg.data.threshold  # the threshold before tuning: its scores stay in the results (*_untuned)

            def multi(pred: Any) -> dict[str, float]:
                references = np.asarray(pred.label_ids)
                probabilities = sigmoid(first(pred.predictions))
                predicted = probabilities >= cfg.data.threshold  # read at each call: tuning changes it
                out = {**multi_label_scores(references, predicted), **per_label(names, references.astype(int), predicted.astype(int))}
                if cfg.data.threshold != default:
                    out.update({f"{k}_untuned": v for k, v in multi_label_scores(references, probabilities >= default).items()})
                return out

            return multi
        metrics = combined(self.metrics)

        def single(pred: Any) -> dict[str, float]:
            predicted = np.argmax(first(pred.predictions), axis=-1)
            out = metrics.compute(predictions=predicted, references=pred.label_ids)
            if names:
                out.update(per_label(names, np.asarray(pred.label_ids), predicted))
            return out

        return single

    def loss_function(self, cfg: RunConfig, label_names: list[str] | None, train: datasets.Dataset | None) -> Callable[..., Any] | None:
        """A weighted loss where ``training.class_weights`` asks for one (counts from `train`)."""
        from tlhub.labels import label_counts

        spec = cfg.training_args.class_weights
        if spec in (None, "none") or not label_names or train is None:
            return None
        problem = cfg.data.problem_type
        counts = label_counts(train, problem, label_names) if problem != "regression" else {}
        weights = class_weight_values(spec, label_names, counts, problem)
        logger.warning("training.class_weights: %s", ", ".join(f"{n}={w:.3g}" for n, w in zip(label_names, weights or [])))
        return weighted_loss(weights, problem) if weights else None

    def tune(self, cfg: RunConfig, trainer: Any) -> dict[str, Any]:
        """With ``data.tune_threshold``: data.threshold set to the micro-F1 best on validation
        (recorded in the run's config.yaml), and reported."""
        if cfg.data.problem_type != "multi_label" or not cfg.data.tune_threshold:
            return {}
        pred = trainer.predict(trainer.eval_dataset, metric_key_prefix="tune")
        if isinstance(trainer.compute_metrics, WindowScorer):  # windows of long texts: tuned on the texts' predictions
            pred = trainer.compute_metrics.texts(pred)
        threshold, f1 = best_threshold(np.asarray(pred.label_ids), sigmoid(first(pred.predictions)))
        logger.warning("data.tune_threshold: threshold %.3f gives micro F1 %.4f on validation (was %.3f)", threshold, f1, cfg.data.threshold)
        untuned = cfg.data.threshold
        cfg.data.threshold = threshold
        return {"threshold": threshold, "threshold_untuned": untuned}

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        import torch

        documents = batch.pop("document", None)  # windows of long texts: which input each is from
        logits = run.model(**batch).logits.float()
        problem = run.cfg.data.problem_type
        if documents is not None:
            combined_logits, _ = aggregate_windows(logits.cpu().numpy(), documents.cpu().numpy(), problem, run.cfg.data.chunk_aggregation)
            logits = torch.from_numpy(combined_logits).float()
        names = run.label_names or [str(i) for i in range(logits.shape[-1])]
        if problem == "regression":
            return [{"input": v, "value": float(x[0]) if len(x) == 1 else [float(y) for y in x]} for v, x in zip(inputs, logits.tolist())]
        if problem == "multi_label":
            out = []
            for value, row in zip(inputs, logits.sigmoid().tolist()):
                chosen = sorted((i for i, p in enumerate(row) if p >= run.cfg.data.threshold), key=lambda i: -row[i])
                out.append({"input": value, "labels": [names[i] for i in chosen], "scores": {names[i]: float(row[i]) for i in chosen},
                            "threshold": run.cfg.data.threshold})  # fmt: skip
            return out
        probabilities = logits.softmax(-1)
        scores, ids = probabilities.max(-1)
        return [{"input": v, "label": names[i], "score": float(s)} for v, i, s in zip(inputs, ids.tolist(), scores)]

    def describe(self, row: dict[str, Any]) -> str:
        if "value" in row:
            value = row["value"]
            return f"{value:.4f}\t{row['input']}" if isinstance(value, float) else f"{' '.join(f'{x:.4f}' for x in value)}\t{row['input']}"
        if "labels" in row:
            found = ", ".join(f"{name}:{score:.3f}" for name, score in row["scores"].items())
            return f"{found or '-'}\t{row['input']}"
        return f"{row['label']}\t{row['score']:.4f}\t{row['input']}"

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        code = super().card_code(cfg, pipeline_tag)
        if cfg.data.problem_type == "multi_label":
            return code + f"\n# multi-label: every label's sigmoid score; the run's threshold is {cfg.data.threshold}\nscores = pipe(TEXT, top_k=None)"
        if cfg.data.problem_type == "regression":
            return code + "\n# regression: the score is the predicted number\nvalue = pipe(TEXT)[0]['score']"
        return code
