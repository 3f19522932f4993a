"""`lp_ft`: linear probing, then full fine-tuning (LP-FT, Kumar et al. 2022).

Full fine-tuning starts from a new, random head: its first gradients, large and random,
reach the pretrained body and distort the features it came with. LP-FT first fits the head
alone on the frozen body's features (the linear probe: here a logistic regression in closed
form, on the very inputs the model's own head reads), then fine-tunes everything from there,
so training starts from a head that already agrees with the features. The run saves and loads
like ``full``: a plain transformers folder.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import datasets
import torch
from torch import nn

from tlhub.settings import check
from tlhub.strategies.base import (
    STRATEGIES,
    Applied,
    Prepared,
    StageContext,
    Strategy,
    head_names,
    learning_rate_scales,
    refuse_logistic_head,
    transformed,
)
from tlhub.strategies.full.config import LayerDecaySettings
from tlhub.strategies.heads import fit_closed_form
from tlhub.strategies.lp_ft.config import LpFtSection

if TYPE_CHECKING:
    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality


def output_layer(model: nn.Module) -> nn.Linear:
    """The model's last linear layer that outputs the classes: the layer the probe fits."""
    classes = model.config.num_labels
    layers = [m for name in head_names(model) for m in model.get_submodule(name).modules() if isinstance(m, nn.Linear) and m.out_features == classes]
    if not layers:
        from tlhub.errors import ConfigError

        raise ConfigError(f"strategy.name: lp_ft probes a linear output layer of {classes} classes, which {type(model).__name__} lacks; use full")
    return layers[-1]


@torch.no_grad()
def head_inputs(model: nn.Module, layer: nn.Linear, rows: datasets.Dataset, collate: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What `layer` reads for each row (the frozen model in evaluation mode), and the labels.

    Decoders' classifiers (``LlamaForSequenceClassification``, GPT-2's) apply their head to every
    token and then keep one position's logits (the last real token). For those the row's input
    is the one at the position whose outputs are the model's logits, so the probe needs no
    knowledge of how each architecture pools.
    """
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, args, out: seen.append((args[0].detach().float(), out.detach().float())))
    was_training, features, labels = model.training, [], []
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            labels.append(batch.pop("labels"))
            logits = model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}).logits.float()
            inputs, outputs = seen.pop()
            if inputs.dim() == 3:  # the head ran on every token: keep the position the model pooled
                position = (outputs - logits[:, None, :]).abs().sum(-1).argmin(-1)
                inputs = inputs[torch.arange(len(inputs), device=inputs.device), position]
            features.append(inputs.cpu())
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(features), torch.cat(labels)


@STRATEGIES.register("lp_ft")
class LinearProbeThenFineTune(Strategy):
    settings = (LpFtSection, LayerDecaySettings)

    def check(self, cfg: RunConfig) -> None:
        refuse_logistic_head(cfg.strategy, "lp_ft")
        check(cfg.task == "classification", "strategy.name", f"lp_ft probes a classifier's head; for task {cfg.task} use full")

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        model.requires_grad_(True)
        output_layer(model)  # a model without a probe-able head fails here, before any data is read
        scales = learning_rate_scales(model, settings, modality, task)
        return Applied(model, scales, notes=["head probed first, then every weight trains"])

    def prepare(self, applied: Applied, splits: dict[str, datasets.Dataset], ctx: StageContext) -> Prepared:
        """The linear probe: the head fitted on what it reads from the pretrained model, before training."""
        start = time.perf_counter()
        layer = output_layer(applied.model.to(ctx.args.device))
        rows = splits["train"].with_transform(ctx.modality.transform(ctx.processor, ctx.cfg, train=False))
        collate = ctx.modality.collator(ctx.processor, ctx.cfg, applied.model)
        features, labels = head_inputs(applied.model, layer, rows, collate, ctx.cfg.strategy.lp_ft.probe_batch_size)
        fitted = fit_closed_form(layer, features, labels, getattr(applied.model.config, "problem_type", None), ctx.args.seed)
        prepared = transformed(splits, ctx, applied.model)
        probe = {f"probe_{key}": value for key, value in fitted.items() if key != "head"}
        return Prepared(prepared.splits, prepared.collator, {**probe, "probe_seconds": round(time.perf_counter() - start, 3)})
