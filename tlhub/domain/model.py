"""The module a domain-adaptation run trains: the task model and what its method adds (the
domain classifier of dann and cdan), one forward computing the task loss on the source batch
and the method's loss on both batches."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.utils import ModelOutput

from tlhub.domain.losses import (
    DomainClassifier,
    conditioned_features,
    coral_loss,
    entropy,
    mcc_loss,
    mmd_loss,
    pseudo_label_loss,
)
from tlhub.domain.settings import LOSS_METHODS
from tlhub.errors import ConfigError
from tlhub.models import feature_dim, pool

if TYPE_CHECKING:
    from tlhub.domain.settings import DomainAdaptationConfig

RANDOM_MAP_ABOVE = 4096  # cdan: features x classes beyond this go through a random multilinear map


def aligned_width(model: nn.Module) -> int:
    """Width of the features :func:`pooled_features` reads: the last hidden state's. A timm
    model (EfficientNet) returns its block stages as hidden states, narrower than the
    features its classifier reads (320 vs 1280 channels): timm's ``feature_info`` says."""
    stages = next((m.feature_info for m in model.modules() if isinstance(getattr(m, "feature_info", None), list)), None)
    if stages and "num_chs" in stages[-1]:
        return int(stages[-1]["num_chs"])
    return feature_dim(model.config, model)


def pooled_features(outputs: Any, pooling: str, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The last hidden states of a model's outputs (``output_hidden_states=True``), pooled."""
    hidden = getattr(outputs, "hidden_states", None)
    if not hidden:
        raise ConfigError(
            "domain_adaptation.method: this model returns no hidden_states, so its features cannot be aligned; "
            "use domain_adaptation.method: source_only (or dapt for text)"
        )
    return pool(SimpleNamespace(last_hidden_state=hidden[-1]), "mean" if pooling == "auto" else pooling, attention_mask)


@dataclass
class DomainAdaptedOutput(ModelOutput):
    """A training step's outputs: the task loss and logits on the source batch, the domain
    loss as added to it (weighted, and for the non-adversarial methods scheduled) and the
    method's own loss before either (what the log reports: dann's and cdan's near log 2 while
    the domains look alike, whatever the weight). A class of its own, as DDP rebuilds outputs
    from their fields."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    domain_loss: torch.Tensor | None = None
    method_loss: torch.Tensor | None = None


class DomainAdaptedModel(nn.Module):
    """The task model and what a method adds to it (dann's domain classifier), as one module.

    The Trainer prepares, wraps (DDP), checkpoints and restores this module, so the
    domain classifier's gradients are all-reduced with the model's, its weights are in
    every checkpoint and a resume restores them with their optimizer state. One forward
    computes the task outputs on the source batch and the domain loss on both batches
    (DDP needs one forward per backward). Without ``target_inputs`` (evaluation) it is the
    task model alone. The final run folder holds the task model only.
    """

    def __init__(self, model: nn.Module, settings: DomainAdaptationConfig) -> None:
        super().__init__()
        if settings.method not in LOSS_METHODS:
            raise ConfigError(f"domain_adaptation.method: {settings.method} has no domain loss; expected one of {LOSS_METHODS}")
        self.model = model
        self.settings = settings
        self.config = model.config
        self.domain_classifier: DomainClassifier | None = None
        width = aligned_width(model)
        if settings.method == "dann":
            self.domain_classifier = DomainClassifier(width, settings.discriminator_hidden)
        elif settings.method == "cdan":
            classes = int(model.config.num_labels)
            if width * classes > RANDOM_MAP_ABOVE:  # fixed random projections: buffers, saved and restored with the model
                generator = torch.Generator().manual_seed(0)
                self.register_buffer("cdan_rf", torch.randn(width, 1024, generator=generator))
                self.register_buffer("cdan_rg", torch.randn(classes, 1024, generator=generator))
                width, classes = 1024, 1
            self.domain_classifier = DomainClassifier(width * classes, settings.discriminator_hidden)
        self.last_kept: float | None = None  # self_training: fraction of target rows above the threshold

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.gradient_checkpointing_enable(**kwargs)

    def forward(
        self, labels: torch.Tensor | None = None, target_inputs: dict[str, Any] | None = None, coefficient: float = 1.0, **inputs: Any
    ) -> Any:
        # `labels` by name: the Trainer finds a model's label arguments in its forward's signature
        if labels is not None:
            inputs["labels"] = labels
        if target_inputs is None:
            return self.model(**inputs)
        method, pooling = self.settings.method, self.settings.pooling
        features = method not in ("mcc", "self_training")  # those two read the target predictions only
        outputs = self.model(**inputs, output_hidden_states=features)
        target_outputs = self.model(**target_inputs, output_hidden_states=features)
        if features:
            source = pooled_features(outputs, pooling, inputs.get("attention_mask"))
            target = pooled_features(target_outputs, pooling, target_inputs.get("attention_mask"))
        else:
            source = target = None
        loss = self.domain_loss(source, target, coefficient, outputs.logits, target_outputs.logits)
        # the adversarial methods ramp inside the gradient reversal, the others by scaling their loss
        scale = self.settings.loss_weight * (1.0 if self.domain_classifier is not None else coefficient)
        return DomainAdaptedOutput(loss=outputs.loss, logits=outputs.logits, domain_loss=scale * loss, method_loss=loss.detach())

    def domain_loss(
        self,
        source: torch.Tensor | None,
        target: torch.Tensor | None,
        coefficient: float,
        source_logits: torch.Tensor | None = None,
        target_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The method's own domain loss, unweighted, for pooled source and target features
        (and, for mcc, self_training and cdan, the classifier's logits on both batches);
        `coefficient` is the schedule's, which dann and cdan apply in the gradient reversal."""
        s = self.settings
        if s.method == "mcc":
            return mcc_loss(target_logits, s.mcc_temperature)
        if s.method == "self_training":
            loss, self.last_kept = pseudo_label_loss(target_logits, s.pseudo_label_threshold)
            return loss
        if self.domain_classifier is not None:
            self.domain_classifier.reversal.coefficient = coefficient
            features = torch.cat([source, target]).float()
            weights = None
            if s.method == "cdan":
                probabilities = torch.cat([source_logits, target_logits]).detach().float().softmax(-1)
                projection = (self.cdan_rf, self.cdan_rg) if hasattr(self, "cdan_rf") else None
                features = conditioned_features(features, probabilities, projection)
                # CDAN+E: certain rows count more, each domain's weights summing to its share
                certainty = 1.0 + torch.exp(-entropy(probabilities))
                n = len(source)
                weights = torch.cat([certainty[:n] / certainty[:n].sum(), certainty[n:] / certainty[n:].sum()]) * len(certainty) / 2
            logits = self.domain_classifier(features)
            domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(logits.device)
            return nn.functional.binary_cross_entropy_with_logits(logits, domains, weight=weights)
        return coral_loss(source, target) if s.method == "coral" else mmd_loss(source, target)
