"""What every strategy shares: the :class:`Strategy` unit, its registry, checks several
strategies make, and helpers that find a model's backbone, head and blocks.

A strategy is one unit in one place, as a peft method is: its settings (the keys it adds to
the ``strategy`` section, declared in its folder's ``config.py``), its checks, how it changes the model (:meth:`Strategy.apply`), an
optional stage before training (:meth:`Strategy.prepare`: contrastive pair tuning, the
feature cache), how it trains (:meth:`Strategy.train`: the Trainer, or a closed form), and how
it saves and loads. The pipeline asks the registry and never tests a strategy's name.
Kept apart from the package's ``__init__`` so that the strategy modules import it without
importing the package that imports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import datasets
from torch import nn

from tlhub.errors import ConfigError
from tlhub.models import backbone_of
from tlhub.registry import Registry
from tlhub.rundir import save_task_model
from tlhub.settings import check
from tlhub.trainer import Trained, train_or_restore

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality
    from tlhub.trainer import TlhubTrainer


@dataclass
class Applied:
    """A model ready to train, and optional (parameters, learning-rate scale) groups."""

    model: nn.Module
    lr_scales: list[tuple[list[nn.Parameter], float]] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class StageContext:
    """What a strategy's stage before training may use: the run's config, modality, processor
    and resolved TrainingArguments (a stage's own Trainer derives its arguments from them)."""

    cfg: RunConfig
    modality: Modality
    processor: Any
    args: Seq2SeqTrainingArguments


@dataclass
class Prepared:
    """What the Trainer trains on after a strategy's stage: each split ready for the model
    (lazily transformed rows, or cached features), the collator that batches them, what the
    stage reports, and TrainingArguments it changes (cached features have no lengths to group by)."""

    splits: dict[str, datasets.Dataset]
    collator: Callable[[list[dict]], dict]
    results: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, Any] = field(default_factory=dict)


def transformed(splits: dict[str, datasets.Dataset], ctx: StageContext, model: nn.Module) -> Prepared:
    """Every split with the modality's lazy preprocessing (training augmentation on train
    only) and its collator: what the Trainer reads unless a stage says otherwise."""
    ready = {name: ctx.modality.ready(split, ctx.processor, ctx.cfg, train=name == "train") for name, split in splits.items()}
    return Prepared(ready, ctx.modality.collator(ctx.processor, ctx.cfg, model))


class Strategy:
    """One way to adapt a pretrained model. Subclasses register where they are defined::

        @STRATEGIES.register("full")
        class Full(Strategy): ...

    and override what differs from these defaults: the Trainer trains the model the strategy
    built, which saves and loads as a plain transformers folder.
    """

    # Dataclasses of the keys this strategy adds to the `strategy` section (several strategies
    # may list one class; each key is declared once). They are validated when the config is read.
    settings: ClassVar[tuple[type, ...]] = ()
    # False: a head on frozen (or pair-tuned) features. Such a run cannot align the backbone to a
    # target domain, and under FSDP its few head weights are written by the main process alone.
    trains_backbone: ClassVar[bool] = True
    library: ClassVar[str] = "transformers"  # the library that loads what it saves (model card)

    def check(self, cfg: RunConfig) -> None:
        """Refuse, naming the key, what this strategy cannot do with this config (modality, task, settings)."""

    def head(self, settings: StrategyConfig) -> str:
        """How the head is trained: linear (by the Trainer) or logistic (closed form)."""
        return "linear"

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        """The model to train, from the one the modality loaded (a transformers model with a new head)."""
        raise NotImplementedError

    def prepare(self, applied: Applied, splits: dict[str, datasets.Dataset], ctx: StageContext) -> Prepared:
        """The stage before training; by default the modality's lazy preprocessing."""
        return transformed(splits, ctx, applied.model)

    def train(self, trainer: TlhubTrainer, applied: Applied, prepared: Prepared, ctx: StageContext, checkpoint: str | None) -> Trained:
        """Train (or restore a finished checkpoint); by default the Trainer's loop."""
        return train_or_restore(trainer, checkpoint)

    def save(self, trainer: TlhubTrainer, applied: Applied, directory: Path, processor: Any) -> None:
        """Write the trained model and its processor into `directory`; every process calls it
        (sharded weights are gathered), the main process writes."""
        save_task_model(trainer, applied.model, directory)
        if trainer.is_world_process_zero():
            processor.save_pretrained(str(directory))

    def finish(self, run_dir: Path, cfg: RunConfig, modality: Modality, label_names: list[str] | None, processor: Any) -> None:
        """After the run's files are in place, on the main process: anything built from them."""

    def load(self, run_dir: Path, cfg: RunConfig, modality: Modality, label_names: list[str] | None, base_model: str) -> nn.Module:
        """A finished run's model from its folder (`base_model`: what it was trained from)."""
        local = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(run_dir), pretrained=True, gguf_file=None))
        return modality.load_model(local, label_names)

    def card_loader(self, cfg: RunConfig, plain: str) -> str:
        """The code the model card gives to load the run, from the `plain` pipeline line."""
        return plain


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "strategy.name")
DEFAULT_STRATEGY = "full"  # strategy.name when a config leaves it out


