"""The command line as a user runs it: train, predict, evaluate, and one-line errors with exit code 2
that leave a finished run in the output_dir untouched, whatever the bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import text_config
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.modalities import MODALITIES

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


def test_output_into_a_closed_pipe_is_no_traceback() -> None:
    """`tlhub config | head -1`: the reader leaves early; tlhub stops quietly with the shell's SIGPIPE status
    (`true` reads nothing and leaves at once, so the pipe is closed when tlhub writes)."""
    done = subprocess.run(f"{sys.executable} -m tlhub config training | true; echo ${{PIPESTATUS[0]}}", shell=True,
                          executable="bash", capture_output=True, text=True)  # fmt: skip
    assert (done.stdout, done.stderr) == ("141\n", "")


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
    assert main(["config", "training.s"]) == 0  # training's keys: TrainingArguments' with tlhub's defaults, and tlhub's own
    out = capsys.readouterr().out.splitlines()
    assert "training.save_total_limit [integer | null] = 2:  Checkpoints kept in output_dir (tlhub: 2)." in out
    assert any(line.startswith("training.save_on_signal [boolean] = True:  tlhub: true (default)") for line in out)
    assert any(line.startswith("training.seed [integer] = 42:") for line in out) and all(line.startswith("training.s") for line in out)
    assert error_of(["config", "nope"], capsys) == "tlhub: error: config: no section or key starts with 'nope'"


# --------------------------------------------------------------------------- bad input: one line, exit code 2, nothing lost
#
# Everything lives under a folder whose name has spaces and non-ASCII letters, and a
# finished run sits in the output_dir every bad run points at: after each bad run the
# finished run's files must be byte-for-byte unchanged.


class Workspace:
    """A folder with spaces and non-ASCII letters holding a model, data and a finished run."""

    def __init__(self, root: Path, tiny_bert: Path) -> None:
        self.root = root
        self.model = root / "modèle tiny"
        shutil.copytree(tiny_bert, self.model)
        self.data = write_rows(root / "données d'entraînement.csv", toy_sentiment_rows(40))
        self.out = root / "sortie ünï"
        self.config = self.write_config("config été.yaml")

    def write_config(self, name: str, **training: object) -> Path:
        cfg = text_config(self.model, self.data, self.out)
        cfg["training"].update(max_steps=2, **training)
        path = self.root / name
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
        return path

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def snapshot(self) -> dict[str, str]:
        """Every file of the finished run, by relative path, with a hash of its bytes."""
        return {
            str(p.relative_to(self.out)): hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
            for p in sorted(self.out.rglob("*"))
            if p.is_file()
        }


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Workspace:
    """The workspace with a finished run: a path with spaces and non-ASCII letters works."""
    return Workspace(tmp_path_factory.mktemp("bad input") / "mes données ü", tiny_bert)


def test_paths_with_spaces_and_non_ascii_letters_work(ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(ws.config)]) == 0
    results = json.loads((ws.out / "all_results.json").read_text(encoding="utf-8"))
    assert results["trainable_params"] > 0 and "eval_accuracy" in results
    capsys.readouterr()
    assert main(["predict", str(ws.out), "the food was excellent"]) == 0
    label, score, text = capsys.readouterr().out.strip().split("\t")
    assert label in ("neg", "pos") and 0.0 < float(score) <= 1.0 and text == "the food was excellent"


def rows_with(index: int, **values: object) -> list[dict]:
    rows = toy_sentiment_rows(40)
    rows[index].update(values)
    return rows


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def wav(path: Path, frames: int) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(b"\0\0" * frames)
    return path


# Each case: (setup(ws) -> argv, expected stderr line(ws)). Run in this order, all against
# the finished run's output_dir.
Case = tuple[Callable[[Workspace], list[str]], Callable[[Workspace], str]]


def _train(ws: Workspace, *overrides: str) -> list[str]:
    return ["train", str(ws.config), *overrides]


def _data(ws: Workspace, name: str, content: str | bytes, key: str = "data.train") -> list[str]:
    return _train(ws, f"{key}={ws.file(name, content)}")


CASES: dict[str, Case] = {
    "malformed YAML": (
        lambda ws: ["train", str(ws.file("cassé.yaml", "modality: text\nmodel:\n  name_or_path: [oops\n"))],
        lambda ws: f"{ws.root / 'cassé.yaml'}: line 4, column 1: invalid YAML: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence that starts at line 3, column 17)",
    ),
    "config is a list": (
        lambda ws: ["train", str(ws.file("liste.yaml", "- modality\n- model\n"))],
        lambda ws: f"{ws.root / 'liste.yaml'}: expected a mapping of sections (modality, model, data, ...), got list",
    ),
    "config not UTF-8": (
        lambda ws: ["train", str(ws.file("latin.yaml", "modality: text  # é\n".encode("latin-1")))],
        lambda ws: f"{ws.root / 'latin.yaml'}: not UTF-8 text; save the config as UTF-8",
    ),
    "wrong type: number": (
        lambda ws: _train(ws, "training.num_train_epochs=lots"),
        lambda ws: "training.num_train_epochs: expected a number, got 'lots'",
    ),
    "wrong type: boolean": (
        lambda ws: _train(ws, "model.pretrained=maybe"),
        lambda ws: "model.pretrained: expected true or false, got 'maybe'",
    ),
    "wrong type: integer": (
        lambda ws: _train(ws, "strategy.unfreeze_last_n=two"),
        lambda ws: "strategy.unfreeze_last_n: expected an integer, got 'two'",
    ),
    "wrong type: section": (
        lambda ws: _train(ws, "data=5"),
        lambda ws: "data: expected a mapping of keys, got int 5",
    ),
    "unknown key with suggestion": (
        lambda ws: _train(ws, "training.learning_rat=0.1"),
        lambda ws: "training.learning_rat: unknown key (did you mean 'learning_rate'?)",
    ),
    "unknown data key with suggestion": (
        lambda ws: _train(ws, "data.text_colum=text"),
        lambda ws: "data.text_colum: unknown key (did you mean 'text_column'?)",
    ),
    "missing model path": (
        lambda ws: _train(ws, f"model.name_or_path={ws.root / 'pas de modèle'}"),
        lambda ws: f"model.name_or_path: cannot load '{ws.root / 'pas de modèle'}': no such local folder, and the "
        "Hugging Face Hub could not provide it (offline, or no such model). Pass a local folder or check the id",
    ),
    "missing data file": (
        lambda ws: _train(ws, f"data.train={ws.root / 'absent.csv'}"),
        lambda ws: f"data.train: {ws.root / 'absent.csv'}: no such file or folder",
    ),
    "empty dataset file": (
        lambda ws: _data(ws, "vide.csv", ""),
        lambda ws: f"data.train: {ws.root / 'vide.csv'}: the file is empty",
    ),
    "dataset with a header and no rows": (
        lambda ws: _data(ws, "entête.csv", "text,label\n"),
        lambda ws: f"data.train: {ws.root / 'entête.csv'}: no rows",
    ),
    "label NaN (csv)": (
        lambda ws: _train(ws, f"data.train={write_rows(ws.root / 'nan.csv', rows_with(5, label=float('nan')))}"),
        lambda ws: f"data.train ({ws.root / 'nan.csv'}): row 6: empty label in column 'label'; fill it in or drop the row",
    ),
    "label null (jsonl)": (
        lambda ws: _data(ws, "null.jsonl", jsonl(rows_with(7, label=None))),
        lambda ws: f"data.train ({ws.root / 'null.jsonl'}): row 8: empty label in column 'label'; fill it in or drop the row",
    ),
    "label mixed types (jsonl)": (
        lambda ws: _data(ws, "mixte.jsonl", jsonl(rows_with(3, label=1))),
        lambda ws: f"data.train ({ws.root / 'mixte.jsonl'}): column 'label' mixes value types (int, str); "
        "use only numbers or only strings",
    ),
    "label fractional": (  # as classes; data.problem_type auto reads such a column as regression (tests/test_problem_types.py)
        lambda ws: [*_data(ws, "frac.jsonl", jsonl([{**r, "label": 0.5 + i % 2} for i, r in enumerate(toy_sentiment_rows(10))])),
                    "data.problem_type=single_label"],
        lambda ws: f"data.train ({ws.root / 'frac.jsonl'}): column 'label' holds fractional numbers; "
        "class labels must be integers or strings",
    ),
    "one class only": (
        lambda ws: _data(ws, "une.csv", "text,label\nthe food was good,pos\nthe staff was great,pos\n"),
        lambda ws: f"data.train ({ws.root / 'une.csv'}): only one class ('pos') in column 'label'; classification needs at least two",
    ),
    "latin-1 csv": (
        lambda ws: _data(ws, "latin.csv", "text,label\ncafé très bon,pos\nmauvais,neg\n".encode("latin-1")),
        lambda ws: f"data.train: {ws.root / 'latin.csv'}: not UTF-8 text (byte 0xe9 on line 2); re-save the file as UTF-8",
    ),
    "latin-1 jsonl": (
        lambda ws: _data(ws, "latin.jsonl", '{"text": "café", "label": "pos"}\n'.encode("latin-1")),
        lambda ws: f"data.train: {ws.root / 'latin.jsonl'}: not UTF-8 text (byte 0xe9 on line 1); re-save the file as UTF-8",
    ),
    "validation label that train lacks": (
        lambda ws: _train(ws, f"data.validation={write_rows(ws.root / 'val.csv', rows_with(3, label='neutre'))}"),
        lambda ws: f"data.validation ({ws.root / 'val.csv'}): row 4: label 'neutre' does not occur in the training data "
        "(labels: neg, pos)",
    ),
    "empty text": (
        lambda ws: _train(ws, f"data.train={write_rows(ws.root / 'texte.csv', rows_with(7, text=''))}"),
        lambda ws: f"data.train ({ws.root / 'texte.csv'}): row 8: empty text in column 'text'; fill it in or drop the row",
    ),
    "blank text": (
        lambda ws: _data(ws, "blanc.jsonl", jsonl(rows_with(2, text="   "))),
        lambda ws: f"data.train ({ws.root / 'blanc.jsonl'}): row 3: empty text in column 'text'; fill it in or drop the row",
    ),
    "missing column": (
        lambda ws: _train(ws, "data.text_column=sentence"),
        lambda ws: f"data.train ({ws.data}): no column 'sentence' (set by data.text_column); columns are: text, label",
    ),
    "unsupported file type": (
        lambda ws: _data(ws, "données.xlsx", b"PK\x03\x04"),
        lambda ws: f"data.train: {ws.root / 'données.xlsx'}: unsupported file type '.xlsx'; use one of .csv, .tsv, .json, .jsonl, .parquet, .conll, .txt",
    ),
    "early stopping without checkpoints": (
        lambda ws: _train(ws, "training.early_stopping_patience=2", "training.save_strategy=no"),
        lambda ws: "training.early_stopping_patience: restoring the best model needs checkpoints; "
        "set training.save_strategy to best or to the eval_strategy (epoch)",
    ),
}


def _pickle_model(ws: Workspace) -> Path:
    path = ws.root / "modèle pickle"
    if not path.exists():
        shutil.copytree(ws.model, path)
        from safetensors.torch import load_file

        torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
        (path / "model.safetensors").unlink()
    return path


def _remote_code_model(ws: Workspace) -> Path:
    path = ws.root / "modèle distant"
    if not path.exists():
        shutil.copytree(ws.model, path)
        config = json.loads((path / "config.json").read_text())
        config.update(model_type="tlhub-custom", auto_map={"AutoConfig": "custom.Config", "AutoModelForSequenceClassification": "custom.Model"})
        (path / "config.json").write_text(json.dumps(config))
        (path / "custom.py").write_text("raise SystemExit('remote code ran although trust_remote_code is off')\n")
    return path


CASES.update(
    {
        "pickle weights without allow_pickle": (
            lambda ws: _train(ws, f"model.name_or_path={_pickle_model(ws)}"),
            lambda ws: f"model.allow_pickle: '{ws.root / 'modèle pickle'}' has no safetensors weights, only pickle files "
            "(.bin/.pt), which can run arbitrary code when loaded; set model.allow_pickle: true only if you trust the source",
        ),
        "model that needs remote code": (
            lambda ws: _train(ws, f"model.name_or_path={_remote_code_model(ws)}"),
            lambda ws: f"model.trust_remote_code: '{ws.root / 'modèle distant'}' needs to run code from its repository; "
            "set model.trust_remote_code: true only if you trust it",
        ),
    }
)


def check_one_clean_line(capsys: pytest.CaptureFixture, rc: int, expected: str) -> None:
    captured = capsys.readouterr()
    assert rc == 2, captured.err[-2000:]
    assert "Traceback" not in captured.err + captured.out
    assert captured.err == f"tlhub: error: {expected}\n"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2_nothing_damaged(name: str, ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    if not (ws.out / "all_results.json").is_file():
        assert main(["train", str(ws.config)]) == 0
    before = ws.snapshot()
    setup, expected = CASES[name]
    argv = setup(ws)
    capsys.readouterr()
    check_one_clean_line(capsys, main(argv), expected(ws))
    assert ws.snapshot() == before  # the finished run is untouched


def test_pickle_weights_load_with_allow_pickle(ws: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "pickle run"
    argv = _train(ws, f"model.name_or_path={_pickle_model(ws)}", "model.allow_pickle=true", f"training.output_dir={out}")
    assert main(argv) == 0
    assert (out / "model.safetensors").is_file()  # what tlhub writes is safetensors again


# --------------------------------------------------------------------------- image and audio


def _media_run(ws: Workspace, modality: str, column: str, files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    manifest = write_rows(tmp_path / "manifest.csv", [{column: str(f), "label": ("a", "b")[i % 2]} for i, f in enumerate(files)])
    cfg = text_config(ws.model, manifest, ws.out)
    cfg["modality"] = modality
    config = tmp_path / "media.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    before = ws.snapshot()
    capsys.readouterr()
    rc = main(["train", str(config)])
    captured = capsys.readouterr()
    assert rc == 2 and "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("tlhub: error: data.train") and captured.err.count("\n") == 1
    assert ws.snapshot() == before
    return captured.err


def test_image_that_is_really_a_text_file(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if "image" not in MODALITIES:
        pytest.skip("the image modality is not there yet")
    fakes = [ws.file(f"photo {i} é.png", "not an image, just text\n") for i in range(4)]
    err = _media_run(ws, "image", "image", fakes, tmp_path, capsys)
    assert "photo 0 é.png" in err


def test_zero_length_wav(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if "audio" not in MODALITIES:
        pytest.skip("the audio modality is not there yet")
    clips = [wav(ws.root / f"son vide {i} ü.wav", 0) for i in range(4)]
    clips.append(ws.file("son tronqué.wav", b""))  # zero bytes: not even a header
    err = _media_run(ws, "audio", "audio", clips, tmp_path, capsys)
    assert "5 of 5 audio clips" in err and "son vide 0 ü.wav" in err
