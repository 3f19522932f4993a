"""finetune(): config -> data -> model -> strategy -> Trainer -> results.

The one place that knows the order of a run. Each phase is a call into the module
that owns it: `tlhub.data` reads the data, the modality loads the model and
preprocesses lazily, the strategy picks which weights train, transformers' Trainer
trains, and the run directory gets the model, its processor, the resolved config and
the results files that transformers' example scripts write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
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
from tlhub.config import TLHUB_TRAINING_KEYS, RunConfig, build, load_config, read_yaml, save_config
from tlhub.data import LABELS, encode_labels, load_data, read_source, require_columns
from tlhub.errors import ConfigError, DataError
from tlhub.io import atomic_save_dir, atomic_write_json
from tlhub.metrics import MAIN_METRIC, TASK_METRICS, load_task_metrics
from tlhub.modalities import Modality, get_modality
from tlhub.models import PooledClassifier
from tlhub.strategies import STRATEGIES, Applied, count_parameters
from tlhub.strategies import domain
from tlhub.strategies.domain import DomainAdaptationTrainer

RUN_INFO = "tlhub_run.json"
RUN_CONFIG = "config.yaml"


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
    if cfg.task == "text2text":
        values.update(predict_with_generate=True, generation_max_length=cfg.data.max_target_length)
    user = cfg.training
    if "eval_strategy" in user and "save_strategy" not in user:
        # Checkpoints where evaluations happen: what best-model selection needs.
        values["save_strategy"] = user["eval_strategy"]
        if "eval_steps" in user and "save_steps" not in user:
            values["save_steps"] = user["eval_steps"]
    values.update({k: v for k, v in user.items() if k not in TLHUB_TRAINING_KEYS})
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
    cls = Seq2SeqTrainingArguments if cfg.task == "text2text" else TrainingArguments
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


def compute_metrics_for(task: str, processor: Any) -> Any:
    """The Trainer's `compute_metrics` for `task`, through the offline `evaluate` modules."""
    metrics = load_task_metrics(task)

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
        group = task == "speech_recognition"
        predictions = processor.batch_decode(ids, skip_special_tokens=True) if not group else processor.batch_decode(ids)
        references = processor.batch_decode(labels, skip_special_tokens=True, **({"group_tokens": False} if group else {}))
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
    if patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(patience)))
    cls = Seq2SeqTrainer if cfg.task == "text2text" else Trainer
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
        compute_metrics=compute_metrics_for(cfg.task, processor),
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


