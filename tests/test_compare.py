"""`tlhub compare`: strategies side by side, data-efficiency curves, argument errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml

from tests.conftest import text_config
from tlhub.cli import main
from tlhub.strategies import STRATEGIES
from tlhub.config import config_from_dict
from tlhub.data import fraction_of
from tlhub.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))


def _yaml(tiny_bert: Path, toy_csv: Path, tmp_path: Path, epochs: int = 2) -> Path:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "full")
    cfg["training"].update(num_train_epochs=epochs, eval_strategy="no", logging_strategy="no")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "feature_extraction,lorra"], "--strategies: unknown strategy 'lorra' (did you mean 'lora'?); choose from: " + ", ".join(STRATEGIES.names())),
        (["--strategies", "full,full"], "--strategies: 'full,full' names a strategy twice"),
        (["--fractions", "0.1,1.5"], "--fractions: 1.5 is not in (0, 1]; give fractions of the training data, e.g. 0.1,0.5,1.0"),
        (["--fractions", "0,0.5"], "--fractions: 0 is not in (0, 1]; give fractions of the training data, e.g. 0.1,0.5,1.0"),
        (["--fractions", "half"], "--fractions: 'half' is not a number; give fractions of the training data in (0, 1], e.g. 0.1,0.5,1.0"),
        (["--fractions", "0.5", "--baseline", "scrach"], "--baseline: unknown baseline 'scrach' (did you mean 'scratch'?); choose from: scratch, none"),
        (["data.max_length=0", "--strategies", "full"], "data.max_length: must be positive, got 0"),
        # dotted overrides after the flags count too, as users type them
        (["--strategies", "full", "data.max_length=0"], "data.max_length: must be positive, got 0"),
        (["--fractions", "0.5", "training.num_train_epochs=-2"], "training.num_train_epochs: must be in (0, inf], got -2"),
        (["--samples-per-class", "8,x"], "--samples-per-class: 'x' is not a whole number of at least 1; e.g. 8,16,32"),
        (["--seeds", "0,0"], "--seeds: '0,0' names a value twice"),
        (["--fractions", "0.5", "--samples-per-class", "8"], "--fractions, --samples-per-class: give one of them (fractions of the data, or rows per class)"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    config = _yaml(tiny_bert, toy_csv, tmp_path)
    capsys.readouterr()
    assert main(["compare", str(config), *args]) == 2
    err = capsys.readouterr().err
    assert err == f"tlhub: error: {message}\n"
    assert not (tmp_path / "run" / "compare").exists()  # nothing trained


def test_unknown_words_after_the_flags_are_still_an_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path / "c.yaml"), "--strategies", "full", "--nope"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("tlhub: error: unrecognized arguments: --nope")


def test_missing_config_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["compare", str(tmp_path / "nope.yaml"), "--strategies", "full"]) == 2
    assert capsys.readouterr().err == f"tlhub: error: {tmp_path / 'nope.yaml'}: config file not found\n"


def test_compare_strategies(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    config = _yaml(tiny_bert, toy_csv, tmp_path)
    assert main(["compare", str(config), "strategy.unfreeze_last_n=1", "--strategies", "feature_extraction,partial,lora,full"]) == 0
    out = tmp_path / "run" / "compare"
    report = json.loads((out / "compare.json").read_text())
    rows = {row["strategy"]: row for row in report["rows"]}
    assert list(rows) == ["feature_extraction", "partial", "lora", "full"]
    assert report["metric"] == "eval_accuracy" and report["greater_is_better"] is True
    params = {name: row["trainable_params"] for name, row in rows.items()}
    assert params["feature_extraction"] == 32 * 2 + 2
    assert params["feature_extraction"] < params["lora"] < params["partial"] < params["full"] == rows["full"]["total_params"]
    for row in rows.values():
        assert 0.0 <= row["metric"] <= 1.0 and row["train_time_s"] > 0 and row["peak_memory_mb"] > 50
        assert row["train_samples"] == 180 and (out / row["strategy"] / "all_results.json").is_file()
    assert rows["feature_extraction"]["feature_cache_hit"] is False  # cached features, computed in this run
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert "Strategies compared" in printed and "lora" in printed and "compare.json" in printed


def test_data_efficiency_curve(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    config = _yaml(tiny_bert, toy_csv, tmp_path, epochs=1)
    out = tmp_path / "curve-out"
    assert main(["compare", str(config), "--fractions", "1.0,0.25", "--baseline", "scratch", "--output-dir", str(out)]) == 0
    report = json.loads((out / "curve.json").read_text())
    assert report["fractions"] == [0.25, 1.0]
    seen = {(r["weights"], r["fraction"]): r for r in report["rows"]}
    assert set(seen) == {("pretrained", 0.25), ("scratch", 0.25), ("pretrained", 1.0), ("scratch", 1.0)}
    assert abs(seen[("pretrained", 0.25)]["train_samples"] - 45) <= 1 and seen[("scratch", 1.0)]["train_samples"] == 180
    assert seen[("pretrained", 0.25)]["eval_samples"] == seen[("scratch", 1.0)]["eval_samples"] == 60  # one validation split
    assert all(r["strategy"] == "full" for r in report["rows"])
    assert (out / "curve.png").read_bytes()[:8] == PNG_MAGIC
    assert "Data efficiency" in capsys.readouterr().out


def test_few_shot_curves_per_strategy_over_seeds(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    """One curve per strategy and scratch, at 4 and 8 rows per class, each point over 2 draws."""
    config = _yaml(tiny_bert, toy_csv, tmp_path, epochs=1)
    out = tmp_path / "few"
    argv = ["compare", str(config), "--samples-per-class", "4,8", "--strategies", "feature_extraction,contrastive",
            "--seeds", "0,1", "--output-dir", str(out), "strategy.contrastive.iterations=2"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "curve.json").read_text())
    assert report["x"] == "samples_per_class" and report["samples_per_class"] == [4, 8] and report["seeds"] == [0, 1]
    seen = {(r["weights"], r["strategy"], r["samples_per_class"]): r for r in report["rows"]}
    assert set(seen) == {(w, s, n) for w, s in (("pretrained", "feature_extraction"), ("pretrained", "contrastive"), ("scratch", "full")) for n in (4, 8)}
    for row in report["rows"]:
        assert row["train_samples"] == 2 * row["samples_per_class"]
        assert [run["seed"] for run in row["runs"]] == [0, 1] and row["metric_std"] >= 0.0
        assert row["metric"] == pytest.approx(sum(run["metric"] for run in row["runs"]) / 2)
    assert (out / "curve" / "pretrained-contrastive-4-shot" / "seed-1" / "all_results.json").is_file()
    assert (out / "curve.png").read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert "mean ± std over 2 seeds" in printed and "contrastive" in printed and "best" in printed


def test_fraction_is_stratified_seeded_and_nested() -> None:
    ds = datasets.Dataset.from_dict({"labels": [0] * 80 + [1] * 20, "i": list(range(100))})
    small, large = fraction_of(ds, 0.1, seed=3, stratify=True), fraction_of(ds, 0.5, seed=3, stratify=True)
    assert Counter(small["labels"]) == {0: 8, 1: 2} and Counter(large["labels"]) == {0: 40, 1: 10}
    assert set(small["i"]) < set(large["i"])
    assert list(fraction_of(ds, 0.1, seed=3, stratify=True)["i"]) == list(small["i"])
    assert list(fraction_of(ds, 0.1, seed=4, stratify=True)["i"]) != list(small["i"])
    assert len(fraction_of(ds, 0.01, seed=3, stratify=True)) == 2  # at least one row per class


def test_train_fraction_is_checked(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run")
    cfg["data"]["train_fraction"] = 0.0
    with pytest.raises(ConfigError, match=r"^data.train_fraction: must be in \(0, 1\], got 0.0$"):
        config_from_dict(cfg)


def test_fp16_without_a_gpu_is_a_clear_error(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    import torch

    from tlhub.trainer import training_arguments

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run")
    cfg["training"]["fp16"] = True
    with pytest.raises(ConfigError, match=r"^training.fp16: float16 mixed precision needs a CUDA GPU"):
        training_arguments(config_from_dict(cfg))
