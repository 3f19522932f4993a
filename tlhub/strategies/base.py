"""What every strategy shares: :class:`Applied`, the registry, and helpers that find a
model's backbone, head and blocks. Kept apart from the package's ``__init__`` so that the
strategy modules import it without importing the package that imports them."""


from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from torch import nn

from tlhub.models import backbone_of
from tlhub.registry import Registry

if TYPE_CHECKING:
    from tlhub.config import StrategyConfig
    from tlhub.modalities import Modality


@dataclass
class Applied:
    """A model ready to train, and optional (parameters, learning-rate scale) groups."""

    model: nn.Module
    lr_scales: list[tuple[list[nn.Parameter], float]] | None = None
    notes: list[str] = field(default_factory=list)


class Strategy(Protocol):
    def __call__(self, model: nn.Module, cfg: StrategyConfig, modality: Modality, task: str) -> Applied: ...


STRATEGIES: Registry[Strategy] = Registry("strategy", "strategy.name")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def head_names(model: nn.Module) -> list[str]:
    """Names of the top-level modules with parameters that are not the backbone: the new head.

    BERT: ``classifier``; DeBERTa: ``pooler``, ``classifier``; wav2vec2: ``projector``,
    ``classifier``; a seq2seq LM whose backbone is itself: its output embeddings.
    """
    backbone = backbone_of(model)
    if backbone is model:
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return [name for name, module in model.named_children() if module is output]
    names = [
        name
        for name, module in model.named_children()
        if module is not backbone and any(True for _ in module.parameters())
    ]
    # A timm model wrapped by transformers keeps its classifier inside the timm module
    # (``timm_model.classifier``), which is the whole base model: name it from there.
    classifier = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    if isinstance(classifier, nn.Module) and any(True for _ in classifier.parameters()):
        prefix = next((name for name, module in model.named_children() if module is backbone), "")
        names += [f"{prefix}.{name}" if prefix else name for name, m in backbone.named_children() if m is classifier]
    return names


def input_embeddings(model: nn.Module) -> nn.Module | None:
    """The model's token embeddings, or None for models without any (wav2vec2 raises)."""
    try:
        return model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except (NotImplementedError, AttributeError):
        return None


def find_blocks(module: nn.Module) -> list[nn.ModuleList]:
    """The stacks of repeated blocks in a backbone (BERT's ``encoder.layer``, ResNet's
    ``encoder.stages``, T5's encoder and decoder ``block``), found by shape, not by name:
    ModuleLists of two or more children of one class, not nested in another such list.
    When several stacks are found, the longest ones are kept (wav2vec2's 12 transformer
    layers win over its 7 convolutions); equally long ones are all kept (T5).
    """
    stacks: list[nn.ModuleList] = []
    inside: set[int] = set()
    for _, sub in module.named_modules():
        if id(sub) in inside:
            continue
        if isinstance(sub, nn.ModuleList) and len(sub) >= 2 and len({type(m) for m in sub}) == 1:
            stacks.append(sub)
            inside.update(id(m) for m in sub.modules())
    if not stacks:
        return []
    longest = max(len(s) for s in stacks)
    return [s for s in stacks if len(s) == longest]


def block_lr_scales(
    model: nn.Module, stacks: list[nn.ModuleList], decay: float
) -> list[tuple[list[nn.Parameter], float]]:
    """Layer-wise learning-rate decay: the head and everything above the blocks get scale 1,
    block k from the top gets ``decay ** (k + 1)``, everything below the blocks (the
    embeddings) ``decay ** (depth + 1)``. Only trainable parameters are listed.
    """
    scale_of: dict[int, float] = {}
    depth = max(len(s) for s in stacks)
    for stack in stacks:
        for k, block in enumerate(reversed(stack)):
            for p in block.parameters():
                scale_of[id(p)] = decay ** (k + 1)
    first_block = min(i for i, p in enumerate(model.parameters()) if id(p) in scale_of)
    groups: dict[float, list[nn.Parameter]] = {}
    for i, p in enumerate(model.parameters()):
        if not p.requires_grad:
            continue
        scale = scale_of.get(id(p), decay ** (depth + 1) if i < first_block else 1.0)
        groups.setdefault(scale, []).append(p)
    return sorted(((params, scale) for scale, params in groups.items()), key=lambda g: -g[1])
