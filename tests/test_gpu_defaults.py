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
