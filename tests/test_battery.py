"""One battery over every registered strategy x every task of every modality (issue 34), as
peft's suite runs one battery over its methods and models: each combination that the
strategy's checks accept trains a few steps on a tiny model, saves, reloads with
`tlhub.load_run`, predicts, and builds the pipeline its model card shows; each combination
they refuse is one line naming a key. A new strategy is tested here by registering it; a new
task by registering it and adding its toy case to CASES (a test fails until it has one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cpu_training
from tlhub.errors import TlhubError
from tlhub.modalities import MODALITIES
from tlhub.strategies import STRATEGIES
from tlhub.tasks import get_task

# (modality, task) -> builds (config mapping without strategy/training, `tlhub predict` inputs) in a folder
Case = Callable[[Path], tuple[dict[str, Any], list[str]]]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def text_classification(root: Path) -> tuple[dict, list[str]]:
    from tests.tiny_models import make_tiny_bert, toy_sentiment_rows, write_rows

    data = write_rows(root / "toy.csv", toy_sentiment_rows(32))
    return {"model": {"name_or_path": str(make_tiny_bert(root / "bert"))}, "data": {"train": str(data)}}, ["good food"]


def token_classification(root: Path) -> tuple[dict, list[str]]:
    from tests.tiny_models import make_tiny_bert, toy_ner_rows, write_conll

    data = write_conll(root / "toy.conll", toy_ner_rows(32))
    return {"model": {"name_or_path": str(make_tiny_bert(root / "bert"))}, "data": {"train": str(data)}}, ["the food was good"]


def text2text(root: Path) -> tuple[dict, list[str]]:
    from tests.tiny_models import make_tiny_t5, toy_sentiment_rows, write_rows

    data = write_rows(root / "toy.csv", toy_sentiment_rows(32))
    words = {"label_words": {"neg": "negative", "pos": "positive"}, "source_prefix": "sentiment: ", "max_target_length": 4}
    return {"model": {"name_or_path": str(make_tiny_t5(root / "t5"))}, "data": {"train": str(data), **words}}, ["good food"]


def causal_lm(root: Path) -> tuple[dict, list[str]]:
    from tests.tiny_models import make_tiny_gpt2, toy_sentiment_rows, write_rows

    data = write_rows(root / "toy.csv", toy_sentiment_rows(32))
    words = {"label_words": {"neg": "negative", "pos": "positive"}, "source_prefix": "sentiment: ", "max_target_length": 4}
    return {"model": {"name_or_path": str(make_tiny_gpt2(root / "gpt2"))}, "data": {"train": str(data), **words}}, ["good food"]


def question_answering(root: Path) -> tuple[dict, list[str]]:
    from tests.tiny_models import make_tiny_qa_bert, toy_qa_rows

    data = jsonl(root / "qa.jsonl", toy_qa_rows(32))
    settings = {"answer_column": "answer", "max_length": 48, "doc_stride": 16}
    return {"model": {"name_or_path": str(make_tiny_qa_bert(root / "bert"))}, "data": {"train": str(data), **settings}}, [
        "who sat ||| the cat sat on the mat"
    ]


def image_classification(root: Path) -> tuple[dict, list[str]]:
    from tests.tiny_models import make_tiny_vit, toy_image_folder

    folder = toy_image_folder(root / "images", n_per_class=8)
    return {"model": {"name_or_path": str(make_tiny_vit(root / "vit"))}, "data": {"train": str(folder)}}, [
        str(next((folder / "dark").glob("*.jpg")))
    ]


def object_detection(root: Path) -> tuple[dict, list[str]]:
    from tests.detection_data import detection_config, write_backbone, write_squares

    cfg = detection_config(root, write_squares(root / "train", 12), write_backbone(root / "backbone"))
    return {"model": cfg["model"], "data": cfg["data"]}, [str(next((root / "train").glob("*.png")))]


def audio_classification(root: Path) -> tuple[dict, list[str]]:
    import pandas as pd

    from tests.test_audio import write_tones
    from tests.tiny_models import make_tiny_wav2vec2

    rows = write_tones(root / "tones", per_class=8)
    pd.DataFrame(rows).to_csv(root / "tones" / "manifest.csv", index=False)
    model = {"name_or_path": str(make_tiny_wav2vec2(root / "w2v"))}
    return {"model": model, "data": {"train": str(root / "tones" / "manifest.csv"), "audio_column": "path"}}, [
        str(root / "tones" / "low" / "0.wav")
    ]


def speech_recognition(root: Path) -> tuple[dict, list[str]]:
    from tests.test_audio import write_spelled_words
    from tests.tiny_models import make_tiny_wav2vec2

    manifest = write_spelled_words(root / "words", 16)
    data = {"train": str(manifest), "audio_column": "path", "target_column": "transcript", "chars_to_ignore": "!"}
    return {"model": {"name_or_path": str(make_tiny_wav2vec2(root / "w2v"))}, "data": data}, [str(root / "words" / "0.wav")]


def series_classification(root: Path) -> tuple[dict, list[str]]:
    from tests.test_timeseries import ramps, tiny_body

    data = jsonl(root / "series.jsonl", ramps(32))
    return {"model": {"name_or_path": str(tiny_body(root / "body", "bert")), "patch_length": 8, "patch_stride": 8}, "data": {"train": str(data)}}, [
        str(data)
    ]


def forecasting(root: Path) -> tuple[dict, list[str]]:
    from tests.test_timeseries import seasonal_table, tiny_body

    table = seasonal_table(root / "sales.csv", steps=96)
    data = {"train": str(table), "time_column": "month", "target_columns": ["sales"], "context_length": 24, "prediction_length": 6,
            "seasonality": 12, "window_stride": 4}  # fmt: skip
    return {"model": {"name_or_path": str(tiny_body(root / "body", "bert")), "patch_length": 6, "patch_stride": 3}, "data": data}, [str(table)]


def pretraining(root: Path) -> tuple[dict, list[str]]:
    from tests.test_timeseries import ramps, tiny_body

    data = jsonl(root / "series.jsonl", [{"series": r["series"]} for r in ramps(32)])
    return {"model": {"name_or_path": str(tiny_body(root / "body", "bert")), "patch_length": 8, "patch_stride": 8}, "data": {"train": str(data)}}, []


CASES: dict[tuple[str, str], Case] = {
    ("text", "classification"): text_classification,
    ("text", "token_classification"): token_classification,
    ("text", "text2text"): text2text,
    ("text", "causal_lm"): causal_lm,
    ("text", "question_answering"): question_answering,
    ("image", "classification"): image_classification,
    ("image", "object_detection"): object_detection,
    ("audio", "classification"): audio_classification,
    ("audio", "speech_recognition"): speech_recognition,
    ("timeseries", "classification"): series_classification,
    ("timeseries", "forecasting"): forecasting,
    ("timeseries", "pretraining"): pretraining,
}
PAIRS = [(modality, task) for modality in MODALITIES.in_order() for task in MODALITIES.get(modality).tasks]


def test_every_task_of_every_modality_has_a_case() -> None:
    missing = [pair for pair in PAIRS if pair not in CASES]
    assert not missing, f"add a toy case to tests/test_battery.py CASES for {missing}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[dict, list[str]]]:
    """Each case's model and data, built once for the module."""
    cache: dict[tuple[str, str], tuple[dict, list[str]]] = {}

    def get(modality: str, task: str) -> tuple[dict, list[str]]:
        if (modality, task) not in cache:
            cache[modality, task] = CASES[modality, task](tmp_path_factory.mktemp(f"{modality}-{task}"))
        return cache[modality, task]

    return get


