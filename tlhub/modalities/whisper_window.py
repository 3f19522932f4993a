"""A shorter input window for Whisper encoders, so a 1 s clip does not cost 30 s of compute.

Whisper's encoder reads exactly ``max_source_positions`` x 2 log-mel frames: 3000 frames,
30 s, whatever the clip's length (transformers checks it), and the feature extractor
pads every clip to 30 s to match. Its positional embeddings are fixed sinusoids, so the
first N rows are exactly what a sequence of N positions uses: cutting the table to
N = 50 x seconds and the feature extractor to the same number of seconds gives an
encoder that reads short clips at a fraction of the cost (1 s: 30x fewer frames) with
the pretrained weights unchanged. The saved run keeps the cut (``max_source_positions``
in config.json, ``chunk_length`` in preprocessor_config.json), so it loads back as is.

The audio modality applies it when ``data.max_duration_s`` is set (rounded up to whole
seconds, at most the model's own window); without it Whisper keeps its 30 s window.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def window_seconds(max_duration_s: float | None) -> int | None:
    """Whole seconds of window for a ``data.max_duration_s`` (None: keep Whisper's own)."""
    return None if max_duration_s is None else max(1, math.ceil(max_duration_s))


def is_whisper_extractor(extractor: Any) -> bool:
    """A WhisperFeatureExtractor: fixed-size log-mel features, padded to its window."""
    from transformers import WhisperFeatureExtractor

    return isinstance(extractor, WhisperFeatureExtractor)


def check_window(extractor: Any, max_duration_s: float | None) -> None:
    """A ``data.max_duration_s`` longer than a Whisper model reads (its feature extractor's
    window, 30 s) is a ConfigError naming both: the rest of each clip would be cut silently."""
    from tlhub.errors import ConfigError

    if max_duration_s is not None and is_whisper_extractor(extractor) and max_duration_s > extractor.chunk_length:
        raise ConfigError(
            f"data.max_duration_s: {max_duration_s:g} s is longer than the {extractor.chunk_length} s window this Whisper model "
            f"reads; set at most {extractor.chunk_length}"
        )


def fit_extractor(extractor: Any, seconds: int | None) -> Any:
    """Cut a Whisper feature extractor's window to `seconds` (no-op for others, or a longer request)."""
    if seconds is None or not is_whisper_extractor(extractor) or seconds >= extractor.chunk_length:
        return extractor
    extractor.chunk_length = seconds
    extractor.n_samples = seconds * extractor.sampling_rate
    extractor.nb_max_frames = extractor.n_samples // extractor.hop_length
    return extractor


def fit_encoder(model: nn.Module, seconds: int | None, frames_per_second: int = 100) -> nn.Module:
    """Cut every Whisper encoder in `model` to `seconds`: the first 50 x seconds rows of its
    sinusoidal positional table, and ``max_source_positions`` to match."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if seconds is None:
        return model
    for encoder in (m for m in model.modules() if isinstance(m, WhisperEncoder)):
        stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]
        positions = seconds * frames_per_second // stride
        table = encoder.embed_positions
        if positions >= table.num_embeddings:
            continue
        short = nn.Embedding(positions, table.embedding_dim, device=table.weight.device, dtype=table.weight.dtype)
        short.weight.data.copy_(table.weight.data[:positions])
        short.requires_grad_(table.weight.requires_grad)
        encoder.embed_positions = short
        encoder.max_source_positions = positions
        encoder.config.max_source_positions = positions
    return model
