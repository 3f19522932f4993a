"""Bad input, round three (issue 27): non-finite media and losses, sequences longer than the
model reads, a folder two live runs share, quoted numbers, a feature-extraction run that
transformers could load with a random head, and smaller cases; each fails on the code
before this round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from tests.conftest import text_config, with_sections
from tests.test_audio import audio_config
from tests.tiny_models import make_tiny_wav2vec2, toy_sentiment_rows, write_rows
from tlhub.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROBE = str(ROOT / "tests" / "launch_probe.py")


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("tlhub: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- 1. non-finite inputs and losses


def tones(folder: Path, n: int = 10) -> list[dict]:
    rows = []
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            t = np.arange(4000) / 8000
            sf.write(folder / label / f"{i}.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, subtype="FLOAT")
            rows.append({"path": f"{label}/{i}.wav", "label": label})
    return rows


def test_a_clip_holding_nan_is_skipped_and_counted_or_stops_the_run(tmp_path: Path, capsys) -> None:
    rows = tones(tmp_path / "clips")
    poisoned = np.zeros(4000, dtype=np.float32)
    poisoned[100] = np.nan
    sf.write(tmp_path / "clips" / "low" / "nan.wav", poisoned, 8000, subtype="FLOAT")
    pd.DataFrame([*rows, {"path": "low/nan.wav", "label": "low"}]).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    model = make_tiny_wav2vec2(tmp_path / "w2v")
    cfg = audio_config(model, tmp_path / "clips" / "manifest.csv", tmp_path / "run", training={"num_train_epochs": 1})
    assert main(["train", str(write(tmp_path / "c.yaml", cfg))]) == 0
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert sum(results["skipped_examples"].values()) == 1 and np.isfinite(results["eval_loss"]) and results["train_loss"] > 0
    err = error(capsys, ["train", str(tmp_path / "c.yaml"), "data.max_bad_fraction=0", "training.overwrite_output_dir=true"])
    assert "nan.wav: 1 NaN or infinite sample(s), the first at sample 100" in err and "data.max_bad_fraction=0" in err


def test_a_float_image_holding_nan_is_unreadable(tmp_path: Path) -> None:
    from PIL import Image

    from tlhub.modalities.image import ImageReadError, load_image

    pixels = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    Image.fromarray(pixels, "F").save(tmp_path / "ok.tif")
    assert load_image(tmp_path / "ok.tif").mode == "RGB" and np.asarray(load_image(tmp_path / "ok.tif")).mean() > 60  # [0, 1] floats scaled
    pixels[3, 3] = np.nan
    Image.fromarray(pixels, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"nan.tif: unreadable image \(1 NaN or infinite pixel value\(s\)\)"):
        load_image(tmp_path / "nan.tif")


def test_a_diverging_loss_stops_the_run_saves_nothing_and_keeps_the_last_checkpoint(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    data = write_rows(tmp_path / "toy.csv", toy_sentiment_rows(120))
    cfg = text_config(tiny_bert, data, tmp_path / "run", training={"learning_rate": 1e6, "max_steps": 8, "save_strategy": "steps",
                                                                    "save_steps": 1, "logging_steps": 1, "adam_epsilon": 1e-30})  # fmt: skip
    err = error(capsys, ["train", str(write(tmp_path / "c.yaml", cfg))])
    assert err.startswith("tlhub: error: training.learning_rate: the training loss became nan at step 2 (learning rate ")
    assert "the last checkpoint, checkpoint-1, is kept" in err and "Try a lower training.learning_rate" in err
    out = tmp_path / "run"
    assert not (out / "all_results.json").exists() and not (out / "model.safetensors").exists()
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()


# --------------------------------------------------------------------------- 2. longer than the model reads


def test_sequences_longer_than_the_models_positions(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    words = "good food and the staff was really very lovely".split()
    rows = [{"text": " ".join(words[i % 9] for i in range(k, k + 100)), "label": ["neg", "pos"][k % 2]} for k in range(40)]
    cfg = text_config(tiny_bert, write_rows(tmp_path / "long.csv", rows), tmp_path / "run", training={"num_train_epochs": 1})
    config = write(tmp_path / "c.yaml", cfg)
    assert main(["train", str(config)]) == 0  # the default fits the model: 64 positions, not 128
    err = error(capsys, ["train", str(config), "data.max_length=4096", "training.overwrite_output_dir=true"])
    assert err == (f"tlhub: error: data.max_length: 4096 tokens is more than '{tiny_bert}' reads (64 positions); set data.max_length "
                   "to at most 64, or leave it null\n")  # fmt: skip


def test_whisper_reads_at_most_its_window(tmp_path: Path, capsys) -> None:
    from tests.tiny_models import make_tiny_whisper

    rows = tones(tmp_path / "clips")
    pd.DataFrame(rows).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    cfg = audio_config(make_tiny_whisper(tmp_path / "whisper"), tmp_path / "clips" / "manifest.csv", tmp_path / "run", data={"max_duration_s": 45})
    err = error(capsys, ["train", str(write(tmp_path / "c.yaml", cfg))])
    assert err == "tlhub: error: data.max_duration_s: 45 s is longer than the 30 s window this Whisper model reads; set at most 30\n"


# --------------------------------------------------------------------------- 3. one live run per folder


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
    err = error(capsys, ["train", str(second)])
    assert err.startswith(f"tlhub: error: training.output_dir: {out} is in use by another run (pid {owner.pid} on ")
    assert err.strip().endswith("wait for it to finish, or give this run another output_dir")
    assert (out / "checkpoint-2" / "model.safetensors").is_file()

    os.kill(owner.pid, signal.SIGKILL)  # the owner dies holding the lock: the kernel releases it
    owner.communicate(timeout=30)
    assert main(["train", str(second)]) == 0  # the lock file it left is taken over
    assert json.loads((out / "tlhub_run.json").read_text())["strategy"] == "lora"
    assert not (out.parent / ".run.tlhub-lock").exists()  # released at the end


# --------------------------------------------------------------------------- 4. every setting's type


def test_quoted_numbers_and_booleans_take_their_fields_type(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    data = write_rows(tmp_path / "toy.csv", toy_sentiment_rows(80))
    cfg = text_config(tiny_bert, data, tmp_path / "run", training={"num_train_epochs": "1", "per_device_train_batch_size": "16",
                                                                    "learning_rate": "1e-3", "use_cpu": "true"})  # fmt: skip
    cfg["data"]["max_length"] = "32"
    assert main(["train", str(write(tmp_path / "c.yaml", cfg))]) == 0
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["train_batch_size"] == 16
    assert error(capsys, ["train", str(tmp_path / "c.yaml"), "training.use_cpu=maybe"]) == "tlhub: error: training.use_cpu: expected true or false, got 'maybe'\n"
    assert error(capsys, ["train", str(tmp_path / "c.yaml"), "training.overwrite_output_dir=yes please"]) == (
        "tlhub: error: training.overwrite_output_dir: expected true or false, got 'yes please'\n"
    )
    assert error(capsys, ["train", str(tmp_path / "c.yaml"), "strategy.lora.dropout=.nan"]) == "tlhub: error: strategy.lora.dropout: must be a finite number, got nan\n"
    assert error(capsys, ["train", str(tmp_path / "c.yaml"), "model.config_overrides={hidden_dropout_prob: lots}"]) == (
        "tlhub: error: model.config_overrides.hidden_dropout_prob: expected a number (the config holds 0.1), got 'lots'\n"
    )


# --------------------------------------------------------------------------- 5. a feature-extraction run never loads with a random head


RUN_WITHOUT_TLHUB = """
import sys
sys.modules["tlhub"] = None  # a machine without tlhub: the run folder's own code must do
from transformers import AutoModelForSequenceClassification, pipeline
run, texts = sys.argv[1], sys.argv[2:]
for load in (lambda: pipeline("text-classification", model=run), lambda: AutoModelForSequenceClassification.from_pretrained(run)):
    try:
        load()
        print("LOADED WITHOUT THE FLAG")
    except ValueError as exc:
        print("refused:", "trust_remote_code" in str(exc))
