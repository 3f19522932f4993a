"""A finished run, used back: loaded from its folder the way its strategy saved it, predicting
(`tlhub predict`) and scored on new labelled data (`tlhub evaluate`); and a pretrained model
scored as it is, before any training (zero-shot)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlhub.config import RunConfig, build, merge, parse_overrides
from tlhub.data import encode_split, read_source, require_columns, sample
from tlhub.errors import ConfigError, DataError
from tlhub.modalities import Modality, get_modality
from tlhub.io import previous_run_dir
from tlhub.rundir import RESULTS, RUN_CONFIG, RUN_INFO
from tlhub.settings import read_yaml
from tlhub.strategies import get_strategy
from tlhub.tasks import get_task
from tlhub.trainer import build_trainer, training_arguments
from tlhub.training_args import runnable_here


@dataclass
class Run:
    """A finished run loaded back: its config, modality, model and processor."""

    cfg: RunConfig
    modality: Modality
    model: nn.Module
    processor: Any
    label_names: list[str] | None
    generative: bool = False  # generates its outputs (text2text, Whisper-style speech recognition, causal LMs)
    options: dict[str, Any] = field(default_factory=dict)  # `tlhub predict` settings a task reads (threshold)


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by :func:`tlhub.finetune` (any strategy).

    The model is read the way its strategy saved it (``tlhub_run.json`` says which), never
    guessed from the files present, and only from a finished run (``all_results.json``).
    """
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in (RUN_CONFIG, RUN_INFO, RESULTS)):
        waiting = previous_run_dir(run_dir)  # a run stopped by a signal while replacing a finished one
        aside = f" (the finished run it replaces waits in {waiting} until it finishes)" if waiting.is_dir() else ""
        raise DataError(
            f"{run_dir}: not a finished tlhub run (no {RUN_CONFIG}, {RUN_INFO} and {RESULTS}){aside}; pass training.output_dir of a run"
        )
    recorded = read_yaml(run_dir / RUN_CONFIG)
    recorded["training"] = runnable_here(recorded.get("training") or {})  # trained on a GPU, used on a laptop
    cfg = build(RunConfig, recorded)
    info = json.loads((run_dir / RUN_INFO).read_text())
    modality = get_modality(cfg.modality)
    label_names = info.get("label_names")
    processor = modality.load_processor(cfg, source=str(run_dir))
    strategy = get_strategy(info.get("strategy", cfg.strategy.name))
    model = strategy.load(run_dir, cfg, modality, label_names, info.get("base_model", cfg.model.name_or_path))
    model.to(inference_device())
    model.eval()
    return Run(cfg, modality, model, processor, label_names, get_task(cfg.task).generates(cfg, str(run_dir)))


def load_pretrained(
    name_or_path: str, modality_name: str, task: str, overrides: list[str] | None = None, settings: dict[str, Any] | None = None
) -> Run:
    """A pretrained model as it is, before any training: what `tlhub evaluate` scores zero-shot.

    Only models that generate (Whisper, T5, decoder LMs) can be scored so; a classifier would
    be scored through a new, untrained head. `overrides` are dotted config keys
    (data.audio_column=path), `settings` the same as a mapping ({"data": {...}}).
    """
    mapping = {
        "modality": modality_name,
        "task": task,
        "model": {"name_or_path": name_or_path},
        "data": {"train": "(zero-shot: no training data)"},
        "training": {"output_dir": "(zero-shot: nothing written)"},
    }
    cfg = build(RunConfig, merge(merge(mapping, settings or {}), parse_overrides(list(overrides or []))))
    if not get_task(cfg.task).generates(cfg):
        raise ConfigError(
            f"evaluate: {name_or_path} is scored as it is only when it generates its outputs (Whisper, T5, a decoder LM); "
            "a classifier or CTC model needs a trained head: train a run, then evaluate its folder"
        )
    modality = get_modality(cfg.modality)
    processor = modality.load_processor(cfg)
    model = modality.load_model(cfg, None)
    model.to(inference_device())
    model.eval()
    return Run(cfg, modality, model, processor, None, True)


def inference_device() -> torch.device:
    """Where a loaded run predicts: the GPU when there is one, as training would use."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_inputs(run: Run, inputs: list[str], rows: list[dict[str, Any]] | None = None) -> dict[str, torch.Tensor]:
    """A batch of model inputs for command-line inputs (texts, or image/audio file paths), or
    for their raw `rows` when given, preprocessed as evaluation preprocesses, on the model's device."""
    rows = rows if rows is not None else [run.modality.input_row(value, run.cfg) for value in inputs]
    raw = {key: [row[key] for row in rows] for key in rows[0]}
    features = run.modality.transform(run.processor, run.cfg, train=False)(raw)
    documents = features.pop("document", None)  # windows of long texts: which input each is from
    examples = [{k: v[i] for k, v in features.items()} for i in range(len(rows) if documents is None else len(documents))]
    batch = run.modality.collator(run.processor, run.cfg, run.model)(examples)
    if documents is not None:
        batch["document"] = torch.tensor(documents)
    device = next(run.model.parameters()).device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def predict(run: Run, inputs: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """What the run's task outputs for each input: label and score, text, or entities."""
    task = get_task(run.cfg.task)
    named = [pair for value in inputs for pair in run.modality.input_rows(value, run.cfg)]  # a file of series: a row each
    out: list[dict[str, Any]] = []
    for start in range(0, len(named), batch_size):
        chunk = named[start : start + batch_size]
        names = [name for name, _ in chunk]
        out += task.predict(run, model_inputs(run, names, [row for _, row in chunk]), names)
    return out


def evaluate_run(run: Run, data: str, output_dir: str | Path | None = None, max_samples: int | None = None) -> dict[str, float]:
    """Metrics of a finished run on a labelled file or dataset (same columns as training);
    with `max_samples`, on a seeded random sample of that many rows (``data.seed``).

    The Trainer's scratch folder is `output_dir`, or a temporary folder removed after:
    never a path saved at training time, which may be relative to another working folder.
    """
    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix="tlhub-evaluate-") as scratch:
            return evaluate_run(run, data, scratch, max_samples)
    cfg = run.cfg
    table = read_source(data, cfg.data.eval_split, "--data", cfg, run.modality)
    require_columns(table.rows, run.modality.required_columns(cfg), table.origin)
    ds, _ = run.modality.prepare(table.rows, cfg, table.base_dir, table.origin)
    ds = sample(ds, max_samples, cfg.data.seed)
    column = run.modality.class_column(cfg)
    if column is not None:
        problem = cfg.data.problem_type if get_task(cfg.task).problem_types else None
        ds = encode_split(ds, column, run.label_names or [], problem, cfg.data, table.origin)
    ds = run.modality.ready(ds, run.processor, cfg, train=False)
    # the run's evaluation settings, the Trainer's scratch in output_dir, nothing of its training
    keep = {k: v for k, v in cfg.training.items() if k in ("per_device_eval_batch_size", "bf16", "fp16")}
    scoring = RunConfig(cfg.modality, cfg.model, cfg.data, {**keep, "output_dir": str(output_dir)}, cfg.task, cfg.strategy)
    collator = run.modality.collator(run.processor, cfg, run.model)
    trainer = build_trainer(scoring, run.processor, run.model, {"train": ds, "validation": ds}, collator, training_arguments(scoring), run.label_names)
    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(ds)
    return metrics
