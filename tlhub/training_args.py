"""The `training` section of a run: transformers' training arguments with tlhub's keys and defaults.

:class:`TrainingConfig` extends :class:`transformers.Seq2SeqTrainingArguments` the way TRL's
``SFTConfig`` extends ``TrainingArguments``: every key of the section is one of its fields,
with its type and help (``tlhub schema`` publishes them), tlhub's own keys included, and
tlhub's defaults are the fields' defaults. It is also the one place the section is checked:
``__post_init__`` gives YAML's quoted numbers their field's type, checks the ranges
transformers leaves open, derives the defaults that follow other keys (checkpoints where
evaluations happen), says what the machine cannot do (float16 without a CUDA GPU), and runs
transformers' own checks, each failure a :class:`~tlhub.errors.ConfigError` naming the key.

A config builds it once, when it is read (:meth:`TrainingConfig.typed`); the run then
adds what only it knows (the task's metric and label names, the GPU's defaults) with
``dataclasses.replace`` (:func:`tlhub.trainer.training_arguments`). This module imports
transformers: :mod:`tlhub.config` loads it only when a config is built.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import Seq2SeqTrainingArguments, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from tlhub.errors import ConfigError, closest
from tlhub.settings import check

# Keys of Seq2SeqTrainingArguments that only tasks which generate accept (the rest of the
# section is TrainingArguments').
GENERATION_KEYS = tuple(
    f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init and f.name not in {g.name for g in dataclasses.fields(TrainingArguments)}
)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainingConfig(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments with tlhub's defaults and four keys of its own (below).

    tlhub's defaults: no experiment trackers, evaluate once per epoch and save where it
    evaluates, keep two checkpoints, log every 25 steps, keep the raw columns (preprocessing
    runs lazily and needs them), and average per-device losses (tlhub's heads ignore token
    counts). A config builds it from its section: ``TrainingConfig(**TrainingConfig.typed(section, generates))``.
    """

    # ------------------------------------------------------------------ transformers' keys, tlhub's defaults
    report_to: None | str | list[str] = field(default="none", metadata=_help("Experiment trackers to log to (tlhub: none unless named)."))
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata=_help("When to evaluate: no | steps | epoch (tlhub: epoch)."))
    save_strategy: SaveStrategy | str | None = field(
        default=None, metadata=_help("When to save a checkpoint: no | steps | epoch | best (tlhub: where eval_strategy evaluates).")
    )
    save_steps: float | None = field(
        default=None, metadata=_help("Steps between checkpoints with save_strategy: steps (tlhub: eval_steps where it is set, else 500).")
    )
    save_total_limit: int | None = field(default=2, metadata=_help("Checkpoints kept in output_dir (tlhub: 2)."))
    logging_steps: float = field(default=25, metadata=_help("Steps between logged losses (tlhub: 25)."))
    remove_unused_columns: bool = field(
        default=False, metadata=_help("tlhub: false, always: preprocessing runs lazily on the raw columns.")
    )
    average_tokens_across_devices: bool = field(
        default=False, metadata=_help("tlhub: false: per-device mean losses averaged by DDP (tlhub's heads ignore token counts).")
    )

    # ------------------------------------------------------------------ tlhub's own keys
    early_stopping_patience: int | None = field(
        default=None, metadata=_help("tlhub: stop when the main eval metric has not improved for this many evaluations.")
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata=_help("tlhub: true: a run into a folder that holds another config's run clears that folder first "
                       "(default false: such a run is refused)."),
    )  # fmt: skip
    save_on_signal: bool = field(
        default=True,
        metadata=_help("tlhub: true (default): on SIGTERM or SIGINT, save a checkpoint at the next step and stop with exit "
                       "code 143 or 130, to resume with training.resume_from_checkpoint=true; false: the signal ends the run at once."),
    )  # fmt: skip
    class_weights: str | dict[str, float] | None = field(
        default=None,
        metadata=_help("tlhub: classification: none | balanced | {label: weight}: weight the loss per class (single-label) or "
                       "each label's positives (multi-label); balanced weighs rare classes up by their counts in the training split."),
    )  # fmt: skip

    # The ranges of numeric keys that transformers does not check itself (a bad value would
    # otherwise train nothing and exit 0, or fail deep inside transformers):
    # (low, high, low inclusive, high inclusive); None: unbounded.
    BOUNDS: ClassVar[dict[str, tuple[float | None, float | None, bool, bool]]] = {
        "per_device_train_batch_size": (1, None, True, True),
        "per_device_eval_batch_size": (1, None, True, True),
        "gradient_accumulation_steps": (1, None, True, True),
        "eval_accumulation_steps": (1, None, True, True),
        "num_train_epochs": (0, None, False, True),
        "learning_rate": (0, None, False, True),
        "warmup_steps": (0, None, True, True),
        "weight_decay": (0, None, True, True),
        "adam_beta1": (0, 1, True, False),
        "adam_beta2": (0, 1, True, False),
        "adam_epsilon": (0, None, False, True),
        "max_grad_norm": (0, None, True, True),
        "label_smoothing_factor": (0, 1, True, False),
        "neftune_noise_alpha": (0, None, True, True),
        "torch_empty_cache_steps": (1, None, True, True),
        "logging_steps": (0, None, False, True),
        "eval_steps": (0, None, False, True),
        "eval_delay": (0, None, True, True),
        "save_steps": (0, None, False, True),
        "save_total_limit": (0, None, True, True),
        "seed": (0, 2**32 - 1, True, True),
        "data_seed": (0, 2**32 - 1, True, True),
        "dataloader_num_workers": (0, None, True, True),
        "dataloader_prefetch_factor": (1, None, True, True),
        "ddp_bucket_cap_mb": (1, None, True, True),
        "ddp_timeout": (1, None, True, True),
        "generation_max_length": (1, None, True, True),
        "generation_num_beams": (1, None, True, True),
        "early_stopping_patience": (1, None, True, True),
    }

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            if f.init:
                value = _typed(f.name, getattr(self, f.name), hints.get(f.name, Any))
                _check_number(f.name, value, hints.get(f.name, Any), self.BOUNDS.get(f.name))
                setattr(self, f.name, value)
        check(bool(self.output_dir), "training.output_dir", "missing required key: where the run writes its results")
        check(self.max_steps == -1 or self.max_steps > 0, "training.max_steps",
              f"must be -1 (train for num_train_epochs) or positive, got {self.max_steps}")  # fmt: skip
        _check_class_weights(self.class_weights)
        # Checkpoints where evaluations happen: what best-model selection needs.
        if self.save_strategy is None:
            self.save_strategy = self.eval_strategy
        if self.save_steps is None:
            self.save_steps = self.eval_steps or 500
        if self.early_stopping_patience is not None:
            self._check_early_stopping()
        # DDP: frozen blocks, LoRA and heads that skip a module leave trainable parameters without
        # gradients in some steps; find_unused_parameters makes DDP tolerate that. With activation
        # checkpointing it would break the reducer, so a static graph instead.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = not self.gradient_checkpointing
        if self.ddp_static_graph is None and self.gradient_checkpointing:
            self.ddp_static_graph = True
        self._check_hardware()
        try:
            super().__post_init__()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"training: {str(exc).strip().splitlines()[0]}") from None

    def _check_early_stopping(self) -> None:
        check(_value(self.eval_strategy) != "no", "training.early_stopping_patience",
              "early stopping needs evaluations during training; set training.eval_strategy to epoch or steps")  # fmt: skip
        check(_value(self.save_strategy) != "no", "training.early_stopping_patience",
              "restoring the best model needs checkpoints; set training.save_strategy to best or to the eval_strategy "
              f"({_value(self.eval_strategy)})")  # fmt: skip

    def _check_hardware(self) -> None:
        """Mixed precision only where the machine has it: one line instead of a failure deep in accelerate."""
        cuda = torch.cuda.is_available() and not self.use_cpu
        if self.fp16 and not torch.cuda.is_available():
            raise ConfigError("training.fp16: float16 mixed precision needs a CUDA GPU and none is available; remove fp16 (bf16 works on CPU)")
        if self.bf16 and cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("training.bf16: this GPU does not support bfloat16; use training.fp16 instead")

    @classmethod
    def typed(cls, section: dict[str, Any], generates: bool) -> dict[str, Any]:
        """A config's `training` section with every key checked to be a field (the generation
        keys only for tasks that generate) and each value of its field's type: what config.yaml
        records, and what builds the arguments (``TrainingConfig(**typed)``)."""
        known = [f.name for f in dataclasses.fields(cls) if f.init and (generates or f.name not in GENERATION_KEYS)]
        hints = _hints(cls)
        for key in section:
            if key not in known:
                raise ConfigError(f"training.{key}: unknown key{closest(str(key), known)}")
        return {key: _typed(key, value, hints.get(key, Any)) for key, value in section.items()}


