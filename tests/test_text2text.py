"""T5-style text-to-text: sentiment as the words "positive"/"negative", generation at evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import text_config
from tlhub import finetune, load_run, predict
from tlhub.config import config_from_dict


def t5_config(tiny_t5: Path, toy_csv: Path, out: Path, strategy: str = "full", **training) -> dict:
    cfg = text_config(tiny_t5, toy_csv, out, strategy, training={"num_train_epochs": 10, "learning_rate": 3e-3, **training})
    cfg["task"] = "text2text"
    cfg["data"].update(label_words={"neg": "negative", "pos": "positive"}, source_prefix="sentiment: ", max_target_length=4)
    return cfg


def test_t5_learns_sentiment_words_and_predicts_them(tiny_t5: Path, toy_csv: Path, tmp_path: Path) -> None:
    results = finetune(config_from_dict(t5_config(tiny_t5, toy_csv, tmp_path / "run")))
    assert results["eval_exact_match"] >= 0.9  # chance is 0.5 (and 0 before training)
    assert 0.9 <= results["eval_rougeL"] <= 1.0
    rows = predict(load_run(tmp_path / "run"), ["the food was great", "awful staff"])
    assert [r["text"] for r in rows] == ["positive", "negative"]


def test_t5_feature_extraction_freezes_the_encoder(tiny_t5: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = t5_config(tiny_t5, toy_csv, tmp_path / "run", "feature_extraction", num_train_epochs=1)
    results = finetune(config_from_dict(cfg))
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(tiny_t5)
    encoder_only = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder.") and "embed_tokens" not in n)
    shared = model.shared.weight.numel()
    assert results["trainable_params"] == results["total_params"] - encoder_only - shared


def test_t5_lora_adapts_q_and_v(tiny_t5: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = t5_config(tiny_t5, toy_csv, tmp_path / "run", "lora", num_train_epochs=1)
    results = finetune(config_from_dict(cfg))
    # r=8 on q and v: 6 attention blocks (2 encoder self, 2 decoder self, 2 cross); q,v are 32 -> 32 (2 heads x 16)
    assert results["trainable_params"] == 6 * 2 * (8 * 32 + 32 * 8)
    assert torch.tensor(results["eval_loss"]).isfinite()


def test_t5_partial_changes_only_the_last_blocks_and_final_norms(tiny_t5: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = t5_config(tiny_t5, toy_csv, tmp_path / "run", "partial", num_train_epochs=1)
    cfg["strategy"]["unfreeze_last_n"] = 1
    finetune(config_from_dict(cfg))
    before = load_file(str(tiny_t5 / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    for key in before:
        trains = ".block.1." in key or "final_layer_norm" in key
        assert torch.equal(before[key], after[key]) != trains, key
    assert torch.equal(before["shared.weight"], after["shared.weight"])  # embeddings (and the tied LM head) frozen
