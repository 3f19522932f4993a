"""LP-FT (strategy.name: lp_ft): the head is probed on the frozen model's features, then
every weight fine-tunes. Also the example of docs/adding_a_strategy.md: this file and the
folder tlhub/strategies/lp_ft/ are all it took."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import text_config
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.errors import ConfigError
from tlhub.modalities import get_modality
from tlhub.pipeline import finetune, load_run, predict
from tlhub.strategies import STRATEGIES
from tlhub.strategies.lp_ft import head_inputs, output_layer


def test_the_probe_fits_the_head_on_what_it_reads(tiny_bert: Path, toy_csv: Path) -> None:
    cfg = config_from_dict(text_config(tiny_bert, toy_csv, Path("unused"), "lp_ft"))
    text = get_modality("text")
    processor = text.load_processor(cfg)
    model = STRATEGIES.get("lp_ft")().apply(text.load_model(cfg, ["neg", "pos"]), cfg.strategy, text, "classification").model
    layer = output_layer(model)
    assert layer is model.classifier  # BERT's output layer reads the pooler's output
    from tlhub.data import load_data

    rows = load_data(cfg, text).splits["train"].with_transform(text.transform(processor, cfg, train=False))
    model.train()
    features, labels = head_inputs(model, layer, rows, text.collator(processor, cfg, model), batch_size=32)
    assert features.shape == (180, 32) and labels.shape == (180,)
    assert model.training is True  # the probe reads in evaluation mode and leaves the model as it found it


def test_lp_ft_probes_then_fine_tunes_every_weight(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = finetune(config_from_dict(text_config(tiny_bert, toy_csv, out, "lp_ft")))
    assert results["probe_head_C"] > 0 and results["probe_head_cv_folds"] == 5
    assert results["trainable_params"] == results["total_params"]  # then everything trains, as in full
    assert results["eval_accuracy"] > 0.7  # 60 held-out toy sentences, chance 0.5
    before, after = load_file(str(tiny_bert / "model.safetensors")), load_file(str(out / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])  # the body moved
    assert json.loads((out / "tlhub_run.json").read_text())["strategy"] == "lp_ft"
    assert {p["label"] for p in predict(load_run(out), ["good", "awful", "lovely", "horrid"])} <= {"neg", "pos"}


def test_lp_ft_settings_are_checked_where_they_are_declared(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "lp_ft")
    cfg["strategy"]["lp_ft"] = {"probe_batch_size": 0}
    with pytest.raises(ConfigError, match=r"^strategy.lp_ft.probe_batch_size: must be positive, got 0$"):
        config_from_dict(cfg)
    cfg["strategy"] = {"name": "lp_ft", "head": "logistic"}
    with pytest.raises(ConfigError, match="^strategy.head: logistic fits a head on a frozen backbone's features: use it with feature_extraction or contrastive, not lp_ft$"):
        config_from_dict(cfg)
    assert main(["config", "strategy.lp_ft"]) == 0
    assert "strategy.lp_ft.probe_batch_size [int] = 64:" in capsys.readouterr().out
