"""LoRA through PEFT: low-rank updates on the attention projections, the new head trained in full."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peft import LoraConfig, get_peft_model
from torch import nn

from tlhub.errors import ConfigError
from tlhub.strategies.base import STRATEGIES, Applied, backbone_of, head_names, input_embeddings

if TYPE_CHECKING:
    from tlhub.config import StrategyConfig
    from tlhub.modalities import Modality

# Query/value projection names across architectures, tried in order (the LoRA paper's
# default of adapting W_q and W_v): BERT/RoBERTa/ViT, wav2vec2/HuBERT/Whisper/BART,
# DistilBERT, DeBERTa-v2, T5; fused qkv last (Swin v2, some timm models).
QV_NAMES = [("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("query_proj", "value_proj"), ("q", "v"), ("qkv",)]


def auto_target_modules(model: nn.Module) -> list[str]:
    """The attention query/value projections of `model`, whatever its family names them."""
    heads = {name.rsplit(".", 1)[-1] for name in head_names(model)}  # a timm classifier sits inside the backbone
    names = {name.rsplit(".", 1)[-1] for name, m in backbone_of(model).named_modules() if isinstance(m, nn.Linear)} - heads
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


@STRATEGIES.register("lora")
def lora(model: nn.Module, cfg: StrategyConfig, modality: Modality, task: str) -> Applied:
    """Wrap `model` with PEFT LoRA; the head is trained in full and saved (modules_to_save)."""
    settings = cfg.lora
    targets = auto_target_modules(model) if settings.target_modules == "auto" else list(settings.target_modules)
    heads = head_names(model) if backbone_of(model) is not model else []
    # An output projection that is the input embedding (Whisper's proj_out) stays frozen, as in
    # partial: training a copy would untie it and train the whole vocabulary.
    embedding = getattr(input_embeddings(model), "weight", None)  # (ViT's patch embeddings have none)
    tied = {h for h in heads if embedding is not None and getattr(model.get_submodule(h), "weight", None) is embedding}
    heads = [h for h in heads if h not in tied]
    peft_config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias=settings.bias,
        modules_to_save=heads or None,
        task_type=modality.peft_task_type(task),
    )
    try:
        wrapped = get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigError(f"strategy.lora.target_modules: {exc}") from None
    return Applied(wrapped, notes=[f"lora targets: {', '.join(targets)}", f"trained in full: {', '.join(heads) or '-'}"])
