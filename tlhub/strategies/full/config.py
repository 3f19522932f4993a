"""`full`'s settings: slower learning for lower blocks and for the pretrained body. `partial`
and `lp_ft` read the same keys, so they list this class too. Imports only the settings machinery, so the keys a strategy
declares are read without importing its model code."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.settings import check, setting


@dataclass
class LayerDecaySettings:
    """full, partial and lp_ft: slower learning for lower blocks and for the pretrained body."""

    layer_lr_decay: float | None = setting("partial/full: multiply the learning rate by this factor per block going down (e.g. 0.8).", default=None)
    backbone_lr_scale: float | None = setting(
        "partial/full: multiply the pretrained body's learning rate by this factor (e.g. 0.1: a detector's backbone at "
        "1e-5 under a head at 1e-4, as RT-DETR and DETR train); the head and new layers keep training.learning_rate. "
        "With layer_lr_decay, the two multiply.",
        default=None,
    )

    def __post_init__(self) -> None:
        check(
            self.layer_lr_decay is None or 0.0 < self.layer_lr_decay <= 1.0,
            "strategy.layer_lr_decay",
            f"must be in (0, 1], got {self.layer_lr_decay}",
        )
        check(
            self.backbone_lr_scale is None or 0.0 < self.backbone_lr_scale <= 1.0,
            "strategy.backbone_lr_scale",
            f"must be in (0, 1], got {self.backbone_lr_scale}",
        )
