"""`full`'s settings: slower learning for lower blocks. `partial` and `lp_ft` read the same key,
so they list this class too. Imports only the settings machinery, so the keys a strategy
declares are read without importing its model code."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.settings import check, setting


@dataclass
class LayerDecaySettings:
    """full and partial: slower learning for lower blocks."""

    layer_lr_decay: float | None = setting("partial/full: multiply the learning rate by this factor per block going down (e.g. 0.8).", default=None)

    def __post_init__(self) -> None:
        check(
            self.layer_lr_decay is None or 0.0 < self.layer_lr_decay <= 1.0,
            "strategy.layer_lr_decay",
            f"must be in (0, 1], got {self.layer_lr_decay}",
        )
