"""The modality interface (:class:`Modality`), its registry and model loading.

Kept apart from the package's ``__init__`` so that the modality modules import it
without importing the package that imports them: imports run one way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from torch import nn
from transformers import AutoConfig

from tlhub.errors import ConfigError, DataError, ModelError, closest
from tlhub.registry import Registry

if TYPE_CHECKING:
    from tlhub.config import ModelConfig, RunConfig


class Modality:
    """The interface the pipeline, the strategies and `tlhub predict` use."""

    name: str = ""
    tasks: tuple[str, ...] = ()

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        """Config key -> column name, for every column the task reads."""
        raise NotImplementedError

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        """Read a folder of examples (e.g. ``<label>/<file>``) into a Dataset."""
        raise DataError(
            f"{key}: {path} is a folder; the {self.name} modality reads a file (.csv .tsv .json .jsonl .parquet) "
            "or a folder written by Dataset.save_to_disk"
        )

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, key: str) -> tuple[datasets.Dataset, int]:
        """Check rows (and resolve paths); return the dataset and how many rows were skipped."""
        return ds, 0

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The tokenizer / image processor / feature extractor (from `source` or the model)."""
        raise NotImplementedError

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        """The task model with a new head sized to `label_names`, pretrained or from scratch."""
        raise NotImplementedError

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        """A `Dataset.set_transform` function: a batch of raw rows -> model inputs (+ labels)."""
        raise NotImplementedError

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        """Pads a list of transformed examples into a batch."""
        raise NotImplementedError

    def blocks(self, model: nn.Module) -> list[nn.ModuleList] | None:
        """The model's stacks of blocks for `partial`; None lets the strategy find them."""
        return None

    def peft_task_type(self, task: str) -> str | None:
        """PEFT's task type for this modality and task (None: a plain PeftModel)."""
        return None

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        """One raw row for `tlhub predict` from a command-line input (text, or a file path)."""
        raise NotImplementedError


MODALITIES: Registry[type[Modality]] = Registry("modality", "modality")


def get_modality(name: str) -> Modality:
    """The registered modality called `name`, ready to use."""
    return MODALITIES.get(name)()


def load_auto_model(auto_class: Any, model: ModelConfig, **config_kwargs: Any) -> nn.Module:
    """Load `auto_class` from `model.name_or_path`: pretrained weights, or the same
    architecture from random weights when ``model.pretrained`` is false.

    Weights load from safetensors only unless ``model.allow_pickle``; remote code runs
    only with ``model.trust_remote_code``; the weights come in ``model.dtype`` (float32
    unless asked: transformers 5 would otherwise keep a half-precision checkpoint in
    half precision). Every failure becomes a ModelError that says what to do.
    """
    common = {"revision": model.revision, "trust_remote_code": model.trust_remote_code}
    dtype = None if model.dtype == "auto" else getattr(torch, model.dtype)
    new_head = bool(config_kwargs)  # num_labels and kin: a new head replaces the checkpoint's
    try:
        if model.config_overrides:
            checked = check_config_overrides(AutoConfig.from_pretrained(model.name_or_path, **common), model.config_overrides)
            config_kwargs = {**checked, **config_kwargs}
        if model.pretrained:
            return auto_class.from_pretrained(
                model.name_or_path,
                ignore_mismatched_sizes=new_head,
                use_safetensors=None if model.allow_pickle else True,
                dtype=dtype or "auto",
                **common,
                **config_kwargs,
            )
        config = AutoConfig.from_pretrained(model.name_or_path, **common, **config_kwargs)
        return auto_class.from_config(config, trust_remote_code=model.trust_remote_code, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise model_error(model, exc) from None


def is_encoder_decoder(model: ModelConfig, source: str | None = None) -> bool:
    """Whether the model (or the one saved in `source`) is an encoder-decoder that generates
    its outputs (Whisper, T5); False when its config cannot be read (loading the model then
    says why). A saved LoRA adapter has no config of its own: its base model's decides."""
    if source is not None and not (Path(source) / "config.json").is_file():
        source = None
    try:
        config = AutoConfig.from_pretrained(
            source or model.name_or_path, revision=None if source else model.revision, trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError, KeyError):
        return False
    return bool(getattr(config, "is_encoder_decoder", False))


def check_config_overrides(config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``model.config_overrides`` checked against the model's config and given the type of the
    setting they change: a key the config lacks (transformers would store it silently and
    nothing would read it) or a value of another kind (a word where the config holds a number)
    is a ConfigError naming the key; a quoted number becomes the number."""
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    checked: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(
                f"model.config_overrides.{key}: not a setting of {type(config).__name__}{closest(key, known)}"
            )
        current = getattr(config, key, None)
        if isinstance(current, (int, float)) and not isinstance(current, bool) and isinstance(value, str):
            try:
                value = type(current)(float(value)) if isinstance(current, float) or float(value).is_integer() else float(value)
            except ValueError:
                raise ConfigError(f"model.config_overrides.{key}: expected a number (the config holds {current!r}), got {value!r}") from None
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ConfigError(f"model.config_overrides.{key}: expected true or false, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model.config_overrides.{key}: must be a finite number, got {value}")
        checked[key] = value
    return checked


def model_error(model: ModelConfig, exc: Exception) -> ModelError:
    """A one-line, actionable message for a model that failed to load."""
    text = str(exc)
    name = model.name_or_path
    if "trust_remote_code" in text:
        return ModelError(
            f"model.trust_remote_code: '{name}' needs to run code from its repository; "
            "set model.trust_remote_code: true only if you trust it"
        )
    if "safetensors" in text.lower() and not model.allow_pickle:
        return ModelError(
            f"model.allow_pickle: '{name}' has no safetensors weights, only pickle files (.bin/.pt), which can run "
            "arbitrary code when loaded; set model.allow_pickle: true only if you trust the source"
        )
    if not Path(name).exists():
        return ModelError(
            f"model.name_or_path: cannot load '{name}': no such local folder, and the Hugging Face Hub "
            "could not provide it (offline, or no such model). Pass a local folder or check the id"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ModelError(f"model.name_or_path: cannot load '{name}': {first[:300]}")
