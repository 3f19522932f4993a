"""`lp_ft`'s settings: how the probe reads its features. Imports only the settings machinery, so
the keys a strategy declares are read without importing its model code."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.settings import check, setting


@dataclass
class LpFtSettings:
    probe_batch_size: int = setting("lp_ft: rows per forward pass of the frozen model while its head's inputs are read for the probe.", default=64)

    def __post_init__(self) -> None:
        check(self.probe_batch_size > 0, "strategy.lp_ft.probe_batch_size", f"must be positive, got {self.probe_batch_size}")


@dataclass
class LpFtSection:
    lp_ft: LpFtSettings = setting("Settings of strategy.name: lp_ft.", default_factory=LpFtSettings)
