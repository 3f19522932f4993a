"""Few-shot: per-class draws, SetFit-style contrastive pairs and body tuning, the logistic head."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import text_config, with_sections
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.errors import ConfigError
from tlhub.modalities import get_modality
from tlhub.pipeline import finetune, load_run, predict
from tlhub.strategies.contrastive import make_pairs


def few(model: Path, rows: Path, out: Path, name: str = "full", **sections) -> dict:
    """text_config with sections merged in (``data=`` included)."""
    return with_sections(text_config(model, rows, out, name), sections)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- draws


def _train_texts(tiny_bert: Path, toy_csv: Path, tmp_path: Path, n: int, seed: int) -> list[str]:
    cfg = config_from_dict(few(tiny_bert, toy_csv, tmp_path / "run", data={"samples_per_class": n, "seed": seed}))
    train = load_data(cfg, get_modality("text")).splits["train"]
    return list(zip(train["text"], train["labels"]))


def test_samples_per_class_is_stratified_seeded_and_nested(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    four = _train_texts(tiny_bert, toy_csv, tmp_path, 4, seed=0)
    eight = _train_texts(tiny_bert, toy_csv, tmp_path, 8, seed=0)
    assert Counter(label for _, label in four) == {0: 4, 1: 4}
    assert Counter(label for _, label in eight) == {0: 8, 1: 8}
    assert set(four) <= set(eight)  # nested: the 4-shot draw is part of the 8-shot one
    assert _train_texts(tiny_bert, toy_csv, tmp_path, 8, seed=0) == eight
    assert set(_train_texts(tiny_bert, toy_csv, tmp_path, 8, seed=1)) != set(eight)  # another seed, another draw


def test_samples_per_class_larger_than_a_class_names_it(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    cfg = few(tiny_bert, toy_csv, tmp_path / "run", data={"samples_per_class": 500})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlhub: error: data.samples_per_class: 500 is more than the ")
    assert "training rows of class 'neg'; use at most " in err and err.endswith(", or add rows of that class\n")


# --------------------------------------------------------------------------- pairs


def test_pairs_are_balanced_seeded_and_labelled_by_class() -> None:
    labels = [0, 0, 0, 1, 1, 2]
    pairs = make_pairs(labels, iterations=5, seed=0)
    assert len(pairs) == 2 * 5 * len(labels)
    positives = [p for p in pairs if p[2] == 1.0]
    negatives = [p for p in pairs if p[2] == 0.0]
    assert len(positives) == len(negatives) == 5 * len(labels)
    assert all(labels[a] == labels[b] for a, b, _ in positives)
    assert all(a != b for a, b, _ in positives if labels.count(labels[a]) > 1)  # a partner, not itself
    assert all(labels[a] != labels[b] for a, b, _ in negatives)
    assert Counter(a for a, _, _ in pairs) == {row: 10 for row in range(len(labels))}  # every row, equally often
    assert make_pairs(labels, 5, seed=0) == pairs and make_pairs(labels, 5, seed=1) != pairs
    with pytest.raises(ConfigError, match="at least two classes"):
        make_pairs([1, 1, 1], 2, 0)


def test_in_batch_loss_scores_every_pair_of_rows_against_same_label() -> None:
    from tlhub.strategies.contrastive import InBatchEncoder

    class Fixed(torch.nn.Module):  # a "body" whose mean-pooled embedding is given
        def forward(self, embedding, attention_mask=None):
            from transformers.modeling_outputs import BaseModelOutput

            return BaseModelOutput(last_hidden_state=embedding[:, None, :])

    rows = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    out = InBatchEncoder(Fixed(), "mean")({"embedding": rows}, labels)
    assert out.loss.item() == pytest.approx(0.0)  # same class: cos 1; other class: cos 0
    wrong = InBatchEncoder(Fixed(), "mean")({"embedding": rows}, torch.tensor([0, 1, 1]))
    # pairs (0,1) cos 1 vs target 0, (1,2) cos 0 vs target 1, (0,2) right: 4 of 6 ordered pairs off by 1
    assert wrong.loss.item() == pytest.approx(4 / 6)


# --------------------------------------------------------------------------- through the pipeline


@pytest.mark.parametrize(("body", "pairing"), [("full", "in_batch"), ("lora", "sampled")])
def test_contrastive_moves_the_body_fits_a_logistic_head_and_reloads(body, pairing, tiny_bert, toy_csv, tmp_path) -> None:
    out = tmp_path / "run"
    settings = {"iterations": 4, "body": body, "pairing": pairing, "learning_rate": 1e-3 if body == "lora" else 3e-4}
    cfg = few(tiny_bert, toy_csv, out, "contrastive", data={"samples_per_class": 16}, strategy={"contrastive": settings})
    results = finetune(config_from_dict(cfg))
    if pairing == "sampled":  # per row and iteration a positive and a negative pair, 16 pairs a batch
        assert results["contrastive_pairs"] == 2 * 4 * 32 and results["contrastive_steps"] == 16
    else:  # every row 4 times, 16 rows a batch, each batch's 16 * 15 / 2 pairs
        assert results["contrastive_pairs"] == 4 * 32 * 15 // 2 and results["contrastive_steps"] == 8
    assert results["head"] == "logistic" and results["head_C"] > 0
    assert results["eval_accuracy"] > 0.7  # the toy sentences are learnable from 16 per class
    before = load_file(str(tiny_bert / "model.safetensors"))
    after = load_file(str(out / "backbone" / "model.safetensors"))  # the run's backbone, beside its head
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[f"bert.{key}"], after[key])  # the body learned from the pairs
    assert not any("lora" in k for k in after)  # a LoRA body is merged: a plain body is saved
    info = json.loads((out / "pooled_head.json").read_text())
    assert info["normalize"] is True
    run = load_run(out)
    assert predict(run, ["great"])[0]["label"] in ("neg", "pos")
    evaluated = json.loads(json.dumps(results))
    assert evaluated["strategy"] == "contrastive"


def test_logistic_head_on_frozen_features_trains_no_epochs(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = few(tiny_bert, toy_csv, out, "feature_extraction", strategy={"head": "logistic"})
    results = finetune(config_from_dict(cfg))
    assert results["head"] == "logistic" and results["head_cv_folds"] == 5
    assert results["eval_accuracy"] > 0.7
    assert results["trainable_params"] == 32 * 2 + 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 0  # fitted in closed form, not by the Trainer
    again = load_run(out)
    assert again.model.normalize is True


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"name": "full", "head": "logistic"}, "strategy.head: logistic fits a head on a frozen backbone's features: use it with feature_extraction or contrastive, not full"),
        ({"name": "feature_extraction", "head": "logistc"}, "strategy.head: unknown head 'logistc' (did you mean 'logistic'?); choose one of: auto, linear, logistic"),
        ({"name": "feature_extraction", "head": "logistic", "cache": False}, "strategy.head: logistic fits on the cached features, which strategy.cache: false turns off; set cache: true"),
        ({"name": "contrastive", "contrastive": {"body": "partial"}}, "strategy.contrastive.body: unknown body 'partial'; choose one of: full, lora"),
    ],
)
def test_few_shot_settings_are_checked(strategy: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"modality": "text", "model": {"name_or_path": "m"}, "data": {"train": "t.csv"}, "strategy": strategy,
                          "training": {"output_dir": "o"}})  # fmt: skip
    assert str(info.value) == message


def test_contrastive_is_for_text(tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_vit
    from tlhub.strategies import STRATEGIES

    cfg = config_from_dict({"modality": "image", "model": {"name_or_path": str(make_tiny_vit(tmp_path / "vit"))}, "data": {"train": "t"},
                            "training": {"output_dir": "o"}})  # fmt: skip
    modality = get_modality("image")
    model = modality.load_model(cfg, ["a", "b"])
    with pytest.raises(ConfigError, match="^strategy.name: contrastive tunes a text encoder"):
        STRATEGIES.get("contrastive")().apply(model, cfg.strategy, modality, "classification")
