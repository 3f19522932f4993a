"""The runs one domain-adaptation config becomes, started by one orchestrating function,
:func:`adapt`, each with a config object of its own:

1. the data and the target are read and checked once, for every run of the family;
2. the adapted run's folder is claimed and prepared (so its sub-runs live inside it);
3. the source-only baseline (``OUTPUT_DIR/source_only``), when the target has labels: the same
   run without adaptation, whose target accuracy the adapted run reports beside its own;
4. dapt: masked-LM pretraining on the target text (``OUTPUT_DIR/dapt``); the adapted run's
   config then names that folder as its model;
5. self_training: the teacher, the same family with one round fewer (``OUTPUT_DIR/teacher``),
   whose surest target predictions per class join the adapted run's training rows;
6. the adapted run itself, through the pipeline's run function, with its :class:`Family`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import datasets
import torch
from accelerate import PartialState

from tlhub.data import LABELS, LoadedData, load_data
from tlhub.domain.adaptation import Adaptation
from tlhub.domain.losses import confident_rows
from tlhub.domain.results import read_target_predictions, target_results, write_target_predictions
from tlhub.domain.settings import LOSS_METHODS
from tlhub.domain.target import TargetData, load_target, with_pseudo_labelled_rows
from tlhub.io import atomic_write_json
from tlhub.loading import input_length, load_auto_model
from tlhub.modalities import get_modality
from tlhub.rundir import TARGET_PREDICTIONS, run_folder
from tlhub.trainer import TlhubTrainer, stage_arguments, training_arguments

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import Seq2SeqTrainingArguments

    from tlhub.config import RunConfig
    from tlhub.modalities import Modality

logger = logging.getLogger(__name__)

Run = Callable[..., dict[str, Any]]  # the pipeline's run(cfg, *, modality, data, folder, family, recorded)


@dataclass
class TargetScore:
    """What a run reports of the target, and the class probabilities it gives each target row."""

    results: dict[str, Any]
    probabilities: torch.Tensor

    def write(self, output_dir: Path, label_names: list[str] | None) -> None:
        """``target_predictions.jsonl``: the labels the run gives the target's rows."""
        write_target_predictions(output_dir / TARGET_PREDICTIONS, self.probabilities, label_names or [])


@dataclass
class Family:
    """A run's part in a domain-adaptation family: what its orchestrator prepared before it."""

    cfg: RunConfig
    target: TargetData
    source_counts: list[int]  # the source's training labels per class, before any target row joins them
    baseline: dict[str, Any] | None = None  # the source-only run's results
    teacher_labels: torch.Tensor | None = None  # self_training: a label per target row, -100 where none
    teacher_report: dict[str, Any] = field(default_factory=dict)

    def training_splits(self, splits: dict[str, datasets.Dataset], cfg: RunConfig, modality: Modality) -> dict[str, datasets.Dataset]:
        """The splits the run trains on: a teacher's labelled target rows join the training split."""
        if self.teacher_labels is None:
            return splits
        return {**splits, "train": with_pseudo_labelled_rows(splits["train"], self.target, cfg, modality, self.teacher_labels)}

    def adaptation(self, modality: Modality, processor: Any) -> Adaptation | None:
        """The Trainer's target side for a method with a loss on target batches (None for dapt and source_only)."""
        da = self.cfg.domain_adaptation
        assert da is not None
        return Adaptation(da, self.target.training_rows(modality, processor)) if da.method in LOSS_METHODS else None

    def score(self, trainer: TlhubTrainer, modality: Modality, processor: Any) -> TargetScore:
        """Target accuracy beside the baseline's, the predicted classes, and what the teacher did."""
        da = self.cfg.domain_adaptation
        assert da is not None
        rows = self.target.scored_rows(modality, processor)
        results, probabilities = target_results(trainer, rows, self.target.labelled is not None, self.baseline, da.method, self.source_counts)
        return TargetScore({**self.teacher_report, **results}, probabilities)


def adapt(
    cfg: RunConfig, run: Run, modality: Modality | None = None, loaded: LoadedData | None = None, target: TargetData | None = None
) -> dict[str, Any]:
    """Train the family of runs one domain-adaptation config asks for (see the module
    docstring); return the adapted run's results. A sub-run of the family (the baseline, the
    teacher) is a family of its own, with the data and target already read."""
    da = cfg.domain_adaptation
    assert da is not None
    modality = modality or get_modality(cfg.modality)
    loaded = loaded or load_data(cfg, modality)
    target = target or load_target(cfg, modality, loaded.label_names)
    processor = modality.load_processor(cfg)  # a model that cannot load fails here, before the folder is touched
    args = training_arguments(cfg)
    source = torch.as_tensor(loaded.splits["train"].with_format(None)[LABELS])
    family = Family(cfg, target, torch.bincount(source, minlength=len(loaded.label_names or [])).tolist())
    with run_folder(cfg, args) as checkpoint:
        if da.method != "source_only" and da.compare_source_only and target.labelled is not None:
            logger.info("domain_adaptation: training the source-only baseline first (%s/source_only)", cfg.output_dir)
            family.baseline = adapt(sub_run(cfg, "source_only", method="source_only"), run, modality, loaded, target)
        adapted = cfg
        if da.method == "dapt":
            adapted = continue_pretraining(cfg, processor, target, list(loaded.splits["train"][cfg.data.text_column]), args)
        if da.method == "self_training" and da.self_training_rounds > 0:
            family.teacher_labels, family.teacher_report = teach(cfg, run, modality, loaded, target)
        return run(adapted, modality=modality, data=loaded, folder=contextlib.nullcontext(checkpoint), family=family, recorded=cfg)