def runnable_here(section: dict[str, Any]) -> dict[str, Any]:
    """A recorded `training` section without the precision keys this machine cannot run (float16
    without a CUDA GPU, bfloat16 or TF32 without a GPU that has them): a run trained on a GPU
    loads for prediction on a laptop, in float32 there."""
    cuda = torch.cuda.is_available() and not section.get("use_cpu")
    cannot = {"fp16": not torch.cuda.is_available(), "fp16_full_eval": not torch.cuda.is_available(),
              "bf16": not section.get("use_cpu") and not (cuda and torch.cuda.is_bf16_supported()),
              "tf32": not (cuda and torch.cuda.get_device_capability()[0] >= 8)}  # fmt: skip
    cannot["bf16_full_eval"] = cannot["bf16"]
    return {key: value for key, value in section.items() if not (value and cannot.get(key))}


# --------------------------------------------------------------------------- values


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(strategy: Any) -> str:
    """An IntervalStrategy/SaveStrategy or its string, as the string."""
    return str(getattr(strategy, "value", strategy))


def _union(tp: Any) -> set[Any]:
    return set(typing.get_args(tp)) if typing.get_origin(tp) in (typing.Union, types.UnionType) else {tp}


def _typed(key: str, value: Any, tp: Any) -> Any:
    """`value` as the type of field `key`: a quoted number becomes the number (YAML reads ``"16"``
    and ``2e-5`` as strings, which TrainingArguments stores as they are and the DataLoader or
    optimizer rejects later), a quoted ``"true"``/``"false"`` the bool (any non-empty string is
    true), a whole float an int for integer fields; anything else that does not fit is a
    ConfigError naming the key."""
    args = _union(tp)
    if value is None or tp is Any:
        return value
    if bool in args and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if args <= {bool, type(None)}:
        check(isinstance(value, bool), f"training.{key}", f"expected true or false, got {value!r}")
        return value
    numeric = [t for t in (int, float) if t in args]
    if not numeric or isinstance(value, bool):
        if value is False and any("Strategy" in str(a) for a in args):  # YAML 1.1 reads a bare `no` as false
            return "no"
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            if str in args:  # a number or a word (eval_steps: 0.1, or report_to...)
                return value
            raise ConfigError(f"training.{key}: expected a number, got {value!r}") from None
        value = number
    if isinstance(value, float) and numeric == [int] and value.is_integer():
        return int(value)
    return value


def _check_number(key: str, value: Any, tp: Any, bounds: tuple[float | None, float | None, bool, bool] | None) -> None:
    """A numeric value: finite, an integer where the field is one, within its bounds."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    check(math.isfinite(value), f"training.{key}", f"must be a finite number, got {value}")
    args = _union(tp)
    integer = int in args and float not in args
    check(not integer or float(value).is_integer(), f"training.{key}", f"must be a whole number, got {value}")
    if bounds is None:
        return
    low, high, low_in, high_in = bounds
    ok = (low is None or value > low or (low_in and value == low)) and (high is None or value < high or (high_in and value == high))
    if not ok:
        left, right = ("[" if low_in else "("), ("]" if high_in else ")")
        span = f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{right}"
        raise ConfigError(f"training.{key}: must be in {span}, got {value}")


def _check_class_weights(spec: Any) -> None:
    """The shape of ``class_weights``."""
    if spec is None or spec in ("none", "balanced"):
        return
    if isinstance(spec, dict):
        for label, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ConfigError(f"training.class_weights: the weight of '{label}' must be a positive number, got {value!r}")
        return
    raise ConfigError(f"training.class_weights: expected none, balanced or a mapping of label to weight, got {spec!r}")
