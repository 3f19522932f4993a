"""finetune(): config -> data -> model -> strategy -> stage -> train -> evaluate -> save.

The one place that knows the order of a run. Each phase is a call into the module that
owns it and returns a value: `tlhub.data` reads the data, the modality loads the processor
and the model, the strategy (a registered unit, never named here) picks which weights train,
prepares what the Trainer reads and trains, the task scores, and the run folder gets the
model, its processor, the resolved config and the results files that transformers' example
scripts write. A config with a `domain_adaptation` section is a family of runs, which
`tlhub.domain.runs.adapt` orchestrates, each run going through :func:`run` once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Seq2SeqTrainingArguments, set_seed

from tlhub.card import model_card
from tlhub.config import RunConfig, load_config, save_config
from tlhub.data import LoadedData, load_data
from tlhub.domain.runs import Family, adapt
from tlhub.errors import ConfigError, TlhubError
from tlhub.inference import Run, evaluate_run, load_pretrained, load_run, predict  # a finished run, used back
from tlhub.io import atomic_save_dir, atomic_write_json, atomic_write_text, guarded_write
from tlhub.modalities import Modality, get_modality
from tlhub.rundir import RESULTS, RUN_CONFIG, RUN_INFO, SAVE_STAGING, run_folder
from tlhub.strategies import Applied, Prepared, StageContext, Strategy, count_parameters, get_strategy
from tlhub.trainer import TlhubTrainer, build_trainer, training_arguments

logger = logging.getLogger(__name__)


def finetune(config: RunConfig | str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and evaluate one run; return (and write to OUTPUT_DIR/all_results.json) its results."""
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    if cfg.domain_adaptation is not None:  # a family of runs: baseline, continued pretraining, teacher, then the adapted one
        return adapt(cfg, run)
    return run(cfg)


def run(
    cfg: RunConfig,
    *,
    modality: Modality | None = None,
    data: LoadedData | None = None,
    folder: contextlib.AbstractContextManager[str | None] | None = None,
    family: Family | None = None,
    recorded: RunConfig | None = None,
) -> dict[str, Any]:
    """One run, phase by phase. tlhub.domain.runs.adapt may hand it the `modality` that read `data`
    (once for a family of runs), the `folder` it holds (yielding the checkpoint), the run's part in
    a domain-adaptation `family`, and what config.yaml `recorded`; a plain run does all itself."""
    modality, strategy = modality or get_modality(cfg.modality), get_strategy(cfg.strategy.name)
    args = training_arguments(cfg)
    check_sharding(args, strategy)
    set_seed(args.seed)

    # Data: read, check, split; the processor (tokenizer, image processor, feature extractor); what it will cut, said
    loaded = data or load_data(cfg, modality)
    processor = modality.load_processor(cfg)
    lengths = modality.length_report(dict(loaded.splits), processor, cfg)

    # Model: pretrained (or random) body with a new head sized to the labels; the strategy picks which weights train
    applied = strategy.apply(modality.load_model(cfg, loaded.label_names), cfg.strategy, modality, cfg.task)
    trainable, total = count_parameters(applied.model)

    # Run folder: this config's alone, held while the run lives. Everything above only reads, so bad input fails first
    with folder or run_folder(cfg, args) as checkpoint:
        # Stage before training: the strategy's (pair tuning, cached features), on the rows the run trains on
        ctx = StageContext(cfg, modality, processor, args)
        splits = family.training_splits(dict(loaded.splits), cfg, modality) if family else dict(loaded.splits)
        prepared = strategy.prepare(applied, splits, ctx)

        # Train: the Trainer (or the strategy's closed form); a target domain adds its loss
        adaptation = family.adaptation(modality, processor) if family else None
        train_args = dataclasses.replace(args, **prepared.arguments) if prepared.arguments else args  # cached features: no lengths
        trainer = build_trainer(cfg, processor, applied.model, prepared.splits, prepared.collator, train_args, loaded.label_names,
                                applied.lr_scales, adaptation)  # fmt: skip
        trained = strategy.train(trainer, applied, prepared, ctx, checkpoint)

        # Evaluate on validation (and test, and the target domain), after what the task tunes on validation (a threshold)
        results = {**prepared.results, **trainer.final_evaluation(cfg), **trained.metrics}
        if "test" in prepared.splits:
            results.update(trainer.evaluate(prepared.splits["test"], metric_key_prefix="test"))
        target = family.score(trainer, modality, processor) if family else None
        results.update(target.results if target else {})
        results.update({**summary(cfg, loaded, prepared, trainable, total), **lengths})
        if [r for r in trainer.args.report_to or [] if r != "none"]:  # trackers get tlhub's results too
            trainer.log({k: v for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)})

        # Save: model + processor, config, results, trainer state; all_results.json last
        save_model(trainer, strategy, applied, processor, cfg.output_dir)
        if trainer.is_world_process_zero():
            save_run(cfg, recorded or cfg, strategy, modality, loaded, processor, results, trained.state(trainer))
            if target is not None:
                target.write(cfg.output_dir, loaded.label_names)
            atomic_write_json(cfg.output_dir / RESULTS, results)
            if cfg.training_args.push_to_hub:
                logger.info("pushed %s to %s", cfg.output_dir, push_run(cfg, cfg.output_dir))
    return results


