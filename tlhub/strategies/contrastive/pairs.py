"""Contrastive pair tuning of a body (SetFit's stage): the pairs, the encoders that score
them, and :func:`tune_body`, the stage's own Trainer run."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.utils import ModelOutput

from tlhub.errors import ConfigError
from tlhub.models import PooledClassifier, pool
from tlhub.strategies.lora import lora_targets
from tlhub.trainer import TlhubTrainer, stage_arguments

if TYPE_CHECKING:
    from tlhub.strategies.base import StageContext

logger = logging.getLogger(__name__)


def make_pairs(labels: list[int], iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """(row, partner, target) pairs: per row and iteration one positive (target 1.0, a
    different row of the same class when there is one) and one negative (0.0), shuffled."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_class.setdefault(label, []).append(row)
    if len(by_class) < 2:
        raise ConfigError("strategy.name: contrastive needs rows of at least two classes to build negative pairs")
    pairs = []
    for _ in range(iterations):
        for row, label in enumerate(labels):
            same = [r for r in by_class[label] if r != row] or [row]
            other = [r for c, rows in by_class.items() if c != label for r in rows]
            pairs.append((row, rng.choice(same), 1.0))
            pairs.append((row, rng.choice(other), 0.0))
    rng.shuffle(pairs)
    return pairs


@dataclass
class PairOutput(ModelOutput):
    loss: torch.Tensor | None = None
    similarity: torch.Tensor | None = None


class PairEncoder(nn.Module):
    """Two rows through one body: the cosine similarity of their pooled embeddings, and
    its squared error against the pair's target (sentence-transformers' CosineSimilarityLoss)."""

    def __init__(self, body: nn.Module, pooling: str) -> None:
        super().__init__()
        self.body = body
        self.pooling = pooling

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return pool(self.body(**inputs), self.pooling, inputs.get("attention_mask"))

    def forward(self, first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> PairOutput:
        similarity = nn.functional.cosine_similarity(self.embed(first), self.embed(second))
        loss = nn.functional.mse_loss(similarity, labels.to(similarity.dtype)) if labels is not None else None
        return PairOutput(loss=loss, similarity=similarity)


class InBatchEncoder(PairEncoder):
    """Every pair of rows in a batch at once: ``MSE(cos(u_i, u_j), [y_i == y_j])`` over
    all i != j. A batch of B rows gives B(B-1)/2 pairs for B forward passes, where the
    pair loss gives B/2."""

    def forward(self, rows: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> PairOutput:
        embedded = nn.functional.normalize(self.embed(rows), dim=-1)
        similarity = embedded @ embedded.T
        loss = None
        if labels is not None:
            target = (labels[:, None] == labels[None, :]).to(similarity.dtype)
            off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
            loss = nn.functional.mse_loss(similarity[off_diagonal], target[off_diagonal])
        return PairOutput(loss=loss, similarity=similarity)


def tune_body(model: PooledClassifier, train: datasets.Dataset, ctx: StageContext) -> dict[str, Any]:
    """Train `model`'s body on pairs of `train`'s labelled rows; return what it did.

    The body is unfrozen for this stage and frozen again after it (the head is fitted
    on its features next). With ``body: lora`` the LoRA matrices are merged in.
    """
    cfg, run_args = ctx.cfg, ctx.args
    settings = cfg.strategy.contrastive
    rows = ctx.modality.transform(ctx.processor, cfg, train=False)(train[:])  # tokenized, unpadded
    examples = [{k: v[i] for k, v in rows.items() if k != "labels"} for i in range(len(train))]
    pad = ctx.modality.collator(ctx.processor, cfg, model)
    labels = list(train["labels"])
    if settings.pairing == "in_batch":
        # every row `iterations` times; the Trainer shuffles, each batch scores all its pairs
        order = [row for _ in range(settings.iterations) for row in range(len(labels))]
        data = datasets.Dataset.from_dict({"row": order})
        pairs_seen = settings.iterations * len(labels) * (settings.batch_size - 1) // 2

        def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
            return {"rows": dict(pad([examples[b["row"]] for b in batch])), "labels": torch.tensor([labels[b["row"]] for b in batch])}

        encoder_class = InBatchEncoder
    else:
        pairs = make_pairs(labels, settings.iterations, run_args.seed)
        data = datasets.Dataset.from_dict(
            {"first": [a for a, _, _ in pairs], "second": [b for _, b, _ in pairs], "target": [t for _, _, t in pairs]}
        )
        pairs_seen = len(pairs)

        def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "first": dict(pad([examples[p["first"]] for p in batch])),
                "second": dict(pad([examples[p["second"]] for p in batch])),
                "labels": torch.tensor([p["target"] for p in batch]),
            }

        encoder_class = PairEncoder

    body: nn.Module = model.backbone
    if settings.body == "lora":
        lora = cfg.strategy.lora
        body = get_peft_model(body, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora_targets(body, lora)))
    else:
        body.requires_grad_(True)
    args = stage_arguments(
        run_args,
        cfg.output_dir / "contrastive",
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        warmup_steps=0.1,
        label_names=["labels"],
    )
    trainer = TlhubTrainer(model=encoder_class(body, model.pooling), args=args, train_dataset=data, data_collator=collate)
    body.train()
    result = trainer.train()
    if settings.body == "lora":
        model.backbone = body.merge_and_unload()
    model.backbone.requires_grad_(False)
    model.train(False)
    logger.info("contrastive: %d pairs, %d steps, loss %.4f", pairs_seen, result.global_step, result.training_loss)
    return {
        "contrastive_pairs": pairs_seen,
        "contrastive_steps": result.global_step,
        "contrastive_loss": result.training_loss,
        "contrastive_runtime": result.metrics.get("train_runtime", 0.0),
    }
