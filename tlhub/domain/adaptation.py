"""What a run that adapts to a target domain does inside its Trainer: a batch of the target's
(unlabelled) rows for every source batch, the method's loss added to the task's, the
schedule's coefficient, the domain classifier's own optimizer group and learning rate, and
the method's losses for the log. :class:`tlhub.trainer.TlhubTrainer` holds one
:class:`Adaptation` and delegates to it from the overrides it documents (``__init__``,
``compute_loss``, ``create_optimizer``, ``log``), one call each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import datasets
import torch
from accelerate.utils import send_to_device
from torch import nn
from torch.utils.data import DataLoader

from tlhub.data import LABELS
from tlhub.domain.losses import ramp
from tlhub.domain.model import DomainAdaptedModel

if TYPE_CHECKING:
    from tlhub.domain.settings import DomainAdaptationConfig
    from tlhub.trainer import TlhubTrainer


class Adaptation:
    """The target side of a domain-adaptation run's training."""

    def __init__(self, settings: DomainAdaptationConfig, target_rows: datasets.Dataset) -> None:
        self.settings = settings
        self.target_rows = target_rows  # transformed for training, labels removed
        self.batches: Iterator[dict[str, Any]] | None = None
        self.rounds = 0  # how often the target was gone through: each round reshuffles
        self.losses: list[float] = []  # the method's own loss per step since the last log
        self.coefficient = 0.0

    def wrap(self, model: nn.Module) -> DomainAdaptedModel:
        """The module the Trainer trains: the task model with what the method adds."""
        return model if isinstance(model, DomainAdaptedModel) else DomainAdaptedModel(model, self.settings)

    def classifier_group(self, model: DomainAdaptedModel, learning_rate: float) -> dict[str, Any] | None:
        """dann/cdan: the domain classifier's optimizer group, at discriminator_lr_multiplier x the
        run's rate (TLlib: 10x), without weight decay; None for the other methods."""
        classifier = model.domain_classifier
        if classifier is None:
            return None
        return {"params": list(classifier.parameters()), "weight_decay": 0.0, "lr": learning_rate * self.settings.discriminator_lr_multiplier}

    def add_classifier_group(self, optimizer: torch.optim.Optimizer, model: DomainAdaptedModel, learning_rate: float) -> None:
        """Give the domain classifier (dann/cdan) its own group in the Trainer's `optimizer`
        (:meth:`classifier_group`); the other methods leave it as it is."""
        group = self.classifier_group(model, learning_rate)
        if group is None:
            return
        # taken out of the Trainer's groups first, where it built them from every parameter
        mine = {id(p) for p in group["params"]}
        for existing in optimizer.param_groups:
            existing["params"] = [p for p in existing["params"] if id(p) not in mine]
        optimizer.add_param_group(group)

    def loss(
        self, trainer: TlhubTrainer, task_loss: Callable[[dict[str, Any]], tuple[torch.Tensor, Any]], inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None, return_outputs: bool,
    ) -> Any:  # fmt: skip
        """A training batch's loss: the task loss (`task_loss`: the Trainer's compute_loss, which
        returns the loss and the outputs) of the source batch with the next target batch beside
        it, plus the method's loss, which is recorded for the log."""
        args, state = trainer.args, trainer.state
        target = self.next_batch(args.train_batch_size, trainer.data_collator, args.seed, args.device)
        progress = state.global_step / max(state.max_steps or 1, 1)
        loss, outputs = task_loss(self.training_inputs(inputs, progress, target))
        domain = outputs["domain_loss"]
        scaled = (
            trainer.loss_is_scaled_for_ga
            if trainer.loss_is_scaled_for_ga is not None
            else (trainer.model_accepts_loss_kwargs and num_items_in_batch is not None) or trainer.compute_loss_func is not None
        )
        if scaled:  # the task loss is already divided for gradient accumulation: divide ours alike
            domain = domain / trainer.current_gradient_accumulation_steps
        self.losses.append(float(outputs["method_loss"]))
        loss = loss + domain
        return (loss, outputs) if return_outputs else loss

    def next_batch(self, batch_size: int, collate: Callable[[list[dict]], dict], seed: int, device: torch.device) -> dict[str, Any]:
        """The next batch of target rows (a seeded shuffle, each round of the target its own),
        on `device`; the target goes round again when it is smaller than the source."""
        if self.batches is None:
            loader = DataLoader(
                self.target_rows,
                batch_size=min(batch_size, len(self.target_rows)),
                shuffle=True,
                drop_last=True,
                collate_fn=collate,
                generator=torch.Generator().manual_seed(seed + self.rounds),
            )
            self.batches = iter(loader)
        try:
            batch = next(self.batches)
        except StopIteration:
            self.rounds += 1
            self.batches = None
            return self.next_batch(batch_size, collate, seed, device)
        batch.pop(LABELS, None)
        return send_to_device(batch, device)

    def training_inputs(self, inputs: dict[str, Any], progress: float, target_batch: dict[str, Any]) -> dict[str, Any]:
        """A source batch's inputs with the target batch and the schedule's coefficient at
        training `progress` (0 -> 1), as DomainAdaptedModel's forward takes them."""
        s = self.settings
        self.coefficient = ramp(progress, s.ramp_gamma) if s.schedule == "ramp" else 1.0
        return {**inputs, "target_inputs": target_batch, "coefficient": self.coefficient}

    def log_entries(self, model: nn.Module) -> dict[str, float]:
        """What the log adds since its last entry: the method's own loss, unweighted (dann/cdan
        near log 2 = 0.693 while the domains stay hard to tell apart), the coefficient, and for
        self_training the fraction of target rows above the threshold."""
        if not self.losses:
            return {}
        entries = {"domain_loss": round(sum(self.losses) / len(self.losses), 6), "domain_coefficient": round(self.coefficient, 4)}
        self.losses.clear()
        kept = getattr(model, "last_kept", None)
        if kept is not None:
            entries["pseudo_labelled_fraction"] = round(kept, 4)
        return entries
