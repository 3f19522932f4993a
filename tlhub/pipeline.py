"""finetune(): config -> data -> model -> strategy -> Trainer -> results.

The one place that knows the order of a run. Each phase is a call into the module
that owns it: `tlhub.data` reads the data, the modality loads the model and
preprocesses lazily, the strategy picks which weights train, transformers' Trainer
trains, and the run directory gets the model, its processor, the resolved config and
the results files that transformers' example scripts write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from torch import nn
from transformers import (
    EarlyStoppingCallback,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
    set_seed,
)

from tlhub.cache import cached_splits, feature_collator, uses_feature_cache
from tlhub.card import model_card
from tlhub.config import TLHUB_TRAINING_KEYS, RunConfig, build, load_config, read_yaml, save_config
from tlhub.data import LABELS, encode_labels, load_data, read_source, require_columns
from tlhub.errors import ConfigError, DataError, TlhubError
from tlhub.io import atomic_save_dir, atomic_write_json, atomic_write_text
from tlhub.metrics import MAIN_METRIC, TASK_METRICS, load_task_metrics, normalize_text
from tlhub.modalities import Modality, get_modality, is_encoder_decoder
from tlhub.models import PooledClassifier, mask_whisper_frames
from tlhub.progress import quiet
from tlhub.rundir import RESULTS, RUN_CONFIG, RUN_INFO, TARGET_PREDICTIONS, prepare_output_dir
from tlhub.strategies import STRATEGIES, Applied, count_parameters
from tlhub.strategies import contrastive, domain
from tlhub.strategies.domain import DomainAdaptationTrainer
from tlhub.strategies.heads import fit_logistic_head
from tlhub.trainer import stage_arguments

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pieces


def training_arguments(cfg: RunConfig, has_eval: bool) -> TrainingArguments:
    """TrainingArguments from the `training` section, with defaults that suit tlhub's data.

    Set by tlhub unless the config says otherwise: no experiment trackers, evaluate and
    save once per epoch, keep two checkpoints. Always: keep the raw columns, because
    preprocessing runs lazily in `set_transform` and needs them.
    """
    main, greater = MAIN_METRIC[cfg.task]
    values: dict[str, Any] = {
        "report_to": "none",
        "eval_strategy": "epoch" if has_eval else "no",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 25,
        "label_names": [LABELS],
    }
    generative = generates(cfg)
    if generative:
        values.update(predict_with_generate=True, generation_max_length=cfg.data.max_target_length)
    user = cfg.training
    if "eval_strategy" in user and "save_strategy" not in user:
        # Checkpoints where evaluations happen: what best-model selection needs.
        values["save_strategy"] = user["eval_strategy"]
        if "eval_steps" in user and "save_steps" not in user:
            values["save_steps"] = user["eval_steps"]
    values.update({k: v for k, v in user.items() if k not in TLHUB_TRAINING_KEYS})
    if quiet():  # tlhub --quiet: the Trainer's bars go too
        values["disable_tqdm"] = True
    # training.push_to_hub: tlhub pushes the finished run folder (push_run), not the Trainer its checkpoints
    values["push_to_hub"] = False
    if user.get("early_stopping_patience") is not None:
        if values["eval_strategy"] in ("no", None):
            raise ConfigError(
                "training.early_stopping_patience: early stopping needs evaluations during training; "
                "set training.eval_strategy to epoch or steps"
            )
        if values["save_strategy"] in ("no", None):
            raise ConfigError(
                "training.early_stopping_patience: restoring the best model needs checkpoints; "
                f"set training.save_strategy to best or to the eval_strategy ({values['eval_strategy']})"
            )
        values.setdefault("load_best_model_at_end", True)
        values.setdefault("metric_for_best_model", main)
        values.setdefault("greater_is_better", greater)
    # DDP: frozen blocks, LoRA and heads that skip a module leave trainable parameters
    # without gradients in some steps; find_unused_parameters makes DDP tolerate that.
    # With activation checkpointing it would break the reducer, so use a static graph.
    if user.get("gradient_checkpointing"):
        values.setdefault("ddp_find_unused_parameters", False)
        values.setdefault("ddp_static_graph", True)
    else:
        values.setdefault("ddp_find_unused_parameters", True)
    gpu = torch.cuda.is_available() and not values.get("use_cpu")
    for key, value in gpu_defaults(cfg.modality, user, gpu, gpu and torch.cuda.is_bf16_supported()).items():
        values.setdefault(key, value)
    # Per-device mean losses averaged by DDP, not token counts gathered across devices
    # (tlhub's heads ignore those counts; see make_trainer).
    values.setdefault("average_tokens_across_devices", False)
    # Mixed precision only where the hardware has it: a clear message instead of a failure deep in accelerate.
    if values.get("fp16") and not torch.cuda.is_available():
        raise ConfigError("training.fp16: float16 mixed precision needs a CUDA GPU and none is available; remove fp16 (bf16 works on CPU)")
    if values.get("bf16") and torch.cuda.is_available() and not values.get("use_cpu") and not torch.cuda.is_bf16_supported():
        raise ConfigError("training.bf16: this GPU does not support bfloat16; use training.fp16 instead")
    values["remove_unused_columns"] = False
    cls = Seq2SeqTrainingArguments if generative else TrainingArguments
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"training: {str(exc).strip().splitlines()[0]}") from None


def gpu_defaults(modality: str, user: dict[str, Any], gpu: bool, bf16_supported: bool) -> dict[str, Any]:
    """Throughput settings tlhub picks where the config leaves them out.

    On a GPU: pinned host memory (without one it only warns); bfloat16 mixed precision
    where the GPU has it (Ampere or newer) and neither ``bf16`` nor ``fp16`` is set; and
    for images and audio, whose decoding runs on the CPU, dataloader worker processes.
    """
    out: dict[str, Any] = {"dataloader_pin_memory": gpu}
    if gpu and bf16_supported and "bf16" not in user and "fp16" not in user:
        out["bf16"] = True
    if gpu and modality in ("image", "audio"):
        out["dataloader_num_workers"] = min(4, max(1, (os.cpu_count() or 2) // 2))
    return out


def check_sharding(cfg: RunConfig, args: TrainingArguments) -> None:
    """Refuse what tlhub cannot save correctly from sharded (FSDP) weights, before training.

    The pooled head of feature extraction is written by the main process from its own copy
    of the weights; under FSDP that copy is a shard. (The merged LoRA model is built from
    the saved adapter, which the Trainer gathers first: FSDP is fine there.)
    """
    fsdp = bool(getattr(args, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    if not fsdp:
        return
    if cfg.strategy.name == "feature_extraction":
        raise ConfigError(
            "strategy.name: feature_extraction trains a head of a few thousand weights, which FSDP would shard and "
            "tlhub could not save whole; run it without FSDP (DDP: recipes/accelerate/multi_gpu.yaml)"
        )


def generates(cfg: RunConfig, source: str | None = None) -> bool:
    """Whether the run's model generates its outputs (Seq2SeqTrainer, predict_with_generate):
    text2text, and speech recognition by an encoder-decoder such as Whisper (the model's
    config, or the one saved in `source`, says so; CTC models do not generate)."""
    return cfg.task == "text2text" or (cfg.task == "speech_recognition" and is_encoder_decoder(cfg.model, source))


def compute_metrics_for(cfg: RunConfig, processor: Any, generative: bool = False) -> Any:
    """The Trainer's `compute_metrics` for the run's task, through the offline `evaluate` modules."""
    task = cfg.task
    metrics = load_task_metrics(task)
    ctc = task == "speech_recognition" and not generative
    normalize = task == "speech_recognition" and cfg.data.normalize_text

    def classification(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return metrics.compute(predictions=np.argmax(logits, axis=-1), references=pred.label_ids)

    def generation(pred: Any) -> dict[str, float]:
        tokenizer = getattr(processor, "tokenizer", processor)
        ids = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        if ids.ndim == 3:  # CTC logits
            ids = ids.argmax(-1)
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)
        labels = np.where(pred.label_ids < 0, tokenizer.pad_token_id, pred.label_ids)
        predictions = processor.batch_decode(ids) if ctc else processor.batch_decode(ids, skip_special_tokens=True)
        references = processor.batch_decode(labels, skip_special_tokens=True, **({"group_tokens": False} if ctc else {}))
        if normalize:
            predictions, references = normalize_text(predictions), normalize_text(references)
        return metrics.compute(predictions=predictions, references=references)

    return classification if task == "classification" else generation


def optimizer_for(applied: Applied, args: TrainingArguments) -> tuple[torch.optim.Optimizer, None] | tuple[None, None]:
    """AdamW with one group per learning-rate scale (layer-wise decay), else the Trainer's own."""
    if not applied.lr_scales:
        return None, None
    groups = [
        {"params": params, "lr": args.learning_rate * scale, "weight_decay": args.weight_decay}
        for params, scale in applied.lr_scales
    ]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon), None


