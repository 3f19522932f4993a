"""tlhub: transfer learning on Hugging Face for text, images and audio.

    from tlhub import finetune, load_config
    results = finetune(load_config("recipes/configs/text/minilm_sentiment_lora.yaml"))
"""

from tlhub.config import RunConfig, load_config
from tlhub.errors import ConfigError, DataError, ModelError, TlhubError
from tlhub.metrics import load_metric
from tlhub.modalities import MODALITIES, Modality, get_modality
from tlhub.models import PooledClassifier
from tlhub.inference import evaluate_run, load_run, predict
from tlhub.pipeline import finetune
from tlhub.strategies import STRATEGIES, count_parameters
from tlhub.version import __version__

__all__ = [
    "__version__",
    "MODALITIES",
    "STRATEGIES",
    "ConfigError",
    "DataError",
    "Modality",
    "ModelError",
    "PooledClassifier",
    "RunConfig",
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
