"""Domain adaptation: train on a labelled source domain, adapt to an unlabelled target.

Seven methods, chosen by ``domain_adaptation.method``:

- ``mcc`` (Jin et al. 2020, Minimum Class Confusion): on each target batch, the
  classifier's temperature-scaled predictions give a class-confusion matrix (weighted
  towards confident rows); its off-diagonal mass is the loss. Needs only the target
  predictions, no extra network: the strongest single method in TLlib's tables.
- ``self_training``: target rows whose predicted class has probability at least
  ``pseudo_label_threshold`` are trained on with that class (pseudo-labels), with the
  weight ramped up as training goes, so that early, unreliable predictions count little.
  Then, ``self_training_rounds`` times, a fresh model trains the same way on the source
  rows plus a teacher's labelled target rows: the previous model's most confident
  ``pseudo_label_fraction`` of the rows it predicts as each class (class-balanced, CBST).
  Starting from the pretrained weights, the new model learns the target's own cues for
  each class from those rows, which a model's own confident predictions (small gradients
  on rows it already gets right) cannot teach it.
- ``dann`` (Ganin et al. 2016): a domain classifier reads the pooled backbone features
  of a source and a target batch through a gradient-reversal layer; it learns to tell
  the domains apart while the reversed gradient pushes the backbone towards features it
  cannot tell apart. Made stable as the reference implementations (TLlib) do, and
  then some: the classifier starts with a bottleneck (linear + layer norm + ReLU), so
  inflating the features cannot inflate its loss, and all its linear layers are
  spectrally normalised, so neither can its own weights, and the gradient it reverses
  into the backbone is never larger than its loss's own; its learning rate is 10x the
  backbone's, and the reversal coefficient ramps up with the DANN schedule.
- ``cdan`` (Long et al. 2018): DANN whose domain classifier reads the features times
  the (detached) class predictions, a multilinear map (random projections above 4,096
  dimensions), and weights rows by their certainty, ``1 + exp(-entropy)`` (CDAN+E).
- ``coral`` (Sun & Saenko 2016): the distance between the source and target feature
  covariances is added to the loss.
- ``mmd`` (Long et al. 2015): a multi-bandwidth Gaussian-kernel maximum mean
  discrepancy between source and target features, estimated without bias (as DAN and
  TLlib do; the biased estimate rewards collapsing the features), is added to the loss.
- ``dapt`` (Gururangan et al. 2020), text only: masked-LM continued pretraining of the
  backbone on the target text, then ordinary fine-tuning on the source labels.

All but dapt need a loss of their own, hence :class:`DomainAdaptationTrainer`, the
one ``transformers.Trainer`` subclass in tlhub: it draws a target batch for every
source batch and trains a :class:`DomainAdaptedModel` (the task model plus dann's or
cdan's domain classifier, one module for DDP, checkpoints and resume), which pools both
batches' last hidden states (``tlhub.models.pool``, so it works for any modality whose
model returns ``hidden_states``) and adds the domain loss. Everything else (data,
models, strategies, saving) is the ordinary pipeline; dapt and the source-only
baseline are runs of it (``tlhub.pipeline``).

The target's labels, where it has them, are never trained on: they measure the
adaptation (``target_accuracy``) beside a source-only run of the same config
(``source_only_target_accuracy``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.utils import ModelOutput

from tlhub.data import LABELS, encode_labels, read_source, require_columns, sample, where
from tlhub.errors import ConfigError, DataError
from tlhub.io import atomic_write_text
from tlhub.models import feature_dim, pool

if TYPE_CHECKING:
    from tlhub.config import DomainAdaptationConfig, RunConfig
    from tlhub.modalities import Modality

logger = logging.getLogger(__name__)

# Methods with a loss on target batches during training (dapt and source_only have none).
LOSS_METHODS = ("mcc", "self_training", "dann", "cdan", "coral", "mmd")
ADVERSARIAL_METHODS = ("dann", "cdan")
# target_class_drift above this logs a warning: the model predicts the target's classes in
# proportions far from the source labels' (a collapse to one class of ten is 0.9, of two 0.5)
DRIFT_WARNING = 0.25
RANDOM_MAP_ABOVE = 4096  # cdan: features x classes beyond this go through a random multilinear map
TARGET_KEY = "domain_adaptation.target"


# --------------------------------------------------------------------------- the pieces


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


# --------------------------------------------------------------------------- the Trainer


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


class DomainAdaptationTrainer(Trainer):
    """A Trainer whose training loss is the task loss plus a domain loss.

    It trains a :class:`DomainAdaptedModel` around the task model: for every source batch
    it draws a batch of the (unlabelled) target dataset and hands both to that module's
    forward, which adds ``weight * domain_loss``. Evaluation is the plain Trainer's.
    """

    def __init__(self, *args: Any, target_dataset: datasets.Dataset, settings: DomainAdaptationConfig, **kwargs: Any) -> None:
        model = kwargs.pop("model")
        super().__init__(*args, model=model if isinstance(model, DomainAdaptedModel) else DomainAdaptedModel(model, settings), **kwargs)
        self.settings = settings
        self.target_dataset = target_dataset
        self._target_iter: Iterator[dict[str, Any]] | None = None
        self._target_epoch = 0
        self._domain_losses: list[float] = []
        self._coefficient = 0.0

    # The domain classifier is a parameter group of its own, added before the scheduler is built.
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        classifier = self.model.domain_classifier
        if classifier is not None:
            # its own group, at discriminator_lr_multiplier x the run's rate (TLlib: 10x); taken
            # out of the Trainer's groups first where it built them from every parameter
            mine = {id(p) for p in classifier.parameters()}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in mine]
            lr = self.args.learning_rate * self.settings.discriminator_lr_multiplier
            optimizer.add_param_group({"params": list(classifier.parameters()), "weight_decay": 0.0, "lr": lr})
        return optimizer

    def _next_target_batch(self) -> dict[str, Any]:
        if self._target_iter is None:
            size = min(self._train_batch_size, len(self.target_dataset))
            loader = DataLoader(
                self.target_dataset,
                batch_size=size,
                shuffle=True,
                drop_last=True,
                collate_fn=self.data_collator,
                generator=torch.Generator().manual_seed(self.args.seed + self._target_epoch),
            )
            self._target_iter = iter(loader)
        try:
            batch = next(self._target_iter)
        except StopIteration:  # the target is smaller than the source: go round again
            self._target_epoch += 1
            self._target_iter = None
            return self._next_target_batch()
        batch.pop(LABELS, None)
        return self._prepare_inputs(batch)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if not model.training:  # evaluation: the plain task loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        s = self.settings
        progress = self.state.global_step / max(self.state.max_steps or 1, 1)
        self._coefficient = ramp(progress, s.ramp_gamma) if s.schedule == "ramp" else 1.0
        inputs = {**inputs, "target_inputs": self._next_target_batch(), "coefficient": self._coefficient}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        domain = outputs["domain_loss"]
        scaled = (
            self.loss_is_scaled_for_ga
            if self.loss_is_scaled_for_ga is not None
            else (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None
        )
        if scaled:  # the task loss is already divided for gradient accumulation: divide ours alike
            domain = domain / self.current_gradient_accumulation_steps
        self._domain_losses.append(float(outputs["method_loss"]))
        loss = loss + domain
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._domain_losses:
            # the method's own loss, unweighted: dann/cdan near log 2 = 0.693 while the domains stay hard to tell apart
            logs["domain_loss"] = round(sum(self._domain_losses) / len(self._domain_losses), 6)
            logs["domain_coefficient"] = round(self._coefficient, 4)
            self._domain_losses.clear()
            kept = getattr(self.model, "last_kept", None)
            if kept is not None:
                logs["pseudo_labelled_fraction"] = round(kept, 4)
        super().log(logs, *args, **kwargs)


# --------------------------------------------------------------------------- the target data


@dataclass
class TargetData:
    """The target domain of a run: rows to adapt on, and the labelled rows to measure on."""

    cfg: RunConfig  # the run's config with the target's column names
    unlabelled: datasets.Dataset  # every target row, labels removed (what adaptation sees)
    labelled: datasets.Dataset | None  # rows with labels, for evaluation only
    texts: list[str] | None  # raw target text (text modality), for dapt
    rows: datasets.Dataset  # every target row, labels removed, as evaluation reads it (what is predicted)


def target_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with the target's column names in ``data`` (so the modality reads the target)."""
    da = cfg.domain_adaptation
    assert da is not None
    changes = {
        key: getattr(da, key)
        for key in ("text_column", "image_column", "audio_column", "label_column")
        if getattr(da, key) is not None
    }
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def check_supported(cfg: RunConfig) -> None:
    """Fail early, naming the key, for combinations that cannot adapt."""
    da = cfg.domain_adaptation
    assert da is not None
    if cfg.task != "classification":
        raise ConfigError(
            f"domain_adaptation: supported for task: classification (accuracy on the target), not '{cfg.task}'; "
            "remove the domain_adaptation section"
        )
    if da.method in LOSS_METHODS and cfg.strategy.name in ("feature_extraction", "contrastive"):
        raise ConfigError(
            f"domain_adaptation.method: {da.method} adapts the backbone to the target, but strategy.name: "
            f"{cfg.strategy.name} trains a head on frozen (or pair-tuned) features; use full, partial or lora"
        )
    if da.method == "dapt" and cfg.modality != "text":
        raise ConfigError(
            f"domain_adaptation.method: dapt is masked-language-model pretraining, for text; for {cfg.modality} "
            "use mcc, self_training, dann or cdan"
        )


