"""GPT-family decoders (issue 25): classification with every strategy, instruction fine-tuning
(task: causal_lm) with the loss on completions only, packing, generation, GGUF checkpoints;
on tiny random Llama (a GGUF file with a chat template) and GPT-2 (fused attention, no chat
template) models, neither with a pad token."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import text_config, with_sections
from tests.test_ecosystem import pipeline_from_card
from tests.tiny_models import make_tiny_gpt2, make_tiny_llama, make_tiny_llama_gguf, toy_sentiment_rows, write_rows
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.modalities import get_modality
from tlhub.pipeline import finetune, load_run, predict
from tlhub.strategies.lora import auto_target_modules
from tlhub.tasks.causal_lm import CompletionCollator

WORDS = {"neg": "negative", "pos": "positive"}


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {
        "llama": make_tiny_llama(root / "llama"),
        "gpt2": make_tiny_gpt2(root / "gpt2"),
        "toy": write_rows(root / "toy.csv", toy_sentiment_rows(240)),
    }


def instruction_config(model: Path, data: Path, out: Path, strategy: str = "lora", **data_settings) -> dict:
    """Sentiment as instructions: 'sentiment: <sentence>' answered 'positive' or 'negative'."""
    sections = {
        "task": "causal_lm",
        "data": {"label_words": WORDS, "source_prefix": "sentiment: ", "max_target_length": 4, **data_settings},
        "training": {"learning_rate": 2e-2 if strategy == "lora" else 2e-3, "num_train_epochs": 4},
    }
    return with_sections(text_config(model, data, out, strategy), sections)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("strategy", ["full", "lora", "feature_extraction", "partial", "lp_ft", "contrastive"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoder_classifiers_train_reload_and_load_in_the_pipeline(family: str, strategy: str, decoders, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rate = {"lora": 2e-2, "feature_extraction": 3e-2}.get(strategy, 1e-3)
    results = finetune(config_from_dict(text_config(decoders[family], decoders["toy"], out, strategy, training={"learning_rate": rate, "num_train_epochs": 4})))
    if (family, strategy) in (("llama", "full"), ("llama", "lora"), ("gpt2", "full")):
        assert results["eval_accuracy"] > 0.7  # 60 held-out toy sentences, chance 0.5
    config = json.loads(((out / "merged") if strategy == "lora" else out).joinpath("config.json").read_text())
    if config["model_type"] != "tlhub_pooled_classifier":  # the pad token the tokenizer lacked: its end-of-sequence token, on the model too
        assert config["pad_token_id"] is not None
    else:  # feature extraction and contrastive save tlhub's pooled classifier, which pools the last real token itself
        assert strategy in ("feature_extraction", "contrastive") and config["pooling"] == "last"
    inputs = [r["text"] for r in toy_sentiment_rows(6, seed=5)]
    ours = predict(load_run(out), inputs)
    theirs = [pipeline_from_card(out)(text)[0] for text in inputs]  # one at a time: no padding in play
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert [t["score"] for t in theirs] == pytest.approx([o["score"] for o in ours], abs=2e-3)


def test_feature_extraction_pools_a_decoders_last_real_token(decoders, tmp_path: Path) -> None:
    """auto pooling is the last token the mask keeps (causal attention: only it has read the
    whole input), whichever side the batch is padded on."""
    from tlhub.models import pool_hidden

    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool_hidden(hidden, "last", right).flatten().tolist() == [1.0, 7.0]
    assert pool_hidden(hidden, "last", left).flatten().tolist() == [3.0, 7.0]
    cfg = config_from_dict(text_config(decoders["llama"], decoders["toy"], tmp_path / "r", "feature_extraction"))
    text = get_modality("text")
    text.load_processor(cfg)
    from tlhub.strategies import STRATEGIES

    applied = STRATEGIES.get("feature_extraction")().apply(text.load_model(cfg, ["neg", "pos"]), cfg.strategy, text, "classification")
    assert applied.model.pooling == "last"


def test_lora_finds_the_attention_of_each_family(decoders) -> None:
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

    assert auto_target_modules(AutoModelForCausalLM.from_pretrained(decoders["llama"])) == ["q_proj", "v_proj"]
    assert auto_target_modules(AutoModelForCausalLM.from_pretrained(decoders["gpt2"])) == ["c_attn"]  # GPT-2's fused Conv1D
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    assert auto_target_modules(neox) == ["query_key_value"]


# --------------------------------------------------------------------------- instruction fine-tuning


def test_the_loss_counts_the_completion_tokens_only(decoders, tmp_path: Path) -> None:
    cfg = config_from_dict(instruction_config(decoders["llama"], decoders["toy"], tmp_path / "r"))
    text = get_modality("text")
    tokenizer = text.load_processor(cfg)
    rows = text.transform(tokenizer, cfg, train=True)({"prompt": ["sentiment: the food was good"], "completion": ["positive"]})
    ids, labels = rows["input_ids"][0], rows["labels"][0]
    answer = tokenizer("positive<|im_end|>\n", add_special_tokens=False)["input_ids"]
    prompt = len(ids) - len(answer)
    assert labels[:prompt] == [-100] * prompt and labels[prompt:] == answer == ids[prompt:]
    assert tokenizer.decode(ids[:prompt]).endswith("<|im_start|>assistant\n")  # the chat template's generation prompt
    # GPT-2 has no chat template: prompt, then the completion and the end-of-sequence token
    cfg = config_from_dict(instruction_config(decoders["gpt2"], decoders["toy"], tmp_path / "r"))
    tokenizer = text.load_processor(cfg)
    rows = text.transform(tokenizer, cfg, train=True)({"prompt": ["sentiment: the food was good"], "completion": ["positive"]})
    assert tokenizer.convert_ids_to_tokens([i for i, l in zip(rows["input_ids"][0], rows["labels"][0]) if l != -100]) == ["positive", "<|endoftext|>"]


def test_packing_keeps_rows_apart(decoders, tmp_path: Path) -> None:
    """A packed batch (one sequence, positions restarting per row, no padding) has the loss of
    the same rows padded: no row attends to another."""
    from transformers import AutoModelForCausalLM

    cfg = config_from_dict(instruction_config(decoders["llama"], decoders["toy"], tmp_path / "r"))
    text = get_modality("text")
    tokenizer = text.load_processor(cfg)
    rows = text.transform(tokenizer, cfg, train=True)(
        {"prompt": ["sentiment: the food was good", "sentiment: awful staff and a very bad place"], "completion": ["positive", "negative"]}
    )
    examples = [{k: v[i] for k, v in rows.items()} for i in range(2)]
    model = AutoModelForCausalLM.from_pretrained(decoders["llama"]).train()  # as in training (dropout is 0)
    padded, packed = CompletionCollator(tokenizer, packing=False)(examples), CompletionCollator(tokenizer, packing=True)(examples)
    assert packed["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in examples)) and "attention_mask" not in packed
    with torch.no_grad():
        assert model(**packed).loss.item() == pytest.approx(model(**padded).loss.item(), rel=1e-5)
        # without its position ids the packed row is one long text, and its second row reads the first
        leaked = model(input_ids=packed["input_ids"], labels=packed["labels"]).loss.item()
        cached = model(**{**packed, "use_cache": True}).loss.item()  # with a cache transformers ignores the packing
    assert leaked != pytest.approx(model(**padded).loss.item(), rel=1e-5) and cached == pytest.approx(leaked, rel=1e-4)


@pytest.mark.parametrize("strategy", ["lora", "full", "partial"])
def test_instruction_tuning_generates_reloads_and_loads_in_the_pipeline(strategy: str, decoders, tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = finetune(config_from_dict(instruction_config(decoders["llama"], decoders["toy"], out, strategy, packing=strategy == "lora")))
    for key in ("eval_exact_match", "eval_rougeL", "eval_perplexity", "eval_answer_accuracy", "eval_loss"):
        assert key in results, key
    assert results["eval_perplexity"] == pytest.approx(float(torch.tensor(results["eval_loss"]).exp()), rel=1e-3)
    if strategy == "lora":
        assert results["eval_exact_match"] > 0.6 and results["trainable_params"] < results["total_params"]
    prompts = ["the food was good", "awful staff"]
    ours = [row["text"] for row in predict(load_run(out), prompts)]
    assert all(isinstance(t, str) for t in ours)
    pipe = pipeline_from_card(out)  # transformers' text-generation pipeline, greedy, on the chat template
    theirs = [pipe([{"role": "user", "content": "sentiment: " + p}], max_new_tokens=4, do_sample=False)[0]["generated_text"][-1]["content"] for p in prompts]
    assert [t.strip() for t in theirs] == ours


def test_chat_messages_train_and_feature_extraction_is_refused(decoders, tmp_path: Path, capsys) -> None:
    rows = [{"messages": [{"role": "user", "content": f"sentiment: {r['text']}"}, {"role": "assistant", "content": WORDS[r["label"]]}]}
            for r in toy_sentiment_rows(40)]  # fmt: skip
    data = tmp_path / "chat.jsonl"
    pd.DataFrame(rows).to_json(data, orient="records", lines=True)
    cfg = with_sections(text_config(decoders["llama"], data, tmp_path / "run", "lora"), {"task": "causal_lm", "training": {"num_train_epochs": 1}})
    assert finetune(config_from_dict(cfg))["train_samples"] == 30
    path = tmp_path / "fe.yaml"
    import yaml

    path.write_text(yaml.safe_dump(with_sections(cfg, {"strategy": {"name": "feature_extraction"}})))
    capsys.readouterr()
    assert main(["train", str(path)]) == 2
    assert "strategy.name: feature_extraction trains a new head on frozen features" in capsys.readouterr().err


def test_bad_instruction_rows_are_named(decoders, tmp_path: Path, capsys) -> None:
    import yaml

    data = write_rows(tmp_path / "qa.csv", [{"prompt": "say hi", "completion": "hi"}, {"prompt": "say bye", "completion": " "}] * 3)
    cfg = with_sections(text_config(decoders["llama"], data, tmp_path / "run", "lora"), {"task": "causal_lm"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err == f"tlhub: error: data.train ({data}): row 2: empty completion in column 'completion'; fill it in or drop the row\n"
    assert main(["train", str(tmp_path / "c.yaml"), "data.prompt_column=question"]) == 2
    assert "causal_lm reads columns 'question' and 'completion'" in capsys.readouterr().err


def test_zero_shot_evaluation_of_a_pretrained_decoder(decoders, tmp_path: Path, capsys) -> None:
    data = write_rows(tmp_path / "qa.csv", [{"prompt": f"sentiment: {r['text']}", "completion": WORDS[r["label"]]} for r in toy_sentiment_rows(8)])
    capsys.readouterr()
    assert main(["evaluate", str(decoders["llama"]), "--task", "causal_lm", "--data", str(data), "data.max_target_length=4"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_samples"] == 8 and 0.0 <= metrics["eval_exact_match"] <= 1.0 and metrics["eval_perplexity"] > 1.0
    # a prompt typed as an override stays text ("Review: " is not a YAML mapping), and a sample is scored
    labelled = write_rows(tmp_path / "reviews.csv", toy_sentiment_rows(8))
    words = "data.label_words={" + ", ".join(f"{k}: {v}" for k, v in WORDS.items()) + "}"
    assert main(["evaluate", str(decoders["llama"]), "--task", "causal_lm", "--data", str(labelled), "--max-samples", "5", words,
                 "data.source_prefix=Review: ", "data.max_target_length=2"]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_samples"] == 5 and metrics["eval_answer_accuracy"] in {k / 5 for k in range(6)}


def test_a_gguf_checkpoint_loads_trains_and_saves_plain_weights(decoders, tmp_path: Path) -> None:
    """model.gguf_file beside model.name_or_path: the model and tokenizer come from the file,
    dequantised, the same network as the one written; the run saves ordinary safetensors."""
    folder, name, written = make_tiny_llama_gguf(tmp_path / "gguf")
    cfg = config_from_dict(instruction_config(folder, decoders["toy"], tmp_path / "run", "full", max_length=48))
    cfg = config_from_dict(with_sections(cfg.to_dict(), {"model": {"gguf_file": name}, "training": {"num_train_epochs": 1}}))
    text = get_modality("text")
    tokenizer = text.load_processor(cfg)
    model = text.load_model(cfg, None).eval()
    ids = tokenizer("the food was good", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, written(ids).logits, atol=1e-5)
    finetune(cfg)
    assert (tmp_path / "run" / "model.safetensors").is_file() and not list((tmp_path / "run").glob("*.gguf"))
    scratch = with_sections(cfg.to_dict(), {"model": {"pretrained": False}})  # the same architecture from random weights
    assert not torch.allclose(text.load_model(config_from_dict(scratch), None)(ids).logits, written(ids).logits)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_long_prompt_keeps_its_opening_with_keep_start(family: str, decoders) -> None:
    """Summarization: a document longer than max_length loses its end, not its instruction and
    opening (truncation_mode: keep_start); the chat template's turns and the completion stay whole.
    keep_end, the default, cuts the start (a question at the end stays)."""
    from transformers import AutoTokenizer

    from tlhub.tasks.causal_lm import encoded, formatted

    tokenizer = AutoTokenizer.from_pretrained(decoders[family])
    document = "excellent superb " + " ".join(["the food was very lovely"] * 40) + " and this place was bad"
    summary = "great food"
    full_prompt, _ = formatted(tokenizer, document, summary)
    for keep in ("keep_start", "keep_end"):
        prompt_ids, completion_ids = encoded(tokenizer, document, summary, 48, keep)
        assert len(prompt_ids) + len(completion_ids) <= 48 and len(prompt_ids) >= 38
        assert tokenizer.decode(completion_ids, skip_special_tokens=True).strip() == summary
        text = tokenizer.decode(prompt_ids)
        if keep == "keep_start":
            assert "excellent superb the food" in text and "bad" not in text
            if tokenizer.chat_template:  # the generation prompt after the document is intact
                assert text.endswith(full_prompt[-12:])
        else:
            assert "excellent" not in text and text.rstrip().endswith(full_prompt.rstrip()[-12:]) and "bad" in text
