"""The command line as a user runs it: train, predict, evaluate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import text_config
from tlhub.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained_run(tiny_bert: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    config = write_config(tmp / "cfg.yaml", text_config(tiny_bert, toy_csv, tmp / "run"))
    assert main(["train", str(config), "training.num_train_epochs=8"]) == 0
    return tmp / "run"


def test_train_writes_the_run_directory(trained_run: Path) -> None:
    results = json.loads((trained_run / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9 and results["epoch"] == 8
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["training"]["num_train_epochs"] == 8  # the override is in the resolved config
    for name in ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.json", "tlhub_run.json"):
        assert (trained_run / name).is_file(), name


def test_predict_prints_label_and_score(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a lovely place\n\nthe staff was horrid\n")
    assert main(["predict", str(trained_run), "the food was great", "--file", str(inputs)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["pos", "pos", "neg"]
    assert [line.split("\t")[2] for line in lines] == ["the food was great", "a lovely place", "the staff was horrid"]
    assert all(0.5 <= float(line.split("\t")[1]) <= 1.0 for line in lines)


def test_evaluate_scores_a_labelled_file(trained_run: Path, toy_csv: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(trained_run), "--data", str(toy_csv)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out)  # stdout is exactly one JSON document
    assert metrics["eval_samples"] == 240 and metrics["eval_accuracy"] >= 0.9


def error_of(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err.strip()


def test_user_errors_are_one_line_and_exit_2(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run")
    config = write_config(tmp_path / "cfg.yaml", cfg)
    assert error_of(["train", str(tmp_path / "missing.yaml")], capsys) == f"tlhub: error: {tmp_path / 'missing.yaml'}: config file not found"
    assert error_of(["train", str(config), "strategy.nam=full"], capsys) == "tlhub: error: strategy.nam: unknown key (did you mean 'name'?)"
    assert error_of(["train", str(config), "data.text_column=sentence"], capsys) == (
        f"tlhub: error: data.train ({toy_csv}): no column 'sentence' (set by data.text_column); columns are: text, label"
    )
    assert error_of(["train", str(config), f"data.train={tmp_path / 'nope.csv'}"], capsys) == (
        f"tlhub: error: data.train: {tmp_path / 'nope.csv'}: no such file or folder"
    )
    assert error_of(["train", str(config), "model.name_or_path=nobody/no-such-model"], capsys) == (
        "tlhub: error: model.name_or_path: cannot load 'nobody/no-such-model': no such local folder, and the "
        "Hugging Face Hub could not provide it (offline, or no such model). Pass a local folder or check the id"
    )
    pd.DataFrame([{"text": "great", "label": "meh"}]).to_csv(tmp_path / "val.csv", index=False)
    assert error_of(["train", str(config), f"data.validation={tmp_path / 'val.csv'}"], capsys) == (
        f"tlhub: error: data.validation ({tmp_path / 'val.csv'}): row 1: label 'meh' does not occur in the training data (labels: neg, pos)"
    )
    pd.DataFrame([{"text": "great", "label": "pos"}, {"text": "", "label": "neg"}]).to_csv(tmp_path / "empty.csv", index=False)
    assert error_of(["train", str(config), f"data.train={tmp_path / 'empty.csv'}"], capsys) == (
        f"tlhub: error: data.train ({tmp_path / 'empty.csv'}): row 2: empty text in column 'text'; fill it in or drop the row"
    )
    assert error_of(["predict", str(tmp_path)], capsys) == "tlhub: error: predict: give inputs on the command line or with --file"
    assert not (tmp_path / "run").exists()  # nothing was written by the failed runs


def test_console_script_and_recipe_run_as_subprocesses(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: txt\n")
    for command in ([sys.executable, "-m", "tlhub", "train", str(bad)], [sys.executable, str(ROOT / "recipes" / "finetune.py"), str(bad)]):
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == "tlhub: error: model: missing required section (The pretrained model.)"


def test_config_lists_keys_with_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "strategy.lora"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "strategy.lora.r [int] = 8:  Rank of the LoRA update matrices." in out
    assert all(line.startswith("strategy.lora") for line in out)
    assert main(["config", "domain_adaptation"]) == 0  # an optional section lists its keys too
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("domain_adaptation: (optional section)")
    assert "domain_adaptation.weight [float | None] = null:  Weight of the domain loss added to the task loss; null: the method's own, 0.3 for dann" in "\n".join(out)
    assert any(line.startswith("domain_adaptation.dapt.mlm_probability [float] = 0.15") for line in out)
    assert error_of(["config", "nope"], capsys) == "tlhub: error: config: no section or key starts with 'nope'"
