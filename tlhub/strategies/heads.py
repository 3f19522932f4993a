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


def fit_logistic_head(model: PooledClassifier, features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Fit ``model.head`` to (features, labels) by cross-validated logistic regression, on
    L2-normalised features (the head then normalises too)."""
    model.normalize = True  # fitted on unit vectors (as sentence-transformers embeddings are)
    return fit_linear(model.head, torch.nn.functional.normalize(features.float(), dim=-1), labels, seed)


def fit_linear(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict[str, Any]:
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
        fitted = LogisticRegressionCV(Cs=C_GRID, cv=cv, max_iter=2000, scoring="neg_log_loss", fit_intercept=with_bias).fit(x, y)
        c = float(np.atleast_1d(fitted.C_)[0])
    else:  # a class with a single row: no folds to choose C on
        c = 1.0
        fitted = LogisticRegression(C=c, max_iter=2000, fit_intercept=with_bias).fit(x, y)
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
