"""The timeseries modality: .ts files, series cells, patching and scaling, the GPT4TS-style
patch transformer over a tiny BERT / GPT-2 body (strategies, reload, predict), forecasting,
and each kind of bad series (one line, exit 2, or skipped and counted)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import cpu_training

TS_UNIVARIATE = """# a comment
@problemName Toy
@timeStamps false
@univariate true
@classLabel true a b
@data
1,2,3,4,5,6:a
2,?,4,5,6,7:b
"""

TS_MULTIVARIATE = """@problemName ToyMV
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3,4:4,3,2,1:up
1,2,3:3,2,1:down
"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """Tiny models train faster on one thread than on threads that wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_body(path: Path, kind: str) -> Path:
    """A 2-layer text model of width 32 (BERT or GPT-2), saved as a plain transformers folder."""
    from transformers import AutoModel, BertConfig, GPT2Config

    torch.manual_seed(0)
    if kind == "bert":
        config = BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    else:
        config = GPT2Config(vocab_size=20, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    AutoModel.from_config(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_body(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_body(tmp_path_factory.mktemp("bert-body"), "bert")


@pytest.fixture(scope="module")
def gpt2_body(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_body(tmp_path_factory.mktemp("gpt2-body"), "gpt2")


def ramps(n: int, length: int = 32, seed: int = 0) -> list[dict]:
    """Rising and falling trends under a wave of random frequency and phase, at random levels and
    scales, with noise: learnable in a few steps, and not by level or scale alone (instance
    normalisation removes both)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = np.arange(length) / length
        sign = 1 if i % 2 else -1
        shape = sign * t + 0.3 * np.sin(2 * math.pi * t * rng.uniform(1, 3) + rng.uniform(0, 6)) + rng.normal(0, 0.1, length)
        series = rng.uniform(-5, 5) + rng.uniform(0.5, 3) * shape
        rows.append({"series": [round(float(v), 4) for v in series], "label": "up" if i % 2 else "down"})
    return rows


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def wave_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("waves")
    return write_json(root / "train.jsonl", ramps(96, seed=1)), write_json(root / "test.jsonl", ramps(40, seed=2))


def series_config(body: Path, train: Path, out: Path, strategy: str = "partial", **sections: dict) -> dict:
    cfg = {
        "modality": "timeseries",
        "task": "classification",
        "model": {"name_or_path": str(body), "patch_length": 8, "patch_stride": 8},
        "data": {"train": str(train), "validation_split": 0.25},
        "strategy": {"name": strategy, **({"unfreeze_last_n": 0} if strategy == "partial" else {})},
        "training": cpu_training(out, num_train_epochs=4, learning_rate=1e-2, per_device_train_batch_size=16, eval_strategy="no",
                                 report_to="none"),
    }  # fmt: skip
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------- reading series


def test_ts_files_univariate_and_multivariate(tmp_path: Path) -> None:
    from tlhub.modalities.series_data import read_ts

    (tmp_path / "u.ts").write_text(TS_UNIVARIATE)
    (tmp_path / "m.ts").write_text(TS_MULTIVARIATE)
    uni = read_ts(tmp_path / "u.ts", "data.train", "series", "label")
    assert uni["label"] == ["a", "b"]
    assert uni["series"][0] == [[1, 2, 3, 4, 5, 6]]
    assert math.isnan(uni["series"][1][0][1])
    multi = read_ts(tmp_path / "m.ts", "data.train", "series", "label")
    assert multi["label"] == ["up", "down"]
    assert multi["series"][0] == [[1, 2, 3, 4], [4, 3, 2, 1]] and multi["series"][1] == [[1, 2, 3], [3, 2, 1]]


def test_series_cells_interpolation_and_length() -> None:
    from tlhub.modalities.series_data import as_array, clean, fit_length

    assert as_array([1, 2, 3], "x").shape == (1, 3)
    assert as_array([[1, 2], [3, 4]], "x").shape == (2, 2)
    assert as_array("[1.5, 2.5]", "x").tolist() == [[1.5, 2.5]]
    assert as_array("1,2:3,4", "x").tolist() == [[1, 2], [3, 4]]
    array, filled = clean(as_array([None, 2, None, 4, None], "x"), "x", 2)
    assert filled == 3 and array.tolist() == [[2, 2, 3, 4, 4]]
    assert fit_length(np.array([[1.0, 2.0]]), 4).tolist() == [[1, 2, 2, 2]]
    assert fit_length(np.array([[1.0, 2.0, 3.0]]), 2).tolist() == [[1, 2]]


def test_patching_scaling_and_unscaling() -> None:
    from tlhub.modalities.series_model import PatchTransformerConfig, patches, scale

    config = PatchTransformerConfig(body={"model_type": "bert", "hidden_size": 32}, num_input_channels=2, context_length=20,
                                    patch_length=8, patch_stride=4)  # fmt: skip
    values = torch.arange(40, dtype=torch.float32).reshape(1, 20, 2)
    cut = patches(values, config)
    assert config.num_patches == 4 and cut.shape == (1, 4, 16)
    assert cut[0, 1, :8].tolist() == values[0, 4:12, 0].tolist()  # patch 2: steps 4-11 of channel 1, then of channel 2
    assert cut[0, 1, 8:].tolist() == values[0, 4:12, 1].tolist()
    config.channel_independent = True
    assert patches(values, config).shape == (2, 4, 8)
    series = torch.randn(3, 50, 2) * 7 + 100
    scaled, loc, spread = scale(series, "std")
    assert scaled.mean(1).abs().max() < 1e-4 and (scaled.std(1, unbiased=False) - 1).abs().max() < 1e-3
    assert torch.allclose(scaled * spread + loc, series, atol=1e-4)
    for how in ("mean", "none"):
        scaled, loc, spread = scale(series, how)
        assert torch.allclose(scaled * spread + loc, series, atol=1e-4)


# --------------------------------------------------------------------------- the model and the strategies


def test_pretrained_false_is_the_same_network_from_random_weights(bert_body: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    from tlhub.config import config_from_dict
    from tlhub.modalities import get_modality

    modality = get_modality("timeseries")
    modality.length, modality.channels = 32, 2
    pretrained = modality.load_model(config_from_dict(series_config(bert_body, tmp_path / "x.jsonl", tmp_path / "o")), ["a", "b"])
    scratch_cfg = series_config(bert_body, tmp_path / "x.jsonl", tmp_path / "o", model={"pretrained": False})
    scratch = modality.load_model(config_from_dict(scratch_cfg), ["a", "b"])
    shapes = {k: v.shape for k, v in pretrained.state_dict().items()}
    assert shapes == {k: v.shape for k, v in scratch.state_dict().items()}
    assert shapes["patch_embedding.weight"] == (32, 16)  # 8 steps x 2 channels per patch -> width 32
    body = AutoModel.from_pretrained(bert_body)
    query = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(pretrained.body.state_dict()[query], body.state_dict()[query])
    assert not torch.equal(scratch.body.state_dict()[query], body.state_dict()[query])


def test_partial_trains_norms_and_positions_and_says_so(bert_body: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tlhub.config import config_from_dict
    from tlhub.modalities import get_modality
    from tlhub.strategies import get_strategy

    modality = get_modality("timeseries")
    modality.length, modality.channels = 32, 1
    cfg = config_from_dict(series_config(bert_body, tmp_path / "x.jsonl", tmp_path / "o"))
    with caplog.at_level("WARNING"):
        model = get_strategy("partial").apply(modality.load_model(cfg, ["a", "b"]), cfg.strategy, modality, "classification").model
    trains = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"patch_embedding.weight", "head.weight", "body.embeddings.position_embeddings.weight",
            "body.encoder.layer.1.output.LayerNorm.weight"} <= trains  # fmt: skip
    assert not any(".attention.self." in name or "intermediate.dense" in name for name in trains)
    assert "partial trains: patch_embedding, head; in the body: no whole block; layer norms" in caplog.text


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="pip install 'tlhub[weights]'")
def test_a_gguf_decoder_is_a_pretrained_body(tmp_path: Path) -> None:
    """SmolLM2's form offline: a Llama decoder in a GGUF file (model.gguf_file) as the body, its
    weights dequantised into the patch transformer, not left random."""
    from tests.tiny_models import make_tiny_llama_gguf
    from tlhub.config import config_from_dict
    from tlhub.modalities import get_modality

    folder, name, reference = make_tiny_llama_gguf(tmp_path / "gguf")
    modality = get_modality("timeseries")
    modality.length, modality.channels = 32, 1
    cfg = series_config(folder, tmp_path / "x.jsonl", tmp_path / "o")
    cfg["model"]["gguf_file"] = name
    model = modality.load_model(config_from_dict(cfg), ["a", "b"])
    loaded = model.body.layers[0].self_attn.q_proj.weight
    assert torch.allclose(loaded, reference.model.layers[0].self_attn.q_proj.weight.float(), atol=1e-2), "the body stayed random"


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="pip install 'tlhub[weights]'")
def test_the_body_keeps_its_first_blocks_and_partial_finds_a_single_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """GPT4TS keeps GPT-2's first 6 blocks: model.config_overrides num_hidden_layers N keeps the
    body's first N (their pretrained weights, the rest not loaded), and partial still finds the
    stack when N is 1 (no repeated children to recognise it by)."""
    from tests.tiny_models import make_tiny_llama_gguf
    from tlhub.config import config_from_dict
    from tlhub.modalities import get_modality
    from tlhub.strategies import get_strategy

    folder, name, reference = make_tiny_llama_gguf(tmp_path / "gguf", layers=3)
    modality = get_modality("timeseries")
    modality.length, modality.channels = 32, 1
    cfg = config_from_dict(series_config(folder, tmp_path / "x.jsonl", tmp_path / "o", model={"gguf_file": name, "config_overrides": {"num_hidden_layers": 1}}))
    model = modality.load_model(cfg, ["a", "b"])
    assert len(model.body.layers) == 1 and model.config.num_hidden_layers == 1
    loaded = model.body.layers[0].mlp.up_proj.weight
    assert torch.allclose(loaded, reference.model.layers[0].mlp.up_proj.weight.float(), atol=1e-2), "not the first block's weights"
    with caplog.at_level("WARNING"):
        model = get_strategy("partial").apply(model, cfg.strategy, modality, "classification").model
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"patch_embedding.weight", "head.weight", "body.layers.0.input_layernorm.weight", "body.norm.weight"} <= trains
    assert not any("self_attn" in n or "mlp" in n for n in trains), trains


def train(cfg: dict, tmp_path: Path) -> dict:
    from tlhub.cli import main

    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    return json.loads((Path(cfg["training"]["output_dir"]) / "all_results.json").read_text())


@pytest.fixture(scope="module")
def partial_run(bert_body: Path, wave_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("partial")
    cfg = series_config(bert_body, wave_files[0], root / "out", data={"test": str(wave_files[1])})
    return root / "out", train(cfg, root)


def test_partial_learns_the_toy_task(partial_run: tuple[Path, dict]) -> None:
    _, results = partial_run
    assert results["test_accuracy"] >= 0.8, results
    assert results["trainable_params"] < results["total_params"] / 2


def test_full_on_a_gpt2_body_learns_the_toy_task(gpt2_body: Path, wave_files: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = series_config(gpt2_body, wave_files[0], tmp_path / "out", "full", data={"test": str(wave_files[1])})
    results = train(cfg, tmp_path)
    assert results["test_accuracy"] >= 0.8, results
    assert results["trainable_params"] == results["total_params"]


def test_reload_and_predict(partial_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd
    from transformers import AutoModelForSequenceClassification

    from tlhub.cli import main
    from tlhub.inference import load_run, predict

    out, _ = partial_run
    rows = ramps(12, seed=7)
    csv = tmp_path / "new.csv"
    pd.DataFrame({"series": [json.dumps(r["series"]) for r in rows]}).to_csv(csv, index=False)
    run = load_run(out)
    predicted = predict(run, [str(csv)])
    assert [p["input"] for p in predicted] == [f"new.csv:{i}" for i in range(1, 13)]
    assert sum(p["label"] == r["label"] for p, r in zip(predicted, rows)) >= 9
    # the folder alone, through transformers' auto class, gives the same scores
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    values = torch.tensor([r["series"] for r in rows[:3]]).unsqueeze(-1)
    with torch.no_grad():
        assert torch.allclose(model(past_values=values).logits.softmax(-1).max(-1).values, torch.tensor([p["score"] for p in predicted[:3]]), atol=1e-5)
    capsys.readouterr()
    written = ",".join(str(v + 10) for v in rows[0]["series"])  # one series on the command line (a leading '-' would read as an option)
    assert main(["predict", str(out), str(csv), written]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 13 and lines[0].split("\t")[2] == "new.csv:1" and lines[0].split("\t")[0] in ("up", "down")


@pytest.mark.parametrize("strategy", ["feature_extraction", "lora"])
def test_feature_extraction_and_lora_train_save_and_reload(
    strategy: str, bert_body: Path, wave_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlhub.inference import load_run, predict

    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    cfg = series_config(bert_body, wave_files[0], tmp_path / "out", strategy, data={"max_train_samples": 32})
    cfg["training"]["num_train_epochs"] = 1
    results = train(cfg, tmp_path)
    assert 0 < results["trainable_params"] < results["total_params"]
    run = load_run(tmp_path / "out")
    assert len(predict(run, [",".join(str(v) for v in ramps(1)[0]["series"])])) == 1


# --------------------------------------------------------------------------- bad input


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    from tlhub.cli import main

    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err[-2000:]
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.removeprefix("tlhub: error: ")


def bad_rows(tmp_path: Path, cell: str, row: int = 2) -> Path:
    """A CSV of 4 good series with `cell` in row `row`."""
    import pandas as pd

    rows = ramps(4)
    cells = [json.dumps(r["series"]) for r in rows]
    cells[row - 1] = cell
    path = tmp_path / "bad.csv"
    pd.DataFrame({"series": cells, "label": [r["label"] for r in rows]}).to_csv(path, index=False)
    return path


def test_bad_series_each_one_line(bert_body: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def message(train: Path, **data: object) -> str:
        cfg = series_config(bert_body, train, tmp_path / "out", data={"max_bad_fraction": 0.0, **data})
        return one_line_error(["train", str(write_config(tmp_path, cfg))], capsys)

    path = bad_rows(tmp_path, json.dumps([math.nan] * 32))
    assert message(path) == (f"data.train ({path}): 1 of 4 series (25%) are unusable, more than data.max_bad_fraction=0.0: "
                             "row 2: channel 1 has no value (all NaN)")  # fmt: skip
    path = bad_rows(tmp_path, "[1.0, 2.0, Infinity, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]", row=3)
    assert message(path) == (f"data.train ({path}): row 3: column 'series': an infinite value (channel 1, step 3); "
                             "replace it with a number, or leave it empty (NaN) to be interpolated")  # fmt: skip
    path = bad_rows(tmp_path, "[1.0, 2.0, 3.0, 4.0]")
    assert message(path) == (f"data.train ({path}): 1 of 4 series (25%) are unusable, more than data.max_bad_fraction=0.0: "
                             "row 2: 4 steps, shorter than one patch (8 steps: model.patch_length)")  # fmt: skip
    ts = tmp_path / "bad.ts"
    ts.write_text(TS_UNIVARIATE.replace("2,?,4", "2,x,4"))
    assert message(ts) == f"data.train: {ts}: line 8: channel 1, value 2: 'x' is not a number (use ? for a missing value)"
    assert message(bad_rows(tmp_path, json.dumps(ramps(1)[0]["series"])), series_length=4) == (
        "data.series_length: 4 steps is shorter than one patch (model.patch_length: 8); lower model.patch_length"
    )


def test_unusable_series_are_skipped_and_counted(tmp_path: Path) -> None:
    from tlhub.config import config_from_dict
    from tlhub.data import read_table
    from tlhub.modalities import get_modality

    path = bad_rows(tmp_path, json.dumps([None] * 32))
    cfg = config_from_dict(series_config(tmp_path, path, tmp_path / "out", data={"max_bad_fraction": 0.5}))
    ds, skipped = get_modality("timeseries").prepare(read_table(path, "data.train"), cfg, tmp_path, "data.train")
    assert skipped == 1 and len(ds) == 3 and len(ds["series"][0][0]) == 32


def test_what_cannot_apply_is_refused(bert_body: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = series_config(bert_body, tmp_path / "x.jsonl", tmp_path / "out", "contrastive")
    assert one_line_error(["train", str(write_config(tmp_path, cfg))], capsys) == (
        "strategy.name: contrastive tunes a text encoder on pairs of labelled sentences (text classification); "
        "for timeseries classification use feature_extraction, partial or full"
    )
    cfg = series_config(bert_body, tmp_path / "x.jsonl", tmp_path / "out", "full", domain_adaptation={"target": str(tmp_path / "t.jsonl")})
    assert one_line_error(["train", str(write_config(tmp_path, cfg))], capsys) == (
        "domain_adaptation: not available for the timeseries modality; remove the domain_adaptation section"
    )


# --------------------------------------------------------------------------- forecasting


def seasonal_table(path: Path, steps: int = 160, seed: int = 0) -> Path:
    """A monthly-like series: trend + a season of 12 + noise, with a time column out of order."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    frame = pd.DataFrame({"month": t, "sales": 50 + 0.5 * t + 10 * np.sin(2 * math.pi * t / 12) + rng.normal(0, 1, steps)})
    frame.sample(frac=1, random_state=seed).to_csv(path, index=False)  # shuffled rows: data.time_column sorts them
    return path


def test_seasonal_naive_and_mase() -> None:
    from tlhub.tasks.forecasting import forecast_scores, seasonal_naive

    history = np.arange(8, dtype=float).reshape(1, 8, 1)  # 0..7, season 4: forecast repeats 4,5,6,7
    assert seasonal_naive(history, 6, 4)[0, :, 0].tolist() == [4, 5, 6, 7, 4, 5]
    truth = np.full((1, 2, 1), 10.0)
    scores = forecast_scores(np.full((1, 2, 1), 8.0), truth, history, 4)
    assert scores == {"mse": 4.0, "mae": 2.0, "mase": 0.5}  # in-sample seasonal error: 4 per step


def test_forecasting_trains_scores_against_the_floor_and_predicts(bert_body: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tlhub.cli import main

    table = seasonal_table(tmp_path / "sales.csv")
    cfg = series_config(bert_body, table, tmp_path / "out", "full", model={"patch_length": 6, "patch_stride": 3},
                        data={"time_column": "month", "target_columns": ["sales"], "context_length": 24, "prediction_length": 6,
                              "seasonality": 12, "window_stride": 2, "validation_split": 0.2})  # fmt: skip
    cfg["task"] = "forecasting"
    cfg["training"].update(num_train_epochs=3, learning_rate=1e-3)
    results = train(cfg, tmp_path)
    held = round(0.2 * 160)  # the last 32 steps are held out: windows forecasting inside them
    assert results["eval_samples"] == held - 6 + 1 and results["train_samples"] == len(range(0, 160 - held - 30 + 1, 2))
    for key in ("eval_mse", "eval_mae", "eval_mase", "eval_naive_mse", "eval_naive_mae", "eval_naive_mase"):
        assert math.isfinite(results[key]), key
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "out"), str(table), "--plot", str(tmp_path / "forecast.png")]) == 0
    name, column, values = capsys.readouterr().out.strip().split("\t")
    assert (name, column) == ("sales.csv", "sales") and len(values.split(",")) == 6
    assert (tmp_path / "forecast.png").read_bytes()[:4] == b"\x89PNG"
    cfg["data"]["prediction_length"] = 150
    assert one_line_error(["train", str(write_config(tmp_path, cfg))], capsys) == (
        f"data.train ({table}): 160 steps, fewer than data.context_length + data.prediction_length (24 + 150 = 174); "
        "shorten them or give a longer series"
    )


# --------------------------------------------------------------------------- PatchTST, the from-scratch baseline

PATCHTST_SIZE = {"d_model": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "ffn_dim": 32}


def test_patchtst_from_its_config_classifies_forecasts_and_reloads(
    wave_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tlhub.inference import load_run, predict

    model = {"name_or_path": "patchtst", "config_overrides": PATCHTST_SIZE}
    cfg = series_config(tmp_path, wave_files[0], tmp_path / "cls", "full", model=model, data={"max_train_samples": 32})
    cfg["training"]["num_train_epochs"] = 1
    results = train(cfg, tmp_path)
    assert results["trainable_params"] == results["total_params"] > 0
    assert len(predict(load_run(tmp_path / "cls"), [str(wave_files[1])])) == 40
    table = seasonal_table(tmp_path / "sales.csv", steps=80)
    cfg = series_config(tmp_path, table, tmp_path / "fc", "full", model={**model, "patch_length": 6, "patch_stride": 3},
                        data={"time_column": "month", "context_length": 24, "prediction_length": 6, "seasonality": 12})  # fmt: skip
    cfg["task"], cfg["training"]["num_train_epochs"] = "forecasting", 1
    assert math.isfinite(train(cfg, tmp_path)["eval_mse"])
    cfg = series_config(tmp_path, wave_files[0], tmp_path / "fe", "feature_extraction", model=model)
    assert one_line_error(["train", str(write_config(tmp_path, cfg))], capsys) == (
        "strategy.name: feature_extraction pools a body's outputs over patches; PatchTST's are per channel and patch: "
        "use full (from scratch), partial or lora"
    )


def test_regression_learns_a_slope_and_predicts_numbers(bert_body: Path, tmp_path: Path) -> None:
    """data.problem_type: regression (auto: the labels have fractions) for series: a float label
    reaches a mean-squared-error loss, not a class id (it was cast to int, every slope to 0)."""
    from tlhub.inference import load_run, predict

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(96):
        slope = float(rng.uniform(-1, 1))
        rows.append({"series": (slope * np.arange(32) + rng.normal(0, 0.3, 32)).round(3).tolist(), "label": round(slope, 4)})
    data = write_json(tmp_path / "slopes.jsonl", rows)
    cfg = series_config(bert_body, data, tmp_path / "out", "full", data={"scaling": "none"})  # std scaling would remove the slope
    cfg["training"].update(num_train_epochs=12, learning_rate=3e-3)
    results = train(cfg, tmp_path)
    assert results["problem_type"] == "regression" and results["eval_pearson"] >= 0.9, results
    first = predict(load_run(tmp_path / "out"), [str(data)])[0]
    assert first["input"] == "slopes.jsonl:1" and abs(first["value"] - rows[0]["label"]) < 0.3, (first, rows[0])


def test_pretraining_on_unlabelled_series_then_a_classifier_starts_from_it(bert_body: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """task: pretraining (masked patches, PatchTST's way) on series without labels; a later run
    names the folder as its model and starts from its patch embedding and body."""
    import torch
    from safetensors.torch import load_file

    from tlhub.cli import main
    from tlhub.config import config_from_dict
    from tlhub.data import load_data
    from tlhub.modalities import get_modality

    unlabelled = write_json(tmp_path / "unlabelled.jsonl", [{"series": r["series"]} for r in ramps(160, seed=3)])
    cfg = series_config(bert_body, unlabelled, tmp_path / "pre", "full")
    cfg["task"] = "pretraining"
    cfg["training"].update(num_train_epochs=8, learning_rate=3e-3)
    results = train(cfg, tmp_path)
    # predicting each patch as its series' mean scores 1.0 (std scaling): the body learned from the neighbours
    assert results["eval_loss"] < 0.8 and results["eval_samples"] == 40, results
    # patches of 8 every 8 (series_config's): none overlaps, none shows a masked patch's values
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["patch_stride"] == 8

    labelled = write_json(tmp_path / "labelled.jsonl", ramps(64, seed=1))
    follow = series_config(tmp_path / "pre", labelled, tmp_path / "cls", "partial")
    run_cfg = config_from_dict(follow)
    modality = get_modality("timeseries")
    loaded = load_data(run_cfg, modality)
    modality.load_processor(run_cfg)
    model = modality.load_model(run_cfg, loaded.label_names)
    saved = load_file(str(tmp_path / "pre" / "model.safetensors"))
    assert torch.equal(model.patch_embedding.weight, saved["patch_embedding.weight"])
    body = {k: v for k, v in model.state_dict().items() if k.startswith("body.")}
    assert body and all(torch.equal(v, saved[k]) for k, v in body.items())
    follow["training"].update(num_train_epochs=4)
    assert train(follow, tmp_path)["eval_accuracy"] >= 0.8

    capsys.readouterr()
    assert one_line_error(["predict", str(tmp_path / "cls"), "1,2,3"], capsys) == (
        "predict: the input: 3 steps, shorter than one patch (8 steps: model.patch_length)")  # fmt: skip
    assert main(["predict", str(tmp_path / "pre"), ",".join(["1"] * 32)]) == 2
    assert "is a pretraining run (masked patches); name its folder as model.name_or_path" in capsys.readouterr().err
    cfg["model"] = {"name_or_path": "patchtst"}
    assert one_line_error(["train", str(write_config(tmp_path, cfg))], capsys).endswith("PatchTST from its config is not pretrained here")


def test_patchtsmixer_from_its_config_learns_forecasts_and_reloads(wave_files: tuple[Path, Path], tmp_path: Path) -> None:
    """model.name_or_path: patchtsmixer: transformers' PatchTSMixer from its config (random
    weights), as a classifier and a forecaster, saved as a plain PatchTSMixer folder."""
    from transformers import AutoConfig

    from tlhub.inference import load_run, predict

    model = {"name_or_path": "patchtsmixer", "config_overrides": {"d_model": 16, "num_layers": 2}}
    cfg = series_config(tmp_path, wave_files[0], tmp_path / "cls", "full", model=model)
    cfg["training"].update(num_train_epochs=8, learning_rate=1e-2)
    results = train(cfg, tmp_path)
    assert results["eval_accuracy"] >= 0.8 and results["trainable_params"] == results["total_params"], results
    assert AutoConfig.from_pretrained(tmp_path / "cls").model_type == "patchtsmixer"
    rows = predict(load_run(tmp_path / "cls"), [str(wave_files[1])])
    assert len(rows) == 40 and {r["label"] for r in rows} <= {"up", "down"}, rows[:2]
    table = seasonal_table(tmp_path / "sales.csv", steps=80)
    cfg = series_config(tmp_path, table, tmp_path / "fc", "full", model={**model, "patch_length": 6, "patch_stride": 3},
                        data={"time_column": "month", "context_length": 24, "prediction_length": 6, "seasonality": 12})  # fmt: skip
    cfg["task"], cfg["training"]["num_train_epochs"] = "forecasting", 1
    assert math.isfinite(train(cfg, tmp_path)["eval_mse"])


def test_pretraining_cuts_patches_that_do_not_overlap_and_the_follower_reads_its_own_stride(bert_body: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Overlapping patches would show a masked patch's values in its neighbours (reconstruction
    near-trivial): pretraining cuts them every patch_length steps, says so, and a later run
    reads them every model.patch_stride of its own config."""
    from tlhub.config import config_from_dict
    from tlhub.data import load_data
    from tlhub.modalities import get_modality

    unlabelled = write_json(tmp_path / "unlabelled.jsonl", [{"series": r["series"]} for r in ramps(48, seed=3)])
    cfg = series_config(bert_body, unlabelled, tmp_path / "pre", "full", model={"patch_length": 8, "patch_stride": 4})
    cfg["task"] = "pretraining"
    cfg["training"].update(num_train_epochs=1)
    with caplog.at_level(logging.WARNING, logger="tlhub"):
        train(cfg, tmp_path)
    assert "task: pretraining masks patches of 8 steps cut every 8 steps" in caplog.text
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["patch_stride"] == 8
    follow = config_from_dict(series_config(tmp_path / "pre", write_json(tmp_path / "l.jsonl", ramps(16)), tmp_path / "cls", "partial",
                                            model={"patch_length": 8, "patch_stride": 4}))  # fmt: skip
    modality = get_modality("timeseries")
    loaded = load_data(follow, modality)
    modality.load_processor(follow)
    assert modality.load_model(follow, loaded.label_names).config.patch_stride == 4
