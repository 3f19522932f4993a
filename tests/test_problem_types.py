"""Problem types (issue 35): multi-label and regression through every strategy, the decision
threshold, label spellings, class weights and the bad inputs, on the tiny BERT."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import text_config
from tests.tiny_models import FILLER, NEGATIVE, POSITIVE, write_rows
from tlhub import finetune
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.inference import load_run, predict

def multi_label_rows(n: int, seed: int = 0) -> list[dict]:
    """The toy sentiment sentences with a second, independent label: ``pos`` or ``neg`` from the
    sentiment word, and ``food`` where the word food occurs (a third of the rows)."""
    from tests.tiny_models import toy_sentiment_rows

    rows = []
    for row in toy_sentiment_rows(n, seed):
        labels = [row["label"]] + (["food"] if "food" in row["text"].split() else [])
        rows.append({"text": row["text"], "labels": labels})
    return rows


def regression_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts with 0-3 positive words: the score is half their count (fractions: auto reads regression)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE, k)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": 0.5 * k})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def multi_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("multi") / "train.jsonl", multi_label_rows(160))


@pytest.fixture(scope="module")
def score_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("reg") / "train.csv", regression_rows(160))


@pytest.fixture(scope="module")
def sentiment_bert(tiny_bert: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT fine-tuned on the toy sentiment sentences: a pretrained backbone that the
    problem types transfer from (a random 2-layer model under a frozen body learns too slowly
    for a test)."""
    out = tmp_path_factory.mktemp("sentiment") / "run"
    finetune(config_from_dict(text_config(tiny_bert, toy_csv, out)))
    return out


STRATEGY_SETTINGS = {
    "full": ({}, {"num_train_epochs": 6, "learning_rate": 5e-3}),
    "partial": ({"unfreeze_last_n": 1}, {"num_train_epochs": 6, "learning_rate": 5e-3}),
    "lora": ({"lora": {"r": 8, "alpha": 64}}, {"num_train_epochs": 6, "learning_rate": 1e-2}),
    "feature_extraction": ({"head": "logistic"}, {"num_train_epochs": 1}),
}


def config(model: Path, data: Path, out: Path, strategy: str, **data_keys) -> dict:
    settings, training = STRATEGY_SETTINGS[strategy]
    cfg = text_config(model, data, out, strategy, training=training)
    cfg["strategy"].update(settings)
    cfg["data"].update(data_keys)
    return cfg


RUNS: dict[tuple[str, str], tuple[Path, dict]] = {}  # (problem, strategy) -> (run folder, results): each trains once


