"""Reliability benchmark: bad inputs, reruns into used folders, and SIGKILL at random moments.

    python scripts/bench_reliability.py --kills 20 --json docs/bench_reliability.json

Every fault is tried through the real `tlhub` command (subprocesses, tiny BERT from
tests/tiny_models.py) and its outcome classified:

- bad input (the cases of tests/test_bad_input.py, plus range checks and output_dir
  errors): *ok* when it exits 2 with one `tlhub: error:` line and no traceback, and the
  finished run in the folder is untouched; a *traceback* otherwise;
- reruns into a used folder with another strategy: *ok* when refused (exit 2, folder
  untouched) without `training.overwrite_output_dir`, and when, with it, the folder loads
  as the new strategy's model; a *wrong model* otherwise;
- SIGKILL after a random delay (anywhere from start-up through training, checkpoint
  writing and the final save): the killed folder must either refuse to load or load the
  finished run, and the same command, repeated, must finish at the planned last step
  with the same evaluation loss and predictions as an uninterrupted run; *lost work* when
  it needs more than one rerun or trains from step 0 although a checkpoint was complete,
  *wrong model* when the result differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

STEPS, SAVE_EVERY = 240, 10
INPUTS = ["the food was excellent", "terrible, never again", "it was fine", "great service"]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def tlhub(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlhub.cli", *argv], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)


def config(work: Path, model: Path, data: Path, out: Path, strategy: str = "full", **training) -> Path:
    cfg = {
        "modality": "text",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "validation_split": 0.25},
        "strategy": {"name": strategy},
        "training": {"output_dir": str(out), "use_cpu": True, "disable_tqdm": True, "seed": 0, "learning_rate": 1e-3,
                     "per_device_train_batch_size": 8, "max_steps": STEPS, "save_strategy": "steps", "save_steps": SAVE_EVERY,
                     "eval_strategy": "no", "resume_from_checkpoint": "auto", "logging_steps": 1, **training},
    }  # fmt: skip
    path = work / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def predictions(run: Path) -> tuple[str, ...] | None:
    """What `tlhub predict` answers for the run folder (None: it refuses to load)."""
    proc = tlhub("predict", str(run), *INPUTS, cwd=run.parent)
    if proc.returncode != 0:
        return None
    return tuple(line.split("\t")[0] + f"{float(line.split(chr(9))[1]):.3f}" for line in proc.stdout.splitlines())


def results(run: Path) -> dict:
    return json.loads((run / "all_results.json").read_text())


# --------------------------------------------------------------------------- the faults


def bad_inputs(work: Path, model: Path) -> list[dict]:
    """The bad-input cases of the test suite, each through the command line."""
    from tests.test_bad_input import CASES, Workspace

    ws = Workspace(work / "bad input ü", model)
    assert tlhub("train", str(ws.config), cwd=ws.root).returncode == 0
    before = ws.snapshot()
    extra = {
        "negative epochs": lambda ws: ["train", str(ws.config), "training.num_train_epochs=-1"],
        "zero batch size": lambda ws: ["train", str(ws.config), "training.per_device_train_batch_size=0"],
        "output_dir is a file": lambda ws: ["train", str(ws.config), f"training.output_dir={ws.data}"],
    }
    rows = []
    for name, (setup, _) in {**CASES, **{k: (v, None) for k, v in extra.items()}}.items():
        proc = tlhub(*setup(ws), cwd=ws.root)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("tlhub: error:")]
        clean = proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
        intact = ws.snapshot() == before
        rows.append({"kind": "bad input", "case": name, "outcome": "ok" if clean and intact else ("traceback" if not clean else "damaged"),
                     "message": lines[0] if lines else proc.stderr[-300:]})  # fmt: skip
    return rows


def reruns(work: Path, model: Path, data: Path) -> list[dict]:
    """lora -> full, feature_extraction -> full, full -> lora into one folder."""
    rows = []
    for first, second in (("lora", "full"), ("feature_extraction", "full"), ("full", "lora"), ("lora", "feature_extraction")):
        out = work / f"rerun-{first}-{second}"
        cfg = config(work, model, data, out, first, max_steps=2, save_strategy="no", resume_from_checkpoint=None)
        assert tlhub("train", str(cfg), cwd=work).returncode == 0
        before = sorted(p.name for p in out.iterdir())
        refused = tlhub("train", str(cfg), f"strategy.name={second}", cwd=work)
        untouched = sorted(p.name for p in out.iterdir()) == before
        ok_refusal = refused.returncode == 2 and "overwrite_output_dir" in refused.stderr and untouched
        rows.append({"kind": "rerun", "case": f"{first} then {second}", "outcome": "ok" if ok_refusal else "wrong model",
                     "message": refused.stderr.strip().splitlines()[-1] if refused.stderr.strip() else ""})  # fmt: skip
        replaced = tlhub("train", str(cfg), f"strategy.name={second}", "training.overwrite_output_dir=true", cwd=work)
        info = json.loads((out / "tlhub_run.json").read_text()) if (out / "tlhub_run.json").is_file() else {}
        stale = {"adapter_config.json", "pooled_head.json"} & {p.name for p in out.iterdir()}
        expected_stale = {"lora": {"adapter_config.json"}, "feature_extraction": {"pooled_head.json"}}.get(second, set())
        ok = replaced.returncode == 0 and info.get("strategy") == second and stale == expected_stale and predictions(out) is not None
        rows.append({"kind": "rerun", "case": f"{first} then {second}, overwrite", "outcome": "ok" if ok else "wrong model"})
    return rows


def _launch(cfg: Path, work: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tlhub.cli", "train", str(cfg)], cwd=work, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _timeline(cfg: Path, work: Path, out: Path) -> tuple[float, float]:
    """(seconds until the first checkpoint appears, seconds from then to the end) of one run."""
    start = time.monotonic()
    proc = _launch(cfg, work)
    first = None
    while proc.poll() is None:
        if first is None and any(out.glob("checkpoint-*")):
            first = time.monotonic() - start
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    total = time.monotonic() - start
    return first or total, total - (first or total)


def kills(work: Path, model: Path, data: Path, n: int, seed: int) -> list[dict]:
    """SIGKILL at a random moment, then the same command until it finishes.

    A fifth of the kills land in start-up (a random fraction of the reference run's time
    to its first checkpoint), the rest a random time after the run's first checkpoint
    appears, up to the reference's time from there to the end of the process: training
    steps, checkpoint writes, the final save of the model, model card and results.
    """
    reference = work / "reference"
    cfg = config(work, model, data, reference)
    startup, rest = _timeline(cfg, work, reference)
    expected = predictions(reference)
    expected_loss = results(reference)["eval_loss"]
    losses = {e["step"]: e["loss"] for e in json.loads((reference / "trainer_state.json").read_text())["log_history"] if "loss" in e}
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        out = work / f"killed-{i}"
        cfg = config(work, model, data, out)
        in_startup = i % 5 == 0
        delay = rng.uniform(0.2, 0.95) * startup if in_startup else rng.uniform(0.0, 1.0) * rest
        proc = _launch(cfg, work)
        if not in_startup:  # from the first checkpoint on: the clock starts when it appears
            while proc.poll() is None and not any(out.glob("checkpoint-*")):
                time.sleep(0.01)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        complete = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        resume_at = max(complete, default=0)
        finished_before = (out / "all_results.json").is_file()
        after_kill = predictions(out) if out.exists() else None
        wrong = after_kill is not None and (not finished_before or after_kill != expected)
        reruns_needed, failure = 0, None
        while not (out / "all_results.json").is_file() and reruns_needed < 3:
            reruns_needed += 1
            rerun = tlhub("train", str(cfg), cwd=work)
            if rerun.returncode != 0:
                failure = rerun.stderr.strip().splitlines()[-1][:300] if rerun.stderr.strip() else f"exit {rerun.returncode}"
                break
        state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").is_file() else {}
        final = predictions(out)
        same = final == expected and abs(results(out)["eval_loss"] - expected_loss) < 1e-4 if final else False
        # The rerun's train_loss is the mean loss of the steps it trained itself: the steps
        # after the newest complete checkpoint (all of them when training had finished).
        trained = [losses[s] for s in losses if s > resume_at] if 0 < resume_at < STEPS else list(losses.values())
        resumed_right = finished_before or abs(results(out)["train_loss"] - sum(trained) / len(trained)) < 1e-3 if final else False
        if wrong or (final is not None and not same):
            outcome = "wrong model"
        elif state.get("global_step") != STEPS or reruns_needed > 1 or final is None or not resumed_right:
            outcome = "lost work"
        else:
            outcome = "ok"
        phase = "finished" if finished_before else ("start-up" if not complete else f"after checkpoint {resume_at}")
        when = f"{delay:.2f} s after start" if in_startup else f"{delay:.2f} s after the first checkpoint"
        rows.append({"kind": "sigkill", "case": f"kill {i} {when} ({phase})", "outcome": outcome, "killed": killed,
                     "resumed_from_step": resume_at, "reruns": reruns_needed, "final_step": state.get("global_step"),
                     **({"rerun_error": failure} if failure else {})})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILL trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows and the summary here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlhub-reliability-") as tmp:
        work = Path(tmp)
        model = make_tiny_bert(work / "tiny-bert")
        data = write_rows(work / "train.csv", toy_sentiment_rows(160))
        rows = bad_inputs(work, model) + reruns(work, model, data) + kills(work, model, data, args.kills, args.seed)
    summary: dict[str, dict[str, int]] = {}
    for row in rows:
        summary.setdefault(row["kind"], {}).setdefault(row["outcome"], 0)
        summary[row["kind"]][row["outcome"]] += 1
    print("| faults | tried | ok | traceback | wrong model | lost work | damaged |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, counts in summary.items():
        cells = [counts.get(k, 0) for k in ("ok", "traceback", "wrong model", "lost work", "damaged")]
        print(f"| {kind} | {sum(counts.values())} | " + " | ".join(map(str, cells)) + " |")
    bad = [row for row in rows if row["outcome"] != "ok"]
    for row in bad:
        print("NOT OK:", json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "summary": summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