def make_trainer(
    cfg: RunConfig,
    modality: Modality,
    processor: Any,
    applied: Applied,
    args: TrainingArguments,
    train: datasets.Dataset | None,
    evaluation: datasets.Dataset | None,
    target: datasets.Dataset | None = None,
) -> Trainer:
    """A Trainer (Seq2SeqTrainer for text2text) wired to tlhub's collator and metrics.

    With `target` (unlabelled target-domain rows, for dann/coral/mmd) it is the
    DomainAdaptationTrainer, whose loss adds the domain loss.
    """
    callbacks = []
    patience = cfg.training.get("early_stopping_patience")
    if patience is not None and train is not None:  # an evaluation-only Trainer has nothing to stop
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(patience)))
    cls = Seq2SeqTrainer if isinstance(args, Seq2SeqTrainingArguments) else Trainer
    extra: dict[str, Any] = {}
    if target is not None and cfg.domain_adaptation is not None:
        cls, extra = DomainAdaptationTrainer, {"target_dataset": target, "settings": cfg.domain_adaptation}
    trainer = cls(
        model=applied.model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        data_collator=modality.collator(processor, cfg, applied.model),
        compute_metrics=compute_metrics_for(cfg, processor, isinstance(args, Seq2SeqTrainingArguments)),
        optimizers=optimizer_for(applied, args),
        callbacks=callbacks,
        **extra,
    )
    # transformers 5 treats a model whose forward takes **kwargs as one that divides its
    # loss by `num_items_in_batch`, and then neither divides by gradient_accumulation_steps
    # nor undoes its scaling by the number of processes. The classification, seq2seq and
    # CTC heads tlhub trains return per-batch means and ignore that count, so their loss
    # and gradients grew with both. False restores the plain per-batch-mean arithmetic.
    trainer.model_accepts_loss_kwargs = False
    return trainer