def sub_run(cfg: RunConfig, folder: str, **changes: Any) -> RunConfig:
    """`cfg` as a run of its own in OUTPUT_DIR/`folder`, with `changes` to its
    domain_adaptation section, no baseline of its own and nothing pushed to the Hub."""
    da = cfg.domain_adaptation
    assert da is not None
    settings = dataclasses.replace(da, compare_source_only=False, **changes)
    training = {**cfg.training, "output_dir": str(cfg.output_dir / folder), "push_to_hub": False}
    return dataclasses.replace(cfg, domain_adaptation=settings, training=training)


def teach(
    cfg: RunConfig, run: Run, modality: Modality, loaded: LoadedData, target: TargetData
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A self_training round: its teacher, this family with one round fewer (OUTPUT_DIR/teacher),
    labels the target rows it is surest of per class (read from its target_predictions.jsonl).
    Returns those labels (-100 for the rest) and what to report of the teacher."""
    da = cfg.domain_adaptation
    assert da is not None
    teacher_cfg = sub_run(cfg, "teacher", self_training_rounds=da.self_training_rounds - 1)
    logger.info("self_training: training the teacher first (%s)", teacher_cfg.output_dir)
    teacher = adapt(teacher_cfg, run, modality, loaded, target)
    PartialState().wait_for_everyone()  # the main process writes the teacher's folder; the others read it
    path = teacher_cfg.output_dir / TARGET_PREDICTIONS  # the teacher's labels are this run's: same data, same config
    probabilities = read_target_predictions(path, loaded.label_names or [], len(target.unlabelled))
    labels = confident_rows(probabilities, da.pseudo_label_fraction)
    report: dict[str, Any] = {
        "pseudo_labelled_rows": int((labels >= 0).sum()),
        # the teacher's training (and its own teacher's) is part of what this run cost
        "teacher_train_runtime": round(teacher.get("train_runtime", 0.0) + teacher.get("teacher_train_runtime", 0.0), 4),
    }
    if "target_accuracy" in teacher:
        report["teacher_target_accuracy"] = teacher["target_accuracy"]
    if target.labelled is not None:  # how right the teacher's labels are (never trained on)
        truth = torch.as_tensor(target.labelled.with_format(None)[LABELS])
        taught = labels >= 0
        report["pseudo_label_accuracy"] = round(float((labels[taught] == truth[taught]).float().mean()), 6)
    return labels, report


# --------------------------------------------------------------------------- dapt


def dapt_key(cfg: RunConfig, texts: list[str], max_length: int) -> dict[str, Any]:
    """Everything continued pretraining's output depends on: reuse it only when all are equal."""
    from tlhub.cache import library_versions, model_identity

    da = cfg.domain_adaptation
    assert da is not None
    return {
        "model": model_identity(cfg),
        "texts_sha256": hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest(),
        "dapt": dataclasses.asdict(da.dapt),
        "max_length": max_length,
        "seed": cfg.seed,
        "versions": library_versions(),
    }


def continue_pretraining(
    cfg: RunConfig, processor: Any, target: TargetData, source_texts: list[str], run_args: Seq2SeqTrainingArguments
) -> RunConfig:
    """DAPT: masked-LM training of the pretrained model on the target text.

    Writes the adapted backbone (and tokenizer) to ``OUTPUT_DIR/dapt`` and returns the adapted
    run's config, ``model.name_or_path`` pointing there, so that run fine-tunes the adapted
    weights exactly as it would the original ones. A finished ``dapt`` folder is reused only
    when its key (model, texts, settings, seed, library versions; see :func:`dapt_key`)
    equals this run's; otherwise it is trained again.
    """
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    da = cfg.domain_adaptation
    assert da is not None and target.texts is not None
    settings = da.dapt
    out = cfg.output_dir / "dapt"
    done = out / "tlhub_dapt.json"
    texts = list(target.texts) + (list(source_texts) if settings.include_source_text else [])
    max_length = input_length(cfg.data.max_length, processor)
    key = json.loads(json.dumps(dapt_key(cfg, texts, max_length), default=str))
    try:
        reuse = json.loads(done.read_text()).get("key") == key
    except (OSError, ValueError):
        reuse = False
    if not reuse:
        model = load_auto_model(AutoModelForMaskedLM, cfg.model)
        corpus = datasets.Dataset.from_dict({"text": texts}).map(
            lambda b: processor(b["text"], truncation=True, max_length=max_length, return_special_tokens_mask=True),
            batched=True,
            remove_columns=["text"],
        )
        args = stage_arguments(
            run_args,
            out / "trainer",
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps or -1,
            learning_rate=settings.learning_rate,
            per_device_train_batch_size=settings.batch_size,
            remove_unused_columns=True,
        )
        collator = DataCollatorForLanguageModeling(processor, mlm_probability=settings.mlm_probability, seed=cfg.seed)
        trainer = TlhubTrainer(model=model, args=args, train_dataset=corpus, data_collator=collator, processing_class=processor)
        if trainer.is_world_process_zero():
            done.unlink(missing_ok=True)  # the old output is no longer this run's
        result = trainer.train()
        trainer.save_model(str(out))
        if trainer.is_world_process_zero():
            info = {"key": key, "target_texts": len(target.texts), "texts": len(texts), "train_loss": result.training_loss}
            atomic_write_json(done, info)
        trainer.accelerator.wait_for_everyone()
        logger.info("dapt: %d masked-LM steps on %d target texts -> %s", result.global_step, len(texts), out)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(out), pretrained=True, gguf_file=None))
