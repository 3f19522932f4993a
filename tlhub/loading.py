"""Loading a pretrained model the way every tlhub run does: from a Hub id, a local folder or a
GGUF file beside it, pretrained or from random weights, with clear errors.

Kept below the modalities and tasks, which all load through :func:`load_auto_model`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import AutoConfig, GgufConfig

from tlhub.errors import ConfigError, ModelError, closest
from tlhub.labels import hf_problem_type

if TYPE_CHECKING:
    from tlhub.config import ModelConfig

# A tokenizer's model_max_length above this is transformers' "no limit recorded" (1e30)
UNSET_LENGTH = 1_000_000


def source_kwargs(model: ModelConfig, source: str | None = None) -> dict[str, Any]:
    """Where transformers reads the model's files: revision, remote code and, for a GGUF
    checkpoint, the file in the folder. A finished run's folder (`source`) holds plain files."""
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if source is None:
        kwargs["revision"] = model.revision
        if model.gguf_file:
            kwargs["gguf_file"] = model.gguf_file
    return kwargs


def load_config(model: ModelConfig, source: str | None = None, **config_kwargs: Any) -> Any:
    """The model's transformers config (or a finished run's, from `source`)."""
    return AutoConfig.from_pretrained(source or model.name_or_path, **source_kwargs(model, source), **config_kwargs)


def label_head(label_names: list[str], problem: str | None = None) -> dict[str, Any]:
    """The config settings of a new classification head over `label_names` (its size and the
    names, which the saved model's config carries for pipelines and the Hub), and with a problem
    type (tlhub.labels: single_label, multi_label, regression) transformers' ``problem_type``,
    which picks the loss and the pipeline's output function."""
    head = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)), "label2id": {name: i for i, name in enumerate(label_names)}}
    if hf_problem_type(problem):
        head["problem_type"] = hf_problem_type(problem)
    return head


def weight_kwargs(model: ModelConfig) -> dict[str, Any]:
    """How ``from_pretrained`` reads the pretrained weights: a GGUF file's dequantised into
    plain tensors (a model that trains and saves like any other), else safetensors only unless
    ``model.allow_pickle``; with :func:`source_kwargs`, where the files are."""
    if model.gguf_file:
        return {"quantization_config": GgufConfig(dequantize=True), **source_kwargs(model)}
    return {"use_safetensors": None if model.allow_pickle else True, **source_kwargs(model)}


def load_auto_model(auto_class: Any, model: ModelConfig, **config_kwargs: Any) -> nn.Module:
    """Load `auto_class` from `model.name_or_path`: pretrained weights, or the same
    architecture from random weights when ``model.pretrained`` is false.

    Weights load from safetensors only unless ``model.allow_pickle`` (a GGUF file is read by
    transformers' GGUF loader and dequantised); remote code runs only with
    ``model.trust_remote_code``; the weights come in ``model.dtype`` (float32 unless asked:
    transformers 5 would otherwise keep a half-precision checkpoint in half precision). Every
    failure becomes a ModelError that says what to do.
    """
    dtype = None if model.dtype == "auto" else getattr(torch, model.dtype)
    new_head = bool(config_kwargs)  # num_labels and kin: a new head replaces the checkpoint's
    try:
        if model.config_overrides:
            checked = check_config_overrides(load_config(model), model.config_overrides)
            config_kwargs = {**checked, **config_kwargs}
        if model.pretrained:
            return auto_class.from_pretrained(
                model.name_or_path, ignore_mismatched_sizes=new_head, dtype=dtype or "auto", **weight_kwargs(model), **config_kwargs
            )
        config = load_config(model, **config_kwargs)
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
        config = load_config(model, source)
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
            raise ConfigError(f"model.config_overrides.{key}: not a setting of {type(config).__name__}{closest(key, known)}")
        current = getattr(config, key, None)
        if isinstance(current, (int, float)) and not isinstance(current, bool) and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"model.config_overrides.{key}: expected a number (the config holds {current!r}), got {value!r}") from None
            value = int(number) if isinstance(current, int) and number.is_integer() else number
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ConfigError(f"model.config_overrides.{key}: expected true or false, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model.config_overrides.{key}: must be a finite number, got {value}")
        checked[key] = value
    return checked