def _read_target(cfg: RunConfig, modality: Modality) -> tuple[RunConfig, datasets.Dataset, Any, str | None]:
    """Read the target table; return its config view, rows, base folder and label column (if any)."""
    da = cfg.domain_adaptation
    assert da is not None
    tcfg = target_config(cfg)
    ds, base_dir = read_source(da.target, da.target_split, TARGET_KEY, tcfg, modality)
    required = modality.required_columns(tcfg)
    label_column = tcfg.data.label_column
    required.pop("data.label_column", None)
    require_columns(ds, {k.replace("data.", "domain_adaptation."): v for k, v in required.items()}, TARGET_KEY)
    if da.label_column is not None:
        require_columns(ds, {"domain_adaptation.label_column": da.label_column}, TARGET_KEY)
    return tcfg, ds, base_dir, label_column if label_column in ds.column_names else None


def target_has_labels(cfg: RunConfig, modality: Modality) -> bool:
    """Whether the target data has a label column (so target accuracy can be reported)."""
    return _read_target(cfg, modality)[3] is not None


def load_target(cfg: RunConfig, modality: Modality, processor: Any, label_names: list[str] | None) -> TargetData:
    """Read, check and preprocess (lazily) the target data of a run."""
    da = cfg.domain_adaptation
    assert da is not None
    tcfg, ds, base_dir, label_column = _read_target(cfg, modality)
    ds, _ = modality.prepare(ds, tcfg, base_dir, TARGET_KEY)
    if len(ds) == 0:
        raise DataError(f"{where(ds, TARGET_KEY)}: no usable rows")
    ds = sample(ds, da.max_target_samples, cfg.data.seed)
    labelled = None
    if label_column is not None and label_names is not None:
        labelled = encode_labels(ds, label_column, label_names, TARGET_KEY)
        labelled.set_transform(modality.transform(processor, tcfg, train=False))
    unlabelled = ds.remove_columns([c for c in (label_column, LABELS) if c is not None and c in ds.column_names])
    texts = list(unlabelled[tcfg.data.text_column]) if cfg.modality == "text" else None
    rows = unlabelled.with_transform(modality.transform(processor, tcfg, train=False))
    unlabelled.set_transform(modality.transform(processor, tcfg, train=True))
    return TargetData(tcfg, unlabelled, labelled, texts, rows)


