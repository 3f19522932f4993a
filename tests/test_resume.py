"""Resume after failure, atomic outputs, early stopping and best-model selection.

The resume test kills a real `tlhub train` process with SIGKILL right after its first
checkpoint (tests/launch_probe.py stalls there and says so), resumes it with
``training.resume_from_checkpoint: auto`` and compares it with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import NUMBERS_REL, text_config
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.errors import ConfigError
from tlhub.trainer import training_arguments
from tlhub.rundir import last_complete_checkpoint, resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PROBE = str(ROOT / "tests" / "launch_probe.py")
STEPS, SAVE_EVERY = 6, 2
# train_runtime and the *_per_second speeds are timings; train_loss is the mean loss of the
# steps run by *this* process (transformers' definition), so a resumed run reports the
# mean of its last steps only. Everything else must match.
TIMINGS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "eval_runtime",
           "eval_samples_per_second", "eval_steps_per_second", "train_loss")  # fmt: skip


def resume_config(tiny_bert: Path, toy_csv: Path, out: Path) -> dict:
    cfg = text_config(tiny_bert, toy_csv, out, strategy="full")
    cfg["training"].update(
        max_steps=STEPS, save_strategy="steps", save_steps=SAVE_EVERY, eval_strategy="no",
        per_device_train_batch_size=8, resume_from_checkpoint="auto", logging_steps=1,
    )  # fmt: skip
    return cfg


def start(cfg: dict, workdir: Path, **env: str) -> subprocess.Popen:
    config = workdir / f"{Path(cfg['training']['output_dir']).name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen(
        [sys.executable, PROBE, "train", str(config)], cwd=workdir, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]


def assert_same_results(straight: Path, resumed: Path, steps: int, first: int) -> tuple[dict, dict, dict, dict]:
    """The resumed run ends as the uninterrupted one: results, and the loss of every step after the
    stop. Returns both runs' results and per-step losses (uninterrupted first)."""
    a = json.loads((straight / "all_results.json").read_text())
    b = json.loads((resumed / "all_results.json").read_text())
    assert a.keys() == b.keys()
    for key in a.keys() - set(TIMINGS):
        if isinstance(a[key], float):
            assert b[key] == pytest.approx(a[key], rel=NUMBERS_REL, abs=1e-5), key
        else:
            assert b[key] == a[key], key
    state_a = json.loads((straight / "trainer_state.json").read_text())
    state_b = json.loads((resumed / "trainer_state.json").read_text())
    assert state_a["global_step"] == state_b["global_step"] == steps
    losses_a = {e["step"]: e["loss"] for e in state_a["log_history"] if "loss" in e}
    losses_b = {e["step"]: e["loss"] for e in state_b["log_history"] if "loss" in e}
    assert set(losses_b) == set(range(1, steps + 1))
    for step in range(first, steps + 1):
        assert losses_b[step] == pytest.approx(losses_a[step], rel=NUMBERS_REL), step
    return a, b, losses_a, losses_b

