"""Few-shot: contrastive tuning of the body on pairs (SetFit's method), then a head.

With a handful of labelled rows per class, fine-tuning a classifier end to end has too
little signal, and a frozen body may not separate the classes. SetFit (Tunstall et al.
2022) uses the labels twice: first to build many *pairs* (same label -> similarity 1,
different labels -> 0) on which the body learns, with a cosine-similarity loss on its
pooled embeddings, to put a class's rows close together; then a logistic-regression
head on the tuned embeddings. ``strategy.name: contrastive`` is that, built from
transformers pieces:

- the pairs: by default (``pairing: in_batch``) every pair of rows within a batch, a
  batch of B rows scoring B(B-1)/2 pairs for B forward passes (:class:`InBatchEncoder`),
  each row seen ``iterations`` times; measured more accurate than SetFit and faster at
  8, 16 and 32 rows per class (docs/benchmarks.md). ``pairing: sampled`` is SetFit's:
  :func:`make_pairs` gives each row, `iterations` times, one positive partner (another
  row of its class) and one negative (a row of another class), seeded, balanced 1:1, two
  forward passes a pair (:class:`PairEncoder`);
- :func:`tune_body`: the body (mean-pooled, as the strategy's
  :class:`~tlhub.models.PooledClassifier` pools) trained by a plain
  ``transformers.Trainer``, ``MSE(cos(u, v), target)`` (sentence-transformers'
  CosineSimilarityLoss); with ``strategy.contrastive.body: lora`` only LoRA matrices on
  the attention projections train, merged into the body afterwards;
- the head: ``strategy.head`` (``auto`` is ``logistic`` here), fitted on the tuned body's
  features by :func:`tlhub.strategies.heads.fit_logistic_head`.

The run saves like feature extraction: the (tuned) body plus ``pooled_head.safetensors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import datasets
from torch import nn

from tlhub.errors import ConfigError
from tlhub.settings import check
from tlhub.strategies.base import STRATEGIES, Applied, Prepared, StageContext
from tlhub.strategies.contrastive.config import ContrastiveSection, ContrastiveSettings
from tlhub.strategies.contrastive.pairs import InBatchEncoder, PairEncoder, make_pairs, tune_body
from tlhub.strategies.feature_extraction import FeatureExtraction, features, pooled_classifier
from tlhub.strategies.feature_extraction.config import FeatureSettings
from tlhub.strategies.lora.config import LoraSection

if TYPE_CHECKING:
    from tlhub.config import RunConfig, StrategyConfig
    from tlhub.modalities import Modality


@STRATEGIES.register("contrastive")
class Contrastive(FeatureExtraction):
    """Feature extraction whose body first learns from pairs of the labelled rows (the stage
    before training); then the head, fitted in closed form unless ``strategy.head: linear``."""

    settings = (FeatureSettings, ContrastiveSection, LoraSection)

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        self.check_input(cfg.modality, cfg.task)
        check(not cfg.strategy.weighted_layer_sum, "strategy.weighted_layer_sum", "contrastive tunes the last layer's pooled embedding; set it to false")

    @staticmethod
    def check_input(modality: str, task: str) -> None:
        if modality != "text" or task != "classification":
            raise ConfigError(
                f"strategy.name: contrastive tunes a text encoder on pairs of labelled sentences (text classification); "
                f"for {modality} {task} use feature_extraction, partial or full"
            )

    def head(self, settings: StrategyConfig) -> str:
        return "logistic" if settings.head == "auto" else settings.head

    def apply(self, model: nn.Module, settings: StrategyConfig, modality: Modality, task: str) -> Applied:
        """A PooledClassifier whose body the stage tunes on pairs before the head is fitted;
        the body is frozen for the head."""
        self.check_input(modality.name, task)
        if settings.weighted_layer_sum:
            raise ConfigError("strategy.weighted_layer_sum: contrastive tunes the last layer's pooled embedding; set it to false")
        wrapped = pooled_classifier(model, settings)
        return Applied(wrapped, notes=[f"contrastive pairs x{settings.contrastive.iterations}, body: {settings.contrastive.body}"])

    def prepare(self, applied: Applied, splits: dict[str, datasets.Dataset], ctx: StageContext) -> Prepared:
        tuned = tune_body(applied.model, splits["train"], ctx)
        prepared = features(applied, splits, ctx, store=False)  # a tuned body: features of this run only
        return Prepared(prepared.splits, prepared.collator, {**tuned, **prepared.results}, prepared.arguments)


__all__ = ["Contrastive", "ContrastiveSettings", "InBatchEncoder", "PairEncoder", "make_pairs", "tune_body"]