def training_finished(state: dict[str, Any], args: TrainingArguments) -> bool:
    """Whether a checkpoint's trainer state already reached the end the *current* settings ask for.

    The end is ``max_steps`` when set, else ``num_train_epochs``, read from the current
    arguments, so a resume with more epochs or steps continues training. A run that early
    stopping ended stays ended.
    """
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    step, epoch, planned = state.get("global_step", 0), state.get("epoch") or 0.0, state.get("max_steps", 0)
    if control.get("should_training_stop") and step < planned:  # stopped before its planned end: early stopping
        return True
    if args.max_steps > 0:
        return step >= args.max_steps
    return step >= planned > 0 and epoch >= args.num_train_epochs - 1e-6


def train_or_restore(trainer: Trainer, checkpoint: str | None) -> dict[str, float]:
    """``trainer.train()`` (resuming from `checkpoint`), returning its train_* metrics.

    A checkpoint that already reached the end of training (a run killed after training,
    before its results were written) is restored instead of resumed: transformers would
    run one more step past max_steps when that is not the end of an epoch, or one more
    epoch after early stopping. The train_* metrics then come from the checkpoint's log
    (train_loss: the mean of the logged losses, step-weighted; timings 0), so
    all_results.json has the same keys as an uninterrupted run's. A checkpoint short of
    the current end (more epochs or steps than it was trained for) resumes training.
    """
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text()) if checkpoint else {}
    if not checkpoint or not training_finished(state, trainer.args):
        return dict(trainer.train(resume_from_checkpoint=checkpoint).metrics)
    from transformers import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best and Path(best).is_dir():
        trainer._load_best_model()
    # Place the model as training would have, so evaluate() reports the same keys.
    trainer.model_wrapped = trainer.accelerator.prepare_model(trainer.model, evaluation_mode=True)
    total, steps, last = 0.0, 0, 0
    for entry in trainer.state.log_history:
        if "loss" in entry and "step" in entry:
            total += entry["loss"] * (entry["step"] - last)
            steps, last = steps + entry["step"] - last, entry["step"]
    return {
        "epoch": trainer.state.epoch,
        "train_loss": total / steps if steps else float("nan"),
        "train_runtime": 0.0,
        "train_samples_per_second": 0.0,
        "train_steps_per_second": 0.0,
    }


