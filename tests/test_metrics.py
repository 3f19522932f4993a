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


def test_rouge_wer_and_cer_equal_the_maintained_libraries_where_our_own_code_differed() -> None:
    """ROUGE is rouge_score's (tlhub's own tokeniser kept accents and underscores, and had no
    ROUGE-Lsum); WER and CER are jiwer's, an empty reference counting its predicted words as insertions."""
    import jiwer
    from rouge_score import rouge_scorer

    preds = ["Le café était très_bon.\nIl pleut.", "naïve résumé", "sat down\nthe cat"]
    refs = ["Le café était très bon.\nIl pleuvait.", "naive resume", "the cat\nsat down"]
    rouge = load_metric("rouge").compute(predictions=preds, references=refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert rouge[key] == pytest.approx(sum(scorer.score(r, p)[key].fmeasure for p, r in zip(preds, refs)) / 3)
    assert rouge["rougeLsum"] != rouge["rougeL"]  # sentences by newline
    asr_preds, asr_refs = ["one two three", "fore", "zero nine"], ["one too three", "four", "zero"]
    assert load_metric("wer").compute(predictions=asr_preds, references=asr_refs)["wer"] == pytest.approx(jiwer.wer(asr_refs, asr_preds))
    assert load_metric("cer").compute(predictions=asr_preds, references=asr_refs)["cer"] == pytest.approx(jiwer.cer(asr_refs, asr_preds))
    assert load_metric("wer").compute(predictions=["a b", "x"], references=["", "x"])["wer"] == 2.0  # two insertions over one word
