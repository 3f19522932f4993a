"""Reliability benchmark: bad inputs, reruns into used folders, and SIGKILL at random moments.

    python scripts/bench_reliability.py --kills 20 --json docs/bench_reliability.json

Every fault is tried through the real `tlhub` command (subprocesses, tiny BERT from
tests/tiny_models.py) and its outcome classified:

- bad input (the cases of tests/test_cli.py, plus range checks and output_dir
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
  *wrong model* when the result differs;
- round 3 (issue 27 and the classes of its faults): media that decodes to NaN or inf, a
  diverging loss, inputs longer than the model reads, a second live run into a folder (and a
  SIGKILLed owner's lock), bad values of every kind of numeric setting, text cells that are
  numbers, objects or lists, a feature-extraction run loaded by ``pipeline()`` without
  ``trust_remote_code``: *ok* when it ends as it should (a clean error, or a run with finite
  losses that counts what it skipped); *lost work* when a live run's model is replaced.

    python scripts/bench_reliability.py --only-round-three     # round 3 alone, a few minutes
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
    from tests.test_cli import CASES, Workspace

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


def _error(proc: subprocess.CompletedProcess) -> tuple[bool, str]:
    """(one clean `tlhub: error:` line and exit 2, that line or the end of stderr)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tlhub: error:")]
    clean = proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    return clean, lines[0] if lines else proc.stderr[-300:]


def _finite_run(out: Path, skipped: int) -> bool:
    """The run finished, its losses are finite and it skipped `skipped` examples."""
    if not (out / "all_results.json").is_file():
        return False
    res = results(out)
    losses = [v for k, v in res.items() if k.endswith("loss") and isinstance(v, (int, float))]
    return all(v == v and abs(v) != float("inf") for v in losses) and sum(res.get("skipped_examples", {}).values()) == skipped