def save_model(trainer: Trainer, applied: Applied, processor: Any, output_dir: Path) -> None:
    """The trained model (or LoRA adapter, or backbone + pooled head) and its processor.

    Everything is written into ``OUTPUT_DIR/.tlhub-save.tmp`` first and then renamed file
    by file into OUTPUT_DIR, so each model file is either the old one or the whole new
    one, never half-written. (The set of files is not swapped at once; the run counts
    as finished only when all_results.json, written after them, is there.)
    """
    staging = output_dir / ".tlhub-save.tmp"  # the same path on every process
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if isinstance(applied.model, PooledClassifier):
        if trainer.is_world_process_zero():
            applied.model.save_pretrained(staging)
    else:
        # The task model alone, also where the Trainer trained it inside a DomainAdaptedModel.
        trained, trainer.model = trainer.model, applied.model
        try:
            trainer.save_model(str(staging))  # gathers sharded (FSDP/DeepSpeed) weights first
        finally:
            trainer.model = trained
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(staging))
        if isinstance(applied.model, PooledClassifier):  # the pipeline then pools the frames tlhub pools
            mask_whisper_frames(staging)
        for item in sorted(staging.iterdir()):
            target = output_dir / item.name
            if item.is_dir():
                atomic_save_dir(target, lambda d, src=item: shutil.copytree(src, d, dirs_exist_ok=True))
            else:
                os.replace(item, target)
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- domain adaptation runs


def subrun_config(cfg: RunConfig, folder: str, **changes: Any) -> RunConfig:
    """`cfg` as a run of its own in OUTPUT_DIR/`folder`, with `changes` to its
    domain_adaptation section, no baseline of its own and nothing pushed to the Hub."""
    da = cfg.domain_adaptation
    assert da is not None
    settings = dataclasses.replace(da, compare_source_only=False, **changes)
    training = {**cfg.training, "output_dir": str(cfg.output_dir / folder), "push_to_hub": False}
    return dataclasses.replace(cfg, domain_adaptation=settings, training=training)


def source_only_config(cfg: RunConfig) -> RunConfig:
    """The same run without adaptation, into OUTPUT_DIR/source_only (the baseline)."""
    return subrun_config(cfg, "source_only", method="source_only")


def source_only_baseline(cfg: RunConfig, modality: Modality) -> dict[str, Any] | None:
    """Train the source-only baseline when the run asks for it and the target has labels."""
    da = cfg.domain_adaptation
    if da is None or da.method == "source_only" or not da.compare_source_only:
        return None
    if not domain.target_has_labels(cfg, modality):
        logger.info("domain_adaptation: the target has no labels; no source-only comparison")
        return None
    logger.info("domain_adaptation: training the source-only baseline first (%s/source_only)", cfg.output_dir)
    return finetune(source_only_config(cfg))


def dapt_key(cfg: RunConfig, texts: list[str]) -> dict[str, Any]:
    """Everything continued pretraining's output depends on: reuse it only when all are equal."""
    from tlhub.cache import library_versions, model_identity

    da = cfg.domain_adaptation
    assert da is not None
    return {
        "model": model_identity(cfg),
        "texts_sha256": hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest(),
        "dapt": dataclasses.asdict(da.dapt),
        "max_length": cfg.data.max_length,
        "seed": int(cfg.training.get("seed", 42)),
        "versions": library_versions(),
    }


def continue_pretraining(
    cfg: RunConfig, processor: Any, target: domain.TargetData, source_texts: list[str], run_args: TrainingArguments
) -> RunConfig:
    """DAPT: masked-LM training of the pretrained model on the target text.

    Writes the adapted backbone (and tokenizer) to ``OUTPUT_DIR/dapt`` and returns the
    run's config with ``model.name_or_path`` pointing there, so the rest of the run
    fine-tunes the adapted weights exactly as it would the original ones. A finished
    ``dapt`` folder is reused only when its key (model, texts, settings, seed, library
    versions; see :func:`dapt_key`) equals this run's; otherwise it is trained again.
    """
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    from tlhub.modalities import load_auto_model

    da = cfg.domain_adaptation
    assert da is not None and target.texts is not None
    settings = da.dapt
    out = cfg.output_dir / "dapt"
    done = out / "tlhub_dapt.json"
    seed = int(cfg.training.get("seed", 42))
    texts = list(target.texts) + (list(source_texts) if settings.include_source_text else [])
    key = json.loads(json.dumps(dapt_key(cfg, texts), default=str))
    try:
        reuse = json.loads(done.read_text()).get("key") == key
    except (OSError, ValueError):
        reuse = False
    if not reuse:
        model = load_auto_model(AutoModelForMaskedLM, cfg.model)
        corpus = datasets.Dataset.from_dict({"text": texts}).map(
            lambda b: processor(b["text"], truncation=True, max_length=cfg.data.max_length, return_special_tokens_mask=True),
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
        collator = DataCollatorForLanguageModeling(processor, mlm_probability=settings.mlm_probability, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=corpus, data_collator=collator, processing_class=processor)
        if trainer.is_world_process_zero():
            done.unlink(missing_ok=True)  # the old output is no longer this run's
        result = trainer.train()
        trainer.save_model(str(out))
        if trainer.is_world_process_zero():
            info = {"key": key, "target_texts": len(target.texts), "texts": len(texts), "train_loss": result.training_loss}
            atomic_write_json(done, info)
        trainer.accelerator.wait_for_everyone()
        logger.info("dapt: %d masked-LM steps on %d target texts -> %s", result.global_step, len(texts), out)
    set_seed(seed)  # the new head starts from the same random state as in the source-only run
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(out), pretrained=True))


