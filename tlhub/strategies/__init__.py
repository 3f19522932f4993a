"""Strategies decide which weights train. Each is one unit in one folder, registered by name
where it is defined::

    @STRATEGIES.register("full")
    class Full(Strategy): ...

A unit holds its settings, checks, how it changes the model, an optional stage before
training, how it trains, and how it saves and loads (see :class:`Strategy`). Every folder of
this package is imported here, so a new strategy is one new folder (docs/adding_a_strategy.md).
The helpers find a model's backbone, head and blocks without knowing its family, so one
strategy serves BERT, Llama, ViT, ResNet and wav2vec2 alike.
"""

import importlib
import pkgutil

from tlhub.strategies.base import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    Applied,
    Prepared,
    StageContext,
    Strategy,
    backbone_of,
    block_lr_scales,
    count_parameters,
    find_blocks,
    get_strategy,
    head_names,
    learning_rate_scales,
)

for _unit in pkgutil.iter_modules(__path__):
    if _unit.ispkg:
        importlib.import_module(f"{__name__}.{_unit.name}")

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Applied",
    "Prepared",
    "StageContext",
    "Strategy",
    "backbone_of",
    "block_lr_scales",
    "count_parameters",
    "find_blocks",
    "get_strategy",
    "head_names",
    "learning_rate_scales",
]
