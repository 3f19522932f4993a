"""tlhub: transfer learning on Hugging Face for text, images and audio.

    from tlhub import finetune, load_config
    results = finetune(load_config("recipes/configs/text/minilm_sentiment_lora.yaml"))

The public names load lazily, as transformers' and TRL's do: ``import tlhub`` (and the
``tlhub`` command's argument parsing) imports neither torch nor transformers; each name
imports its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tlhub.version import __version__

# public name -> the module that defines it
_LAZY = {
    "RunConfig": "tlhub.config",
    "load_config": "tlhub.config",
    "ConfigError": "tlhub.errors",
    "DataError": "tlhub.errors",
    "ModelError": "tlhub.errors",
    "TlhubError": "tlhub.errors",
    "load_metric": "tlhub.metrics",
    "MODALITIES": "tlhub.modalities",
    "Modality": "tlhub.modalities",
    "get_modality": "tlhub.modalities",
    "PooledClassifier": "tlhub.models",
    "evaluate_run": "tlhub.inference",
    "load_run": "tlhub.inference",
    "predict": "tlhub.inference",
    "finetune": "tlhub.pipeline",
    "STRATEGIES": "tlhub.strategies",
    "count_parameters": "tlhub.strategies",
}

if TYPE_CHECKING:  # what editors and type checkers see
    from tlhub.config import RunConfig, load_config
    from tlhub.errors import ConfigError, DataError, ModelError, TlhubError
    from tlhub.inference import evaluate_run, load_run, predict
    from tlhub.metrics import load_metric
    from tlhub.modalities import MODALITIES, Modality, get_modality
    from tlhub.models import PooledClassifier
    from tlhub.pipeline import finetune
    from tlhub.strategies import STRATEGIES, count_parameters


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tlhub' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "__version__",
    "ConfigError",
    "DataError",
    "MODALITIES",
    "Modality",
    "ModelError",
    "PooledClassifier",
    "RunConfig",
    "STRATEGIES",
    "TlhubError",
    "count_parameters",
    "evaluate_run",
    "finetune",
    "get_modality",
    "load_config",
    "load_metric",
    "load_run",
    "predict",
]