def test_sigkill_after_first_checkpoint_then_resume_matches_uninterrupted(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    straight_cfg = resume_config(tiny_bert, toy_csv, tmp_path / "straight")
    killed_cfg = resume_config(tiny_bert, toy_csv, tmp_path / "killed")
    probe = tmp_path / "probe"

    straight = start(straight_cfg, tmp_path)
    killed = start(killed_cfg, tmp_path, TLHUB_PROBE_DIR=str(probe), TLHUB_PROBE_STALL_AT=str(SAVE_EVERY))
    deadline = time.monotonic() + 180
    while not (probe / f"saved-{SAVE_EVERY}").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    finish(straight)

    out = tmp_path / "killed"
    assert not (out / "all_results.json").exists()  # a killed run does not look finished
    assert last_complete_checkpoint(out) == str(out / f"checkpoint-{SAVE_EVERY}")
    # A checkpoint the kill interrupted mid-write: weights half there, no trainer_state.json.
    broken = out / f"checkpoint-{2 * SAVE_EVERY}"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\0" * 100)
    assert last_complete_checkpoint(out) == str(out / f"checkpoint-{SAVE_EVERY}")
    assert resume_checkpoint(config_from_dict(killed_cfg)) == str(out / f"checkpoint-{SAVE_EVERY}")

    resumed = start(killed_cfg, tmp_path)  # the same command again
    finish(resumed)

    a, b, losses_a, losses_b = assert_same_results(tmp_path / "straight", out, STEPS, SAVE_EVERY + 1)
    # And the second process really resumed: it trained only the steps after the checkpoint
    # (its train_loss is their mean), while the uninterrupted run's covers all steps.
    after = [losses_b[step] for step in range(SAVE_EVERY + 1, STEPS + 1)]
    assert b["train_loss"] == pytest.approx(sum(after) / len(after), rel=1e-3)
    assert a["train_loss"] == pytest.approx(sum(losses_a.values()) / STEPS, rel=1e-3)


def _kill_at(cfg: dict, workdir: Path, marker: str, **env: str) -> None:
    """Start `tlhub train`, wait for the probe's `marker` file, SIGKILL it."""
    probe = workdir / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    proc = start(cfg, workdir, TLHUB_PROBE_DIR=str(probe), **env)
    deadline = time.monotonic() + 180
    while not (probe / marker).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def test_dann_killed_after_a_checkpoint_resumes_with_its_domain_classifier(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """The domain classifier is in the checkpoint, so the resumed run restores it (and its
    optimizer state) instead of starting it again at random."""
    target = write_rows(tmp_path / "target.csv", [{"review": r["text"]} for r in toy_sentiment_rows(40, seed=3)])
    cfg = resume_config(tiny_bert, toy_csv, tmp_path / "run")
    cfg["domain_adaptation"] = {"target": str(target), "text_column": "review", "method": "dann"}
    _kill_at(cfg, tmp_path, f"saved-{SAVE_EVERY}", TLHUB_PROBE_STALL_AT=str(SAVE_EVERY))
    out = tmp_path / "run"
    from safetensors.torch import load_file

    saved = load_file(str(out / f"checkpoint-{SAVE_EVERY}" / "model.safetensors"))
    classifier = {k: v for k, v in saved.items() if k.startswith("domain_classifier.")}
    assert classifier
    finish(start(cfg, tmp_path))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS and (out / "all_results.json").is_file()
    later = load_file(str(out / f"checkpoint-{STEPS}" / "model.safetensors"))
    assert all(later[k].shape == v.shape for k, v in classifier.items())


def test_killed_during_the_final_save_never_loads_and_resumes(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """SIGKILL after the model files are renamed into place, before all_results.json: the
    folder does not load as a run, and the same command finishes it."""
    from tlhub.errors import DataError
    from tlhub.pipeline import load_run

    cfg = resume_config(tiny_bert, toy_csv, tmp_path / "run")
    _kill_at(cfg, tmp_path, "final-save", TLHUB_PROBE_STALL_IN_SAVE="1")
    out = tmp_path / "run"
    assert (out / "model.safetensors").is_file() and not (out / "all_results.json").exists()
    with pytest.raises(DataError, match="not a finished tlhub run"):
        load_run(out)
    finish(start(cfg, tmp_path))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == STEPS
    assert load_run(out).model is not None


def test_crash_after_the_last_checkpoint_resumes_to_the_same_results(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """Killed after training but before all_results.json: the rerun trains no more steps."""
    cfg = resume_config(tiny_bert, toy_csv, tmp_path / "run")
    cfg["training"].update(max_steps=4)
    config = _write(tmp_path / "c.yaml", cfg)
    assert main(["train", str(config)]) == 0
    first = json.loads((tmp_path / "run" / "all_results.json").read_text())
    (tmp_path / "run" / "all_results.json").unlink()
    assert main(["train", str(config)]) == 0
    again = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 4
    assert again["eval_loss"] == pytest.approx(first["eval_loss"], rel=NUMBERS_REL / 10)
    assert again["eval_accuracy"] == first["eval_accuracy"]
    assert again.keys() == first.keys()
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=NUMBERS_REL)  # from the checkpoint's log


def test_resume_settings(tmp_path: Path, tiny_bert: Path, toy_csv: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = resume_config(tiny_bert, toy_csv, tmp_path / "fresh")
    assert resume_checkpoint(config_from_dict(cfg)) is None  # auto with nothing to resume: a fresh start
    cfg["training"]["resume_from_checkpoint"] = True
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg))]) == 2
    assert capsys.readouterr().err == (
        f"tlhub: error: training.resume_from_checkpoint: no complete checkpoint in {tmp_path / 'fresh'}; "
        "use auto to start fresh when there is none\n"
    )
    cfg["training"]["resume_from_checkpoint"] = str(tmp_path / "nowhere")
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg))]) == 2
    assert capsys.readouterr().err == (
        f"tlhub: error: training.resume_from_checkpoint: {tmp_path / 'nowhere'} is not a complete checkpoint folder "
        "(no trainer_state.json and weights); pass a checkpoint-N folder or auto\n"
    )


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_stops_and_keeps_the_best_model(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """A learning rate that makes no progress: training stops after `patience` flat evaluations."""
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", strategy="full")
    cfg["training"].update(
        learning_rate=1e-9, num_train_epochs=20, eval_strategy="epoch", early_stopping_patience=2,
        per_device_train_batch_size=32,
    )  # fmt: skip
    del cfg["training"]["save_strategy"]  # tlhub saves where it evaluates
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg))]) == 0
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_accuracy" in e]
    # Epoch 1 sets the best; epochs 2 and 3 do not beat it; training stops at epoch 3 of 20.
    assert len(evals) - 1 == 3 and state["epoch"] == pytest.approx(3.0)
    assert state["best_metric"] == max(e["eval_accuracy"] for e in evals[:-1])
    assert state["best_global_step"] is not None

    # Killed before all_results.json was written: resuming does not train past the stop.
    first = json.loads((tmp_path / "run" / "all_results.json").read_text())
    (tmp_path / "run" / "all_results.json").unlink()
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg)), "training.resume_from_checkpoint=auto"]) == 0
    again = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == state["global_step"]
    assert again["epoch"] == pytest.approx(3.0) and again["eval_accuracy"] == first["eval_accuracy"]