def add_teacher_labels(
    cfg: RunConfig, modality: Modality, target: domain.TargetData, splits: datasets.DatasetDict, label_names: list[str]
) -> dict[str, Any]:
    """A self_training round: its teacher, this run with one round fewer (OUTPUT_DIR/teacher),
    labels the target rows it is surest of per class (read from its target_predictions.jsonl),
    and those rows join the training split. Returns what to report of it."""
    da = cfg.domain_adaptation
    assert da is not None
    teacher_cfg = subrun_config(cfg, "teacher", self_training_rounds=da.self_training_rounds - 1)
    logger.info("self_training: training the teacher first (%s)", teacher_cfg.output_dir)
    teacher_results = finetune(teacher_cfg)
    PartialState().wait_for_everyone()  # the main process writes the teacher's folder; the others read it
    path = teacher_cfg.output_dir / TARGET_PREDICTIONS  # the teacher's labels are this run's: same data, same config
    probabilities = domain.read_target_predictions(path, label_names, len(target.unlabelled))
    labels = domain.confident_rows(probabilities, da.pseudo_label_fraction)
    splits["train"] = domain.with_pseudo_labelled_rows(splits["train"], target, cfg, modality, labels)
    report: dict[str, Any] = {
        "pseudo_labelled_rows": int((labels >= 0).sum()),
        # the teacher's training (and its own teacher's) is part of what this run cost
        "teacher_train_runtime": round(teacher_results.get("train_runtime", 0.0) + teacher_results.get("teacher_train_runtime", 0.0), 4),
    }
    if "target_accuracy" in teacher_results:
        report["teacher_target_accuracy"] = teacher_results["target_accuracy"]
    if target.labelled is not None:  # how right the teacher's labels are (never trained on)
        truth = torch.as_tensor(target.labelled.with_format(None)[LABELS])
        taught = labels >= 0
        report["pseudo_label_accuracy"] = round(float((labels[taught] == truth[taught]).float().mean()), 6)
    return report


# --------------------------------------------------------------------------- a run


