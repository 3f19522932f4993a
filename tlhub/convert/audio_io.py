"""Reading a clip for the converters' checks: soundfile decode, mono, 16 kHz (no FFmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tlhub.errors import DataError


def read_16k(path: str | Path, sampling_rate: int = 16000) -> np.ndarray:
    """Decode `path` with soundfile, average channels, resample to `sampling_rate` with torchaudio."""
    import soundfile as sf
    import torchaudio.functional as AF

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / FileNotFoundError
        raise DataError(f"{path}: cannot read audio ({exc})") from exc
    wave = torch.from_numpy(audio.mean(axis=1))
    if rate != sampling_rate:
        wave = AF.resample(wave, rate, sampling_rate)
    return wave.numpy()