@pytest.mark.parametrize("strategy", STRATEGIES.names())
@pytest.mark.parametrize(("modality", "task"), [pair for pair in PAIRS if pair in CASES])
def test_battery(modality: str, task: str, strategy: str, built, tmp_path: Path) -> None:
    from tlhub.config import config_from_dict
    from tlhub.errors import ConfigError
    from tlhub.inference import load_run, predict
    from tlhub.pipeline import finetune

    base, inputs = built(modality, task)
    out = tmp_path / "run"
    mapping = {
        "modality": modality, "task": task, "model": dict(base["model"]), "data": {"validation_split": 0.25, **base["data"]},
        "strategy": {"name": strategy},
        "training": cpu_training(out, max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4, eval_strategy="no",
                                 learning_rate=1e-3, report_to="none"),
    }  # fmt: skip
    try:
        cfg = config_from_dict(mapping)
        results = finetune(cfg)
    except (ConfigError, TlhubError) as exc:  # refused where it cannot apply: one line that names a key
        message = str(exc)
        assert "\n" not in message and re.match(r"^(strategy|task|model|data|training)(\.[\w\[\]]+)*: ", message), message
        return
    assert (out / "all_results.json").is_file() and results["trainable_params"] > 0, results
    assert results["strategy"] == strategy and any(k.startswith("eval_") for k in results), results

    # Reload as it was saved, and predict
    run = load_run(out)
    if inputs:
        rows = predict(run, inputs)
        assert len(rows) >= len(inputs) and all(row["input"] for row in rows), rows

    # The model card's code loads what it names: its imports and its `pipeline(...)` /
    # `X.from_pretrained(...)` lines, run as they are (the calls after them read placeholder
    # inputs). An adapter on its base model (BASE_MODEL) is peft's own code.
    code = (out / "README.md").read_text().split("```python")[-1].split("```")[0]
    if "BASE_MODEL" not in code:
        loading = [line for line in code.splitlines() if re.match(r"^(from |import |RUN_DIR = |\w+ = (pipeline\(|\w+\.from_pretrained\(|tlhub\.load_run\())", line)]
        scope: dict[str, Any] = {}
        exec(compile("\n".join(loading), "README.md", "exec"), scope)  # noqa: S102 - the card's own snippet, on the run just written
        assert {"pipe", "model", "run"} & set(scope), code
        tag = get_task(task).pipeline_tags.get(modality)
        if "pipe" in scope:
            assert scope["pipe"].task == tag, (scope["pipe"].task, tag)
