"""Config loading: YAML, dotted overrides, types, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import config_file, one_line_error, text_config
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.config import load_config, parse_overrides
from tlhub.errors import ConfigError

BASE = """\
# tlhub train this.yaml
modality: text
model: {name_or_path: some/model}
data: {train: train.csv}
training: {output_dir: runs/x, learning_rate: 2e-5, num_train_epochs: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_overrides_and_yaml_number_strings(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), ["strategy.name=lora", "strategy.lora.r=4", "training.learning_rate=3e-5", "data.max_train_samples=100"])
    assert cfg.task == "classification" and cfg.strategy.name == "lora" and cfg.strategy.lora.r == 4
    assert cfg.training["learning_rate"] == 3e-5 and isinstance(cfg.training["learning_rate"], float)
    assert cfg.data.max_train_samples == 100 and cfg.data.validation_split == 0.1
    assert cfg.strategy.lora.target_modules == "auto"


def test_the_training_section_is_one_trainingarguments_subclass(tmp_path: Path) -> None:
    """`training` is read into tlhub's TrainingConfig, a Seq2SeqTrainingArguments subclass, once,
    when the config is built: tlhub's defaults are its fields' defaults, checkpoints follow the
    evaluations unless set, config.yaml records the keys given as plain YAML, and the run adds
    only what the task and machine know, under the config's own keys."""
    from transformers import Seq2SeqTrainingArguments

    from tlhub.trainer import training_arguments
    from tlhub.training_args import TrainingConfig

    cfg = load_config(write(tmp_path, BASE), ["training.eval_strategy=steps", "training.eval_steps=7", "training.label_names=[y]"])
    args = cfg.training_args
    assert isinstance(args, TrainingConfig) and isinstance(args, Seq2SeqTrainingArguments)
    assert (args.report_to, args.save_total_limit, args.logging_steps, args.remove_unused_columns) == ([], 2, 25, False)
    assert (args.save_strategy.value, args.save_steps, args.learning_rate) == ("steps", 7, 2e-5)
    assert cfg.to_dict()["training"] == {"output_dir": "runs/x", "learning_rate": 2e-5, "num_train_epochs": 2,
                                         "eval_strategy": "steps", "eval_steps": 7, "label_names": ["y"]}  # fmt: skip
    run = training_arguments(cfg)
    assert isinstance(run, TrainingConfig) and run.label_names == ["y"] and run.save_steps == 7 and run.push_to_hub is False
    assert load_config(write(tmp_path, BASE), ["training.save_strategy=no"]).training_args.save_strategy.value == "no"
    assert load_config(write(tmp_path, BASE)).training_args.save_strategy.value == "epoch"


def test_transformers_own_checks_run_when_the_config_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^training: --load_best_model_at_end requires the save and eval strategy to match"):
        load_config(write(tmp_path, BASE), ["training.load_best_model_at_end=true", "training.save_strategy=steps"])
    with pytest.raises(ConfigError, match=r"^training.generation_num_beams: unknown key"):  # a task that does not generate
        load_config(write(tmp_path, BASE), ["training.generation_num_beams=2"])


def test_a_gpu_runs_precision_does_not_bind_the_machine_that_loads_it() -> None:
    """A run trained with fp16 on a GPU loads for prediction on a CPU machine: the precision
    keys this machine cannot run are left out of the config it reads back."""
    from tlhub.training_args import runnable_here

    section = {"output_dir": "o", "fp16": True, "bf16": False, "learning_rate": 1e-3}
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert runnable_here(section) == {"output_dir": "o", "bf16": False, "learning_rate": 1e-3}
    assert runnable_here({"bf16": True, "use_cpu": True}) == {"bf16": True, "use_cpu": True}  # bf16 runs on the CPU
    assert runnable_here({"bf16": True}) == {}


def test_overrides_parse_yaml_values() -> None:
    assert parse_overrides(["a.b=1", "a.c=true", "d=[q, v]", "e=null"]) == {"a": {"b": 1, "c": True}, "d": ["q", "v"], "e": None}


