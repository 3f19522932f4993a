"""Faults of the machine (issue 36): failed writes and signals, through the real `tlhub` command.

    nice -n 10 python scripts/bench_faults.py --json docs/bench_faults.json

Each fault is made real on a tiny BERT (tests/tiny_models.py), 40 steps of 8 rows with a
periodic checkpoint every 10 steps, and its outcome recorded: the exit code, the lines on
stderr, what the run folder keeps (a finished run replaced with ``overwrite_output_dir``
must come back byte for byte and predict as before), and, where there is something to
resume, the step the same command resumes from and whether its results equal an
uninterrupted run's (eval loss and accuracy, and the loss of every step after the resume).

- a full disk (ENOSPC) and a read-only filesystem (EROFS): a small tmpfs mounted in a
  private mount namespace (``unshare -m``; needs root, else these rows are skipped);
- a file over the size limit (EFBIG): ``RLIMIT_FSIZE`` in the child;
- SIGTERM and SIGINT at step 25 (tests/launch_probe.py holds the run at the end of that step
  until the signal came), with ``training.save_on_signal`` true (the default) and false (the
  old behaviour: the process dies, the last periodic checkpoint is step 20);
- a second SIGTERM while the stop's checkpoint is half-written (the probe stalls between its
  model and the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tiny_models import make_tiny_bert, toy_sentiment_rows, write_rows  # noqa: E402

STEPS, SAVE_EVERY, STOP_AT = 40, 10, 25
INPUTS = ["the food was excellent", "terrible, never again", "it was fine", "great service"]
PROBE = str(ROOT / "tests" / "launch_probe.py")


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
            **extra}  # fmt: skip


def config(work: Path, model: Path, data: Path, out: Path, name: str | None = None, **training) -> Path:
    cfg = {
        "modality": "text",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "validation_split": 0.25},
        "strategy": {"name": "full"},
        "training": {"output_dir": str(out), "use_cpu": True, "disable_tqdm": True, "seed": 0, "learning_rate": 1e-3,
                     "per_device_train_batch_size": 8, "max_steps": STEPS, "save_strategy": "steps", "save_steps": SAVE_EVERY,
                     "eval_strategy": "no", "logging_steps": 1, **training},
    }  # fmt: skip
    path = work / f"{name or out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tlhub(*argv: str, cwd: Path, limit: int | None = None, **extra: str) -> subprocess.CompletedProcess:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, "-m", "tlhub", "--quiet", *argv], cwd=cwd, env=env(**extra), capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec if limit else None)  # fmt: skip


def predictions(run: Path) -> list[str] | None:
    proc = tlhub("predict", str(run), *INPUTS, cwd=run.parent)
    return proc.stdout.splitlines() if proc.returncode == 0 else None


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def losses(run: Path) -> dict[int, float]:
    state = json.loads((run / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def same_results(run: Path, straight: Path, after: int) -> bool:
    a, b = json.loads((straight / "all_results.json").read_text()), json.loads((run / "all_results.json").read_text())
    close = abs(a["eval_loss"] - b["eval_loss"]) <= 1e-4 * abs(a["eval_loss"]) and a["eval_accuracy"] == b["eval_accuracy"]
    la, lb = losses(straight), losses(run)
    return close and all(abs(la[s] - lb[s]) <= 1e-4 * abs(la[s]) for s in range(after + 1, STEPS + 1))


def resumed_from(run: Path) -> int:
    """The step the last command resumed from: its train_loss is the mean of the steps it ran."""
    lb, result = losses(run), json.loads((run / "all_results.json").read_text())
    return min(range(STEPS), key=lambda k: abs(sum(lb[s] for s in range(k + 1, STEPS + 1)) / (STEPS - k) - result["train_loss"]))


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


# --------------------------------------------------------------------------- failed writes


def write_faults(work: Path, model: Path, data: Path) -> list[dict]:
    rows: list[dict] = []
    finished = work / "finished"
    cfg = config(work, model, data, finished, save_strategy="no")
    assert tlhub("train", str(cfg), cwd=work).returncode == 0
    before, said = files(finished), predictions(finished)

    def record(fault: str, proc: subprocess.CompletedProcess | None, folder: Path, expect_previous: bool, **more) -> None:
        if proc is None:
            rows.append({"fault": fault, "skipped": "needs root and unshare (a private tmpfs)"})
            return
        lines = stderr_lines(proc.stderr)
        kept = files(folder) == before and predictions(folder) == said if expect_previous else None
        rows.append({"fault": fault, "exit": proc.returncode, "stderr_lines": len(lines), "traceback": "Traceback" in proc.stderr,
                     "message": lines[-1] if lines else "", "previous_run_kept_byte_for_byte_and_predicts_the_same": kept,
                     "leftovers": sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")), **more})  # fmt: skip

    def replacing(name: str, **training) -> tuple[Path, Path]:
        out = work / name
        shutil.copytree(finished, out)
        return out, config(work, model, data, out, overwrite_output_dir=True, learning_rate=2e-3, **training)

    # A file over the size limit in the final save (the case)
    out, cfg = replacing("efbig-final", save_strategy="no")
    record("file too large (EFBIG) in the final save, replacing a finished run", tlhub("train", str(cfg), cwd=work, limit=20_000), out, True)
    # ... in a checkpoint half-way (its model fits, its optimizer state does not)
    out, cfg = replacing("efbig-checkpoint")
    record("file too large (EFBIG) in a checkpoint, replacing a finished run", tlhub("train", str(cfg), cwd=work, limit=120_000), out, True)

    # A full disk in the final save: the folder on a tmpfs the old run fills but for ~60 KB
    size = sum(len(b) for b in before.values()) // 1024 + 60
    keep = work / "enospc-final"
    cfg = config(work, model, data, Path("/MNT/run"), name="enospc-final", overwrite_output_dir=True, learning_rate=2e-3, save_strategy="no")
    proc = _tmpfs_run(size, finished, cfg, keep, work)
    record("disk full (ENOSPC) in the final save, replacing a finished run", proc, keep / "run", True)
    # A read-only filesystem
    keep = work / "erofs"
    cfg = config(work, model, data, Path("/MNT/run"), name="erofs", overwrite_output_dir=True, learning_rate=2e-3, save_strategy="no")
    record("read-only filesystem (EROFS), replacing a finished run", _tmpfs_run(size + 400, finished, cfg, keep, work, ro=True),
           keep / "run", True)  # fmt: skip
    # A full disk at the third checkpoint of a fresh run: the two complete ones resume
    keep = work / "enospc-checkpoint"
    cfg = config(work, model, data, Path("/MNT/run"), name="enospc-checkpoint")
    proc = _tmpfs_run(700, None, cfg, keep, work)
    extra: dict = {}
    if proc is not None:
        run = keep / "run"
        extra["complete_checkpoints_kept"] = sorted(p.name for p in run.glob("checkpoint-*"))
        again = config(work, model, data, run, name="enospc-resume", resume_from_checkpoint=True)
        resumed = tlhub("train", str(again), cwd=work)
        extra.update(resume_exit=resumed.returncode, resumed_from_step=resumed_from(run) if resumed.returncode == 0 else None,
                     same_results_as_uninterrupted=same_results(run, work / "straight", resumed_from(run)) if resumed.returncode == 0 else None)  # fmt: skip
    record("disk full (ENOSPC) in the third checkpoint of a fresh run", proc, keep / "run", False, **extra)

    # The feature cache: an entry larger than the limit
    cache = work / "cache"
    fe = config(work, model, data, work / "fe", save_strategy="no", max_steps=2)
    fe.write_text(fe.read_text().replace("name: full", "name: feature_extraction"))
    proc = tlhub("train", str(fe), cwd=work, limit=12_000, TLHUB_CACHE=str(cache))
    record("file too large (EFBIG) writing a feature-cache entry", proc, work / "fe", False,
           cache_files_left=len([p for p in cache.rglob("*") if p.is_file()]) if cache.exists() else 0)  # fmt: skip
    return rows


def _tmpfs_run(size_kb: int, previous: Path | None, cfg: Path, keep: Path, work: Path, ro: bool = False) -> subprocess.CompletedProcess | None:
    mnt_cfg = cfg.read_text()
    setup = f"cp -a {previous} MNT/run" if previous is not None else "true"
    command = [sys.executable, "-m", "tlhub", "--quiet", "train", str(cfg)]
    # the config names /MNT/run: point it at the mount, whose path is known only inside in_tmpfs
    script_cfg = cfg.with_suffix(".in.yaml")
    script_cfg.write_text(mnt_cfg)
    setup = setup.replace("MNT", "$MNT")
    wrapper = work / f"{cfg.stem}.sh"
    wrapper.write_text(f'MNT="$1"; sed "s#/MNT#$MNT#" {script_cfg} > {cfg}; {setup}\n')
    return in_tmpfs_with(size_kb, wrapper, command, keep, ro)


def in_tmpfs_with(size_kb: int, wrapper: Path, command: list[str], keep: Path, ro: bool) -> subprocess.CompletedProcess | None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    mnt = Path(tempfile.mkdtemp(prefix="tlhub-fs-"))
    return_value = None
    try:
        keep.mkdir(parents=True)
        quoted = " ".join(f"'{c}'" for c in command)
        script = (f"set -e; mount -t tmpfs -o size={size_kb}k tmpfs {mnt}; bash {wrapper} {mnt}; "
                  + (f"mount -o remount,ro {mnt}; " if ro else "")
                  + f"set +e; {quoted} > {keep}.out 2> {keep}.err; echo $? > {keep}.rc; cp -a {mnt}/. {keep}/; umount {mnt}")  # fmt: skip
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script], env=env(), capture_output=True,
                              text=True, cwd=wrapper.parent)  # fmt: skip
        if proc.returncode == 0:
            return_value = subprocess.CompletedProcess(command, int(Path(f"{keep}.rc").read_text()), Path(f"{keep}.out").read_text(),
                                                       Path(f"{keep}.err").read_text())  # fmt: skip
        else:
            print(proc.stderr[-2000:], file=sys.stderr)
    finally:
        mnt.rmdir()
    return return_value


# --------------------------------------------------------------------------- signals


def stop(cfg: Path, work: Path, signum: int, second: bool = False, **probe_env: str) -> tuple[subprocess.Popen, str, float, float | None]:
    """Start `tlhub train`, signal it at the end of step STOP_AT; (process, stderr, seconds from
    the signal to its exit, seconds from the signal to tlhub's line)."""
    probe = work / f"probe-{cfg.stem}"
    proc = subprocess.Popen([sys.executable, PROBE, "--quiet", "train", str(cfg)], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env=env(TLHUB_PROBE_DIR=str(probe), TLHUB_PROBE_SIGNAL_AT=str(STOP_AT), **probe_env))  # fmt: skip
    while not (probe / f"step-{STOP_AT}.rank0").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signum)
    if second:
        while not (probe / f"checkpoint-{STOP_AT}").exists():
            time.sleep(0.05)
        time.sleep(3.5)  # tlhub.preemption.REPEAT_S: a later repeat is a second request
        proc.send_signal(signum)
    lines, said = [], None
    for line in proc.stderr:
        lines.append(line)
        if said is None and line.startswith("tlhub: "):
            said = time.monotonic() - sent
    proc.wait(timeout=300)
    return proc, "".join(lines), time.monotonic() - sent, said