# --------------------------------------------------------------------------- phases


def check_sharding(args: Seq2SeqTrainingArguments, strategy: Strategy) -> None:
    """Refuse, before training, what tlhub cannot save correctly from sharded (FSDP) weights:
    a head on frozen features is written by the main process from its own copy of the
    weights, which under FSDP is a shard. (The merged LoRA model is built from the saved
    adapter, which the Trainer gathers first: FSDP is fine there.)"""
    fsdp = bool(getattr(args, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    if fsdp and not strategy.trains_backbone:
        raise ConfigError(
            "strategy.name: a head on frozen features has a few thousand weights, which FSDP would shard and "
            "tlhub could not save whole; run it without FSDP (DDP: recipes/accelerate/multi_gpu.yaml)"
        )


def summary(cfg: RunConfig, loaded: LoadedData, prepared: Prepared, trainable: int, total: int) -> dict[str, Any]:
    """What all_results.json says of the run beyond its metrics."""
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100.0 * trainable / total, 4),
        "train_samples": len(prepared.splits["train"]),
        "eval_samples": len(prepared.splits["validation"]),
        "skipped_examples": loaded.skipped,
        "strategy": cfg.strategy.name,
        "pretrained": cfg.model.pretrained,
        **({"problem_type": loaded.problem_type} if loaded.problem_type else {}),
    }


def save_model(trainer: TlhubTrainer, strategy: Strategy, applied: Applied, processor: Any, output_dir: Path) -> None:
    """The trained model, as the strategy saves it, and its processor.

    Everything is written into ``OUTPUT_DIR/.tlhub-save.tmp`` first and then renamed file
    by file into OUTPUT_DIR, so each model file is either the old one or the whole new
    one, never half-written. (The set of files is not swapped at once; the run counts
    as finished only when all_results.json, written after them, is there. A finished run
    this one replaces waits aside until then: tlhub.rundir.run_folder.) A write that fails
    is a WriteError naming OUTPUT_DIR and the reason.
    """
    staging = output_dir / SAVE_STAGING  # the same path on every process
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    check_finite(applied.model)
    with guarded_write(output_dir, "the trained model"):
        strategy.save(trainer, applied, staging, processor)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        for item in sorted(staging.iterdir()):
            target = output_dir / item.name
            if item.is_dir():
                atomic_save_dir(target, lambda d, src=item: shutil.copytree(src, d, dirs_exist_ok=True))
            else:
                os.replace(item, target)
        shutil.rmtree(staging, ignore_errors=True)


def check_finite(model: torch.nn.Module) -> None:
    """Refuse to save weights that hold NaN or infinite values (a model nothing can use)."""
    bad = [name for name, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise TlhubError(
            f"training.learning_rate: the trained weights hold NaN or infinite values ({', '.join(bad[:3])}); nothing was saved. "
            "Try a lower training.learning_rate or training.max_grad_norm, and check the inputs"
        )


def save_run(
    cfg: RunConfig, recorded: RunConfig, strategy: Strategy, modality: Modality, loaded: LoadedData, processor: Any,
    results: dict[str, Any], state: dict[str, Any],
) -> None:  # fmt: skip
    """Beside the model (main process): config.yaml, tlhub_run.json, what the strategy builds
    from the saved files (a merged LoRA model), the model card and trainer_state.json."""
    output_dir = cfg.output_dir
    save_config(recorded, output_dir / RUN_CONFIG)
    info = {
        "modality": cfg.modality,
        "task": cfg.task,
        "strategy": cfg.strategy.name,
        "label_names": loaded.label_names,
        "base_model": cfg.model.name_or_path,  # what a LoRA adapter applies to (dapt: OUTPUT_DIR/dapt)
    }
    atomic_write_json(output_dir / RUN_INFO, info)
    strategy.finish(output_dir, cfg, modality, loaded.label_names, processor)
    atomic_write_text(output_dir / "README.md", model_card(recorded, results, recorded.model.name_or_path))
    atomic_write_json(output_dir / "trainer_state.json", state)  # as Trainer.save_state() writes it, atomically


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

    args = cfg.training_args
    repo_id = args.hub_model_id or output_dir.name
    token = args.hub_token
    try:
        repo = create_repo(repo_id, token=token, private=args.hub_private_repo, exist_ok=True)
        commit = upload_folder(
            repo_id=repo.repo_id, folder_path=str(output_dir), token=token, ignore_patterns=NOT_PUSHED,
            commit_message=f"tlhub: {cfg.strategy.name} run of {cfg.model.name_or_path}",
        )  # fmt: skip
    except Exception as exc:  # network, auth, or a name the Hub refuses: the run itself is saved
        raise TlhubError(
            f"training.push_to_hub: the run is saved in {output_dir}, but pushing it to '{repo_id}' failed: "
            f"{str(exc).strip().splitlines()[0]}; check hub_model_id and your token (huggingface-cli login), "
            "then push the folder with huggingface_hub.upload_folder"
        ) from None
    return str(getattr(commit, "commit_url", repo))


__all__ = ["Run", "evaluate_run", "finetune", "load_pretrained", "load_run", "predict", "run"]
