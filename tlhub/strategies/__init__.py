"""Strategies decide which weights train. Each is a plain function, registered by name:

    @STRATEGIES.register("full")
    def full(model, cfg, modality, task) -> Applied: ...

It takes the model the modality loaded (a transformers ``...For<Task>`` model with a
new head), the ``strategy`` config section and the modality, and returns the model to
train (possibly wrapped, e.g. by PEFT) with optional learning-rate scales per
parameter group. The helpers below find a model's backbone, head and blocks without
knowing its family, so one strategy serves BERT, ViT, ResNet and wav2vec2 alike.
"""

from tlhub.strategies.base import (
    STRATEGIES,
    Applied,
    Strategy,
    backbone_of,
    block_lr_scales,
    count_parameters,
    find_blocks,
    head_names,
)

# Import the strategy modules so that they register themselves.
from tlhub.strategies import freeze as _freeze  # noqa: E402,F401
from tlhub.strategies import lora as _lora  # noqa: E402,F401
from tlhub.strategies import contrastive as _contrastive  # noqa: E402,F401

__all__ = ["STRATEGIES", "Applied", "Strategy", "backbone_of", "block_lr_scales", "count_parameters", "find_blocks", "head_names"]
