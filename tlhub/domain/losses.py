"""The losses of domain adaptation: gradient reversal and the domain classifier (DANN, CDAN),
Minimum Class Confusion, pseudo-labels, CORAL, MMD, and DANN's ramp. Plain functions and
modules of tensors, tested one by one (tests/test_domain.py)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """Identity on the way forward; the gradient times ``-coefficient`` on the way back."""
    return _ReverseGradient.apply(x, coefficient)


class GradientReversal(nn.Module):
    """The gradient-reversal layer as a module; set ``coefficient`` as training goes on."""

    def __init__(self, coefficient: float = 1.0) -> None:
        super().__init__()
        self.coefficient = coefficient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.coefficient)


class DomainClassifier(nn.Module):
    """GRL -> bottleneck (linear, layer norm, ReLU) -> linear, ReLU, dropout -> linear: one
    logit, source (0) or target (1).

    Bounded both ways, whatever the features or the learning rate do. Its logit: the layer
    norm (no learned scale) caps the length of what follows it, so inflating the features
    cannot inflate the domain loss (without it, on FSDD the domain loss went from 0.7 to
    over 200 and the model to one class for everything). Its reversed gradient: every
    linear layer is spectrally normalised and the norm's epsilon is 1, so the classifier
    is 1-Lipschitz in the features and the gradient it sends back is never larger than
    the domain loss's own; a plain layer norm divides by the spread of its input, which
    for small sentence embeddings multiplied the reversed gradient ~4x over the task's
    and wrecked a pretrained text encoder (MiniLM, Amazon -> Yelp: 0.90 -> 0.62).
    """

    def __init__(self, in_features: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm

        self.reversal = GradientReversal()
        self.net = nn.Sequential(
            spectral_norm(nn.Linear(in_features, hidden)), nn.LayerNorm(hidden, elementwise_affine=False, eps=1.0), nn.ReLU(),
            spectral_norm(nn.Linear(hidden, hidden)), nn.ReLU(), nn.Dropout(dropout), spectral_norm(nn.Linear(hidden, 1)),
        )  # fmt: skip

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.reversal(features)).squeeze(-1)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-row entropy of class probabilities (nats)."""
    return -(probabilities * torch.log(probabilities.clamp(min=1e-8))).sum(-1)


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum Class Confusion (Jin et al. 2020) of one batch of target logits.

    Temperature-scaled probabilities P (batch x classes); rows weighted by certainty,
    ``1 + exp(-entropy)``, normalised to sum to the batch size; the class-confusion
    matrix ``C = P^T W P`` with each row normalised to sum to 1; the loss is C's
    off-diagonal mass per class: 0 when every row is confident in one class and no two
    classes are confused, up to (classes - 1) / classes when predictions are uniform.
    """
    p = (logits.float() / temperature).softmax(-1)
    weight = 1.0 + torch.exp(-entropy(p).detach())
    weight = len(p) * weight / weight.sum()
    confusion = (p * weight[:, None]).T @ p
    confusion = confusion / confusion.sum(1, keepdim=True).clamp(min=1e-8)
    classes = p.shape[1]
    return (confusion.sum() - confusion.trace()) / classes


def pseudo_label_loss(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, float]:
    """Cross-entropy of target logits against their own confident predictions (FixMatch's
    mask, without augmentation), over the whole batch; and the fraction of rows kept."""
    probabilities = logits.detach().float().softmax(-1)
    confidence, predicted = probabilities.max(-1)
    keep = (confidence >= threshold).to(logits.dtype)
    losses = nn.functional.cross_entropy(logits.float(), predicted, reduction="none")
    return (losses * keep).sum() / max(len(logits), 1), float(keep.mean())


def confident_rows(probabilities: torch.Tensor, fraction: float) -> torch.Tensor:
    """A teacher's class-balanced pseudo-labels (CBST, Zou et al. 2018): for each class, the
    `fraction` of the rows predicted as it that the teacher is most confident in keep that
    class; every other row is -100. Per class, so that a class the teacher predicts rarely
    (the hard one on the target) is not crowded out by the classes it is sure of."""
    confidence, predicted = probabilities.float().max(-1)
    labels = torch.full_like(predicted, -100)
    for c in predicted.unique():
        rows = (predicted == c).nonzero().squeeze(1)
        keep = max(1, round(fraction * len(rows)))
        labels[rows[confidence[rows].argsort(descending=True)[:keep]]] = c
    return labels


def conditioned_features(features: torch.Tensor, probabilities: torch.Tensor, projection: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """CDAN's input to the domain classifier: features (x) class probabilities, flattened,
    or the randomized multilinear map ``(f R_f) * (g R_g) / sqrt(d)`` when that is too wide."""
    if projection is None:
        return torch.bmm(probabilities.unsqueeze(2), features.unsqueeze(1)).flatten(1)
    rf, rg = projection
    return (features @ rf) * (probabilities @ rg) / math.sqrt(rf.shape[1])


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: squared Frobenius distance of the feature covariances over 4 d^2.

    Zero when both batches have the same covariance (identical batches), positive when
    their second-order statistics differ.
    """
    d = source.shape[1]

    def covariance(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        centred = x - x.mean(0, keepdim=True)
        return centred.T @ centred / max(x.shape[0] - 1, 1)

    return ((covariance(source) - covariance(target)) ** 2).sum() / (4.0 * d * d)


def mmd_loss(
    source: torch.Tensor, target: torch.Tensor, multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels, unbiased estimate.

    The bandwidths are the mean pairwise squared distance of the joint batch times each
    multiplier (DAN's multi-kernel choice), so the loss is scale-free. Unbiased as in DAN
    and TLlib: the within-domain means leave out each row's kernel with itself. The biased
    estimate keeps it, so for two batches of one distribution it sits at about
    2 (k(x, x) - k(x, x')) / batch instead of 0, and it falls as each batch's rows draw
    together: on MiniLM's sentences it pulled the features of both classes into one and
    the classifier with them (Amazon -> Yelp, 0.53 target accuracy, 97% one class).
    About 0 for two draws of one distribution; positive when the distributions differ.
    """
    x = torch.cat([source.float(), target.float()])
    distances = torch.cdist(x, x).pow(2)
    n = x.shape[0]
    base = distances.detach().sum() / max(n * n - n, 1)
    base = base.clamp(min=1e-8)
    kernel = sum(torch.exp(-distances / (base * m)) for m in multipliers)
    s = source.shape[0]

    def within(block: torch.Tensor) -> torch.Tensor:
        rows = block.shape[0]
        return (block.sum() - block.diagonal().sum()) / max(rows * (rows - 1), 1)

    return within(kernel[:s, :s]) + within(kernel[s:, s:]) - 2 * kernel[:s, s:].mean()


def ramp(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule: 2 / (1 + exp(-gamma * p)) - 1, rising from 0 to ~1 as p goes 0 -> 1."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0