def test_early_stopping_settings() -> None:
    base = {"modality": "text", "model": {"name_or_path": "m"}, "data": {"train": "t.csv"}}
    cfg = config_from_dict({**base, "training": {"output_dir": "o", "early_stopping_patience": 2, "eval_strategy": "steps", "eval_steps": 5}})
    args = training_arguments(cfg)
    assert (args.save_strategy, args.save_steps, args.load_best_model_at_end) == ("steps", 5, True)
    assert args.metric_for_best_model == "accuracy" and args.greater_is_better is True
    # refused when the config is read, before anything loads
    with pytest.raises(ConfigError, match=r"^training.early_stopping_patience: restoring the best model needs checkpoints"):
        config_from_dict({**base, "training": {"output_dir": "o", "early_stopping_patience": 2, "save_strategy": "no"}})
    with pytest.raises(ConfigError, match=r"^training.early_stopping_patience: early stopping needs evaluations"):
        config_from_dict({**base, "training": {"output_dir": "o", "early_stopping_patience": 2, "eval_strategy": "no"}})


# --------------------------------------------------------------------------- atomic outputs


def test_outputs_are_written_whole_and_renamed(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """No temporaries are left, and a second run into the same folder replaces files whole."""
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", strategy="lora")
    cfg["training"].update(max_steps=2)
    cfg["strategy"]["lora"] = {"merge": True}
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg))]) == 0
    out = tmp_path / "run"
    names = {p.name for p in out.iterdir()}
    assert {"all_results.json", "config.yaml", "tlhub_run.json", "trainer_state.json", "adapter_model.safetensors", "merged"} <= names
    assert not [n for n in names if n.startswith(".")]
    first = json.loads((out / "all_results.json").read_text())
    cfg["training"].update(max_steps=3, overwrite_output_dir=True)  # another config: replaces the run
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg))]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert json.loads((out / "all_results.json").read_text()).keys() == first.keys()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "merged" / "model.safetensors").is_file()