def finetune(config: RunConfig | str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate one run; return (and write to OUTPUT_DIR/all_results.json) its results."""
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    modality = get_modality(cfg.modality)
    if cfg.task not in modality.tasks:
        raise ConfigError(f"task: the {cfg.modality} modality supports {', '.join(modality.tasks)}, not '{cfg.task}'")
    if cfg.strategy.name == "lora" and not cfg.model.pretrained:
        raise ConfigError("strategy.name: lora adapts pretrained weights; with model.pretrained: false use full")
    if cfg.domain_adaptation is not None:
        domain.check_supported(cfg)
    args = training_arguments(cfg, has_eval=True)
    check_sharding(cfg, args)
    run_cfg = cfg  # what config.yaml records, also when dapt points the model elsewhere
    set_seed(int(cfg.training.get("seed", 42)))

    # Data: read, check, split (and the target domain's rows)
    loaded = load_data(cfg, modality)
    processor = modality.load_processor(cfg)
    target = domain.load_target(cfg, modality, processor, loaded.label_names) if cfg.domain_adaptation is not None else None
    if target is not None:  # the source's label shares, before a self_training round adds target rows
        source_labels = torch.as_tensor(loaded.splits["train"].with_format(None)[LABELS])
        source_counts = torch.bincount(source_labels, minlength=len(loaded.label_names)).tolist()

    # Model: pretrained (or random) body with a new head sized to the labels; the strategy picks which weights train
    model = modality.load_model(cfg, loaded.label_names)
    applied = STRATEGIES.get(cfg.strategy.name)(model, cfg.strategy, modality, cfg.task)

    # Run folder: this config's alone (another config's run is refused, or cleared), and the
    # checkpoint to resume from. Everything above only reads, so bad input fails first.
    checkpoint = prepare_output_dir(cfg, args)

    # Domain adaptation: the source-only baseline trains first (when the target has labels);
    # dapt pretrains on the target text, and the model then loads from the adapted weights
    baseline = source_only_baseline(cfg, modality)
    if target is not None and cfg.domain_adaptation.method == "dapt":
        cfg = continue_pretraining(cfg, processor, target, list(loaded.splits["train"][cfg.data.text_column]), args)
        model = modality.load_model(cfg, loaded.label_names)
        applied = STRATEGIES.get(cfg.strategy.name)(model, cfg.strategy, modality, cfg.task)
    stage: dict[str, Any] = {}
    if target is not None and cfg.domain_adaptation.method == "self_training" and cfg.domain_adaptation.self_training_rounds > 0:
        stage = add_teacher_labels(cfg, modality, target, loaded.splits, loaded.label_names)  # a teacher labels the target rows it is surest of
    trainable, total = count_parameters(applied.model)

    # Contrastive few-shot: the body first learns from pairs of the labelled rows (SetFit's method)
    if cfg.strategy.name == "contrastive":
        stage = contrastive.tune_body(applied.model, loaded.splits["train"], modality, processor, cfg, args)

    # Feature extraction with strategy.cache: the frozen backbone runs once per example
    # and the head trains on the stored features (tlhub.cache). Otherwise preprocessing
    # is applied lazily as batches are drawn.
    cache = cached_splits(cfg, modality, processor, applied.model, loaded.splits, args) if uses_feature_cache(cfg, applied) else None
    if cache is not None:
        loaded.splits = datasets.DatasetDict(cache.splits)
        args.train_sampling_strategy = "random"  # fixed-size vectors: nothing to group by length
    for name, split in loaded.splits.items():
        if cache is None:
            split.set_transform(modality.transform(processor, cfg, train=name == "train"))

    # Train
    aligned = target.unlabelled if target is not None and cfg.domain_adaptation.method in domain.LOSS_METHODS else None
    trainer = make_trainer(cfg, modality, processor, applied, args, loaded.splits["train"], loaded.splits["validation"], aligned)
    if cache is not None:
        trainer.data_collator = feature_collator
    if cfg.strategy.head_kind == "logistic":  # a head fitted in closed form on the features
        train = cache.splits["train"].with_format("torch")
        start = time.perf_counter()
        features, labels = train[:]["features"], train[:]["labels"]
        stage.update(fit_logistic_head(applied.model, features, labels, int(cfg.training.get("seed", 42))))
        train_metrics = {"train_runtime": round(time.perf_counter() - start + stage.get("contrastive_runtime", 0.0), 4)}
    else:
        train_metrics = train_or_restore(trainer, checkpoint)
    train_metrics.update(stage)

    # Evaluate on validation (and test)
    results: dict[str, Any] = dict(train_metrics)
    if cache is not None:
        results.update(cache.results())
    results.update(trainer.evaluate())
    if "test" in loaded.splits:
        results.update(trainer.evaluate(loaded.splits["test"], metric_key_prefix="test"))
    if target is not None:  # accuracy on the target's labelled rows, beside the source-only run's
        scores, target_probabilities = domain.target_results(trainer, target, baseline, cfg.domain_adaptation.method, source_counts)
        results.update(scores)
    results.update(
        trainable_params=trainable,
        total_params=total,
        trainable_percent=round(100.0 * trainable / total, 4),
        train_samples=len(loaded.splits["train"]),
        eval_samples=len(loaded.splits["validation"]),
        skipped_examples=loaded.skipped,
        strategy=cfg.strategy.name,
        pretrained=cfg.model.pretrained,
    )

    # Trackers (report_to: tensorboard, mlflow, ...) get tlhub's results too: test and target scores, parameter counts
    if [r for r in trainer.args.report_to or [] if r != "none"]:
        trainer.log({k: v for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)})

    # Save: model + processor, config, results, trainer state
    output_dir = cfg.output_dir
    save_model(trainer, applied, processor, output_dir)
    if trainer.is_world_process_zero():
        save_config(run_cfg, output_dir / RUN_CONFIG)
        info = {
            "modality": cfg.modality,
            "task": cfg.task,
            "strategy": cfg.strategy.name,
            "label_names": loaded.label_names,
            "base_model": cfg.model.name_or_path,  # what a LoRA adapter applies to (dapt: OUTPUT_DIR/dapt)
        }
        atomic_write_json(output_dir / RUN_INFO, info)
        if target is not None:
            domain.write_target_predictions(output_dir / TARGET_PREDICTIONS, target_probabilities, loaded.label_names)
        if cfg.strategy.name == "lora" and cfg.strategy.lora.merge:
            # from the saved adapter, not the live model: under FSDP that is a shard
            merged = load_lora(modality, cfg, loaded.label_names, output_dir).merge_and_unload()
            atomic_save_dir(output_dir / "merged", lambda d: (merged.save_pretrained(d), processor.save_pretrained(d)))
        atomic_write_text(output_dir / "README.md", model_card(run_cfg, results, run_cfg.model.name_or_path))
        # trainer_state.json as Trainer.save_state() writes it, but atomically; then
        # all_results.json last: its presence marks a finished run.
        atomic_write_json(output_dir / "trainer_state.json", dataclasses.asdict(trainer.state))
        atomic_write_json(output_dir / RESULTS, results)
        if cfg.training.get("push_to_hub"):
            logger.info("pushed %s to %s", output_dir, push_run(cfg, output_dir))
    return results


# Folders of a run that are not the model: checkpoints (resume), the source-only baseline,
# continued pretraining and the contrastive stage's scratch (each a model of its own).
# runs/ (tensorboard's logs) goes up: the Hub shows it as the model's training metrics.
NOT_PUSHED = ["checkpoint-*", "checkpoint-*/**", "source_only/**", "teacher/**", "dapt/**", "contrastive/**", ".tlhub*"]


def push_run(cfg: RunConfig, output_dir: Path) -> str:
    """Upload the finished run folder to the Hub (``HF_ENDPOINT``): the model and its
    processor, model card, config.yaml, tlhub_run.json, results, remote code, merged/.

    The repository is ``training.hub_model_id`` (default: the folder's name), made if it
    does not exist (``hub_private_repo``); the token is ``hub_token`` or the logged-in one.
    """
    from huggingface_hub import create_repo, upload_folder

    training = cfg.training
    repo_id = training.get("hub_model_id") or output_dir.name
    token = training.get("hub_token")
    try:
        repo = create_repo(repo_id, token=token, private=training.get("hub_private_repo"), exist_ok=True)
        commit = upload_folder(
            repo_id=repo.repo_id, folder_path=str(output_dir), token=token, ignore_patterns=NOT_PUSHED,
            commit_message=f"tlhub: {cfg.strategy.name} run of {cfg.model.name_or_path}",
        )  # fmt: skip
    except Exception as exc:  # network, auth, or a name the Hub refuses: the run itself is saved
        raise TlhubError(
            f"training.push_to_hub: the run is saved in {output_dir}, but pushing it to '{repo_id}' failed: "
            f"{str(exc).strip().splitlines()[0]}; check hub_model_id and your token (huggingface-cli login), "
            f"then push the folder with huggingface_hub.upload_folder"
        ) from None
    return str(getattr(commit, "commit_url", repo))


# --------------------------------------------------------------------------- using a finished run


@dataclass
class Run:
    """A finished run loaded back: its config, modality, model and processor."""

    cfg: RunConfig
    modality: Modality
    model: nn.Module
    processor: Any
    label_names: list[str] | None
    generative: bool = False  # generates its outputs (text2text, Whisper-style speech recognition)


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by :func:`finetune` (any strategy).

    The model is read the way its strategy saved it (``tlhub_run.json`` says which), never
    guessed from the files present, and only from a finished run (``all_results.json``).
    """
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in (RUN_CONFIG, RUN_INFO, RESULTS)):
        raise DataError(
            f"{run_dir}: not a finished tlhub run (no {RUN_CONFIG}, {RUN_INFO} and {RESULTS}); pass training.output_dir of a run"
        )
    cfg = build(RunConfig, read_yaml(run_dir / RUN_CONFIG))
    info = json.loads((run_dir / RUN_INFO).read_text())
    modality = get_modality(cfg.modality)
    label_names = info.get("label_names")
    processor = modality.load_processor(cfg, source=str(run_dir))
    strategy = info.get("strategy", cfg.strategy.name)
    if strategy in ("feature_extraction", "contrastive") and PooledClassifier.is_saved_in(run_dir):
        model: nn.Module = PooledClassifier.from_pretrained(run_dir)
    elif strategy == "lora":
        base_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=info.get("base_model", cfg.model.name_or_path)))
        model = load_lora(modality, base_cfg, label_names, run_dir)
    else:
        local = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(run_dir), pretrained=True))
        model = modality.load_model(local, label_names)
    model.to(inference_device())
    model.eval()
    return Run(cfg, modality, model, processor, label_names, generates(cfg, str(run_dir)))


