"""Metrics through the `evaluate` API that work offline.

`evaluate.load("accuracy")` fetches the metric's script from the Hub. tlhub ships the
scripts it needs in this folder and loads them by path, so the same API works with
``HF_HUB_OFFLINE=1``. Names not shipped here fall back to `evaluate.load(name)`.
"""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent
SHIPPED = sorted(p.stem for p in METRICS_DIR.glob("*.py") if not p.stem.startswith("_"))

def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load a metric by name: the copy shipped in tlhub when there is one, else from the Hub."""
    if name in SHIPPED:
        return evaluate.load(str(METRICS_DIR / f"{name}.py"))
    return evaluate.load(name)


def normalize_text(texts: list[str]) -> list[str]:
    """Transcripts as Whisper's evaluation compares them: transformers' EnglishTextNormalizer
    (lowercase, punctuation and filler words removed, spelled-out numbers as digits,
    British spellings left as they are), so "Seven." and "seven" are the same word."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    normalizer = EnglishTextNormalizer({})
    return [normalizer(text) for text in texts]
