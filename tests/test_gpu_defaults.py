"""One precision per process (issue 24): on a GPU tlhub turns on bf16 by default, and every
Trainer it creates in one process (contrastive's pair tuning, DAPT, the source-only
baseline, the self-training teacher, each `tlhub compare` run) must use the precision and
device the main run resolved. accelerate refuses a second precision in one process:

    ValueError: AcceleratorState has already been initialized and cannot be changed ...

CI has no GPU, so these tests force tlhub's GPU defaults on the CPU, where bf16 autocast
runs too, and record the precision of every Trainer each flow builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from transformers import Trainer

import tlhub.trainer
from tests.conftest import text_config, with_sections
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main


@pytest.fixture
def trainers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, str]]:
    """tlhub's GPU defaults (bf16 mixed precision where the config sets neither bf16 nor fp16)
    forced on the CPU; returns the (class, args.bf16, accelerator precision) of every Trainer built."""
    monkeypatch.setattr(tlhub.trainer, "gpu_defaults", lambda modality, user, gpu, bf16_supported: (
        {} if "bf16" in user or "fp16" in user else {"bf16": True}))  # fmt: skip
    seen: list[tuple[str, bool, str]] = []
    build = Trainer.__init__

    def recording(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        build(self, *args, **kwargs)
        seen.append((type(self).__name__, bool(self.args.bf16), str(self.accelerator.mixed_precision)))

    monkeypatch.setattr(Trainer, "__init__", recording)
    return seen


def write_config(tmp_path: Path, model: Path, name: str, **sections) -> Path:
    data = write_rows(tmp_path / "train.csv", toy_sentiment_rows(64))
    cfg = with_sections(text_config(model, data, tmp_path / "run", name), sections)
    cfg["training"].update(num_train_epochs=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def assert_one_precision(trainers: list[tuple[str, bool, str]], at_least: int) -> None:
    assert len(trainers) >= at_least, trainers
    assert all(bf16 and precision == "bf16" for _, bf16, precision in trainers), trainers


def test_contrastive_pair_tuning_uses_the_runs_precision(trainers, tiny_bert: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_bert, "contrastive", strategy={"contrastive": {"iterations": 2}})
    assert main(["train", str(config)]) == 0
    assert_one_precision(trainers, 2)  # the pair tuning, then the run's own


def test_dapt_and_the_source_only_baseline_use_the_runs_precision(trainers, tiny_bert: Path, tmp_path: Path) -> None:
    target = write_rows(tmp_path / "target.csv", toy_sentiment_rows(32, seed=3))
    da = {"target": str(target), "method": "dapt", "dapt": {"max_steps": 2, "batch_size": 8}}
    config = write_config(tmp_path, tiny_bert, "full", domain_adaptation=da)
    assert main(["train", str(config)]) == 0
    assert_one_precision(trainers, 3)  # the baseline, continued pretraining, the adapted run


def test_self_training_teacher_uses_the_runs_precision(trainers, tiny_bert: Path, tmp_path: Path) -> None:
    target = write_rows(tmp_path / "target.csv", toy_sentiment_rows(32, seed=3))
    config = write_config(tmp_path, tiny_bert, "full", domain_adaptation={"target": str(target), "method": "self_training"})
    assert main(["train", str(config)]) == 0
    assert_one_precision(trainers, 3)  # the baseline, the teacher, the student


def test_compare_over_flows_with_stages_uses_one_precision(trainers, tiny_bert: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_bert, "full", strategy={"contrastive": {"iterations": 2}})
    assert main(["compare", str(config), "--strategies", "contrastive,full,lora"]) == 0
    assert_one_precision(trainers, 4)


def test_an_explicit_precision_is_kept_by_every_stage(trainers, tiny_bert: Path, tmp_path: Path) -> None:
    """bf16 written by the user (not tlhub's default) reaches the stage's Trainer too."""
    config = write_config(tmp_path, tiny_bert, "contrastive", strategy={"contrastive": {"iterations": 2}}, training={"bf16": True})
    assert main(["train", str(config)]) == 0
    assert_one_precision(trainers, 2)


def test_the_test_device_switch_stops_pinning_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """TLHUB_TEST_DEVICE=cuda: the shared training section leaves the device to tlhub (and its
    GPU defaults); an unknown value is refused."""
    import importlib

    import tests.conftest as conftest

    try:
        for device, expected in (("cuda", (False, False, 0.02)), ("cpu", (True, True, 1e-4))):
            monkeypatch.setenv("TLHUB_TEST_DEVICE", device)
            importlib.reload(conftest)
            assert (conftest.USE_CPU, conftest.cpu_training(Path("x"))["use_cpu"], conftest.NUMBERS_REL) == expected
        monkeypatch.setenv("TLHUB_TEST_DEVICE", "gpu")
        with pytest.raises(pytest.UsageError, match="TLHUB_TEST_DEVICE: 'gpu' is not cpu or cuda"):
            importlib.reload(conftest)
    finally:
        monkeypatch.undo()
        importlib.reload(conftest)


# --------------------------------------------------------------------------- throughput settings


def test_torch_compile_pads_to_a_few_bucketed_lengths(tiny_bert: Path, tmp_path: Path) -> None:
    """torch.compile specialises a graph per input shape: batches padded to a handful of
    lengths compile once per length, not once per batch."""
    from tlhub.config import config_from_dict
    from tlhub.modalities import get_modality

    cfg = config_from_dict(text_config(tiny_bert, write_rows(tmp_path / "t.csv", toy_sentiment_rows(8)), tmp_path / "r",
                                       training={"torch_compile": True}))  # fmt: skip
    text = get_modality("text")
    tokenizer = text.load_processor(cfg)
    collate = text.collator(tokenizer, cfg, None)
    assert collate.buckets == [16, 32, 64]  # the tiny BERT reads 64 positions
    widths = set()
    for words in (3, 14, 15, 20, 40, 70):
        long = tokenizer(" ".join(["good"] * words), truncation=True, max_length=64)  # as the transform truncates
        batch = collate([{**long, "labels": 1}, {**tokenizer("bad"), "labels": 0}])
        widths.add(batch["input_ids"].shape[1])
        assert batch["labels"].tolist() == [1, 0]
    assert widths <= {16, 32, 64}


def test_features_are_extracted_at_a_large_batch_on_a_gpu() -> None:
    from types import SimpleNamespace

    import torch

    from tlhub.cache import extraction_batch_size

    gpu = SimpleNamespace(per_device_eval_batch_size=8, device=torch.device("cuda"))
    cpu = SimpleNamespace(per_device_eval_batch_size=8, device=torch.device("cpu"))
    assert extraction_batch_size(gpu, "text") == extraction_batch_size(gpu, "image") == 256
    assert extraction_batch_size(gpu, "audio") == 8  # wav2vec2's group norm sees the batch's padding: the evaluation batch
    assert extraction_batch_size(cpu, "text") == 8


@pytest.mark.parametrize("strategy", ["full", "feature_extraction"])
def test_token_classification_learns_and_predicts_under_the_gpu_defaults(
    strategy: str, trainers, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Entity tags under bf16 autocast: per-token logits (and, for feature extraction, the
    per-token features cached from the autocast backbone) reach seqeval and the saved run predicts."""
    from tests.test_token_classification import ner_config
    from tests.tiny_models import toy_ner_rows, write_conll

    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    tagged = write_conll(tmp_path / "toy.conll", toy_ner_rows(200))
    out = tmp_path / "run"
    epochs = 30 if strategy == "feature_extraction" else 8  # as the CPU test of every strategy
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(ner_config(tiny_bert, tagged, out, strategy, training={"num_train_epochs": epochs})))
    assert main(["train", str(config)]) == 0
    assert_one_precision(trainers, 1)
    assert json.loads((out / "all_results.json").read_text())["eval_f1"] > 0.5  # the toy entities are learnable
    capsys.readouterr()
    assert main(["predict", str(out), "the food was very good"]) == 0
    assert capsys.readouterr().out.strip().endswith("\tthe food was very good")