def max_positions(config: Any, tokenizer: Any = None) -> int | None:
    """How many tokens the model reads at most: the tokenizer's ``model_max_length`` where it
    records one (RoBERTa's 512 of 514 position embeddings), else the config's
    ``max_position_embeddings`` (``n_positions`` for GPT-2); None for relative positions (T5)."""
    recorded = getattr(tokenizer, "model_max_length", None)
    if isinstance(recorded, int) and 0 < recorded < UNSET_LENGTH:
        return recorded
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_error(model: ModelConfig, exc: Exception) -> ModelError:
    """A one-line, actionable message for a model that failed to load."""
    text = str(exc)
    name = model.name_or_path
    if "trust_remote_code" in text:
        return ModelError(
            f"model.trust_remote_code: '{name}' needs to run code from its repository; "
            "set model.trust_remote_code: true only if you trust it"
        )
    if "safetensors" in text.lower() and not model.allow_pickle and not model.gguf_file:
        return ModelError(
            f"model.allow_pickle: '{name}' has no safetensors weights, only pickle files (.bin/.pt), which can run "
            "arbitrary code when loaded; set model.allow_pickle: true only if you trust the source"
        )
    if model.gguf_file and not (Path(name) / model.gguf_file).is_file() and Path(name).is_dir():
        return ModelError(f"model.gguf_file: no file '{model.gguf_file}' in {name}")
    if not Path(name).exists():
        return ModelError(
            f"model.name_or_path: cannot load '{name}': no such local folder, and the Hugging Face Hub "
            "could not provide it (offline, or no such model). Pass a local folder or check the id"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    key = "model.gguf_file" if model.gguf_file else "model.name_or_path"
    return ModelError(f"{key}: cannot load '{name}'{' ' + model.gguf_file if model.gguf_file else ''}: {first[:300]}")


DEFAULT_MAX_LENGTH = 128  # data.max_length when null, unless the model reads fewer tokens


def input_length(max_length: int | None, tokenizer: Any) -> int:
    """The tokens an input is truncated to: ``data.max_length``, or when that is null 128 (or
    the model's own limit, which :func:`fit_tokenizer` records on the tokenizer, if smaller)."""
    if max_length is not None:
        return max_length
    recorded = getattr(tokenizer, "model_max_length", None)
    limit = recorded if isinstance(recorded, int) and 0 < recorded < UNSET_LENGTH else None
    return min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH


def fit_tokenizer(tokenizer: Any, config: Any, max_length: int | None, name: str) -> Any:
    """Record the model's limit on its tokenizer and check ``data.max_length`` against it.

    A tokenizer saved without one (``model_max_length`` unset) learns the model's positions
    (:func:`max_positions`), so the run folder's tokenizer, and transformers' pipelines that
    load it, truncate where the model must. A ``data.max_length`` above the positions of a
    model with absolute position embeddings is a ConfigError naming both numbers: such inputs
    end in a shape error deep inside the model.
    """
    positions = max_positions(config, None)  # absolute position embeddings; None: relative (T5), no hard limit
    recorded = getattr(tokenizer, "model_max_length", None)
    if positions is not None and not (isinstance(recorded, int) and 0 < recorded <= positions):
        tokenizer.model_max_length = positions
    limit = max_positions(config, tokenizer) if positions is not None else None
    if max_length is not None and limit is not None and max_length > limit:
        raise ConfigError(
            f"data.max_length: {max_length} tokens is more than {name} reads ({limit} positions); set data.max_length to at "
            f"most {limit}, or leave it null"
        )
    return tokenizer


def is_decoder_lm(config: Any) -> bool:
    """Whether a model is a decoder-only language model (GPT-2, Llama, Qwen, Mistral, Phi):
    it has a causal-LM head and no masked-LM one (BERT and RoBERTa have both) and no encoder
    of its own."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    if getattr(config, "is_encoder_decoder", False):
        return False
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and type(config) not in MODEL_FOR_MASKED_LM_MAPPING
