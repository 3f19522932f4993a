"""Metrics load through `evaluate` with no network and compute the right numbers."""

from __future__ import annotations

import pytest

from tlhub.metrics import SHIPPED, load_metric
from tlhub.tasks import get_task
from tlhub.tasks.base import combined


def load_task_metrics(task: str):
    return combined(get_task(task).metrics)


def test_classification_metrics_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scores = load_task_metrics("classification").compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 2])
    assert scores["accuracy"] == 0.75
    assert scores["precision"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert scores["recall"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert scores["f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_generation_metrics() -> None:
    scores = load_task_metrics("text2text").compute(predictions=["positive", "the cat sat"], references=["Positive ", "the cat sat down"])
    assert scores["exact_match"] == 0.5
    assert scores["rouge1"] == pytest.approx((1 + 6 / 7) / 2)
    asr = load_task_metrics("speech_recognition").compute(predictions=["one two", "tree"], references=["one two", "three"])
    assert asr["wer"] == pytest.approx(1 / 3)
    assert asr["cer"] == pytest.approx(1 / 12)  # one edit over 7 + 5 reference characters


def test_every_shipped_metric_loads() -> None:
    assert {"accuracy", "f1", "precision", "recall", "exact_match", "rouge", "wer", "cer"} <= set(SHIPPED)
    for name in SHIPPED:
        assert load_metric(name).name