def get_strategy(name: str) -> Strategy:
    """The registered strategy called `name`, ready to use."""
    return STRATEGIES.get(name)()


# --------------------------------------------------------------------------- checks several strategies share


def refuse_logistic_head(settings: StrategyConfig, name: str) -> None:
    """A strategy that trains more than a head cannot fit it in closed form: say so, naming the key."""
    check(
        settings.head in ("auto", "linear"),
        "strategy.head",
        f"logistic fits a head on a frozen backbone's features: use it with feature_extraction or contrastive, not {name}",
    )


# --------------------------------------------------------------------------- the model's parts


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
    ModuleLists of two or more children of one class, not nested in another such list (or, in
    a model whose config counts one hidden layer, its one-child list).
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
    if not stacks and getattr(getattr(module, "config", None), "num_hidden_layers", None) == 1:
        # a model of one block (a body cut to its first block: model.config_overrides num_hidden_layers 1) has no
        # repeated children to recognise; its config says the one-child list is the stack
        stacks = [sub for sub in module.modules() if isinstance(sub, nn.ModuleList) and len(sub) == 1][:1]
    if not stacks:
        return []
    longest = max(len(s) for s in stacks)
    return [s for s in stacks if len(s) == longest]


def model_stacks(model: nn.Module, modality: Modality) -> list[nn.ModuleList]:
    """The blocks that layer-wise decay and partial fine-tuning work on: the modality's, or
    those found by shape; a ConfigError naming the key when there are none."""
    stacks = modality.blocks(model) or find_blocks(backbone_of(model))
    if not stacks:
        raise ConfigError(
            f"strategy.name: cannot find the stacked blocks of {type(model).__name__} to unfreeze; "
            "use feature_extraction or full for this model"
        )
    return stacks


def block_scales(model: nn.Module, stacks: list[nn.ModuleList], decay: float) -> dict[int, float]:
    """Layer-wise learning-rate decay, each parameter's scale by ``id``: the head and everything
    above the blocks 1, block k from the top ``decay ** (k + 1)``, everything below the blocks
    (the embeddings) ``decay ** (depth + 1)``."""
    scale_of: dict[int, float] = {}
    depth = max(len(s) for s in stacks)
    for stack in stacks:
        for k, block in enumerate(reversed(stack)):
            for p in block.parameters():
                scale_of[id(p)] = decay ** (k + 1)
    first_block = min(i for i, p in enumerate(model.parameters()) if id(p) in scale_of)
    return {id(p): scale_of.get(id(p), decay ** (depth + 1) if i < first_block else 1.0) for i, p in enumerate(model.parameters())}


def scale_groups(model: nn.Module, scale_of: dict[int, float]) -> list[tuple[list[nn.Parameter], float]]:
    """The trainable parameters grouped by their scale (1 where `scale_of` has none), highest first."""
    groups: dict[float, list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(scale_of.get(id(p), 1.0), []).append(p)
    return sorted(((params, scale) for scale, params in groups.items()), key=lambda g: -g[1])


def block_lr_scales(
    model: nn.Module, stacks: list[nn.ModuleList], decay: float
) -> list[tuple[list[nn.Parameter], float]]:
    """Layer-wise learning-rate decay as optimizer groups (:func:`block_scales`). Only trainable
    parameters are listed."""
    return scale_groups(model, block_scales(model, stacks, decay))


def learning_rate_scales(
    model: nn.Module, settings: Any, modality: Modality, task: str, stacks: list[nn.ModuleList] | None = None
) -> list[tuple[list[nn.Parameter], float]] | None:
    """The optimizer's learning-rate groups of ``strategy.layer_lr_decay`` (:func:`block_scales`
    over `stacks`, by default the model's) and ``strategy.backbone_lr_scale`` (every weight of
    the pretrained body: the modality's, such as a detector's backbone, or the base model),
    multiplied where both apply; None when neither is set: one rate for every weight."""
    decay, body_scale = settings.layer_lr_decay, settings.backbone_lr_scale
    if not decay and body_scale is None:
        return None
    scale_of = block_scales(model, stacks or model_stacks(model, modality), decay) if decay else {}
    if body_scale is not None:
        body = modality.body(model, task) or backbone_of(model)
        if body is model:
            raise ConfigError(
                f"strategy.backbone_lr_scale: {type(model).__name__} has no head apart from its body to keep at the full "
                "rate; lower training.learning_rate instead"
            )
        for p in body.parameters():
            scale_of[id(p)] = scale_of.get(id(p), 1.0) * body_scale
    return scale_groups(model, scale_of)
