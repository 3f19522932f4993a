"""`contrastive`'s settings: how the body learns from pairs of labelled rows. Imports only the
settings machinery, so the keys a strategy declares are read without importing its model code."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.errors import closest
from tlhub.settings import check, setting

CONTRASTIVE_PAIRINGS = ("sampled", "in_batch")
CONTRASTIVE_BODIES = ("full", "lora")


@dataclass
class ContrastiveSettings:
    iterations: int = setting(
        "How often each labelled row is used. pairing in_batch: the row appears this many times, each time scored against "
        "every other row of its batch (20: 17-33 s on 2 CPU cores at 16 rows per class, above SetFit; docs/benchmarks.md) | "
        "sampled: this many positive and as many negative partners per row (SetFit's num_iterations).",
        default=20,
    )
    epochs: float = setting("Epochs over the pairs.", default=1.0)
    max_steps: int | None = setting("Stop the pair training after this many steps (overrides epochs).", default=None)
    learning_rate: float = setting("Learning rate of the body on the pairs (SetFit: 2e-5).", default=2.0e-5)
    batch_size: int = setting("Rows per batch (pairing in_batch) or pairs per batch (sampled).", default=16)
    body: str = setting("full: every body weight learns from the pairs | lora: LoRA matrices (strategy.lora), merged after.", default="full")
    pairing: str = setting(
        "sampled: SetFit's pairs, one positive and one negative partner per row and iteration, batch_size pairs a batch | "
        "in_batch: batch_size rows a batch, every pair in it scored (B(B-1)/2 pairs for B rows), each row `iterations` times: "
        "more pairs for fewer forward passes, measured more accurate and faster than sampled.",
        default="in_batch",
    )

    def __post_init__(self) -> None:
        check(self.iterations > 0, "strategy.contrastive.iterations", f"must be positive, got {self.iterations}")
        check(self.epochs > 0, "strategy.contrastive.epochs", f"must be positive, got {self.epochs}")
        check(self.max_steps is None or self.max_steps > 0, "strategy.contrastive.max_steps", f"must be positive or null, got {self.max_steps}")
        check(self.learning_rate > 0, "strategy.contrastive.learning_rate", f"must be positive, got {self.learning_rate}")
        check(self.batch_size > 0, "strategy.contrastive.batch_size", f"must be positive, got {self.batch_size}")
        check(
            self.body in CONTRASTIVE_BODIES,
            "strategy.contrastive.body",
            f"unknown body '{self.body}'{closest(self.body, CONTRASTIVE_BODIES)}; choose one of: {', '.join(CONTRASTIVE_BODIES)}",
        )
        check(
            self.pairing in CONTRASTIVE_PAIRINGS,
            "strategy.contrastive.pairing",
            f"unknown pairing '{self.pairing}'{closest(self.pairing, CONTRASTIVE_PAIRINGS)}; choose one of: {', '.join(CONTRASTIVE_PAIRINGS)}",
        )


@dataclass
class ContrastiveSection:
    contrastive: ContrastiveSettings = setting("Settings of strategy.name: contrastive.", default_factory=ContrastiveSettings)
