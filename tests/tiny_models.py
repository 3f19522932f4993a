"""Tiny random models and toy data, built from configs: no Hub, a few seconds on CPU."""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

POSITIVE = ["good", "great", "excellent", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "horrid"]
FILLER = ["the", "food", "was", "service", "and", "really", "very", "place", "staff", "it", "a", "this"]
TARGET_WORDS = ["positive", "negative"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    return POSITIVE + NEGATIVE + FILLER + TARGET_WORDS + ["sentiment:"]


def toy_sentiment_rows(n: int, seed: int = 0, label_names: tuple[str, str] = ("neg", "pos")) -> list[dict]:
    """Sentences whose label is given by one sentiment word among filler words: learnable."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label_names[label]})
    return rows


def write_rows(path: Path, rows: list[dict], sep: str = ",") -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep=sep, index=False)
    return path


def make_tiny_bert(path: Path, hidden_size: int = 32, layers: int = 2) -> Path:
    """A 2-layer BERT with a word-level vocabulary of the toy sentences."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={tok: i for i, tok in enumerate(SPECIALS + vocabulary())}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(SPECIALS) + len(vocabulary()),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=64,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_t5(path: Path, d_model: int = 32, layers: int = 2) -> Path:
    """A 2+2-layer T5 with a word-level tokenizer that appends </s>, as T5's does."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(["<pad>", "</s>", "<unk>"] + vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(
        vocab_size=len(vocab),
        d_model=d_model,
        d_kv=16,
        d_ff=d_model * 2,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