def signals(work: Path, model: Path, data: Path) -> list[dict]:
    rows = []
    cases = [
        ("SIGTERM at step 25, save_on_signal true (the default)", signal.SIGTERM, {}, False, {}),
        ("SIGINT (Ctrl-C) at step 25", signal.SIGINT, {}, False, {}),
        ("SIGTERM at step 25, then SIGTERM again while its checkpoint is half-written", signal.SIGTERM,
         {"TLHUB_PROBE_STALL_IN_CHECKPOINT": str(STOP_AT)}, True, {}),
        ("SIGTERM at step 25, save_on_signal false (as before)", signal.SIGTERM, {}, False, {"save_on_signal": False}),
    ]  # fmt: skip
    for i, (fault, signum, probe_env, second, training) in enumerate(cases):
        out = work / f"signal-{i}"
        cfg = config(work, model, data, out, **training)
        proc, err, seconds, said = stop(cfg, work, signum, second, **probe_env)
        lines = stderr_lines(err)
        row = {"fault": fault, "exit": proc.returncode if proc.returncode >= 0 else 128 - proc.returncode,
               "stderr_lines": len(lines), "message": lines[-1] if lines else "", "seconds_from_signal_to_exit": round(seconds, 2),
               "seconds_from_signal_to_the_line": round(said, 2) if said is not None else None,
               "complete_checkpoints_kept": sorted(p.name for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
               "results_written": (out / "all_results.json").exists()}  # fmt: skip
        again = config(work, model, data, out, name=f"{out.name}-resume", resume_from_checkpoint=True, **training)
        resumed = tlhub("train", str(again), cwd=work)
        row["resume_exit"] = resumed.returncode
        if resumed.returncode == 0:
            start = resumed_from(out)
            row.update(resumed_from_step=start, steps_trained_again=max(0, STOP_AT - start),
                       same_results_as_uninterrupted=same_results(out, work / "straight", start))  # fmt: skip
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    try:
        model = make_tiny_bert(work / "bert")
        data = write_rows(work / "train.csv", toy_sentiment_rows(240))
        straight = tlhub("train", str(config(work, model, data, work / "straight")), cwd=work)
        assert straight.returncode == 0, straight.stderr[-2000:]
        rows = write_faults(work, model, data) + signals(work, model, data)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
