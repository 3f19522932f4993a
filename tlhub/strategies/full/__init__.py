"""`full`: every weight trains, optionally lower blocks more slowly (``layer_lr_decay``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from tlhub.strategies.base import STRATEGIES, Applied, Strategy, learning_rate_scales, refuse_logistic_head
from tlhub.strategies.full.config import LayerDecaySettings

if TYPE_CHECKING:
    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality


@STRATEGIES.register("full")
class Full(Strategy):
    """Full fine-tuning: the pretrained body and the new head learn together."""

    settings = (LayerDecaySettings,)

    def check(self, cfg: RunConfig) -> None:
        refuse_logistic_head(cfg.strategy, "full")

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        model.requires_grad_(True)
        scales = learning_rate_scales(model, settings, modality, task)
        return Applied(model, scales)
