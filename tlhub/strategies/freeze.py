"""Freezing strategies: `full`, `feature_extraction` and `partial` fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from tlhub.errors import ConfigError
from tlhub.models import PooledClassifier, feature_backbone
from tlhub.strategies.base import STRATEGIES, Applied, backbone_of, block_lr_scales, find_blocks, input_embeddings

if TYPE_CHECKING:
    from tlhub.config import StrategyConfig
    from tlhub.modalities import Modality


def _stacks(model: nn.Module, modality: Modality) -> list[nn.ModuleList]:
    stacks = modality.blocks(model) or find_blocks(backbone_of(model))
    if not stacks:
        raise ConfigError(
            f"strategy.name: cannot find the stacked blocks of {type(model).__name__} to unfreeze; "
            "use feature_extraction or full for this model"
        )
    return stacks


@STRATEGIES.register("full")
def full(model: nn.Module, cfg: StrategyConfig, modality: Modality, task: str) -> Applied:
    """Every weight trains; with `layer_lr_decay`, lower blocks learn more slowly."""
    model.requires_grad_(True)
    scales = block_lr_scales(model, _stacks(model, modality), cfg.layer_lr_decay) if cfg.layer_lr_decay else None
    return Applied(model, scales)


@STRATEGIES.register("feature_extraction")
def feature_extraction(model: nn.Module, cfg: StrategyConfig, modality: Modality, task: str) -> Applied:
    """The pretrained backbone is frozen; only a new head trains.

    Classification: a :class:`PooledClassifier` pools the backbone's hidden states
    (`strategy.pooling`; ``auto`` is the mean, which suits checkpoints with an untrained
    pooler; with `strategy.weighted_layer_sum` every layer's, mixed by learned weights)
    into a new linear head. Other tasks keep the model's own head (a CTC layer, a T5 or
    Whisper decoder) and freeze the encoder below it (and an encoder-decoder's token embeddings).
    """
    if task == "classification":
        pooling = "mean" if cfg.pooling == "auto" else cfg.pooling
        backbone = feature_backbone(model, backbone_of(model))
        try:
            wrapped = PooledClassifier(backbone, model.config.num_labels, pooling, weighted_layer_sum=cfg.weighted_layer_sum)
        except ValueError as exc:  # no layer count in the config: a model without stacked layers
            raise ConfigError(f"strategy.weighted_layer_sum: {exc}; set it to false for this model") from None
        return Applied(wrapped, notes=[f"pooling: {pooling}" + (", weighted sum of layers" if cfg.weighted_layer_sum else "")])
    model.requires_grad_(True)
    encoder = model.get_encoder() if model.config.is_encoder_decoder else backbone_of(model)
    encoder.requires_grad_(False)
    embeddings = input_embeddings(model) if model.config.is_encoder_decoder else None
    if embeddings is not None:
        # The token embeddings (T5's shared with the encoder, Whisper's tied to the output
        # projection: the whole vocabulary) stay as pretrained; the decoder's blocks learn.
        embeddings.requires_grad_(False)
    return Applied(model)


@STRATEGIES.register("partial")
def partial(model: nn.Module, cfg: StrategyConfig, modality: Modality, task: str) -> Applied:
    """Embeddings and lower blocks frozen; the last `unfreeze_last_n` blocks of each stack,
    what sits above them (final norms, poolers) and the head train. A seq2seq LM whose
    output projection is tied to its input embeddings (t5-small) keeps both frozen."""
    stacks = _stacks(model, modality)
    n = cfg.unfreeze_last_n
    if n > max(len(s) for s in stacks):
        raise ConfigError(f"strategy.unfreeze_last_n: {n} is more than the {max(len(s) for s in stacks)} blocks of this model")
    backbone = backbone_of(model)
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
    scales = block_lr_scales(model, stacks, cfg.layer_lr_decay) if cfg.layer_lr_decay else None
    return Applied(model, scales)
