"""`lora`: PEFT LoRA, low-rank updates on the attention projections, the new head trained in
full. Saved as PEFT saves it (the adapter, which applies to the base model) and, unless
``strategy.lora.merge: false``, as ``merged/``: the adapter folded into a plain model."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from tlhub.errors import ConfigError
from tlhub.io import atomic_save_dir
from tlhub.settings import check
from tlhub.strategies.base import STRATEGIES, Applied, Strategy, backbone_of, head_names, input_embeddings, refuse_logistic_head
from tlhub.strategies.lora.config import LoraSection, LoraSettings

if TYPE_CHECKING:
    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality

# Query/value projection names across architectures, tried in order (the LoRA paper's
# default of adapting W_q and W_v): BERT/RoBERTa/ViT, Llama/Qwen/Mistral/Phi and
# wav2vec2/HuBERT/Whisper/BART, DistilBERT, DeBERTa-v2, T5; then fused query-key-value
# projections: GPT-2 (c_attn), GPT-NeoX/Falcon/BLOOM (query_key_value), Phi-3 (qkv_proj),
# Swin v2 and some timm models (qkv).
QV_NAMES = [
    ("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("query_proj", "value_proj"), ("q", "v"),
    ("c_attn",), ("query_key_value",), ("qkv_proj",), ("qkv",),
]  # fmt: skip
LINEAR_LAYERS = (nn.Linear, Conv1D)  # Conv1D: GPT-2's transposed linear layer, which PEFT adapts too


def auto_target_modules(model: nn.Module) -> list[str]:
    """The attention query/value projections of `model`, whatever its family names them."""
    heads = {name.rsplit(".", 1)[-1] for name in head_names(model)}  # a timm classifier sits inside the backbone
    names = {name.rsplit(".", 1)[-1] for name, m in backbone_of(model).named_modules() if isinstance(m, LINEAR_LAYERS)} - heads
    for candidate in QV_NAMES:
        if set(candidate) <= names:
            return list(candidate)
    # A convolutional model: PEFT's LoRA also adapts Conv2d layers, when named explicitly
    convs = {name.rsplit(".", 1)[-1] for name, m in backbone_of(model).named_modules() if isinstance(m, nn.Conv2d)}
    layers = sorted(names) or sorted(convs)
    raise ConfigError(
        f"strategy.lora.target_modules: 'auto' found no attention projections in {type(model).__name__} "
        f"(a convolutional model?); name the layers to adapt, e.g. target_modules: [{', '.join(layers[:3])}], "
        "or use strategy.name: partial"
    )


def lora_targets(model: nn.Module, settings: LoraSettings) -> list[str]:
    return auto_target_modules(model) if settings.target_modules == "auto" else list(settings.target_modules)


@STRATEGIES.register("lora")
class Lora(Strategy):
    settings = (LoraSection,)
    library = "peft"

    def check(self, cfg: RunConfig) -> None:
        refuse_logistic_head(cfg.strategy, "lora")
        check(cfg.model.pretrained, "strategy.name", "lora adapts pretrained weights; with model.pretrained: false use full")
        # A built detector's transformer and heads are new (random) and its pretrained part is a
        # CNN without attention: adapters would sit on random weights, the heads stay random.
        check(
            cfg.model.detector is None, "strategy.name",
            "lora adapts pretrained attention; model.detector builds a new transformer on a convolutional backbone: "
            "use feature_extraction, partial or full, or name a whole pretrained detector in model.name_or_path",
        )  # fmt: skip

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        """Wrap `model` with PEFT LoRA; the head is trained in full and saved (modules_to_save)."""
        lora = settings.lora
        targets = lora_targets(model, lora)
        heads = (head_names(model) if backbone_of(model) is not model else []) + modality.inner_heads(model, task)
        # An output projection that is the input embedding (Whisper's proj_out, a decoder LM's
        # lm_head) stays frozen, as in partial: training a copy would untie it and train the whole vocabulary.
        embedding = getattr(input_embeddings(model), "weight", None)  # (ViT's patch embeddings have none)
        tied = {h for h in heads if embedding is not None and getattr(model.get_submodule(h), "weight", None) is embedding}
        heads = [h for h in heads if h not in tied]
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            bias=lora.bias,
            modules_to_save=heads or None,
            task_type=modality.peft_task_type(task),
        )
        try:
            wrapped = get_peft_model(model, peft_config)
        except ValueError as exc:
            raise ConfigError(f"strategy.lora.target_modules: {exc}") from None
        # tlhub never resizes a base model's token embeddings; peft's "auto" guesses it did where the
        # head's vocabulary is the data's (a CTC transcriber's characters) and then asks the model for
        # input embeddings wav2vec2 does not have. The adapter and the heads are what a run saves.
        wrapped.save_pretrained = functools.partial(wrapped.save_pretrained, save_embedding_layers=False)  # type: ignore[method-assign]
        return Applied(wrapped, notes=[f"lora targets: {', '.join(targets)}", f"trained in full: {', '.join(heads) or '-'}"])

    def finish(self, run_dir: Path, cfg: RunConfig, modality: Modality, label_names: list[str] | None, processor: Any) -> None:
        if not cfg.strategy.lora.merge:
            return
        # from the saved adapter, not the live model: under FSDP that is a shard
        merged = self.load(run_dir, cfg, modality, label_names, cfg.model.name_or_path).merge_and_unload()
        atomic_save_dir(run_dir / "merged", lambda d: (merged.save_pretrained(d), processor.save_pretrained(d)))

    def load(self, run_dir: Path, cfg: RunConfig, modality: Modality, label_names: list[str] | None, base_model: str) -> nn.Module:
        """The pretrained model the adapter was trained on (`base_model`), with the adapter saved in `run_dir` on it."""
        base_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=base_model))
        return PeftModel.from_pretrained(modality.load_model(base_cfg, label_names), str(run_dir))

    def card_loader(self, cfg: RunConfig, plain: str) -> str:
        peft = "from peft import PeftModel\nmodel = PeftModel.from_pretrained(BASE_MODEL, RUN_DIR)  # the adapter on its base model"
        if not cfg.strategy.lora.merge:
            return peft
        # merged/ is a plain checkpoint; the folder itself holds the adapter, as peft writes it
        merged = plain.replace("model=RUN_DIR", "model=RUN_DIR + '/merged'").replace("from_pretrained(RUN_DIR)", "from_pretrained(RUN_DIR + '/merged')")
        return merged + "\n# or " + peft.replace("\n", "\n# ")