def load_lora(modality: Modality, cfg: RunConfig, label_names: list[str] | None, run_dir: str | Path) -> nn.Module:
    """The pretrained model `cfg` names with the LoRA adapter saved in `run_dir` on it."""
    from peft import PeftModel

    base = modality.load_model(cfg, label_names)  # the pretrained model the adapter was trained on
    return PeftModel.from_pretrained(base, str(run_dir))


def load_pretrained(name_or_path: str, modality_name: str, task: str, overrides: list[str] | None = None) -> Run:
    """A pretrained model as it is, before any training: what `tlhub evaluate` scores zero-shot.

    Only models that generate (Whisper, T5) can be scored so; a classifier would be scored
    through a new, untrained head. `overrides` are dotted config keys (data.audio_column=path).
    """
    from tlhub.config import merge, parse_overrides

    mapping = {
        "modality": modality_name,
        "task": task,
        "model": {"name_or_path": name_or_path},
        "data": {"train": "(zero-shot: no training data)"},
        "training": {"output_dir": "(zero-shot: nothing written)"},
    }
    cfg = build(RunConfig, merge(mapping, parse_overrides(list(overrides or []))))
    if not generates(cfg):
        raise ConfigError(
            f"evaluate: {name_or_path} is scored as it is only when it generates its outputs (Whisper, T5); "
            "a classifier or CTC model needs a trained head: train a run, then evaluate its folder"
        )
    modality = get_modality(cfg.modality)
    processor = modality.load_processor(cfg, source=cfg.model.name_or_path)
    model = modality.load_model(cfg, None)
    model.to(inference_device())
    model.eval()
    return Run(cfg, modality, model, processor, None, True)


