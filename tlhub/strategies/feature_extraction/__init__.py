"""`feature_extraction`: the pretrained backbone is frozen and only a new head trains.

Classification: a :class:`~tlhub.models.PooledClassifier` pools the backbone's hidden states
(``strategy.pooling``; ``auto`` is the mean, which suits checkpoints with an untrained pooler,
and the last real token for decoder language models; with ``strategy.weighted_layer_sum``
every layer's, mixed by learned weights) into a new linear head. The frozen backbone's
features never change, so the stage before training computes them once (the feature cache,
``strategy.cache``) and the head trains on them for as many epochs as asked, or is fitted in
closed form (``strategy.head: logistic``). Other tasks keep the model's own head (a CTC layer,
a T5 or Whisper decoder) and freeze the encoder below it (and an encoder-decoder's token
embeddings). The run saves the backbone, the head beside it and the code that joins them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from torch import nn

from tlhub.cache import cached_splits, feature_collator, token_feature_collator
from tlhub.errors import ConfigError
from tlhub.loading import is_decoder_lm
from tlhub.models import PooledClassifier, backbone_of, feature_backbone, mask_whisper_frames
from tlhub.settings import check
from tlhub.strategies.base import STRATEGIES, Applied, Prepared, StageContext, Strategy, input_embeddings, transformed
from tlhub.strategies.feature_extraction.config import FeatureSettings
from tlhub.strategies.heads import fit_logistic_head
from tlhub.trainer import Trained, train_or_restore

if TYPE_CHECKING:
    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality
    from tlhub.trainer import TlhubTrainer


def resolve_pooling(pooling: str, model: nn.Module) -> str:
    """``auto``: the last real token for a decoder language model (causal attention: only the
    last position has read the whole input), the mean over tokens, frames or pixels otherwise."""
    if pooling != "auto":
        return pooling
    return "last" if is_decoder_lm(model.config) else "mean"


def pooled_classifier(model: nn.Module, settings: StrategyConfig, per_token: bool = False) -> PooledClassifier:
    """The frozen backbone of `model` under a new pooled linear head (a head per token, for
    token classification)."""
    backbone = feature_backbone(model, backbone_of(model))
    pooling = "token" if per_token else resolve_pooling(settings.pooling, model)
    try:
        return PooledClassifier(
            backbone, model.config.num_labels, pooling, weighted_layer_sum=settings.weighted_layer_sum,
            problem_type=getattr(model.config, "problem_type", None),
        )  # fmt: skip
    except ValueError as exc:  # no layer count in the config: a model without stacked layers
        raise ConfigError(f"strategy.weighted_layer_sum: {exc}; set it to false for this model") from None


@STRATEGIES.register("feature_extraction")
class FeatureExtraction(Strategy):
    settings = (FeatureSettings,)
    trains_backbone = False

    def check(self, cfg: RunConfig) -> None:
        s = cfg.strategy
        check(
            cfg.task != "causal_lm",
            "strategy.name",
            "feature_extraction trains a new head on frozen features, and a language model's head is its output embedding "
            "(the whole vocabulary, tied to the input's); for causal_lm use lora, partial or full",
        )
        check(
            not (cfg.task == "token_classification" and (s.weighted_layer_sum or self.head(s) == "logistic")),
            "strategy.weighted_layer_sum" if s.weighted_layer_sum else "strategy.head",
            "token classification trains a linear head per token on the last layer's features; use weighted_layer_sum: false "
            "and head: linear",
        )
        check(
            not (self.head(s) == "logistic" and s.weighted_layer_sum),
            "strategy.head",
            "logistic fits on one pooled vector per row; with strategy.weighted_layer_sum use head: linear",
        )
        check(
            not (self.head(s) == "logistic" and not s.cache),
            "strategy.head",
            "logistic fits on the cached features, which strategy.cache: false turns off; set cache: true",
        )

    def head(self, settings: StrategyConfig) -> str:
        return "linear" if settings.head == "auto" else settings.head

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        if task in ("classification", "token_classification"):
            wrapped = pooled_classifier(model, settings, per_token=task == "token_classification")
            return Applied(wrapped, notes=[f"pooling: {wrapped.pooling}" + (", weighted sum of layers" if settings.weighted_layer_sum else "")])
        model.requires_grad_(True)
        encoder = modality.body(model, task) or (model.get_encoder() if model.config.is_encoder_decoder else backbone_of(model))
        encoder.requires_grad_(False)
        embeddings = input_embeddings(model) if model.config.is_encoder_decoder else None
        if embeddings is not None:
            # The token embeddings (T5's shared with the encoder, Whisper's tied to the output
            # projection: the whole vocabulary) stay as pretrained; the decoder's blocks learn.
            embeddings.requires_grad_(False)
        return Applied(model)

    def cached(self, applied: Applied, ctx: StageContext) -> bool:
        """Whether the head trains on stored features: a frozen PooledClassifier whose inputs
        see no target domain, with strategy.cache on."""
        model = applied.model
        return ctx.cfg.strategy.cache and isinstance(model, PooledClassifier) and model.freeze_backbone and ctx.cfg.domain_adaptation is None

    def prepare(self, applied: Applied, splits: dict[str, datasets.Dataset], ctx: StageContext) -> Prepared:
        if not self.cached(applied, ctx):
            return transformed(splits, ctx, applied.model)
        return features(applied, splits, ctx, store=True)

    def train(self, trainer: TlhubTrainer, applied: Applied, prepared: Prepared, ctx: StageContext, checkpoint: str | None) -> Trained:
        if self.head(ctx.cfg.strategy) != "logistic":
            return train_or_restore(trainer, checkpoint)
        train = prepared.splits["train"].with_format("torch")
        start = time.perf_counter()
        weights = ctx.cfg.training_args.class_weights
        if isinstance(weights, dict):
            raise ConfigError("training.class_weights: the closed-form head (strategy.head: logistic) takes none or balanced; "
                              "for a mapping of weights use head: linear")  # fmt: skip
        fitted = fit_logistic_head(applied.model, train[:]["features"], train[:]["labels"], trainer.args.seed,
                                   "balanced" if weights == "balanced" else None)  # fmt: skip
        seconds = time.perf_counter() - start + prepared.results.get("contrastive_runtime", 0.0)
        return Trained({"train_runtime": round(seconds, 4), **fitted})

    def save(self, trainer: TlhubTrainer, applied: Applied, directory: Path, processor: Any) -> None:
        if not isinstance(applied.model, PooledClassifier):
            return super().save(trainer, applied, directory, processor)
        if trainer.is_world_process_zero():  # a few thousand head weights: never sharded (FSDP is refused)
            applied.model.save_pretrained(directory)
            processor.save_pretrained(str(directory))
            mask_whisper_frames(directory)  # the audio pipeline then pools the frames tlhub pools

    def load(self, run_dir: Path, cfg: RunConfig, modality: Modality, label_names: list[str] | None, base_model: str) -> nn.Module:
        if PooledClassifier.is_saved_in(run_dir):
            return PooledClassifier.from_pretrained(run_dir)
        return super().load(run_dir, cfg, modality, label_names, base_model)

    def card_loader(self, cfg: RunConfig, plain: str) -> str:
        if cfg.task not in ("classification", "token_classification"):
            return plain
        # modeling_tlhub.py in the folder pools and applies the head (config.json's auto_map points to it)
        return plain.replace("model=RUN_DIR)", "model=RUN_DIR, trust_remote_code=True)")


def features(applied: Applied, splits: dict[str, datasets.Dataset], ctx: StageContext, store: bool) -> Prepared:
    """The splits as the frozen backbone's pooled features (computed once, or read from the
    cache), batched by stacking; fixed-size vectors have no lengths to group batches by."""
    cache = cached_splits(ctx.cfg, ctx.modality, ctx.processor, applied.model, splits, ctx.args, store=store)
    collator = token_feature_collator if applied.model.pooling == "token" else feature_collator
    return Prepared(cache.splits, collator, cache.results(), {"train_sampling_strategy": "random"})

