"""`partial`: the embeddings and lower blocks stay as pretrained; the last
``unfreeze_last_n`` blocks of each stack, what sits above them and the head train.

A model may name what its own partial fine-tuning trains inside the frozen body
(``partial_parameters()``: kind -> parameters): tlhub's patch transformer for series names
GPT4TS's recipe, the layer norms and position embeddings, with attention and MLP frozen
(``unfreeze_last_n: 0`` is that recipe exactly). The log says what trains."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from tlhub.errors import ConfigError
from tlhub.models import backbone_of
from tlhub.strategies.base import (
    STRATEGIES,
    Applied,
    Strategy,
    learning_rate_scales,
    model_stacks,
    refuse_logistic_head,
)
from tlhub.strategies.full.config import LayerDecaySettings
from tlhub.strategies.partial.config import PartialSettings

if TYPE_CHECKING:
    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality

logger = logging.getLogger(__name__)


@STRATEGIES.register("partial")
class Partial(Strategy):
    """Partial fine-tuning. A seq2seq LM whose output projection is tied to its input
    embeddings (t5-small) keeps both frozen."""

    settings = (PartialSettings, LayerDecaySettings)

    def check(self, cfg: RunConfig) -> None:
        refuse_logistic_head(cfg.strategy, "partial")

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        stacks = model_stacks(model, modality)
        n = settings.unfreeze_last_n
        if n > max(len(s) for s in stacks):
            raise ConfigError(f"strategy.unfreeze_last_n: {n} is more than the {max(len(s) for s in stacks)} blocks of this model")
        backbone = modality.body(model, task) or backbone_of(model)  # a detector's CNN, the transformer above it training
        model.requires_grad_(True)
        backbone.requires_grad_(False)
        if backbone is model:  # seq2seq LMs: the head is the output projection...
            head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
            if head is not None and (embeddings is None or head.weight is not embeddings.weight):
                head.requires_grad_(True)  # ...unless it is the (frozen) input embedding itself, as in t5-small
        if n > 0:
            in_stack = {id(p): i for i, stack in enumerate(stacks) for p in stack.parameters()}
            # Embeddings are never "above" a stack: Whisper's decoder embeddings follow the encoder's blocks
            embedding = {id(p) for m in backbone.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
            params = list(backbone.parameters())
            for i, stack in enumerate(stacks):
                for block in stack[len(stack) - n :]:
                    block.requires_grad_(True)
                # Parameters between the end of this stack and the start of the next one
                # (a final layer norm, a pooler) sit above the unfrozen blocks: train them too.
                last = max(j for j, p in enumerate(params) if in_stack.get(id(p)) == i)
                for p in params[last + 1 :]:
                    if id(p) in in_stack:
                        break
                    if id(p) not in embedding:
                        p.requires_grad_(True)
        notes = [f"last {n} block(s) of each stack" if n else "no whole block"]
        own = getattr(model, "partial_parameters", None)
        if callable(own):  # the model's own recipe inside the frozen body (GPT4TS: layer norms, position embeddings)
            for kind, params in own().items():
                for p in params:
                    p.requires_grad_(True)
                notes.append(f"{kind} ({sum(p.numel() for p in params):,} weights)")
            heads = [name for name, module in model.named_children() if module is not backbone and any(True for _ in module.parameters())]
            logger.warning("partial trains: %s; in the body: %s", ", ".join(heads), "; ".join(notes))
        scales = learning_rate_scales(model, settings, modality, task, stacks)
        return Applied(model, scales, notes=notes)
