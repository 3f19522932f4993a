"""Faults of the machine lose nothing (issue 36): a write that fails, a run stopped by a signal.

Failed writes are made real: `tlhub train` runs in a subprocess under a file-size limit
(``RLIMIT_FSIZE``; SIGXFSZ ignored, as Python ignores it, so the write fails with EFBIG
instead of killing the process), which fails the same calls a full disk fails. Tests run as
root here, where a read-only folder (chmod) does not stop writes. Signals are sent to real
`tlhub train` processes, single and under `accelerate launch` with two CPU processes;
tests/launch_probe.py holds a run at the end of a known step until its signal arrived.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import text_config
from tests.test_resume import assert_same_results
from tests.test_distributed import LAUNCH, free_port, unique_rows
from tests.tiny_models import write_rows
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.errors import DataError, WriteError
from tlhub.inference import load_run, predict
from tlhub.io import atomic_save_dir, atomic_write_json, guarded_write
from tlhub.preemption import REPEAT_S
from tlhub.io import previous_run_dir
from tlhub.rundir import complete_checkpoint, resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PROBE = str(ROOT / "tests" / "launch_probe.py")
TEXTS = ["a good film", "a bad film", "not good at all"]
# Timings, and train_loss: the mean loss of the steps *this* process ran (test_resume.py)


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def limited(max_bytes: int):  # noqa: ANN201 - a preexec_fn
    """A subprocess whose files cannot grow past `max_bytes` (a full disk, as far as a write can tell)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return limit