def test_text_overrides_stay_as_typed() -> None:
    # YAML alone would read the prompt as a mapping {"Answer": None} and strip its trailing space
    parsed = parse_overrides(["data.source_prefix=Answer: ", "data.label_words={0: negative, 1: positive}", "x='quoted '"])
    assert parsed == {"data": {"source_prefix": "Answer: ", "label_words": {0: "negative", 1: "positive"}}, "x": "quoted "}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy.nmae=full"], "strategy.nmae: unknown key (did you mean 'name'?)"),
        (["data.text_colum=x"], "data.text_colum: unknown key (did you mean 'text_column'?)"),
        (["training.learning_rat=1"], "training.learning_rat: unknown key (did you mean 'learning_rate'?)"),
        (["modality=vision"], "modality: unknown modality 'vision'; choose one of: text, image, audio, timeseries"),
        (["strategy.unfreeze_last_n=two"], "strategy.unfreeze_last_n: expected an integer, got 'two'"),
        (["model.pretrained=maybe"], "model.pretrained: expected true or false, got 'maybe'"),
        (["data.validation_split=1.5"], "data.validation_split: must be between 0 and 1, got 1.5"),
        (["strategy.pooling=max"], "strategy.pooling: unknown pooling 'max' (did you mean 'mean'?); choose one of: auto, cls, mean, pooler, last"),
        (["training.num_train_epochs=lots"], "training.num_train_epochs: expected a number, got 'lots'"),
        (["oops"], "override 'oops': expected section.key=value, e.g. strategy.name=full"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE), overrides)
    assert str(info.value) == message


def test_missing_required_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model: missing required section"):
        load_config(write(tmp_path, "modality: text\ndata: {train: a.csv}\ntraining: {output_dir: x}\n"))
    with pytest.raises(ConfigError, match=r"^training.output_dir: missing required key"):
        load_config(write(tmp_path, BASE.replace("output_dir: runs/x, ", "")))


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml: line 2, column 12: invalid YAML: mapping values are not allowed here$"):
        load_config(write(tmp_path, "modality: text\nmodel: name: x\n"))
    with pytest.raises(ConfigError, match=r"expected a mapping of sections"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_recipe_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    configs = sorted(root.rglob("*.yaml"))
    assert configs, "no recipe configs found"
    for path in configs:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and ("tlhub " in first or "recipes/finetune.py" in first), f"{path}: first line must be the command"
        # every key and type; a GPU recipe's bf16 is checked as this machine can run it (on its CPU)
        load_config(path, [] if torch.cuda.is_available() else ["training.use_cpu=true"])


# --------------------------------------------------------------------------- types and YAML through the command line (issue 27)


def test_quoted_numbers_and_booleans_take_their_fields_type(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    data = write_rows(tmp_path / "toy.csv", toy_sentiment_rows(80))
    cfg = text_config(tiny_bert, data, tmp_path / "run", training={"num_train_epochs": "1", "per_device_train_batch_size": "16",
                                                                    "learning_rate": "1e-3", "use_cpu": "true"})  # fmt: skip
    cfg["data"]["max_length"] = "32"
    assert main(["train", str(config_file(tmp_path / "c.yaml", cfg))]) == 0
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["train_batch_size"] == 16
    assert one_line_error(capsys, ["train", str(tmp_path / "c.yaml"), "training.use_cpu=maybe"]) == "tlhub: error: training.use_cpu: expected true or false, got 'maybe'\n"
    assert one_line_error(capsys, ["train", str(tmp_path / "c.yaml"), "training.overwrite_output_dir=yes please"]) == (
        "tlhub: error: training.overwrite_output_dir: expected true or false, got 'yes please'\n"
    )
    assert one_line_error(capsys, ["train", str(tmp_path / "c.yaml"), "strategy.lora.dropout=.nan"]) == "tlhub: error: strategy.lora.dropout: must be a finite number, got nan\n"
    assert one_line_error(capsys, ["train", str(tmp_path / "c.yaml"), "model.config_overrides={hidden_dropout_prob: lots}"]) == (
        "tlhub: error: model.config_overrides.hidden_dropout_prob: expected a number (the config holds 0.1), got 'lots'\n"
    )


def test_a_key_written_twice_in_the_yaml_is_refused_with_its_lines(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("modality: text\nmodel: {name_or_path: x}\nmodality: image\ndata: {train: a.csv}\ntraining: {output_dir: o}\n")
    assert one_line_error(capsys, ["train", str(path)]) == (
        f"tlhub: error: {path}: line 3, column 1: invalid YAML: key 'modality' appears twice (first on line 1); keep one\n"
    )