def complete_checkpoint(folder: Path) -> bool:
    """True when the Trainer finished writing checkpoint `folder`.

    The Trainer writes a checkpoint in place: weights, optimizer, scheduler, RNG state,
    and ``trainer_state.json`` last. A run killed while saving leaves a folder without
    a readable trainer_state.json (or one for another step); such a folder is skipped.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        step = int(folder.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-"))
    except (OSError, ValueError):
        return False
    weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("pytorch_model*"))
    return state.get("global_step") == step and weights


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder in `output_dir`, or None."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not output_dir.is_dir():
        return None
    found = []
    for folder in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = folder.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if folder.is_dir() and suffix.isdigit() and complete_checkpoint(folder):
            found.append((int(suffix), folder))
    return str(max(found)[1]) if found else None


def resume_checkpoint(cfg: RunConfig) -> str | None:
    """The checkpoint to resume from, per ``training.resume_from_checkpoint``.

    ``auto``: the last complete checkpoint in output_dir, or a fresh start when there is
    none. ``true``: the same, but having none is an error. A path: that checkpoint.
    Incomplete checkpoints (a run killed while saving) are skipped, not loaded.
    """
    value = cfg.training.get("resume_from_checkpoint")
    if value in (None, False, "false", "False", ""):
        return None
    if value in ("auto", True, "true", "True"):
        found = last_complete_checkpoint(cfg.output_dir)
        if found is None and value != "auto":
            raise ConfigError(
                f"training.resume_from_checkpoint: no complete checkpoint in {cfg.output_dir}; "
                "use auto to start fresh when there is none"
            )
        return found
    path = Path(str(value))
    if not complete_checkpoint(path):
        raise ConfigError(
            f"training.resume_from_checkpoint: {path} is not a complete checkpoint folder "
            "(no trainer_state.json and weights); pass a checkpoint-N folder or auto"
        )
    return str(path)


def train_or_restore(trainer: Trainer, checkpoint: str | None) -> dict[str, float]:
    """``trainer.train()`` (resuming from `checkpoint`), returning its train_* metrics.

    A checkpoint of the last step (a run killed after training, before its results were
    written) is restored instead of resumed: transformers would run one more step past
    max_steps when that is not the end of an epoch, or one more epoch after early stopping. The train_* metrics then come from
    the checkpoint's log (train_loss: the mean of the logged losses, step-weighted;
    timings 0), so all_results.json has the same keys as an uninterrupted run's.
    """
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text()) if checkpoint else {}
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    finished = 0 < state.get("max_steps", 0) <= state.get("global_step", 0) or control.get("should_training_stop")
    if not finished:  # (should_training_stop: early stopping had ended the run)
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
        trainer.save_model(str(staging))  # gathers sharded (FSDP/DeepSpeed) weights first
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(staging))
        for item in sorted(staging.iterdir()):
            target = output_dir / item.name
            if item.is_dir():
                atomic_save_dir(target, lambda d, src=item: shutil.copytree(src, d, dirs_exist_ok=True))
            else:
                os.replace(item, target)
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- a run


def finetune(config: RunConfig | str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate one run; return (and write to OUTPUT_DIR/all_results.json) its results."""
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    modality = get_modality(cfg.modality)
    # Domain adaptation with a labelled target: the source-only baseline trains first
    baseline = domain.source_only_baseline(cfg, modality) if cfg.domain_adaptation is not None else None
    set_seed(int(cfg.training.get("seed", 42)))
    if cfg.task not in modality.tasks:
        raise ConfigError(f"task: the {cfg.modality} modality supports {', '.join(modality.tasks)}, not '{cfg.task}'")
    if cfg.strategy.name == "lora" and not cfg.model.pretrained:
        raise ConfigError("strategy.name: lora adapts pretrained weights; with model.pretrained: false use full")

    # Data: read, check, split
    loaded = load_data(cfg, modality)

    # Model: pretrained (or random) body with a new head sized to the labels
    processor = modality.load_processor(cfg)
    target = None
    if cfg.domain_adaptation is not None:  # the target domain; dapt first pretrains on its text
        domain.check_supported(cfg)
        target = domain.load_target(cfg, modality, processor, loaded.label_names)
        if cfg.domain_adaptation.method == "dapt":
            cfg = domain.continue_pretraining(cfg, processor, target, list(loaded.splits["train"][cfg.data.text_column]))
    model = modality.load_model(cfg, loaded.label_names)

    # Strategy: which weights train
    applied = STRATEGIES.get(cfg.strategy.name)(model, cfg.strategy, modality, cfg.task)
    trainable, total = count_parameters(applied.model)

    # Feature extraction with strategy.cache: the frozen backbone runs once per example
    # and the head trains on the stored features (tlhub.cache). Otherwise preprocessing
    # is applied lazily as batches are drawn.
    args = training_arguments(cfg, has_eval=True)
    cache = cached_splits(cfg, modality, processor, applied.model, loaded.splits, args) if uses_feature_cache(cfg, applied) else None
    if cache is not None:
        loaded.splits = datasets.DatasetDict(cache.splits)
        args.train_sampling_strategy = "random"  # fixed-size vectors: nothing to group by length
    for name, split in loaded.splits.items():
        if cache is None:
            split.set_transform(modality.transform(processor, cfg, train=name == "train"))

    # Train
    aligned = target.unlabelled if target is not None and cfg.domain_adaptation.method in domain.ALIGNMENT_METHODS else None
    trainer = make_trainer(cfg, modality, processor, applied, args, loaded.splits["train"], loaded.splits["validation"], aligned)
    if cache is not None:
        trainer.data_collator = feature_collator
    train_metrics = train_or_restore(trainer, resume_checkpoint(cfg))

    # Evaluate on validation (and test)
    results: dict[str, Any] = dict(train_metrics)
    if cache is not None:
        results.update(cache.results())
    results.update(trainer.evaluate())
    if "test" in loaded.splits:
        results.update(trainer.evaluate(loaded.splits["test"], metric_key_prefix="test"))
    if target is not None:  # accuracy on the target's labelled rows, beside the source-only run's
        results.update(domain.target_results(trainer, target, baseline, cfg.domain_adaptation.method))
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

    # Save: model + processor, config, results, trainer state
    output_dir = cfg.output_dir
    save_model(trainer, applied, processor, output_dir)
    if trainer.is_world_process_zero():
        save_config(cfg, output_dir / RUN_CONFIG)
        info = {"modality": cfg.modality, "task": cfg.task, "strategy": cfg.strategy.name, "label_names": loaded.label_names}
        atomic_write_json(output_dir / RUN_INFO, info)
        if cfg.strategy.name == "lora" and cfg.strategy.lora.merge:
            merged = applied.model.merge_and_unload()
            atomic_save_dir(output_dir / "merged", lambda d: (merged.save_pretrained(d), processor.save_pretrained(d)))
        # trainer_state.json as Trainer.save_state() writes it, but atomically; then
        # all_results.json last: its presence marks a finished run.
        atomic_write_json(output_dir / "trainer_state.json", dataclasses.asdict(trainer.state))
        atomic_write_json(output_dir / "all_results.json", results)
    return results


