"""Nothing silently wrong: reruns into used folders, resume, evaluate, range checks, stale
reuse, labels from the Hub, and evaluation after training equal to evaluation during it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import yaml

from tests.conftest import one_line_error, text_config, with_sections
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.errors import ConfigError, DataError
from tlhub.pipeline import load_run, predict
from tlhub.rundir import differences

ROOT = Path(__file__).resolve().parents[1]
PROBE = str(ROOT / "tests" / "launch_probe.py")


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def short(cfg: dict, **training) -> dict:
    cfg["training"].update(max_steps=3, **training)
    return cfg


def error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


# --------------------------------------------------------------------------- 1. one run per folder


@pytest.mark.parametrize("first", ["lora", "feature_extraction"])
def test_a_rerun_of_another_config_is_refused_or_replaces_the_old_run_whole(
    first: str, tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    config = write(tmp_path / "c.yaml", short(text_config(tiny_bert, toy_csv, out, first)))
    assert main(["train", str(config)]) == 0
    before = sorted(p.name for p in out.iterdir())

    # Another strategy into the same folder: refused, naming the folder, what differs and the fix
    err = error(capsys, ["train", str(config), "strategy.name=full"])
    assert err == (
        f"tlhub: error: training.output_dir: {out} holds a run of another config "
        f"(strategy.name: '{first}' -> 'full'); set training.overwrite_output_dir=true to replace it, "
        "or choose another output_dir\n"
    )
    assert sorted(p.name for p in out.iterdir()) == before  # nothing touched

    # With overwrite: the folder holds the new run only, and it is what loads
    assert main(["train", str(config), "strategy.name=full", "training.overwrite_output_dir=true"]) == 0
    names = {p.name for p in out.iterdir()}
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "pooled_head.safetensors", "pooled_head.json"}
    assert not list(tmp_path.glob(".run.*"))  # the old run's folder was removed after the rename
    run = load_run(out)
    assert type(run.model).__name__ == "BertForSequenceClassification"
    assert json.loads((out / "tlhub_run.json").read_text())["strategy"] == "full"
    assert predict(run, ["good"])[0]["label"] in ("neg", "pos")


def test_the_same_config_again_retrains_into_a_clean_folder(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write(tmp_path / "c.yaml", short(text_config(tiny_bert, toy_csv, out, "full"), save_strategy="steps", save_steps=1))
    assert main(["train", str(config)]) == 0
    assert main(["train", str(config), "training.save_strategy=no"]) == 2  # another config (save_strategy)
    stray = out / "checkpoint-99"  # a checkpoint no longer of this run: gone after a fresh rerun
    stray.mkdir()
    assert main(["train", str(config)]) == 0
    assert not stray.exists() and (out / "checkpoint-3").is_dir()


def test_a_folder_without_a_finished_run_does_not_load(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", str(write(tmp_path / "c.yaml", short(text_config(tiny_bert, toy_csv, out, "lora"))))]) == 0
    (out / "all_results.json").unlink()  # as a crash before the end leaves it
    with pytest.raises(DataError, match="not a finished tlhub run"):
        load_run(out)


def test_differences_ignore_how_a_run_is_watched() -> None:
    base = {"strategy": {"name": "full"}, "training": {"output_dir": "a", "learning_rate": 0.1, "logging_steps": 5}}
    watched = {"strategy": {"name": "full"}, "training": {"output_dir": "b", "learning_rate": 0.1, "disable_tqdm": True}}
    assert differences(base, watched) == []
    other = {"strategy": {"name": "full"}, "training": {"output_dir": "a", "learning_rate": 0.2}}
    assert differences(base, other) == ["training.learning_rate: 0.1 -> 0.2"]


# --------------------------------------------------------------------------- 2. evaluate after early stopping


def test_evaluate_a_run_trained_with_early_stopping(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    cfg = text_config(tiny_bert, toy_csv, out, "full")
    cfg["training"].update(num_train_epochs=2, eval_strategy="epoch", early_stopping_patience=1)
    del cfg["training"]["save_strategy"]
    assert main(["train", str(write(tmp_path / "c.yaml", cfg))]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(toy_csv)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_samples"] == 240 and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert not (out / "evaluate").exists()  # the scratch folder is temporary, never inside the run


# --------------------------------------------------------------------------- 3. resume


def test_resume_with_more_steps_continues_training(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = short(text_config(tiny_bert, toy_csv, out, "full"), save_strategy="steps", save_steps=3, resume_from_checkpoint="auto", logging_steps=1)
    config = write(tmp_path / "c.yaml", cfg)
    assert main(["train", str(config)]) == 0
    assert main(["train", str(config), "training.max_steps=5"]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    results = json.loads((out / "all_results.json").read_text())
    assert state["global_step"] == 5 and results["train_runtime"] > 0
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps[-2:] == [4, 5]  # the two new steps were trained, after the first three
    # and more epochs likewise: max_steps unset, 1 epoch of 12 steps (180 rows, batch 16)
    assert main(["train", str(config), "training.max_steps=-1", "training.num_train_epochs=1"]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 12


def test_resume_from_a_checkpoint_of_another_config_says_what_differs(tiny_bert, toy_csv, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    cfg = short(text_config(tiny_bert, toy_csv, out, "full"), save_strategy="steps", save_steps=3, resume_from_checkpoint="auto", logging_steps=1)
    config = write(tmp_path / "c.yaml", cfg)
    assert main(["train", str(config)]) == 0
    err = error(capsys, ["train", str(config), "training.learning_rate=0.5"])
    assert err == (
        f"tlhub: error: training.resume_from_checkpoint: {out / 'checkpoint-3'} was written by another config "
        "(training.learning_rate: 0.001 -> 0.5); resume with that config, or set training.overwrite_output_dir=true "
        "to start afresh\n"
    )
    assert main(["train", str(config), "training.learning_rate=0.5", "training.overwrite_output_dir=true"]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]  # trained afresh


# --------------------------------------------------------------------------- 4. range checks, output_dir


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.num_train_epochs=-1", "training.num_train_epochs: must be in (0, inf], got -1"),
        ("training.learning_rate=0", "training.learning_rate: must be in (0, inf], got 0"),
        ("training.per_device_train_batch_size=0", "training.per_device_train_batch_size: must be in [1, inf], got 0"),
        ("training.max_steps=0", "training.max_steps: must be -1 (train for num_train_epochs) or positive, got 0"),
        ("training.warmup_steps=-3", "training.warmup_steps: must be in [0, inf], got -3"),
        ("training.adam_beta1=1.5", "training.adam_beta1: must be in [0, 1), got 1.5"),
        ("training.seed=-1", "training.seed: must be in [0, 4294967295], got -1"),
        ("training.gradient_accumulation_steps=1.5", "training.gradient_accumulation_steps: must be a whole number, got 1.5"),
        ("training.learning_rate=.nan", "training.learning_rate: must be a finite number, got nan"),
        ("training.early_stopping_patience=0", "training.early_stopping_patience: must be in [1, inf], got 0"),
    ],
)
def test_numeric_training_keys_are_range_checked(override, message, tiny_bert, toy_csv, tmp_path, capsys) -> None:
    config = write(tmp_path / "c.yaml", text_config(tiny_bert, toy_csv, tmp_path / "run"))
    assert error(capsys, ["train", str(config), override]) == f"tlhub: error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_output_dir_naming_a_file_is_a_clear_error(tiny_bert, toy_csv, tmp_path, capsys) -> None:
    (tmp_path / "taken").write_text("not a folder")
    config = write(tmp_path / "c.yaml", text_config(tiny_bert, toy_csv, tmp_path / "taken"))
    err = error(capsys, ["train", str(config)])
    assert err == f"tlhub: error: training.output_dir: {tmp_path / 'taken'} is a file; name a folder for the run's outputs\n"


# --------------------------------------------------------------------------- 5. stale reuse


def test_dapt_output_is_reused_only_for_the_same_target_and_settings(tiny_bert, tmp_path) -> None:
    from tlhub.pipeline import finetune

    source = write_rows(tmp_path / "source.csv", toy_sentiment_rows(32, seed=1))
    target = write_rows(tmp_path / "target.csv", [{"review": r["text"]} for r in toy_sentiment_rows(24, seed=2)])
    out = tmp_path / "run"
    cfg = text_config(tiny_bert, source, out, "full", domain_adaptation={"target": str(target), "text_column": "review",
                      "method": "dapt", "dapt": {"max_steps": 2, "batch_size": 8}})  # fmt: skip
    cfg["training"].update(max_steps=1, resume_from_checkpoint="auto", save_strategy="steps", save_steps=1)
    done = out / "dapt" / "tlhub_dapt.json"
    finetune(config_from_dict(cfg))
    first = json.loads(done.read_text())
    finetune(config_from_dict(cfg))  # the same run resumed: dapt reused
    assert json.loads(done.read_text()) == first
    # The target changes: dapt trains again, although the folder is resumed
    write_rows(target, [{"review": r["text"]} for r in toy_sentiment_rows(24, seed=3)])
    finetune(config_from_dict(cfg))
    second = json.loads(done.read_text())
    assert second["key"]["texts_sha256"] != first["key"]["texts_sha256"]


# --------------------------------------------------------------------------- 7. labels from the Hub


def test_unlabelled_class_label_rows_are_an_error_naming_the_row(tiny_bert, tmp_path, capsys) -> None:
    rows = toy_sentiment_rows(40)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    labelled = datasets.Dataset.from_dict({"text": [r["text"] for r in rows], "label": [int(r["label"] == "pos") for r in rows]}, features=features)
    labelled.save_to_disk(str(tmp_path / "train"))
    unlabelled = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [-1, -1, -1]}, features=features)
    unlabelled.save_to_disk(str(tmp_path / "test"))
    cfg = short(text_config(tiny_bert, tmp_path / "train", tmp_path / "run"))
    cfg["data"]["test"] = str(tmp_path / "test")
    err = error(capsys, ["train", str(write(tmp_path / "c.yaml", cfg))])
    assert err.startswith("tlhub: error: data.test")
    assert err.endswith(
        "row 1: no label (-1: an unlabelled row, as in GLUE's test splits) in column 'label' of 2 classes; "
        "use a labelled split or drop such rows\n"
    )


def test_the_hub_test_split_name_is_a_setting() -> None:
    cfg = config_from_dict({"modality": "text", "model": {"name_or_path": "m"}, "data": {"train": "glue", "test_split": "validation_mismatched"},
                            "training": {"output_dir": "o"}})  # fmt: skip
    assert cfg.data.test_split == "validation_mismatched"
    with pytest.raises(ConfigError, match="data.test_splt: unknown key"):
        config_from_dict({"modality": "text", "model": {"name_or_path": "m"}, "data": {"train": "t", "test_splt": "x"}, "training": {"output_dir": "o"}})


# --------------------------------------------------------------------------- 6. sharded saving


def test_fsdp_refuses_what_it_could_not_save_whole(tiny_bert, toy_csv, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "feature_extraction")
    err = error(capsys, ["train", str(write(tmp_path / "c.yaml", cfg))])
    assert err.startswith("tlhub: error: strategy.name: ") and "FSDP" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the model card (issue 13)


def test_every_run_has_a_model_card_whose_metrics_are_the_results(tiny_bert, toy_csv, tmp_path) -> None:
    from huggingface_hub import ModelCard

    out = tmp_path / "run"
    cfg = short(text_config(tiny_bert, toy_csv, out, "lora"))
    cfg["data"]["test"] = str(toy_csv)
    assert main(["train", str(write(tmp_path / "c.yaml", cfg))]) == 0
    card = ModelCard.load(out / "README.md")
    results = json.loads((out / "all_results.json").read_text())
    assert card.data.library_name == "peft" and card.data.base_model == str(tiny_bert)
    assert card.data.pipeline_tag == "text-classification" and "strategy-lora" in card.data.tags
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values["eval_accuracy"] == results["eval_accuracy"] and values["test_f1"] == results["test_f1"]
    assert "| eval_accuracy |" in card.text and "tlhub train config.yaml" in card.text


# --------------------------------------------------------------------------- a diverging loss, a folder in use (issue 27)


def test_a_diverging_loss_stops_the_run_saves_nothing_and_keeps_the_last_checkpoint(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    data = write_rows(tmp_path / "toy.csv", toy_sentiment_rows(120))
    cfg = text_config(tiny_bert, data, tmp_path / "run", training={"learning_rate": 1e6, "max_steps": 8, "save_strategy": "steps",
                                                                    "save_steps": 1, "logging_steps": 1, "adam_epsilon": 1e-30})  # fmt: skip
    err = one_line_error(capsys, ["train", str(write(tmp_path / "c.yaml", cfg))])
    assert err.startswith("tlhub: error: training.learning_rate: the training loss became nan at step 2 (learning rate ")
    assert "the last checkpoint, checkpoint-1, is kept" in err and "Try a lower training.learning_rate" in err
    out = tmp_path / "run"
    assert not (out / "all_results.json").exists() and not (out / "model.safetensors").exists()
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()


def start(cfg: dict, workdir: Path, name: str, **env: str) -> subprocess.Popen:
    config = write(workdir / f"{name}.yaml", cfg)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, PROBE, "train", str(config)], cwd=workdir, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_a_folder_in_use_is_refused_whatever_the_overwrite_flag_and_a_killed_owners_lock_is_taken_over(
    tmp_path: Path, tiny_bert: Path, capsys
) -> None:
    data = write_rows(tmp_path / "toy.csv", toy_sentiment_rows(120))
    out, probe = tmp_path / "run", tmp_path / "probe"
    first = text_config(tiny_bert, data, out, training={"max_steps": 4, "save_strategy": "steps", "save_steps": 2})
    owner = start(first, tmp_path, "first", TLHUB_PROBE_DIR=str(probe), TLHUB_PROBE_STALL_AT="2")  # holds the folder, asleep
    deadline = time.monotonic() + 180
    while not (probe / "saved-2").exists():
        assert owner.poll() is None and time.monotonic() < deadline, owner.communicate()[1][-2000:]
        time.sleep(0.2)
    # another process, another config, with the overwrite flag: refused, and nothing of the live run's touched
    second = write(tmp_path / "second.yaml", with_sections(text_config(tiny_bert, data, out, "lora"), {"training": {"overwrite_output_dir": True}}))
    err = one_line_error(capsys, ["train", str(second)])
    assert err.startswith(f"tlhub: error: training.output_dir: {out} is in use by another run (pid {owner.pid} on ")
    assert err.strip().endswith("wait for it to finish, or give this run another output_dir")
    assert (out / "checkpoint-2" / "model.safetensors").is_file()

    os.kill(owner.pid, signal.SIGKILL)  # the owner dies holding the lock: the kernel releases it
    owner.communicate(timeout=30)
    assert main(["train", str(second)]) == 0  # the lock file it left is taken over
    assert json.loads((out / "tlhub_run.json").read_text())["strategy"] == "lora"
    assert not (out.parent / ".run.tlhub-lock").exists()  # released at the end
