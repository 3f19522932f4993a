"""The Trainer side of tlhub: the arguments of every Trainer a run builds.

A run may train more than once in one process: contrastive pair tuning or DAPT's continued
pretraining before the run's own training. accelerate holds one precision per process, so
every such stage derives its arguments from the run's resolved ones (:func:`stage_arguments`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainingArguments

# TrainingArguments fields that belong to the process rather than to one training: a stage's
# Trainer (contrastive pair tuning, DAPT) copies them from the run's resolved arguments, because
# accelerate allows one precision per process, and a stage should run where the run runs.
PROCESS_ARGUMENTS = (
    "bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "tf32", "use_cpu", "ddp_backend", "ddp_timeout",
    "dataloader_pin_memory", "disable_tqdm", "logging_steps", "seed",
)  # fmt: skip


def stage_arguments(run: TrainingArguments, output_dir: str | Path, **values: Any) -> TrainingArguments:
    """TrainingArguments for a stage of a run (its own output folder, epochs, learning rate,
    batch size in `values`) with the run's precision and device settings (PROCESS_ARGUMENTS):
    tlhub's bf16 default on a GPU reaches every Trainer of the process, or accelerate refuses
    the second one ("AcceleratorState has already been initialized and cannot be changed")."""
    inherited = {key: getattr(run, key) for key in PROCESS_ARGUMENTS}
    defaults = {"save_strategy": "no", "eval_strategy": "no", "report_to": "none", "remove_unused_columns": False}
    return TrainingArguments(output_dir=str(output_dir), **{**inherited, **defaults, **values})
