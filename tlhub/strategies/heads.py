"""A linear head fitted in closed form: logistic regression on the backbone's features.

With a few dozen labelled rows, training a head by gradient descent for a fixed number
of epochs at a fixed learning rate is a guess; a logistic regression whose L2 strength
is chosen by stratified cross-validation (scikit-learn's ``LogisticRegressionCV``) is
the standard answer, and it takes seconds on cached features (``strategy.head:
logistic``). The fitted coefficients become the weights of the run's ordinary linear
head, so the run saves, loads and predicts like any feature-extraction run.

The features are L2-normalised first (and the head normalises them too): on MiniLM
sentiment features that raised 8-shot accuracy on another domain from 0.700 to 0.733
(5 draws; docs/benchmarks.md), as the regularisation path no longer depends on the
embedding's scale.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from tlhub.models import PooledClassifier

C_GRID = np.logspace(-4, 4, 17)


def fit_logistic_head(model: PooledClassifier, features: torch.Tensor, labels: torch.Tensor, seed: int = 0, class_weight: str | None = None) -> dict[str, Any]:
    """Fit ``model.head`` to (features, labels) in closed form on L2-normalised features (the
    head then normalises too): a cross-validated logistic regression for classes, one per label
    (one-vs-rest) for multi-label, a cross-validated ridge regression for regression
    (``model.problem_type``). `class_weight` ``balanced`` weighs rare classes up (scikit-learn's)."""
    model.normalize = True  # fitted on unit vectors (as sentence-transformers embeddings are)
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    return fit_closed_form(model.head, unit, labels, model.problem_type, seed, class_weight)


def fit_closed_form(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, problem_type: str | None, seed: int = 0,
                    class_weight: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A linear layer fitted in closed form for transformers' `problem_type`: ridge regression,
    one-vs-rest logistic regressions (multi-label), or one logistic regression (classes)."""
    if problem_type == "regression":
        return fit_ridge(head, features.float(), labels)
    if problem_type == "multi_label_classification":
        return fit_one_vs_rest(head, features.float(), labels, seed, class_weight)
    return fit_linear(head, features, labels, seed, class_weight)


def _set_head(head: torch.nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)).to(head.weight))
        if head.bias is not None:
            head.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)).to(head.bias))


def fit_ridge(head: torch.nn.Linear, features: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """A linear layer set to a ridge regression of `targets` on `features`, its L2 strength
    chosen by efficient leave-one-out cross-validation (scikit-learn's RidgeCV)."""
    from sklearn.linear_model import RidgeCV

    start = time.perf_counter()
    y = targets.float().numpy().reshape(len(targets), -1)
    fitted = RidgeCV(alphas=np.logspace(-4, 4, 17), fit_intercept=head.bias is not None).fit(features.numpy(), y)
    coef = np.atleast_2d(fitted.coef_)
    bias = np.atleast_1d(fitted.intercept_) if head.bias is not None else np.zeros(coef.shape[0])
    _set_head(head, coef, bias)
    return {"head": "ridge", "head_alpha": float(fitted.alpha_), "head_fit_seconds": round(time.perf_counter() - start, 3)}


def fit_one_vs_rest(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, seed: int = 0, class_weight: str | None = None) -> dict[str, Any]:
    """A linear layer set to one logistic regression per label (one-vs-rest) of multi-hot
    `labels`, each with its own L2 strength chosen by stratified cross-validation where the
    label has the rows for it."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    x, y = features.numpy(), labels.numpy().round().astype(int)
    with_bias = head.bias is not None
    weight = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    bias = np.zeros(y.shape[1], dtype=np.float32)
    chosen = []
    for j in range(y.shape[1]):
        column = y[:, j]
        positives, negatives = int(column.sum()), int(len(column) - column.sum())
        if positives == 0 or negatives == 0:  # a label always (or never) present: a constant logit
            bias[j] = 10.0 if positives else -10.0
            continue
        folds = min(3, positives, negatives)
        if folds >= 2:
            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            fitted = LogisticRegressionCV(Cs=C_GRID[::2], cv=cv, max_iter=2000, scoring="neg_log_loss", fit_intercept=with_bias,
                                          class_weight=class_weight).fit(x, column)  # fmt: skip
            chosen.append(float(np.atleast_1d(fitted.C_)[0]))
        else:
            fitted = LogisticRegression(C=1.0, max_iter=2000, fit_intercept=with_bias, class_weight=class_weight).fit(x, column)
        weight[j] = fitted.coef_[0]
        bias[j] = fitted.intercept_[0] if with_bias else 0.0
    _set_head(head, weight, bias)
    return {"head": "one_vs_rest_logistic", "head_C_median": float(np.median(chosen)) if chosen else 1.0,
            "head_fit_seconds": round(time.perf_counter() - start, 3)}  # fmt: skip


def fit_linear(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, seed: int = 0, class_weight: str | None = None) -> dict[str, Any]:
    """Set a linear layer's weights to a logistic regression of `labels` on `features`, its L2
    strength chosen by stratified 5-fold cross-validation (log loss); what it did, to report."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    with_bias = head.bias is not None  # a decoder's `score` layer has none: fit without one
    x = features.float().numpy()
    y = labels.numpy()
    smallest = int(np.bincount(y).min()) if len(y) else 0
    folds = min(5, smallest)
    if folds >= 2:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        fitted = LogisticRegressionCV(Cs=C_GRID, cv=cv, max_iter=2000, scoring="neg_log_loss", fit_intercept=with_bias,
                                      class_weight=class_weight).fit(x, y)  # fmt: skip
        c = float(np.atleast_1d(fitted.C_)[0])
    else:  # a class with a single row: no folds to choose C on
        c = 1.0
        fitted = LogisticRegression(C=c, max_iter=2000, fit_intercept=with_bias, class_weight=class_weight).fit(x, y)
    coef, intercept = fitted.coef_, (fitted.intercept_ if with_bias else np.zeros(len(fitted.coef_)))
    classes = head.out_features
    weight = np.zeros((classes, x.shape[1]), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    if coef.shape[0] == 1:  # binary: one logit difference, split evenly between the two classes
        present = fitted.classes_
        weight[present[1]], weight[present[0]] = coef[0] / 2, -coef[0] / 2
        bias[present[1]], bias[present[0]] = intercept[0] / 2, -intercept[0] / 2
    else:
        weight[fitted.classes_], bias[fitted.classes_] = coef, intercept
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight).to(head.weight))
        if head.bias is not None:
            head.bias.copy_(torch.from_numpy(bias).to(head.bias))
    return {"head": "logistic", "head_C": c, "head_cv_folds": folds if folds >= 2 else 0, "head_fit_seconds": round(time.perf_counter() - start, 3)}
