"""`lora`'s settings: the rank, scale, dropout and targets of the LoRA update, and whether the
run also writes the merged model. `contrastive` reads them when its body is LoRA. Imports only
the settings machinery, so the keys a strategy declares are read without importing peft."""

from __future__ import annotations

from dataclasses import dataclass

from tlhub.settings import check, setting


@dataclass
class LoraSettings:
    r: int = setting("Rank of the LoRA update matrices.", default=8)
    alpha: int = setting("LoRA scaling numerator (lora_alpha).", default=16)
    dropout: float = setting("Dropout on the LoRA path.", default=0.1)
    target_modules: str | list[str] = setting(
        "`auto` picks the attention query/value projections of the architecture, or a list of module names.",
        default="auto",
    )
    bias: str = setting("Which biases train: none | all | lora_only.", default="none")
    merge: bool = setting(
        "Also write OUTPUT_DIR/merged: the adapter merged into a plain transformers model, which transformers.pipeline, "
        "AutoModelFor... and every other tool load (false: the adapter alone, for PeftModel).",
        default=True,
    )

    def __post_init__(self) -> None:
        check(self.r > 0, "strategy.lora.r", f"must be positive, got {self.r}")
        check(self.alpha > 0, "strategy.lora.alpha", f"must be positive, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, "strategy.lora.dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.bias in ("none", "all", "lora_only"), "strategy.lora.bias", f"must be none, all or lora_only, got '{self.bias}'")
        if isinstance(self.target_modules, str) and self.target_modules != "auto":
            self.target_modules = [self.target_modules]


@dataclass
class LoraSection:
    lora: LoraSettings = setting("LoRA settings (strategy.name: lora; contrastive with body: lora).", default_factory=LoraSettings)