def train_limited(config: Path, max_bytes: int, *overrides: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlhub", "--quiet", "train", str(config), *overrides], cwd=config.parent, env=env(**extra_env),
        capture_output=True, text=True, timeout=240, preexec_fn=limited(max_bytes),
    )  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder (not checkpoints), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_one_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("tlhub: error: cannot write ") and "Traceback" not in err
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture
def finished(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> tuple[dict, Path, dict[str, bytes], list[dict]]:
    """A finished run in tmp/run, its files and its predictions."""
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", strategy="full")
    cfg["training"].update(max_steps=4, per_device_train_batch_size=8, eval_strategy="no")
    assert main(["train", str(write_config(tmp_path / "run.yaml", cfg))]) == 0
    out = tmp_path / "run"
    return cfg, out, snapshot(out), predict(load_run(out), TEXTS)


def assert_kept(out: Path, files: dict[str, bytes], predictions: list[dict]) -> None:
    """The folder holds the finished run it held, byte for byte, and it predicts as before."""
    assert snapshot(out) == files
    assert not [p.name for p in out.iterdir() if p.name.startswith((".", "checkpoint-"))]
    assert not previous_run_dir(out).exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tlhub")]
    assert predict(load_run(out), TEXTS) == predictions


# --------------------------------------------------------------------------- failed writes


def test_failed_final_save_with_overwrite_keeps_the_previous_run(tmp_path: Path, finished: tuple) -> None:
    """The issue's case: a finished run, the same folder again with overwrite_output_dir, and the
    disk full in the final save. One line, exit 2, and the folder holds the previous run."""
    cfg, out, files, predictions = finished
    cfg["training"].update(overwrite_output_dir=True, learning_rate=2e-3)
    proc = train_limited(write_config(tmp_path / "again.yaml", cfg), 20_000)  # the model (89 KB) does not fit
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_line(proc.stderr, f"the trained model to {out}", "File too large [EFBIG]", f"{out} holds the previous run again")
    assert_kept(out, files, predictions)


def test_failed_checkpoint_is_dropped_and_the_previous_run_kept(tmp_path: Path, finished: tuple) -> None:
    """A checkpoint write that fails half-way (its model fits, its optimizer state does not):
    removed, so nothing resumes from it, and the finished run it was replacing is back."""
    cfg, out, files, predictions = finished
    cfg["training"].update(overwrite_output_dir=True, save_strategy="steps", save_steps=2)
    proc = train_limited(write_config(tmp_path / "again.yaml", cfg), 120_000)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_line(proc.stderr, f"{Path(cfg['training']['output_dir']) / 'checkpoint-2'}", "File too large [EFBIG]")
    assert_kept(out, files, predictions)


def test_failed_cache_write_stores_no_entry(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    cache = tmp_path / "cache"
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", strategy="feature_extraction")
    cfg["training"].update(max_steps=2)
    proc = train_limited(write_config(tmp_path / "c.yaml", cfg), 12_000, TLHUB_CACHE=str(cache))  # features: 23 KB
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_line(proc.stderr, str(cache), "File too large [EFBIG]", "the feature cache", "stores no part of the entry")
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_write_failures_are_recognised_whatever_raised_them(tmp_path: Path) -> None:
    """OSError, safetensors' error and torch.save's zip writer error all name the path."""
    import errno

    import torch
    from safetensors import SafetensorError

    def fail(exc: Exception):  # noqa: ANN202
        def save(_: Path) -> None:
            raise exc

        return save

    for exc, reason in [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device [ENOSPC]"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system [EROFS]"),
        (OSError(errno.EACCES, "Permission denied"), "Permission denied [EACCES]"),
        (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"), "File too large [EFBIG]"),
    ]:
        with pytest.raises(WriteError) as info:
            atomic_save_dir(tmp_path / "entry", fail(exc))
        assert str(info.value).startswith(f"cannot write {tmp_path / 'entry'} ({reason}")
        assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left
    with pytest.raises(WriteError, match=r"cannot write .*x\.json \(Read-only"):
        with guarded_write(tmp_path / "x.json"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(ValueError):  # not a write failure: left as it is
        with guarded_write(tmp_path):
            raise ValueError("a bug")
    try:
        torch.save({"a": torch.zeros(4)}, tmp_path)  # a folder: the zip writer's own RuntimeError
    except RuntimeError as exc:
        from tlhub.io import write_failure

        if "inline_container" in str(exc):
            assert write_failure(exc, tmp_path) is not None
    atomic_write_json(tmp_path / "ok.json", {"a": 1})
    assert json.loads((tmp_path / "ok.json").read_text()) == {"a": 1}


# --------------------------------------------------------------------------- signals


def signal_config(tiny_bert: Path, toy_csv: Path, out: Path) -> dict:
    cfg = text_config(tiny_bert, toy_csv, out, strategy="full")
    cfg["training"].update(max_steps=6, per_device_train_batch_size=8, eval_strategy="no", logging_steps=1)
    return cfg


def start_probed(config: Path, probe: Path, *overrides: str, sigint: signal.Handlers = signal.SIG_DFL, **extra_env: str) -> subprocess.Popen:
    """The run in its own process, with SIGINT as a terminal gives it (Ctrl-C raises KeyboardInterrupt)
    whatever this process inherited: a shell starts a background job, such as a suite run with
    `&`, with SIGINT ignored. `sigint=signal.SIG_IGN` starts it as such a job."""
    return subprocess.Popen(
        [sys.executable, PROBE, "train", str(config), *overrides], cwd=config.parent,
        env=env(TLHUB_PROBE_DIR=str(probe), **extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} never came: {proc.communicate()[1][-3000:]}")
        time.sleep(0.1)


def test_sigterm_saves_stops_and_resumes_to_the_same_results(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    stop_at = 3
    cfg = signal_config(tiny_bert, toy_csv, tmp_path / "run")
    config = write_config(tmp_path / "run.yaml", cfg)
    probe = tmp_path / "probe"
    proc = start_probed(config, probe, TLHUB_PROBE_SIGNAL_AT=str(stop_at))
    wait_for(probe / f"step-{stop_at}.rank0", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    out = tmp_path / "run"
    assert err.strip().splitlines() == [
        f"tlhub: stopped by SIGTERM at step {stop_at} ({out / f'checkpoint-{stop_at}'} saved); "
        f"resume with: tlhub train {config} training.resume_from_checkpoint=true"
    ]
    assert not (out / "all_results.json").exists()  # not written as if finished
    checkpoint = out / f"checkpoint-{stop_at}"
    assert complete_checkpoint(checkpoint)
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    assert [p.name for p in out.glob("checkpoint-*")] == [checkpoint.name]

    assert main(["train", str(config), "training.resume_from_checkpoint=true"]) == 0  # the printed command
    straight_cfg = signal_config(tiny_bert, toy_csv, tmp_path / "straight")
    assert main(["train", str(write_config(tmp_path / "straight.yaml", straight_cfg))]) == 0
    assert_same_results(tmp_path / "straight", out, steps=6, first=stop_at + 1)


def test_a_second_sigint_during_the_save_keeps_the_previous_checkpoint(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """Ctrl-C saves and stops; Ctrl-C again (after REPEAT_S) while the checkpoint is half-written
    stops at once: that checkpoint is dropped, the one before it resumes."""
    cfg = signal_config(tiny_bert, toy_csv, tmp_path / "run")
    cfg["training"].update(save_strategy="steps", save_steps=2)
    config = write_config(tmp_path / "run.yaml", cfg)
    probe = tmp_path / "probe"
    proc = start_probed(config, probe, TLHUB_PROBE_SIGNAL_AT="3", TLHUB_PROBE_STALL_IN_CHECKPOINT="3")
    wait_for(probe / "step-3.rank0", proc)
    proc.send_signal(signal.SIGINT)
    wait_for(probe / "checkpoint-3", proc)  # its model written, the rest not yet
    time.sleep(REPEAT_S + 0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "tlhub: interrupted"
    out = tmp_path / "run"
    assert not (out / "checkpoint-3").exists()
    assert resume_checkpoint(config_from_dict({**cfg, "training": {**cfg["training"], "resume_from_checkpoint": True}})) == str(out / "checkpoint-2")


def test_a_repeated_sigint_that_the_job_ignores_leaves_the_stop_as_asked(tmp_path: Path, tiny_bert: Path, toy_csv: Path) -> None:
    """A background job (SIGINT inherited as ignored) sent SIGINT saves and stops; sent it again
    during the save, it ignores the repeat, as it would without tlhub: the checkpoint is
    finished and the run ends stopped (130), not as a run that trained to its end."""
    cfg = signal_config(tiny_bert, toy_csv, tmp_path / "run")
    config = write_config(tmp_path / "run.yaml", cfg)
    probe = tmp_path / "probe"
    proc = start_probed(config, probe, sigint=signal.SIG_IGN, TLHUB_PROBE_SIGNAL_AT="3", TLHUB_PROBE_STALL_IN_CHECKPOINT="3", TLHUB_PROBE_STALL_S="8")
    wait_for(probe / "step-3.rank0", proc)
    proc.send_signal(signal.SIGINT)
    wait_for(probe / "checkpoint-3", proc)
    time.sleep(REPEAT_S + 0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("tlhub: stopped by SIGINT at step 3 ")
    assert complete_checkpoint(tmp_path / "run" / "checkpoint-3")


def test_sigint_saves_and_stops_with_130_and_a_replaced_run_waits(tmp_path: Path, finished: tuple) -> None:
    """A run that replaces a finished one (overwrite) and is stopped: its checkpoint stays for the
    resume, and the finished run waits aside until the resumed run finishes."""
    cfg, out, files, _ = finished
    cfg["training"].update(overwrite_output_dir=True, max_steps=6, logging_steps=1)
    config = write_config(tmp_path / "again.yaml", cfg)
    probe = tmp_path / "probe"
    proc = start_probed(config, probe, TLHUB_PROBE_SIGNAL_AT="2")
    wait_for(probe / "step-2.rank0", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    line = err.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("tlhub: stopped by SIGINT at step 2 ")
    assert f"the finished run it replaces waits in {previous_run_dir(out)}" in line[0]
    assert snapshot(previous_run_dir(out)) == files and complete_checkpoint(out / "checkpoint-2")
    with pytest.raises(DataError, match=f"not a finished tlhub run .*waits in {previous_run_dir(out)}"):
        load_run(out)
    assert main(["train", str(config), "training.resume_from_checkpoint=true"]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    assert not previous_run_dir(out).exists()


def test_save_on_signal_is_a_checked_tlhub_key(tmp_path: Path, tiny_bert: Path, toy_csv: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = signal_config(tiny_bert, toy_csv, tmp_path / "run")
    cfg["training"]["save_on_signal"] = False
    assert config_from_dict(cfg).training_args.save_on_signal is False
    from tlhub.trainer import training_arguments

    assert training_arguments(config_from_dict(cfg)).save_on_signal is False  # a field of tlhub's TrainingConfig
    cfg["training"]["save_on_signal"] = "maybe"
    assert main(["train", str(write_config(tmp_path / "bad.yaml", cfg))]) == 2
    assert capsys.readouterr().err == "tlhub: error: training.save_on_signal: expected true or false, got 'maybe'\n"


def test_sigterm_under_accelerate_launch_stops_every_rank_at_one_step(tmp_path: Path, tiny_bert: Path) -> None:
    """Two CPU processes; the launcher gets SIGTERM and forwards it. Only rank 0 waits for it at
    step 2, so rank 1 reaches the step's end first and learns of the signal through the
    all-reduce: both stop at step 2 with one checkpoint, from which a launched resume ends as a
    launched run never stopped."""
    data = write_rows(tmp_path / "train.csv", unique_rows(64))
    cfg = text_config(tiny_bert, data, tmp_path / "run", strategy="full")
    cfg["training"].update(use_cpu=True, max_steps=4, per_device_train_batch_size=4, logging_steps=1, learning_rate=0.01, eval_strategy="no")
    config = write_config(tmp_path / "run.yaml", cfg)
    probe = tmp_path / "probe"

    def launch(*overrides: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*LAUNCH, "--main_process_port", str(free_port()), PROBE, "train", str(config), *overrides], cwd=tmp_path,
            env=env(TLHUB_PROBE_DIR=str(probe), CUDA_VISIBLE_DEVICES="", **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip

    proc = launch(TLHUB_PROBE_SIGNAL_AT="2", TLHUB_PROBE_SIGNAL_RANKS="0")
    wait_for(probe / "step-2.rank0", proc)
    proc.send_signal(signal.SIGTERM)  # the launcher; torch's elastic agent forwards it to each worker
    _, err = proc.communicate(timeout=120)
    out = tmp_path / "run"
    stopped = [line for line in err.splitlines() if line.startswith("tlhub: ")]
    assert stopped == [f"tlhub: stopped by SIGTERM at step 2 ({out / 'checkpoint-2'} saved); "
                       "resume with: the same command with training.resume_from_checkpoint=true"], err[-3000:]  # fmt: skip
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"] and complete_checkpoint(out / "checkpoint-2")
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in (out / "checkpoint-2").iterdir()}
    assert not (out / "all_results.json").exists()

    resumed = launch("training.resume_from_checkpoint=true")
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-3000:]
    straight = launch(f"training.output_dir={tmp_path / 'straight'}")  # never stopped
    _, err = straight.communicate(timeout=240)
    assert straight.returncode == 0, err[-3000:]
    assert_same_results(tmp_path / "straight", out, steps=4, first=3)


# --------------------------------------------------------------------------- processes racing (issue 27)


def test_processes_racing_to_write_one_folder_never_fail(tmp_path: Path) -> None:
    """Two runs that store the same cached features (or convert the same weights) at once: the
    rename onto a folder another process put there meanwhile must neither fail nor mix them."""
    from tlhub.io import atomic_save_dir

    target = tmp_path / "entry"

    def ours(tmp: Path) -> None:
        (tmp / "who").write_text("ours")
        if not target.exists():  # another process finishes first, while we are writing
            atomic_save_dir(target, lambda d: (d / "who").write_text("theirs"))

    atomic_save_dir(target, ours, replace=False)  # content-addressed: theirs is as good; keep it
    assert (target / "who").read_text() == "theirs"
    atomic_save_dir(target, ours)  # a replacing write wins
    assert (target / "who").read_text() == "ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no temporary or old folders left