def round_three(work: Path, model: Path, data: Path) -> list[dict]:
    """Issue 27's faults and their classes: non-finite media and losses, inputs longer than a
    model reads, two live runs in one folder, every numeric setting's bad values, text cells
    that are not text, a feature-extraction run loaded as a plain classifier."""
    import numpy as np
    import pandas as pd
    import soundfile as sf
    from PIL import Image

    from tests.tiny_models import make_tiny_vit, make_tiny_wav2vec2, make_tiny_whisper, toy_image_folder

    root = work / "round3"
    root.mkdir()
    rows: list[dict] = []

    def record(case: str, good: bool, message: str, failure: str = "traceback") -> None:
        rows.append({"kind": "round 3", "case": case, "outcome": "ok" if good else failure, "message": message})

    def write_cfg(name: str, cfg: dict) -> Path:
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def text_cfg(name: str, train: Path, strategy: str = "full", **training: object) -> Path:
        cfg = yaml.safe_load(config(root, model, train, root / name, strategy, max_steps=4, save_strategy="no", resume_from_checkpoint=None).read_text())
        cfg["training"].update(training)
        return write_cfg(name, cfg)

    def refused(case: str, *argv: str) -> None:
        clean, line = _error(tlhub(*argv, cwd=root))
        record(case, clean, line)

    def trains(case: str, cfg: Path, out: Path, skipped: int = 0, *argv: str) -> None:
        proc = tlhub("train", str(cfg), *argv, cwd=root)
        good = proc.returncode == 0 and _finite_run(out, skipped)
        record(case, good, "" if good else _error(proc)[1], "traceback" if proc.returncode not in (0, 2) else "wrong model")

    # media that decodes to NaN or inf: skipped and counted like a corrupt file, or too many stop the run
    clips, manifest = root / "clips", []
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        (clips / label).mkdir(parents=True)
        for i in range(10):
            wave = (0.5 * np.sin(2 * np.pi * freq * np.arange(4000) / 8000)).astype(np.float32)
            sf.write(clips / label / f"{i}.wav", wave, 8000, subtype="FLOAT")
            manifest.append({"path": f"{label}/{i}.wav", "label": label})
    for bad, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        wave = np.zeros(4000, dtype=np.float32)
        wave[100] = value
        sf.write(clips / "low" / bad, wave, 8000, subtype="FLOAT")
    w2v = make_tiny_wav2vec2(root / "w2v")
    for bad in ("nan.wav", "inf.wav"):
        pd.DataFrame([*manifest, {"path": f"low/{bad}", "label": "low"}]).to_csv(clips / f"{bad}.csv", index=False)
        audio = {"modality": "audio", "model": {"name_or_path": str(w2v)}, "data": {"train": str(clips / f"{bad}.csv"), "validation_split": 0.25, "audio_column": "path"},
                 "strategy": {"name": "full"}, "training": {"output_dir": str(root / f"audio-{bad}"), "use_cpu": True, "max_steps": 4,
                                                             "save_strategy": "no", "disable_tqdm": True}}  # fmt: skip
        cfg = write_cfg(f"audio-{bad}", audio)
        trains(f"a clip holding {bad[:3]} among 20: skipped and counted", cfg, root / f"audio-{bad}", 1)
        refused("the same with data.max_bad_fraction=0", "train", str(cfg), "data.max_bad_fraction=0", "training.overwrite_output_dir=true")
    images = toy_image_folder(root / "images", n_per_class=8)
    first_class = sorted(p for p in images.iterdir() if p.is_dir())[0]
    pixels = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    pixels[3, 3] = np.nan
    Image.fromarray(pixels, "F").save(first_class / "nan.tif")
    image = {"modality": "image", "model": {"name_or_path": str(make_tiny_vit(root / "vit"))}, "data": {"train": str(images), "validation_split": 0.25},
             "strategy": {"name": "full"}, "training": {"output_dir": str(root / "image-nan"), "use_cpu": True, "max_steps": 4, "save_strategy": "no",
                                                         "disable_tqdm": True}}  # fmt: skip
    trains("a float TIFF holding NaN among 16 images: skipped and counted", write_cfg("image-nan", image), root / "image-nan", 1)

    # a diverging loss: stopped at the step, nothing saved, the last checkpoint kept
    diverge = text_cfg("diverge", data, learning_rate=1e6, max_steps=8, save_strategy="steps", save_steps=1, adam_epsilon=1e-30)
    proc = tlhub("train", str(diverge), cwd=root)
    clean, line = _error(proc)
    kept = (root / "diverge" / "checkpoint-1").is_dir() and not (root / "diverge" / "model.safetensors").exists()
    record("a learning rate that makes the loss NaN", clean and "the training loss became" in line and kept, line, "traceback" if not clean else "wrong model")

    # longer than the model reads (tiny BERT: 64 positions)
    words = "good food and the staff was really very lovely".split()
    long_rows = [{"text": " ".join(words[i % 9] for i in range(k, k + 100)), "label": ["neg", "pos"][k % 2]} for k in range(40)]
    long_cfg = text_cfg("long", write_rows(root / "long.csv", long_rows))
    trains("100-word sentences, 64 positions, data.max_length unset", long_cfg, root / "long")
    refused("the same with data.max_length=4096", "train", str(long_cfg), "data.max_length=4096", "training.overwrite_output_dir=true")
    whisper = {**image, "modality": "audio", "model": {"name_or_path": str(make_tiny_whisper(root / "whisper"))},
               "data": {"train": str(clips / "nan.wav.csv"), "audio_column": "path", "max_duration_s": 45}}  # fmt: skip
    refused("Whisper with data.max_duration_s=45 (its window is 30 s)", "train", str(write_cfg("whisper", whisper)))

    # two live runs, one folder: the second is refused whatever its overwrite flag; a killed owner's lock is taken over
    shared = root / "shared"
    owner_cfg = text_cfg("shared", data, "full", max_steps=1500)  # long enough to be alive when the intruder starts
    intruder = ["train", str(owner_cfg), "strategy.name=lora", "training.overwrite_output_dir=true"]
    owner = subprocess.Popen([sys.executable, "-m", "tlhub.cli", "train", str(owner_cfg)], cwd=root, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lock = root / ".shared.tlhub-lock"
    while owner.poll() is None and not (lock.is_file() and lock.read_text().strip()):
        time.sleep(0.1)
    clean, line = _error(tlhub(*intruder, cwd=root))
    alive = owner.poll() is None
    owner.communicate(timeout=900)
    info = json.loads((shared / "tlhub_run.json").read_text()) if (shared / "tlhub_run.json").is_file() else {}
    intact = owner.returncode == 0 and info.get("strategy") == "full" and predictions(shared) is not None
    record("a lora run with overwrite_output_dir into a folder a full run is training in", alive and clean and "is in use by" in line and intact, line,
           "traceback" if not clean else "lost work")  # fmt: skip
    owner = subprocess.Popen([sys.executable, "-m", "tlhub.cli", "train", str(owner_cfg), "training.overwrite_output_dir=true", "training.max_steps=400"],
                             cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1)
    while owner.poll() is None and not (shared / "config.yaml").is_file():
        time.sleep(0.1)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    proc = tlhub(*intruder, cwd=root)
    taken = proc.returncode == 0 and json.loads((shared / "tlhub_run.json").read_text()).get("strategy") == "lora"
    record("the same after the owner was SIGKILLed: its lock is taken over", taken, _error(proc)[1] if not taken else "", "lost work")

    # every numeric setting: NaN, infinite, out of range, quoted
    ok_cfg = text_cfg("numbers", data)
    for key, values in {
        "training.learning_rate": (".nan", ".inf", "-1"), "training.num_train_epochs": ("-1",), "training.per_device_train_batch_size": ("0", "2.5"),
        "training.weight_decay": (".nan",), "training.warmup_steps": ("-3",), "training.max_grad_norm": (".nan",), "training.seed": ("1e30",),
        "training.gradient_accumulation_steps": ("0",), "training.label_smoothing_factor": ("2",), "training.adam_beta1": ("1.5",),
        "training.adam_epsilon": ("0",), "training.logging_steps": ("0",), "training.dataloader_num_workers": ("-2",),
        "training.save_total_limit": ("-1",), "data.max_length": ("0", ".nan"), "data.validation_split": ("1.5", ".nan"),
        "data.max_train_samples": ("0",), "data.max_bad_fraction": ("2",), "data.seed": (".nan",), "strategy.lora.r": ("0",),
        "strategy.lora.dropout": (".nan", "1.5"), "strategy.unfreeze_last_n": ("-1", "99"), "strategy.layer_lr_decay": ("0",),
    }.items():  # fmt: skip
        strategy = "lora" if ".lora." in key else "partial" if key in ("strategy.unfreeze_last_n", "strategy.layer_lr_decay") else "full"
        for value in values:
            refused(f"{key}={value}", "train", str(ok_cfg), f"strategy.name={strategy}", f"{key}={value}")
    trains("quoted numbers and booleans ('16', '1e-3', 'true')", ok_cfg, root / "numbers", 0, "training.per_device_train_batch_size='16'",
           "training.learning_rate='1e-3'", "training.use_cpu='true'", "training.overwrite_output_dir=true")  # fmt: skip

    # text cells that are not text, classes and files
    base = toy_sentiment_rows(40)
    codes = write_rows(root / "codes.csv", [{"text": 1000 + i, "label": r["label"]} for i, r in enumerate(base)])
    trains("a text column of numbers (codes)", text_cfg("codes", codes), root / "codes")
    nested = root / "nested.jsonl"
    nested.write_text("".join(json.dumps({"text": {"t": r["text"]} if i == 2 else r["text"], "label": r["label"]}) + "\n" for i, r in enumerate(base)))
    refused("a JSON object in one row's text", "train", str(text_cfg("nested", nested)))
    listed = root / "listed.parquet"
    pd.DataFrame({"text": [[r["text"]] for r in base], "label": [r["label"] for r in base]}).to_parquet(listed)
    refused("a column of lists as text", "train", str(text_cfg("listed", listed)))
    refused("a class with a single row", "train", str(text_cfg("single", write_rows(root / "single.csv", [*base, {"text": "the food", "label": "meh"}]))))
    (root / "latin1.csv").write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\n".encode("latin-1"))
    refused("a Latin-1 CSV", "train", str(text_cfg("latin1", root / "latin1.csv")))
    (clips / "low" / "fake.mp3").write_text("not audio at all\n" * 20)
    pd.DataFrame([*manifest, {"path": "low/fake.mp3", "label": "low"}]).to_csv(clips / "fake.csv", index=False)
    refused("a text file named .mp3", "train", str(write_cfg("fake", {**audio, "data": {"train": str(clips / "fake.csv"), "audio_column": "path", "max_bad_fraction": 0.0}})))
    (root / "twice.yaml").write_text("modality: text\nmodel: {name_or_path: x}\nmodality: image\ndata: {train: a.csv}\ntraining: {output_dir: o}\n")
    refused("a YAML key written twice", "train", str(root / "twice.yaml"))

    # a feature-extraction run never loads as a plain classifier with a random head
    fe = text_cfg("fe", data, "feature_extraction", learning_rate=3e-2)
    assert tlhub("train", str(fe), cwd=root).returncode == 0
    probe = ("import sys; sys.modules['tlhub'] = None\nfrom transformers import pipeline\ntry:\n    pipeline('text-classification', "
             f"model={str(root / 'fe')!r})\n    print('LOADED')\nexcept ValueError as exc:\n    print('refused', 'trust_remote_code' in str(exc))\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env(), timeout=300, input="n\n").stdout
    record("pipeline() on a feature-extraction run without trust_remote_code", "refused True" in out and "LOADED" not in out, out.strip()[-200:], "wrong model")
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
    parser.add_argument("--only-round-three", action="store_true", help="only issue 27's faults (round 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlhub-reliability-") as tmp:
        work = Path(tmp)
        model = make_tiny_bert(work / "tiny-bert")
        data = write_rows(work / "train.csv", toy_sentiment_rows(160))
        if args.only_round_three:
            rows = round_three(work, model, data)
        else:
            rows = bad_inputs(work, model) + reruns(work, model, data) + round_three(work, model, data)
            rows += kills(work, model, data, args.kills, args.seed)
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