def inference_device() -> torch.device:
    """Where a loaded run predicts: the GPU when there is one, as training would use."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch(run: Run, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    raw = {key: [row[key] for row in rows] for key in rows[0]}
    features = run.modality.transform(run.processor, run.cfg, train=False)(raw)
    examples = [{k: v[i] for k, v in features.items()} for i in range(len(rows))]
    batch = run.modality.collator(run.processor, run.cfg, run.model)(examples)
    device = next(run.model.parameters()).device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def predict(run: Run, inputs: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Label and score (classification) or generated text, per input."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        batch = _batch(run, [run.modality.input_row(value, run.cfg) for value in chunk])
        if run.cfg.task == "classification":
            probs = run.model(**batch).logits.softmax(-1)
            scores, ids = probs.max(-1)
            names = run.label_names or [str(i) for i in range(probs.shape[-1])]
            out += [{"input": v, "label": names[i], "score": float(s)} for v, i, s in zip(chunk, ids.tolist(), scores)]
        elif run.generative:
            # max_length, as Seq2SeqTrainer passes generation_max_length: the same outputs as evaluation's
            generated = run.model.generate(**batch, max_length=run.cfg.data.max_target_length)
            texts = run.processor.batch_decode(generated, skip_special_tokens=True)
            out += [{"input": v, "text": t} for v, t in zip(chunk, texts)]
        else:
            logits = run.model(**batch).logits
            texts = run.processor.batch_decode(logits.argmax(-1))
            out += [{"input": v, "text": t} for v, t in zip(chunk, texts)]
    return out


def evaluate_run(run: Run, data: str, output_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics of a finished run on a labelled file or dataset (same columns as training).

    The Trainer's scratch folder is `output_dir`, or a temporary folder removed after:
    never a path saved at training time, which may be relative to another working folder.
    """
    if output_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tlhub-evaluate-") as scratch:
            return evaluate_run(run, data, scratch)
    cfg = run.cfg
    ds, base_dir = read_source(data, cfg.data.eval_split, "--data", cfg, run.modality)
    require_columns(ds, run.modality.required_columns(cfg), "--data")
    ds, _ = run.modality.prepare(ds, cfg, base_dir, "--data")
    if cfg.task == "classification":
        ds = encode_labels(ds, cfg.data.label_column, run.label_names, "--data")
    ds.set_transform(run.modality.transform(run.processor, cfg, train=False))
    scratch = Path(output_dir)
    values = {"report_to": "none", "per_device_eval_batch_size": cfg.training.get("per_device_eval_batch_size", 8)}
    args_cls = Seq2SeqTrainingArguments if run.generative else TrainingArguments
    extra = {"predict_with_generate": True, "generation_max_length": cfg.data.max_target_length} if run.generative else {}
    args = args_cls(output_dir=str(scratch), remove_unused_columns=False, label_names=[LABELS], **values, **extra)
    trainer = make_trainer(cfg, run.modality, run.processor, Applied(run.model), args, None, ds)
    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(ds)
    return metrics


__all__ = ["finetune", "load_run", "load_pretrained", "predict", "evaluate_run", "Run", "TASK_METRICS"]
