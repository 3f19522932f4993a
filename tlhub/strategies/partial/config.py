"""`partial`'s settings: how many blocks train. Imports only the settings machinery, so the keys
a strategy declares are read without importing its model code."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.settings import check, setting


@dataclass
class PartialSettings:
    unfreeze_last_n: int = setting(
        "partial: train the last N blocks (and everything above them). A series model (modality: timeseries) also trains "
        "its layer norms and position embeddings: 0 is GPT4TS's recipe.",
        default=2,
    )

    def __post_init__(self) -> None:
        check(self.unfreeze_last_n >= 0, "strategy.unfreeze_last_n", f"must be 0 or more, got {self.unfreeze_last_n}")