# --------------------------------------------------------------------------- this round's flows under bf16


def bf16_flow(name: str, tmp_path: Path, tiny_bert: Path) -> tuple[dict, list[str]]:
    """A config of one of this round's flows (and the input `tlhub predict` reads), small enough
    to run in seconds: what a GPU runs under tlhub's bf16 default."""
    import json as _json

    from tests.detection_data import detection_config, write_backbone, write_squares
    from tests.test_long_inputs import late_evidence_rows
    from tests.test_problem_types import multi_label_rows, regression_rows
    from tests.test_question_answering import qa_config
    from tests.test_timeseries import ramps, seasonal_table, series_config, tiny_body
    from tests.tiny_models import make_tiny_qa_bert, toy_qa_rows

    def jsonl(path: Path, rows: list[dict]) -> Path:
        path.write_text("".join(_json.dumps(r) + "\n" for r in rows))
        return path

    if name == "question_answering":
        data = jsonl(tmp_path / "qa.jsonl", toy_qa_rows(48))
        return qa_config(make_tiny_qa_bert(tmp_path / "qa-bert"), data, tmp_path / "run", epochs=1), ["who ||| the cat sat on the mat"]
    if name == "multi_label_class_weights":
        data = jsonl(tmp_path / "multi.jsonl", multi_label_rows(64))
        cfg = with_sections(text_config(tiny_bert, data, tmp_path / "run"), {"data": {"label_column": "labels"}, "training": {"class_weights": "balanced"}})
        return cfg, ["good food it"]
    if name == "multi_label_lp_ft":  # the probe's closed-form head fitted on features read under autocast, then fine-tuned
        data = jsonl(tmp_path / "multi.jsonl", multi_label_rows(64))
        cfg = with_sections(text_config(tiny_bert, data, tmp_path / "run"), {"data": {"label_column": "labels"}, "strategy": {"name": "lp_ft"}})
        return cfg, ["good food it"]
    if name == "single_label_class_weights":
        data = write_rows(tmp_path / "train.csv", toy_sentiment_rows(64))
        return text_config(tiny_bert, data, tmp_path / "run", training={"class_weights": {"pos": 3}}), ["good food it"]
    if name == "regression":
        data = write_rows(tmp_path / "score.csv", regression_rows(64))
        return with_sections(text_config(tiny_bert, data, tmp_path / "run"), {"data": {"label_column": "score"}}), ["good the food"]
    if name == "long_inputs_chunk":
        data = write_rows(tmp_path / "long.csv", late_evidence_rows(48))
        chunked = {"data": {"long_inputs": "chunk", "max_length": 16, "stride": 4}}
        return with_sections(text_config(tiny_bert, data, tmp_path / "run"), chunked), [late_evidence_rows(1, seed=5)[0]["text"]]
    if name == "object_detection":
        cfg = detection_config(tmp_path, write_squares(tmp_path / "train", 12), write_backbone(tmp_path / "backbone"))
        cfg["training"].update(max_steps=4, eval_strategy="no")
        return cfg, [str(next((tmp_path / "train").glob("*.png")))]
    if name == "rt_detr":
        cfg = detection_config(tmp_path, write_squares(tmp_path / "train", 12), write_backbone(tmp_path / "backbone"))
        cfg["model"].update(detector="rt_detr", feature_level=-1)
        cfg["strategy"]["backbone_lr_scale"] = 0.1  # two learning rates (backbone, the rest) under autocast too
        cfg["training"].update(max_steps=4, eval_strategy="no")
        return cfg, [str(next((tmp_path / "train").glob("*.png")))]
    if name == "rt_detr_whole_lora":  # a whole RT-DETR (a run's folder) under lora: adapters and the heads inside its base model
        cfg = detection_config(tmp_path, write_squares(tmp_path / "train", 12), write_backbone(tmp_path / "backbone"))
        cfg["model"].update(detector="rt_detr", feature_level=-1)
        cfg["training"].update(max_steps=1, eval_strategy="no", output_dir=str(tmp_path / "whole"))
        (tmp_path / "whole.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["train", str(tmp_path / "whole.yaml")]) == 0
        cfg["model"] = {"name_or_path": str(tmp_path / "whole")}
        cfg["strategy"] = {"name": "lora", "lora": {"r": 4, "alpha": 8}}
        cfg["training"].update(max_steps=4, output_dir=str(tmp_path / "run"))
        return cfg, [str(next((tmp_path / "train").glob("*.png")))]
    if name == "timeseries_pretraining":  # its folder is a source model: nothing to predict
        data = jsonl(tmp_path / "series.jsonl", [{"series": r["series"]} for r in ramps(48)])
        cfg = series_config(tiny_body(tmp_path / "body", "bert"), data, tmp_path / "run", "full")
        cfg["task"] = "pretraining"
        cfg["training"].update(num_train_epochs=1)
        return cfg, []
    if name == "timeseries_classification":
        data = jsonl(tmp_path / "series.jsonl", ramps(48))
        cfg = series_config(tiny_body(tmp_path / "body", "bert"), data, tmp_path / "run")
        cfg["training"].update(num_train_epochs=1)
        return cfg, [str(data)]
    if name == "timeseries_gguf_body":  # SmolLM2's form: a Llama decoder dequantised from a GGUF file, its first block only
        pytest.importorskip("gguf", reason="pip install 'tlhub[weights]'")
        from tests.tiny_models import make_tiny_llama_gguf

        folder, gguf_file = make_tiny_llama_gguf(tmp_path / "gguf")[:2]
        data = jsonl(tmp_path / "series.jsonl", ramps(48))
        cfg = series_config(folder, data, tmp_path / "run", model={"gguf_file": gguf_file, "config_overrides": {"num_hidden_layers": 1}})
        cfg["training"].update(num_train_epochs=1)
        return cfg, [str(data)]
    assert name == "forecasting"
    table = seasonal_table(tmp_path / "sales.csv")
    cfg = series_config(tiny_body(tmp_path / "body", "bert"), table, tmp_path / "run", "full", model={"patch_length": 6, "patch_stride": 3},
                        data={"time_column": "month", "target_columns": ["sales"], "context_length": 24, "prediction_length": 6,
                              "seasonality": 12, "window_stride": 4, "validation_split": 0.2})  # fmt: skip
    cfg["task"] = "forecasting"
    cfg["training"].update(num_train_epochs=1)
    return cfg, [str(table)]


BF16_FLOWS = ["question_answering", "multi_label_class_weights", "multi_label_lp_ft", "single_label_class_weights", "regression", "long_inputs_chunk",
              "object_detection", "rt_detr", "rt_detr_whole_lora", "timeseries_classification", "timeseries_gguf_body", "timeseries_pretraining", "forecasting"]  # fmt: skip


@pytest.mark.parametrize("flow", BF16_FLOWS)
def test_this_rounds_flows_train_score_and_predict_under_the_gpu_defaults(
    flow: str, trainers, tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issues 35-39 under bf16 autocast (a GPU's default, forced on the CPU): the losses (class
    weights in float32 against bf16 logits), the scores read from bf16 outputs (spans, boxes,
    forecasts, windows) and the saved run's predictions."""
    import math

    cfg, inputs = bf16_flow(flow, tmp_path, tiny_bert)
    cfg["training"]["num_train_epochs"] = min(cfg["training"].get("num_train_epochs", 1), 2)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config)]) == 0, capsys.readouterr().err
    assert_one_precision(trainers, 1)
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    scores = [v for k, v in results.items() if k.startswith("eval_") and isinstance(v, float) and not k.endswith(("_runtime", "_per_second"))]
    assert scores and all(math.isfinite(v) for v in scores), results
    if not inputs:
        return
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), *inputs]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()
