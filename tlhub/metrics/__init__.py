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

# The metric that decides "better" for each task, and whether larger is better.
MAIN_METRIC = {"classification": ("accuracy", True), "text2text": ("rougeL", True), "speech_recognition": ("wer", False)}
TASK_METRICS = {
    "classification": ["accuracy", "f1", "precision", "recall"],
    "text2text": ["exact_match", "rouge"],
    "speech_recognition": ["wer", "cer"],
}


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load a metric by name: the copy shipped in tlhub when there is one, else from the Hub."""
    if name in SHIPPED:
        return evaluate.load(str(METRICS_DIR / f"{name}.py"))
    return evaluate.load(name)


def load_task_metrics(task: str) -> evaluate.CombinedEvaluations:
    """All metrics reported for `task`, combined so one `compute` call returns them all."""
    return evaluate.combine([load_metric(name) for name in TASK_METRICS[task]])


def normalize_text(texts: list[str]) -> list[str]:
    """Transcripts as Whisper's evaluation compares them: transformers' EnglishTextNormalizer
    (lowercase, punctuation and filler words removed, spelled-out numbers as digits,
    British spellings left as they are), so "Seven." and "seven" are the same word."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    normalizer = EnglishTextNormalizer({})
    return [normalizer(text) for text in texts]
