"""Long texts (issue 35): ``data.long_inputs: chunk`` reads a text longer than data.max_length as
overlapping windows, trains on each with the text's label, and combines a text's windows into
one prediction at evaluation and in `tlhub predict`; ``truncate`` says what it cuts."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import config_file, one_line_error, text_config
from tests.tiny_models import FILLER, NEGATIVE, POSITIVE, write_rows
from tlhub import finetune
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.inference import evaluate_run, load_run, predict
from tlhub.tasks.classification import aggregate_windows

MAX_LENGTH = 16  # 14 text tokens a window with [CLS] and [SEP]


def late_evidence_rows(n: int, seed: int = 0, words: int = 30) -> list[dict]:
    """Texts of `words` filler words whose one sentiment word is among the last four: a model
    reading the first 14 tokens sees no evidence; only the last window holds it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        text = [rng.choice(FILLER) for _ in range(words)]
        text[rng.randint(words - 4, words - 1)] = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append({"text": " ".join(text), "label": ("neg", "pos")[label]})
    return rows


@pytest.fixture(scope="module")
def sentiment_bert(tiny_bert: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT fine-tuned on the short toy sentences: it knows the sentiment words, so the
    long texts test where it reads, not whether it learns."""
    out = tmp_path_factory.mktemp("sentiment") / "run"
    finetune(config_from_dict(text_config(tiny_bert, toy_csv, out)))
    return out


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("long") / "train.csv", late_evidence_rows(120))


def long_config(model: Path, data: Path, out: Path, strategy: str = "full", **data_keys) -> dict:
    cfg = text_config(model, data, out, strategy, training={"num_train_epochs": 3, "learning_rate": 1e-3})
    cfg["data"].update(max_length=MAX_LENGTH, stride=4, **data_keys)
    if strategy == "feature_extraction":
        cfg["strategy"]["head"] = "logistic"
    return cfg


def test_aggregate_windows_combines_probabilities_per_text() -> None:
    # text 0 has two windows (one confident, one unsure); text 1 one window
    logits = np.log(np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]))
    mean, first = aggregate_windows(logits, np.array([0, 0, 1]), "single_label", "mean")
    assert first.tolist() == [0, 2]
    assert np.exp(mean) == pytest.approx(np.array([[0.65, 0.35], [0.2, 0.8]]))
    most, _ = aggregate_windows(logits, np.array([0, 0, 1]), "single_label", "max")
    assert np.exp(most)[0] == pytest.approx([0.9, 0.6])
    odds = np.log(np.array([[0.9, 0.2], [0.1, 0.4]]) / (1 - np.array([[0.9, 0.2], [0.1, 0.4]])))
    multi, _ = aggregate_windows(odds, np.array([5, 5]), "multi_label", "mean")
    assert 1 / (1 + np.exp(-multi)) == pytest.approx(np.array([[0.5, 0.3]]))
    values, first = aggregate_windows(np.array([[1.0], [3.0], [7.0]]), np.array([1, 0, 1]), "regression", "mean")
    assert values.ravel().tolist() == [3.0, 4.0] and first.tolist() == [1, 0]  # texts in the order of their ids


@pytest.mark.parametrize("strategy", ["full", "feature_extraction"])
def test_chunk_reads_the_evidence_in_the_last_window(strategy: str, sentiment_bert: Path, long_csv: Path, tmp_path: Path) -> None:
    results = {}
    for mode in ("truncate", "chunk"):
        results[mode] = finetune(config_from_dict(long_config(sentiment_bert, long_csv, tmp_path / mode, strategy, long_inputs=mode)))
    # 30 words and [CLS]/[SEP] in windows of 14 words overlapping by 4: 1 + ceil(16 / 10) = 3 windows a text
    assert results["chunk"]["train_texts_over_max_length"] == 90 and results["chunk"]["train_windows"] == 270
    assert results["truncate"]["eval_accuracy"] <= 0.75, results["truncate"]  # the first 14 words hold no evidence: near chance
    assert results["chunk"]["eval_accuracy"] >= 0.9, results["chunk"]
    assert results["chunk"]["eval_samples"] == 90  # windows of the 30 validation texts: scored per text

    run = load_run(tmp_path / "chunk")
    late = late_evidence_rows(20, seed=9)
    *rows, short = predict(run, [r["text"] for r in late] + ["superb"])  # a short text: one window
    assert sum(r["label"] == truth["label"] for r, truth in zip(rows, late)) >= 17, rows
    assert short["label"] == "pos" and short["input"] == "superb"
    again = evaluate_run(run, str(write_rows(tmp_path / "new.csv", late_evidence_rows(40, seed=4))))
    assert again["eval_accuracy"] >= 0.9, again


def test_truncate_says_how_many_texts_are_cut(sentiment_bert: Path, long_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tlhub"):
        results = finetune(config_from_dict(long_config(sentiment_bert, long_csv, tmp_path / "run", "feature_extraction")))
    assert results["train_texts_over_max_length"] == 90 and results["validation_texts_over_max_length"] == 30
    assert ("data.long_inputs: truncate: 90 of 90 train texts (100%) are longer than data.max_length=16 tokens and are cut: "
            "they lose 16 tokens on average (50% of each), up to 16. data.long_inputs: chunk reads them whole") in caplog.text  # fmt: skip


def test_short_texts_report_nothing_cut(tiny_bert: Path, toy_csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "feature_extraction")
    cfg["data"]["long_inputs"] = "chunk"
    with caplog.at_level(logging.WARNING, logger="tlhub"):
        results = finetune(config_from_dict(cfg))
    assert results["train_texts_over_max_length"] == 0 and "train_windows" not in results
    assert "data.long_inputs" not in caplog.text


def test_multi_label_chunks_tune_the_threshold_per_text(sentiment_bert: Path, tmp_path: Path) -> None:
    rows = [{"text": r["text"] + (" food" if i % 3 == 0 else ""), "labels": [r["label"]] + (["food"] if i % 3 == 0 else [])}
            for i, r in enumerate(late_evidence_rows(120, seed=2))]  # fmt: skip
    import json

    data = tmp_path / "multi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = long_config(sentiment_bert, data, tmp_path / "run", long_inputs="chunk", label_column="labels", tune_threshold=True,
                      chunk_aggregation="max")  # fmt: skip
    # a new head of three labels; no evaluation before the tuning, which then sets the split it scores itself
    cfg["training"].update(num_train_epochs=8, learning_rate=3e-3, eval_strategy="no")
    results = finetune(config_from_dict(cfg))
    assert results["problem_type"] == "multi_label" and results["eval_samples"] == 90
    assert results["eval_f1/pos"] >= 0.8 and results["eval_f1/neg"] >= 0.8, results


BAD = {
    "not text": ({"modality": "image", "data": {"long_inputs": "chunk"}},
                 "data.long_inputs: chunk reads long texts as windows, for text classification; the image modality does not read it: remove it"),
    "another task": ({"task": "token_classification", "data": {"long_inputs": "chunk"}},
                     "data.long_inputs: chunk reads long texts as windows for task: classification; token_classification does not read it: remove it"),
    "pairs": ({"data": {"long_inputs": "chunk", "text_pair_column": "other"}},
              "data.long_inputs: chunk splits one text into windows; with data.text_pair_column (pairs of texts) use truncate"),
    "unknown mode": ({"data": {"long_inputs": "slide"}},
                     "data.long_inputs: unknown way to read long inputs 'slide'; choose one of: truncate, chunk"),
    "unknown aggregation": ({"data": {"chunk_aggregation": "median"}},
                            "data.chunk_aggregation: unknown aggregation 'median' (did you mean 'mean'?); choose one of: mean, max"),
    "stride too long": ({"data": {"long_inputs": "chunk", "max_length": MAX_LENGTH, "stride": 14}},
                        "data.stride: 14 tokens shared by windows of 14 text tokens (data.max_length=16); use fewer, e.g. 3"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_settings_are_one_line(case: str, tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sections, message = BAD[case]
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", training={"num_train_epochs": 1})
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["train", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.endswith(message), err


# --------------------------------------------------------------------------- longer than the model reads (issue 27)


def test_sequences_longer_than_the_models_positions(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    words = "good food and the staff was really very lovely".split()
    rows = [{"text": " ".join(words[i % 9] for i in range(k, k + 100)), "label": ["neg", "pos"][k % 2]} for k in range(40)]
    cfg = text_config(tiny_bert, write_rows(tmp_path / "long.csv", rows), tmp_path / "run", training={"num_train_epochs": 1})
    config = config_file(tmp_path / "c.yaml", cfg)
    assert main(["train", str(config)]) == 0  # the default fits the model: 64 positions, not 128
    err = one_line_error(capsys, ["train", str(config), "data.max_length=4096", "training.overwrite_output_dir=true"])
    assert err == (f"tlhub: error: data.max_length: 4096 tokens is more than '{tiny_bert}' reads (64 positions); set data.max_length "
                   "to at most 64, or leave it null\n")  # fmt: skip