@pytest.fixture(scope="module")
def trained(sentiment_bert: Path, multi_jsonl: Path, score_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """Train (once per module) the run of a problem type and strategy from the sentiment BERT."""

    def get(problem: str, strategy: str) -> tuple[Path, dict]:
        if (problem, strategy) not in RUNS:
            out = tmp_path_factory.mktemp(f"{problem}-{strategy}") / "run"
            data, column = (multi_jsonl, "labels") if problem == "multi" else (score_csv, "score")
            RUNS[problem, strategy] = out, finetune(config_from_dict(config(sentiment_bert, data, out, strategy, label_column=column)))
        return RUNS[problem, strategy]

    return get


@pytest.mark.parametrize("strategy", list(STRATEGY_SETTINGS))
def test_multi_label_learns_reloads_and_predicts(strategy: str, trained) -> None:
    out, results = trained("multi", strategy)
    # chance: predicting every label gives micro F1 0.62 here (1.3 of 3 labels a row), predicting none 0
    assert results["problem_type"] == "multi_label"
    assert results["eval_f1_micro"] >= 0.8, results
    for key in ("eval_f1_macro", "eval_f1_samples", "eval_precision/pos", "eval_recall/neg", "eval_f1/food"):
        assert key in results
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["problem_type"] == "multi_label"
    model_config = next((f for f in (out / "config.json", out / "merged" / "config.json") if f.is_file()), None)  # LoRA: merged/
    if model_config is not None:
        assert json.loads(model_config.read_text())["problem_type"] == "multi_label_classification"
    run = load_run(out)
    rows = predict(run, ["good the was staff it", "the food was awful it"])
    assert "pos" in rows[0]["labels"] and "neg" not in rows[0]["labels"] and "neg" in rows[1]["labels"], rows
    assert all(0.0 <= score <= 1.0 for score in rows[0]["scores"].values()) and rows[0]["threshold"] == 0.5


@pytest.mark.parametrize("strategy", list(STRATEGY_SETTINGS))
def test_regression_learns_reloads_and_predicts(strategy: str, trained) -> None:
    out, results = trained("regression", strategy)
    assert results["problem_type"] == "regression"  # auto: numbers with fractions
    assert results["eval_pearson"] >= 0.6, results  # chance: 0
    assert {"eval_mse", "eval_mae", "eval_spearman"} <= results.keys()
    run = load_run(out)
    low, high = predict(run, ["the food was very place", "good great superb the food"])
    assert isinstance(low["value"], float) and high["value"] > low["value"] + 0.3, (low, high)


def test_pipeline_applies_sigmoid_for_multi_label_and_nothing_for_regression(trained) -> None:
    from transformers import pipeline

    text = "good the food was it"
    multi, _ = trained("multi", "full")
    scores = {row["label"]: row["score"] for row in pipeline("text-classification", model=str(multi), top_k=None)([text])[0]}
    ours = predict(load_run(multi), [text])[0]
    assert ours["labels"] and all(scores[label] == pytest.approx(score, abs=1e-4) for label, score in ours["scores"].items())
    assert sum(scores.values()) != pytest.approx(1.0, abs=1e-3)  # sigmoid per label, not a softmax over them
    regression, _ = trained("regression", "full")
    value = pipeline("text-classification", model=str(regression))(text)[0]["score"]
    assert value == pytest.approx(predict(load_run(regression), [text])[0]["value"], abs=1e-4)  # no function: the number


def test_tuned_threshold_is_recorded_and_used(tiny_bert: Path, multi_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = config(tiny_bert, multi_jsonl, out, "feature_extraction", label_column="labels", tune_threshold=True)
    cfg["strategy"]["head"] = "linear"
    cfg["training"].update(num_train_epochs=3, learning_rate=1e-2)
    results = finetune(config_from_dict(cfg))
    threshold = results["threshold"]
    assert 0.05 <= threshold <= 0.95 and results["threshold_untuned"] == 0.5
    assert "eval_f1_micro_untuned" in results
    assert results["eval_f1_micro"] >= results["eval_f1_micro_untuned"] - 1e-9  # tuned on these rows: never worse
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["threshold"] == threshold
    assert load_run(out).cfg.data.threshold == threshold


def test_string_labels_split_on_the_separator(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [{"text": r["text"], "tags": "|".join(r["labels"])} for r in multi_label_rows(120)]
    data = write_rows(tmp_path / "tags.csv", rows)
    cfg = config(tiny_bert, data, tmp_path / "run", "feature_extraction", label_column="tags", label_separator="|")
    results = finetune(config_from_dict(cfg))
    assert results["problem_type"] == "multi_label" and results["eval_f1_micro"] >= 0.85


# --------------------------------------------------------------------------- class weights


def test_weighted_loss_changes_with_the_weights() -> None:
    from tlhub.tasks.classification import class_weight_values, weighted_loss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    outputs = {"logits": logits}
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert weighted_loss([1.0, 1.0], "single_label")(outputs, labels) == pytest.approx(float(plain))
    heavier = weighted_loss([1.0, 5.0], "single_label")(outputs, labels)
    assert float(heavier) != pytest.approx(float(plain))
    multi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert float(weighted_loss([1.0, 1.0], "multi_label")({"logits": logits}, multi)) != pytest.approx(
        float(weighted_loss([3.0, 1.0], "multi_label")({"logits": logits}, multi))
    )
    assert class_weight_values("balanced", ["a", "b"], {"a": 90, "b": 10}, "single_label") == pytest.approx([100 / 180, 100 / 20])
    assert class_weight_values("balanced", ["a", "b"], {"a": 90, "b": 10}, "multi_label") == pytest.approx([10 / 90, 90 / 10])
    assert class_weight_values({"b": 3}, ["a", "b"], {"a": 9, "b": 1}, "single_label") == [1.0, 3.0]


def test_balanced_weights_raise_the_rare_class_recall(tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.tiny_models import toy_sentiment_rows

    rows = toy_sentiment_rows(400, seed=3)
    skewed = [r for r in rows if r["label"] == "neg"] + [r for r in rows if r["label"] == "pos"][:12]
    data = write_rows(tmp_path / "skewed.csv", skewed)
    recalls = {}
    for weights in ("none", "balanced"):
        cfg = config(tiny_bert, data, tmp_path / weights, "feature_extraction", validation_split=0.3)
        cfg["strategy"]["head"] = "linear"
        cfg["training"].update(num_train_epochs=4, learning_rate=5e-3, class_weights=weights)
        with caplog.at_level("WARNING"):
            results = finetune(config_from_dict(cfg))
        recalls[weights] = results["eval_recall/pos"]
        assert "eval_precision/neg" in results
    assert "training.class_weights" in caplog.text and "skewed classes" in caplog.text
    assert recalls["balanced"] > recalls["none"], recalls


# --------------------------------------------------------------------------- spellings and bad inputs


def cli_error(capsys: pytest.CaptureFixture[str], cfg: dict, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["train", str(path)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_label_spellings_are_refused_or_merged(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.tiny_models import toy_sentiment_rows

    rows = toy_sentiment_rows(80)
    rows[3]["label"] = "pos "
    data = write_rows(tmp_path / "spaces.csv", rows)
    code, err = cli_error(capsys, text_config(tiny_bert, data, tmp_path / "a", training={"num_train_epochs": 1}), tmp_path)
    assert code == 2 and err.count("\n") == 0
    assert err == (f"tlhub: error: data.train ({data}): labels 'pos' and 'pos ' in column 'label' differ only in surrounding spaces; "
                   "correct the data, or set data.normalize_labels: true to merge them")  # fmt: skip
    rows[5]["label"] = "Neg"
    data = write_rows(tmp_path / "case.csv", rows)
    cfg = text_config(tiny_bert, data, tmp_path / "b", training={"num_train_epochs": 1})
    rows[3]["label"] = "pos"
    write_rows(tmp_path / "case.csv", rows)
    code, err = cli_error(capsys, cfg, tmp_path)
    assert code == 2 and "labels 'Neg' and 'neg' in column 'label' differ only in case" in err
    rows[3]["label"] = "pos "
    write_rows(tmp_path / "case.csv", rows)
    cfg["data"]["normalize_labels"] = True
    results = finetune(config_from_dict(cfg))
    assert json.loads((tmp_path / "b" / "tlhub_run.json").read_text())["label_names"] == ["neg", "pos"]
    assert results["eval_samples"] > 0


BAD_INPUTS = {
    "mixed lists and strings": (
        [{"text": "good food", "labels": ["g", "f"]}, {"text": "bad it", "labels": "b"}] * 6,
        "labels", {},
        "row 1: column 'labels' holds a list where other rows hold str; give every row the same kind of value",
    ),
    "empty label list": (
        [{"text": "good food", "labels": ["g", "f"]}, {"text": "bad it", "labels": ["b"]}] * 5 + [{"text": "it", "labels": []}],
        "labels", {},
        "row 11: empty label list in column 'labels'; multi-label rows need at least one label (drop the row, or add a label such as 'none')",
    ),
    "NaN in a regression column": (
        [{"text": "good food", "score": 1.5}, {"text": "bad it", "score": float("nan")}] * 6,
        "score", {"problem_type": "regression"},
        "row 2: no value (empty or NaN) in column 'score'; regression needs a number in every row: fill it in or drop the row",
    ),
    "text in a regression column": (
        [{"text": "good food", "score": "1.5"}, {"text": "bad it", "score": "high"}] * 6,
        "score", {"problem_type": "regression"},
        "row 2: 'high' in column 'score' is not a number; regression (data.problem_type) needs a number in every row",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_one_line(case: str, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows, column, extra, message = BAD_INPUTS[case]
    data = write_jsonl(tmp_path / "train.jsonl", rows) if column == "labels" else write_rows(tmp_path / "train.csv", rows)
    cfg = text_config(tiny_bert, data, tmp_path / "run", training={"num_train_epochs": 1})
    cfg["data"].update(label_column=column, **extra)
    code, err = cli_error(capsys, cfg, tmp_path)
    assert code == 2 and err.count("\n") == 0, err
    assert err.endswith(message) and str(data) in err, err


def test_unknown_label_in_validation_names_its_row(tiny_bert: Path, multi_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    validation = write_jsonl(tmp_path / "validation.jsonl", [{"text": "good", "labels": ["pos"]}, {"text": "bad it", "labels": ["neg", "x"]}])
    cfg = text_config(tiny_bert, multi_jsonl, tmp_path / "run", training={"num_train_epochs": 1})
    cfg["data"].update(label_column="labels", validation=str(validation))
    code, err = cli_error(capsys, cfg, tmp_path)
    assert code == 2 and err.count("\n") == 0
    assert err == (f"tlhub: error: data.validation ({validation}): row 2: label 'x' does not occur in the training data "
                   "(labels: food, neg, pos); add it to the training data or correct it")  # fmt: skip


def test_cli_predict_prints_label_sets_and_numbers(trained, capsys: pytest.CaptureFixture[str]) -> None:
    multi, _ = trained("multi", "feature_extraction")
    regression, _ = trained("regression", "feature_extraction")
    capsys.readouterr()
    assert main(["predict", str(multi), "good the was staff it"]) == 0
    labels, text = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert "pos" in {part.split(":")[0] for part in labels.split(", ")} and text == "good the was staff it"
    assert main(["predict", str(regression), "good great superb the food"]) == 0
    value, text = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert float(value) > 0.5 and text == "good great superb the food"


def test_cli_evaluate_scores_a_regression_run_on_new_rows(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regression, _ = trained("regression", "feature_extraction")
    data = write_rows(tmp_path / "new.csv", regression_rows(40, seed=7))
    capsys.readouterr()
    assert main(["evaluate", str(regression), "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_pearson"] >= 0.6 and metrics["eval_samples"] == 40


# --------------------------------------------------------------------------- images and audio


def tinted_images(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """32x32 images of a random brightness (the regression score, 0-1), half of them tinted red:
    labels ``bright``/``dark`` and ``red`` (multi-label)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        level = float(rng.uniform(0.1, 0.9))
        pixels = rng.normal(255 * level, 12, size=(32, 32, 3))
        red = i % 2 == 0
        if red:
            pixels[..., 0] += 60
            pixels[..., 1:] -= 30
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "labels": ["bright" if level > 0.5 else "dark"] + (["red"] if red else []), "score": round(level, 4)})
    return rows


def test_images_learn_label_sets_and_scores(tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_vit

    vit = make_tiny_vit(tmp_path / "vit")
    table = write_jsonl(tmp_path / "images" / "train.jsonl", tinted_images(tmp_path / "images", 96))
    for problem, column, metric, floor in (("multi_label", "labels", "eval_f1_micro", 0.8), ("regression", "score", "eval_pearson", 0.8)):
        out = tmp_path / problem
        cfg = {
            "modality": "image",
            "model": {"name_or_path": str(vit)},
            "data": {"train": str(table), "validation_split": 0.25, "label_column": column, "problem_type": problem},
            "strategy": {"name": "full"},
            "training": {**text_config(vit, table, out)["training"], "num_train_epochs": 6, "learning_rate": 5e-3, "per_device_train_batch_size": 8},
        }
        results = finetune(config_from_dict(cfg))
        assert results["problem_type"] == problem and results[metric] >= floor, results
        row = predict(load_run(out), [str(tmp_path / "images" / "0.png")])[0]  # level 0.xx, red
        assert ("red" in row["labels"]) if problem == "multi_label" else isinstance(row["value"], float), row


def test_audio_learns_a_score(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from tests.tiny_models import make_tiny_wav2vec2

    w2v = make_tiny_wav2vec2(tmp_path / "w2v")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(64):  # louder clips score higher: the score is the amplitude
        amplitude = float(rng.uniform(0.05, 0.9))
        t = np.arange(4000) / 8000
        clip = amplitude * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(tmp_path / f"{i}.wav", clip.astype(np.float32), 8000)
        rows.append({"path": f"{i}.wav", "score": round(amplitude, 4)})
    manifest = write_rows(tmp_path / "manifest.csv", rows)
    cfg = {
        "modality": "audio",
        "model": {"name_or_path": str(w2v)},
        "data": {"train": str(manifest), "validation_split": 0.25, "audio_column": "path", "label_column": "score"},
        "strategy": {"name": "feature_extraction", "head": "logistic"},
        "training": text_config(w2v, manifest, tmp_path / "run")["training"],
    }
    results = finetune(config_from_dict(cfg))
    assert results["problem_type"] == "regression" and results["eval_pearson"] >= 0.6, results
    assert isinstance(predict(load_run(tmp_path / "run"), [str(tmp_path / "0.wav")])[0]["value"], float)


def test_compare_and_curves_rank_by_the_problem_types_metric(tiny_bert: Path, score_csv: Path, multi_jsonl: Path, tmp_path: Path) -> None:
    regression = config(tiny_bert, score_csv, tmp_path / "reg", "feature_extraction", label_column="score")
    regression["training"]["num_train_epochs"] = 1
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(regression))
    assert main(["compare", str(tmp_path / "reg.yaml"), "--strategies", "feature_extraction,full"]) == 0
    report = json.loads((tmp_path / "reg" / "compare" / "compare.json").read_text())
    assert report["metric"] == "eval_mse" and report["greater_is_better"] is False  # auto decided regression: lower is better
    assert all(row["metric"] is not None and row["metric"] > 0 for row in report["rows"])

    multi = config(tiny_bert, multi_jsonl, tmp_path / "multi", "feature_extraction", label_column="labels")
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump(multi))
    assert main(["compare", str(tmp_path / "multi.yaml"), "--fractions", "0.5,1.0"]) == 0
    curve = json.loads((tmp_path / "multi" / "compare" / "curve.json").read_text())
    assert curve["metric"] == "eval_f1_micro" and all(0 < row["metric"] <= 1 for row in curve["rows"])
