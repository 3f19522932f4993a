"""Each strategy trains exactly the weights it should, and transfer beats random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from tests.conftest import text_config
from tlhub import finetune, load_run, predict
from tlhub.config import config_from_dict, load_config
from tlhub.errors import ConfigError
from tlhub.modalities import get_modality
from tlhub.strategies import STRATEGIES, block_lr_scales, count_parameters, find_blocks


def train(cfg: dict) -> dict:
    return finetune(config_from_dict(cfg))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_full_learns_the_toy_task(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    results = train(text_config(tiny_bert, toy_csv, tmp_path / "run"))
    assert results["eval_accuracy"] >= 0.9  # chance is 0.5
    assert results["trainable_params"] == results["total_params"] == 21346
    saved = json.loads((tmp_path / "run" / "all_results.json").read_text())
    for key in ("eval_accuracy", "eval_f1", "eval_loss", "train_runtime", "trainable_params", "total_params"):
        assert key in saved
    assert (tmp_path / "run" / "trainer_state.json").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    before, after = weights(tiny_bert), weights(tmp_path / "run")
    assert before.keys() == after.keys()
    assert [k for k in before if torch.equal(before[k], after[k])] == []  # every weight moved


def test_feature_extraction_trains_only_the_head(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    results = train(text_config(tiny_bert, toy_csv, tmp_path / "run", "feature_extraction", training={"num_train_epochs": 1}))
    assert results["trainable_params"] == 32 * 2 + 2  # a linear head on the 32-wide pooled features
    before, after = weights(tiny_bert), weights(tmp_path / "run" / "backbone")  # the frozen backbone, saved beside the head
    shared = [k for k in after if f"bert.{k}" in before]
    assert len(shared) > 20
    assert all(torch.equal(after[k], before[f"bert.{k}"]) for k in shared)
    assert (tmp_path / "run" / "pooled_head.safetensors").is_file()


def test_partial_trains_the_last_blocks_and_the_head(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "partial", training={"num_train_epochs": 1})
    cfg["strategy"]["unfreeze_last_n"] = 1
    results = train(cfg)
    before, after = weights(tiny_bert), weights(tmp_path / "run")
    layer1 = sum(v.numel() for k, v in before.items() if ".layer.1." in k)
    above = sum(v.numel() for k, v in before.items() if k.startswith(("bert.pooler", "classifier")))
    assert results["trainable_params"] == layer1 + above
    for key in before:
        frozen = "embeddings" in key or ".layer.0." in key
        assert torch.equal(before[key], after[key]) == frozen, key


def test_lora_save_reload_and_merge_give_the_same_predictions(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "lora", training={"num_train_epochs": 2, "learning_rate": 1e-2})
    cfg["strategy"]["lora"] = {"r": 4, "alpha": 8, "merge": True}
    results = train(cfg)
    # r=4 A and B matrices on query and value of 2 layers, plus the 32x2 classifier
    assert results["trainable_params"] == 2 * 2 * (4 * 32 + 32 * 4) + 66
    run_dir = tmp_path / "run"
    assert (run_dir / "adapter_model.safetensors").is_file()
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["query", "value"]
    assert "classifier" in adapter["modules_to_save"]

    texts = ["the food was great", "awful service really", "a lovely place"]
    reloaded = predict(load_run(run_dir), texts)
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "merged").eval()
    tokenizer = load_run(run_dir).processor
    with torch.no_grad():
        probs = merged(**tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    for row, p in zip(reloaded, probs):
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-5)
        assert row["label"] == merged.config.id2label[int(p.argmax())]
    # merging changed the adapted projections and nothing else in the encoder
    before = weights(tiny_bert)
    after = load_file(str(run_dir / "merged" / "model.safetensors"))
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert changed and all(("query" in k or "value" in k or "classifier" in k) for k in changed)


def test_pretrained_features_transfer_and_random_ones_do_not(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    """Pretrain a tiny BERT on the toy task, then freeze it: its features carry the task."""
    train(text_config(tiny_bert, toy_csv, tmp_path / "pretrain"))
    probe = {"num_train_epochs": 6, "learning_rate": 5e-2}
    transferred = train(text_config(tmp_path / "pretrain", toy_csv, tmp_path / "fx", "feature_extraction", training=probe))
    cfg = text_config(tmp_path / "pretrain", toy_csv, tmp_path / "fx-scratch", "feature_extraction", training=probe)
    cfg["model"]["pretrained"] = False
    scratch = train(cfg)
    assert transferred["eval_accuracy"] >= 0.9
    assert transferred["eval_accuracy"] - scratch["eval_accuracy"] >= 0.15


def test_layer_lr_decay_scales_lower_blocks_down(tiny_bert: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    stacks = find_blocks(model.base_model)
    assert [len(s) for s in stacks] == [2]
    groups = block_lr_scales(model, stacks, 0.5)
    scales = {scale: sum(p.numel() for p in params) for params, scale in groups}
    assert sorted(scales) == [0.125, 0.25, 0.5, 1.0]  # embeddings, layer 0, layer 1, head + pooler
    assert sum(scales.values()) == count_parameters(model)[0]


def test_backbone_lr_scale_slows_the_pretrained_body_and_multiplies_layer_decay(tiny_bert: Path) -> None:
    """strategy.backbone_lr_scale: every weight of the body at the scaled rate, the head at the
    full one; with layer_lr_decay the two multiply; a model with no head apart from its body is
    refused naming the key."""
    from types import SimpleNamespace

    from tlhub.modalities import get_modality
    from tlhub.strategies import learning_rate_scales

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    text = get_modality("text")
    groups = learning_rate_scales(model, SimpleNamespace(layer_lr_decay=None, backbone_lr_scale=0.1), text, "classification")
    by_scale = {scale: {id(p) for p in params} for params, scale in groups}
    assert sorted(by_scale) == [0.1, 1.0]
    assert by_scale[0.1] == {id(p) for p in model.bert.parameters()} and by_scale[1.0] == {id(p) for p in model.classifier.parameters()}
    both = learning_rate_scales(model, SimpleNamespace(layer_lr_decay=0.5, backbone_lr_scale=0.1), text, "classification")
    scales = {scale: sum(p.numel() for p in params) for params, scale in both}
    assert sorted(scales) == pytest.approx([0.0125, 0.025, 0.05, 0.1, 1.0])  # embeddings, layer 0, layer 1, pooler; the head
    assert sum(scales.values()) == count_parameters(model)[0]
    assert learning_rate_scales(model, SimpleNamespace(layer_lr_decay=None, backbone_lr_scale=None), text, "classification") is None
    with pytest.raises(ConfigError, match=r"^strategy.backbone_lr_scale: must be in \(0, 1\], got 2.0$"):
        load_config(None, {"modality": "text", "model": {"name_or_path": "x"}, "data": {"train": "x.csv"},
                           "training": {"output_dir": "o"}, "strategy": {"name": "full", "backbone_lr_scale": 2.0}})


def test_strategies_are_registered_and_unknown_names_suggest(tmp_path: Path) -> None:
    # at least these (a new strategy is a new folder, and needs no change here)
    assert set(STRATEGIES.names()) >= {"contrastive", "feature_extraction", "full", "lora", "partial"}
    with pytest.raises(Exception, match=r"strategy.name: unknown strategy 'loar' \(did you mean 'lora'\?\)"):
        load_config(None, {"modality": "text", "model": {"name_or_path": "x"}, "data": {"train": "x.csv"},
                           "training": {"output_dir": str(tmp_path)}, "strategy": {"name": "loar"}})


def test_partial_rejects_more_blocks_than_the_model_has(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    cfg = text_config(tiny_bert, toy_csv, tmp_path / "run", "partial")
    cfg["strategy"]["unfreeze_last_n"] = 5
    with pytest.raises(Exception, match="strategy.unfreeze_last_n: 5 is more than the 2 blocks of this model"):
        train(cfg)


def test_text_modality_is_registered() -> None:
    assert get_modality("text").tasks == ("classification", "text2text", "causal_lm", "question_answering", "token_classification")


def test_half_precision_checkpoint_trains_in_float32_unless_asked(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    """transformers 5 loads weights in the checkpoint's dtype by default; tlhub loads float32
    (model.dtype), so a checkpoint stored in float16 does not train in pure float16."""
    half = tmp_path / "half"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert).half().save_pretrained(half)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_bert / name).is_file():
            (half / name).write_bytes((tiny_bert / name).read_bytes())
    assert {str(t.dtype) for t in weights(half).values() if t.is_floating_point()} == {"torch.float16"}
    modality = get_modality("text")
    for dtype, expected in (("float32", torch.float32), ("auto", torch.float16), ("bfloat16", torch.bfloat16)):
        cfg = text_config(half, toy_csv, tmp_path / "run")
        cfg["model"]["dtype"] = dtype
        cfg = config_from_dict(cfg)
        assert {p.dtype for p in modality.load_model(cfg, ["neg", "pos"]).parameters()} == {expected}
    results = train(text_config(half, toy_csv, tmp_path / "run"))
    assert results["eval_accuracy"] >= 0.9
    assert {str(t.dtype) for t in weights(tmp_path / "run").values() if t.is_floating_point()} == {"torch.float32"}
    bad = text_config(half, toy_csv, tmp_path / "run")
    bad["model"]["dtype"] = "fp16"
    with pytest.raises(ConfigError, match=r"^model.dtype: unknown dtype 'fp16' \(did you mean 'float16'\?\); choose one of: float32, bfloat16, float16, auto$"):
        config_from_dict(bad)


def test_gpu_defaults_fill_only_what_the_config_leaves_out() -> None:
    from tlhub.trainer import gpu_defaults

    assert gpu_defaults("text", {}, gpu=False, bf16_supported=False) == {"dataloader_pin_memory": False}
    on_gpu = gpu_defaults("audio", {}, gpu=True, bf16_supported=True)
    assert on_gpu["bf16"] is True and on_gpu["dataloader_pin_memory"] is True and 1 <= on_gpu["dataloader_num_workers"] <= 4
    assert "bf16" not in gpu_defaults("text", {"fp16": True}, gpu=True, bf16_supported=True)
    assert "bf16" not in gpu_defaults("text", {"bf16": False}, gpu=True, bf16_supported=True)
    assert "bf16" not in gpu_defaults("text", {}, gpu=True, bf16_supported=False)  # a V100: fp16 only on request
    assert "dataloader_num_workers" not in gpu_defaults("text", {}, gpu=True, bf16_supported=True)  # tokenizing is cheap
    assert on_gpu["optim"] == "adamw_torch_fused" and "optim" not in gpu_defaults("text", {"optim": "adafactor"}, gpu=True, bf16_supported=True)