# --------------------------------------------------------------------------- using a finished run


@dataclass
class Run:
    """A finished run loaded back: its config, modality, model and processor."""

    cfg: RunConfig
    modality: Modality
    model: nn.Module
    processor: Any
    label_names: list[str] | None


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by :func:`finetune` (any strategy)."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file() or not (run_dir / RUN_INFO).is_file():
        raise DataError(f"{run_dir}: not a finished tlhub run (no {RUN_CONFIG} and {RUN_INFO}); pass training.output_dir of a run")
    cfg = build(RunConfig, read_yaml(run_dir / RUN_CONFIG))
    info = json.loads((run_dir / RUN_INFO).read_text())
    modality = get_modality(cfg.modality)
    label_names = info.get("label_names")
    processor = modality.load_processor(cfg, source=str(run_dir))
    if PooledClassifier.is_saved_in(run_dir):
        model: nn.Module = PooledClassifier.from_pretrained(run_dir)
    elif (run_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = modality.load_model(cfg, label_names)  # the pretrained model the adapter was trained on
        model = PeftModel.from_pretrained(base, str(run_dir))
    else:
        local = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(run_dir), pretrained=True))
        model = modality.load_model(local, label_names)
    model.eval()
    return Run(cfg, modality, model, processor, label_names)


def _batch(run: Run, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    raw = {key: [row[key] for row in rows] for key in rows[0]}
    features = run.modality.transform(run.processor, run.cfg, train=False)(raw)
    examples = [{k: v[i] for k, v in features.items()} for i in range(len(rows))]
    return run.modality.collator(run.processor, run.cfg, run.model)(examples)


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
        elif run.cfg.task == "text2text":
            generated = run.model.generate(**batch, max_new_tokens=run.cfg.data.max_target_length)
            texts = run.processor.batch_decode(generated, skip_special_tokens=True)
            out += [{"input": v, "text": t} for v, t in zip(chunk, texts)]
        else:
            logits = run.model(**batch).logits
            texts = run.processor.batch_decode(logits.argmax(-1))
            out += [{"input": v, "text": t} for v, t in zip(chunk, texts)]
    return out


def evaluate_run(run: Run, data: str, output_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics of a finished run on a labelled file or dataset (same columns as training)."""
    cfg = run.cfg
    ds, base_dir = read_source(data, cfg.data.eval_split, "--data", cfg, run.modality)
    require_columns(ds, run.modality.required_columns(cfg), "--data")
    ds, _ = run.modality.prepare(ds, cfg, base_dir, "--data")
    if cfg.task == "classification":
        ds = encode_labels(ds, cfg.data.label_column, run.label_names, "--data")
    ds.set_transform(run.modality.transform(run.processor, cfg, train=False))
    scratch = Path(output_dir) if output_dir else cfg.output_dir / "evaluate"
    values = {"report_to": "none", "per_device_eval_batch_size": cfg.training.get("per_device_eval_batch_size", 8)}
    args_cls = Seq2SeqTrainingArguments if cfg.task == "text2text" else TrainingArguments
    extra = {"predict_with_generate": True, "generation_max_length": cfg.data.max_target_length} if cfg.task == "text2text" else {}
    args = args_cls(output_dir=str(scratch), remove_unused_columns=False, label_names=[LABELS], **values, **extra)
    trainer = make_trainer(cfg, run.modality, run.processor, Applied(run.model), args, None, ds)
    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(ds)
    return metrics


__all__ = ["finetune", "load_run", "predict", "evaluate_run", "Run", "TASK_METRICS"]