def with_pseudo_labelled_rows(
    train: datasets.Dataset, target: TargetData, cfg: RunConfig, modality: Modality, labels: torch.Tensor
) -> datasets.Dataset:
    """The source's training rows plus the target rows a teacher labelled (``labels`` >= 0,
    in the order of ``target.unlabelled``), under the source's column names and types: what
    a self_training round trains on. Both keep only the columns the model reads."""
    inputs = {key: column for key, column in modality.required_columns(cfg).items() if key != "data.label_column"}
    theirs = modality.required_columns(target.cfg)
    keep = (labels >= 0).nonzero().squeeze(1).tolist()
    rows = target.unlabelled.with_format(None).select(keep).select_columns([theirs[key] for key in inputs])
    rows = rows.rename_columns({theirs[key]: column for key, column in inputs.items() if theirs[key] != column})
    rows = rows.add_column(LABELS, labels[keep].tolist())
    ours = train.select_columns([*inputs.values(), LABELS])
    try:
        rows = rows.cast(ours.features)
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{TARGET_KEY}: its columns {', '.join(theirs[key] for key in inputs)} cannot take the types of data.train's "
            f"({error}); self_training rounds train on both, so give them the same format, or set "
            "domain_adaptation.self_training_rounds: 0"
        ) from None
    return datasets.concatenate_datasets([ours, rows])


# --------------------------------------------------------------------------- results


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
    trainer: Trainer, target: TargetData, baseline: dict[str, Any] | None, method: str, source_counts: list[int]
) -> tuple[dict[str, Any], torch.Tensor]:
    """Target metrics of the trained model (``target_*``, where the target has labels) beside
    the baseline's (``source_only_target_*``), how far its predicted classes drift from the
    source labels' shares (`source_counts`, per class), and its class probabilities on every target row."""
    results: dict[str, Any] = {"domain_adaptation_method": method, "target_samples": len(target.unlabelled)}
    prediction = trainer.predict(target.labelled if target.labelled is not None else target.rows, metric_key_prefix="target")
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
    if target.labelled is None:
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
