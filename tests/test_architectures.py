"""Strategies find the head, the blocks and the LoRA targets of every text family, by shape."""

from __future__ import annotations

import pytest
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    RobertaConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from tlhub.config import StrategyConfig
from tlhub.modalities import get_modality
from tlhub.strategies import STRATEGIES, backbone_of, count_parameters, find_blocks, head_names
from tlhub.strategies.lora import auto_target_modules

SMALL = {"vocab_size": 100, "max_position_embeddings": 32}
FAMILIES = {
    "bert": (BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, **SMALL), ["query", "value"], ["classifier"]),
    "roberta": (RobertaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, pad_token_id=1, **{**SMALL, "max_position_embeddings": 40}), ["query", "value"], ["classifier"]),
    "distilbert": (DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=64, **SMALL), ["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
    "deberta-v2": (DebertaV2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, **SMALL), ["query_proj", "value_proj"], ["pooler", "classifier"]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_encoder_families(family: str) -> None:
    config, targets, heads = FAMILIES[family]
    config.num_labels = 3
    model = AutoModelForSequenceClassification.from_config(config)
    assert auto_target_modules(model) == targets
    assert head_names(model) == heads
    assert [len(s) for s in find_blocks(backbone_of(model))] == [3]

    text = get_modality("text")
    partial = STRATEGIES.get("partial")().apply(model, StrategyConfig(name="partial", unfreeze_last_n=1), text, "classification").model
    trainable = {n for n, p in partial.named_parameters() if p.requires_grad}
    assert trainable and not any("embeddings" in n for n in trainable)
    assert any(n.startswith(heads[-1]) for n in trainable)

    fresh = AutoModelForSequenceClassification.from_config(config)
    lora = STRATEGIES.get("lora")().apply(fresh, StrategyConfig(name="lora"), text, "classification").model
    names = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert all("lora_" in n or any(f".{h}." in n for h in heads) for n in names), names
    adapted = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    assert adapted == 3 * 2 * (8 * 32 + 32 * 8)  # r=8 on two 32x32 projections in 3 layers


def test_t5_has_encoder_and_decoder_stacks() -> None:
    """partial on T5: the last block of the encoder and of the decoder and the final norms.
    The LM head is the input embedding itself (transformers 5 always ties T5's), so it
    stays frozen with the embeddings."""
    model = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2))
    assert [len(s) for s in find_blocks(backbone_of(model))] == [2, 2]
    assert auto_target_modules(model) == ["q", "v"]
    partial = STRATEGIES.get("partial")().apply(model, StrategyConfig(name="partial", unfreeze_last_n=1), get_modality("text"), "text2text").model
    trainable = {n for n, p in partial.named_parameters() if p.requires_grad}
    assert {"encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"} <= trainable
    assert partial.get_output_embeddings().weight is partial.get_input_embeddings().weight
    assert not partial.get_input_embeddings().weight.requires_grad
    assert not any(".block.0." in n for n in trainable)
    blocks = sum(p.numel() for stack in ("encoder", "decoder") for p in getattr(model, stack).block[-1].parameters())
    assert count_parameters(partial)[0] == blocks + 2 * 16  # + the two final norms