pipe = pipeline("text-classification", model=run, trust_remote_code=True)
print([pipe(t)[0]["label"] for t in texts])
"""


def test_a_feature_extraction_run_refuses_to_load_as_a_plain_classifier(tmp_path: Path, tiny_bert: Path, capfd) -> None:
    from transformers import pipeline

    from tlhub.pipeline import load_run, predict

    data = write_rows(tmp_path / "toy.csv", toy_sentiment_rows(120))
    out = tmp_path / "run"
    assert main(["train", str(write(tmp_path / "c.yaml", text_config(tiny_bert, data, out, "feature_extraction",
                                                                     training={"learning_rate": 3e-2})))]) == 0  # fmt: skip
    texts = [r["text"] for r in toy_sentiment_rows(6, seed=7)]
    ours = [row["label"] for row in predict(load_run(out), texts)]
    proc = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TLHUB, str(out), *texts], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    # (transformers asks "Do you wish to run the custom code?" first, on the same line)
    assert proc.stdout.count("refused: True") == 2 and "LOADED" not in proc.stdout, (proc.stdout, proc.stderr[-3000:])
    assert proc.stdout.strip().splitlines()[-1] == str(ours)  # with the flag, the folder's code: tlhub's predictions
    capfd.readouterr()
    pipe = pipeline("text-classification", model=str(out))  # where tlhub is imported: its registered class, no flag needed
    assert [pipe(t)[0]["label"] for t in texts] == ours
    assert "is not supported for text-classification" not in capfd.readouterr().err
    assert type(pipe.model).__name__ == "PooledClassifier"


# --------------------------------------------------------------------------- 6. smaller cases


def test_a_class_with_a_single_row_cannot_be_split_off(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    rows = toy_sentiment_rows(40) + [{"text": "the food", "label": "meh"}]
    data = write_rows(tmp_path / "toy.csv", rows)
    err = error(capsys, ["train", str(write(tmp_path / "c.yaml", text_config(tiny_bert, data, tmp_path / "run")))])
    assert err == (f"tlhub: error: data.train ({data}): class 'meh' has a single row, which a validation split (data.validation_split) "
                   "cannot put in both training and validation; add rows of it, drop it, or give data.validation\n")  # fmt: skip


def test_a_text_file_named_mp3_is_named_as_unreadable_audio(tmp_path: Path, capsys) -> None:
    rows = tones(tmp_path / "clips")
    (tmp_path / "clips" / "low" / "fake.mp3").write_text("not audio at all\n" * 20)
    pd.DataFrame([*rows, {"path": "low/fake.mp3", "label": "low"}]).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    cfg = audio_config(make_tiny_wav2vec2(tmp_path / "w2v"), tmp_path / "clips" / "manifest.csv", tmp_path / "run", data={"max_bad_fraction": 0.0})
    err = error(capsys, ["train", str(write(tmp_path / "c.yaml", cfg))])
    assert "fake.mp3: unreadable audio (not a format soundfile reads); readable formats: " in err and "convert it, e.g. to WAV" in err
    assert "does not exist" not in err


def test_a_key_written_twice_in_the_yaml_is_refused_with_its_lines(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("modality: text\nmodel: {name_or_path: x}\nmodality: image\ndata: {train: a.csv}\ntraining: {output_dir: o}\n")
    assert error(capsys, ["train", str(path)]) == (
        f"tlhub: error: {path}: line 3, column 1: invalid YAML: key 'modality' appears twice (first on line 1); keep one\n"
    )


def test_the_feature_cache_works_from_a_source_checkout(monkeypatch) -> None:
    """Without `pip install` there is no package metadata; the version comes from the source."""
    import importlib.metadata

    from tlhub.cache import library_versions
    from tlhub.version import __version__

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert library_versions()["tlhub"] == __version__


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


def test_text_columns_of_numbers_train_and_nested_values_are_named(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    rows = toy_sentiment_rows(40)
    codes = write_rows(tmp_path / "codes.csv", [{"text": 1000 + i, "label": r["label"]} for i, r in enumerate(rows)])  # read as numbers
    assert main(["train", str(write(tmp_path / "c.yaml", text_config(tiny_bert, codes, tmp_path / "run", training={"max_steps": 1})))]) == 0
    nested = tmp_path / "nested.jsonl"
    nested.write_text("".join(json.dumps({"text": {"title": r["text"]} if i == 2 else r["text"], "label": r["label"]}) + "\n" for i, r in enumerate(rows)))
    err = error(capsys, ["train", str(write(tmp_path / "n.yaml", text_config(tiny_bert, nested, tmp_path / "run2")))])
    assert err == (f"tlhub: error: data.train ({nested}): row 3: column 'text' holds a mapping where other rows hold str; give every "
                   "row the same kind of value\n")  # fmt: skip
    listed = tmp_path / "listed.parquet"
    pd.DataFrame({"text": [[r["text"]] for r in rows], "label": [r["label"] for r in rows]}).to_parquet(listed)
    err = error(capsys, ["train", str(write(tmp_path / "l.yaml", text_config(tiny_bert, listed, tmp_path / "run3")))])
    assert err == f"tlhub: error: data.train ({listed}): row 1: column 'text' holds a list, not text; give one string per row\n"
