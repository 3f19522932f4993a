"""Throughput on a GPU: tlhub against a plain Trainer script, and against the chip itself.

    python scripts/bench_gpu.py --json docs/bench_gpu.json     # on a GPU (scripts/gpu_check.sh runs it)
    python scripts/bench_gpu.py --smoke                         # every row, tiny, on the CPU: the script works

Text: a bert-base-sized encoder (random weights: throughput does not need pretraining) on 10,000
synthetic news sentences of 4 topics (8-60 words; a word-level tokenizer over their
vocabulary), 1 epoch, max_length 128, lr 5e-5. Images: a ViT-base-sized model (random) on
synthetic 224 px images of 4 classes. For each row: samples/s, non-pad tokens/s (patches for
images), model FLOPs utilisation (6 x non-embedding parameters x tokens/s for training,
2 x for extraction, over a bf16 matrix product measured in the same run), peak memory and
accuracy on 1,000 held-out rows.

Rows: the plain Trainer script (``datasets.map`` tokenisation, ``DataCollatorWithPadding``,
bf16) at batch 32; tlhub ``full`` at batch 32 and 256 (and with ``torch_compile`` and bucketed
lengths at 256); ``lora`` at 32 and 256; ``feature_extraction``, its feature extraction and its
head separately, at 32 and 256. Each setting of tlhub's GPU defaults (bf16, fused AdamW, pinned
memory, loader workers for images) is what a user gets without writing it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS = {
    "world": "government minister election border summit treaty embassy parliament protest refugees capital president",
    "sports": "match season coach striker goal tournament league champion stadium injury transfer final",
    "business": "shares profit market quarter investors merger revenue bank stocks earnings inflation company",
    "science": "researchers study satellite software chip climate genome telescope battery robot quantum data",
}
FILLER = "the a of to in on for with and as by at from after over new said its their this that year week report".split()


def news(n: int, seed: int) -> list[dict]:
    """Sentences of 8-60 words, filler with a few words of their topic: learnable, of varied length."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for _ in range(n):
        topic = rng.choice(names)
        words = TOPICS[topic].split()
        length = rng.randint(8, 60)
        text = [rng.choice(words) if rng.random() < 0.25 else rng.choice(FILLER) for _ in range(length)]
        rows.append({"text": " ".join(text), "label": topic})
    return rows


def text_model(folder: Path, smoke: bool) -> Path:
    """A bert-base-sized encoder from random weights, and a word-level tokenizer of the vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in TOPICS.values() for w in ws.split()} | set(FILLER))]
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if smoke else {}
    BertForSequenceClassification(BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **size)).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    return folder


def image_data(folder: Path, n: int, size: int, seed: int) -> Path:
    """``<class>/*.png``: 4 classes of images, each a noisy gradient in its own direction."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)
    fields = {"right": ramp[None, :], "left": ramp[::-1][None, :], "down": ramp[:, None], "up": ramp[::-1][:, None]}
    for i in range(n):
        name = list(fields)[i % 4]
        pixels = np.clip(np.broadcast_to(fields[name], (size, size))[..., None] + rng.normal(0, 40, (size, size, 3)), 0, 255)
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype("uint8")).save(folder / name / f"{i}.png")
    return folder


def image_model(folder: Path, size: int, smoke: bool) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8) if smoke else {}
    ViTForImageClassification(ViTConfig(image_size=size, **small)).save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


def matmul_peak(device: str) -> float:
    """TFLOP/s of a bf16 matrix product on `device` (the chip's practical peak)."""
    import torch

    n = 8192 if device == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20 if device == "cuda" else 3
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def non_embedding_parameters(folder: Path) -> int:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder)
    embedding = sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    return sum(p.numel() for p in model.parameters()) - embedding


def plain_script(model: Path, train: Path, heldout: Path, out: Path, batch: int, device: str) -> dict:
    """A plain Trainer script, as a user writes it from transformers' text-classification example."""
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model)
    names = sorted(TOPICS)
    data = {}
    for split, path in (("train", train), ("test", heldout)):
        frame = pd.read_csv(path)
        ds = Dataset.from_dict({"text": list(frame.text), "label": [names.index(x) for x in frame.label]})
        data[split] = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=4, ignore_mismatched_sizes=True)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, per_device_eval_batch_size=256, num_train_epochs=1,
                             learning_rate=5e-5, bf16=device == "cuda", use_cpu=device == "cpu", report_to="none", save_strategy="no",
                             eval_strategy="no", logging_strategy="no", disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=net, args=args, train_dataset=data["train"], data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())})  # fmt: skip
    metrics = trainer.train().metrics
    return {"train_runtime": metrics["train_runtime"], "eval_accuracy": trainer.evaluate(data["test"])["eval_accuracy"]}


def tlhub_row(modality: str, model: Path, train: Path, heldout: Path, out: Path, strategy: str, batch: int, device: str, **extra: object) -> dict:
    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    data = {"train": str(train), "validation": str(heldout)}
    data.update({"max_length": 128} if modality == "text" else {"augment": False})
    training = {"output_dir": str(out), "per_device_train_batch_size": batch, "per_device_eval_batch_size": 256, "num_train_epochs": 1,
                "learning_rate": {"full": 5e-5, "lora": 5e-4, "feature_extraction": 1e-2}[strategy], "save_strategy": "no",
                "eval_strategy": "no", "logging_strategy": "no", "disable_tqdm": True, "overwrite_output_dir": True, "use_cpu": device == "cpu",
                **extra}  # fmt: skip
    cfg = {"modality": modality, "model": {"name_or_path": str(model)}, "data": data, "strategy": {"name": strategy}, "training": training}
    return finetune(config_from_dict(cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and data on the CPU: every row runs, nothing is measured")
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    rows = 256 if args.smoke else args.rows
    large = 64 if args.smoke else 256
    peak = matmul_peak(device)
    report: dict = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "bf16_matmul_tflops": round(peak, 1), "rows": []}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="tlhub-bench-gpu-"))
    import pandas as pd

    train, heldout = work / "train.csv", work / "heldout.csv"
    pd.DataFrame(news(rows, 0)).to_csv(train, index=False)
    pd.DataFrame(news(max(rows // 10, 64), 1)).to_csv(heldout, index=False)
    model = text_model(work / "bert", args.smoke)
    params = non_embedding_parameters(model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokens = sum(min(len(ids), 128) for ids in tokenizer(list(pd.read_csv(train).text))["input_ids"])

    def record(name: str, kind: str, batch: int, seconds: float, accuracy: float | None, samples: int, work_tokens: int, factor: int = 6) -> None:
        memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        row = {"model": kind, "row": name, "batch": batch, "seconds": round(seconds, 2), "samples_per_s": round(samples / seconds, 1),
               "tokens_per_s": round(work_tokens / seconds), "mfu": round(factor * params * work_tokens / seconds / (peak * 1e12), 4),
               "peak_memory_gib": None if memory is None else round(memory, 2), "accuracy": None if accuracy is None else round(accuracy, 4)}  # fmt: skip
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    plain = plain_script(model, train, heldout, work / "plain", 32, device)
    record("plain Trainer script", "bert-base text", 32, plain["train_runtime"], plain["eval_accuracy"], rows, tokens)
    for strategy, batch, extra in (("full", 32, {}), ("full", large, {}), ("full", large, {"torch_compile": True}), ("lora", 32, {}),
                                   ("lora", large, {}), ("feature_extraction", 32, {}), ("feature_extraction", large, {})):  # fmt: skip
        name = f"tlhub {strategy}" + (" + torch.compile, bucketed lengths" if extra else "")
        start = time.perf_counter()
        results = tlhub_row("text", model, train, heldout, work / "run", strategy, batch, device, **extra)
        wall = time.perf_counter() - start
        if strategy == "feature_extraction":  # the frozen body's pass (2 x params a token) and the head's epochs, apart
            record(f"{name}: extraction", "bert-base text", 256, results["feature_cache_seconds"], None, rows, tokens, factor=2)
            record(f"{name}: head", "bert-base text", batch, results["train_runtime"], results["eval_accuracy"], rows, 0)
        else:
            seconds = wall if extra else results["train_runtime"]  # compiling counts in the wall time
            record(name, "bert-base text", batch, seconds, results["eval_accuracy"], rows, tokens)

    size = 32 if args.smoke else 224
    images = image_data(work / "images", 64 if args.smoke else 2000, size, 0)
    held_images = image_data(work / "held-images", 32 if args.smoke else 400, size, 1)
    vit = image_model(work / "vit", size, args.smoke)
    params = non_embedding_parameters(vit)
    patches = (size // (8 if args.smoke else 16)) ** 2 + 1
    count = 64 if args.smoke else 2000
    for strategy, batch in (("full", 32), ("full", large), ("lora", large), ("feature_extraction", large)):
        results = tlhub_row("image", vit, images, held_images, work / "image-run", strategy, batch, device)
        seconds = results["train_runtime"] + results.get("feature_cache_seconds", 0.0)
        record(f"tlhub {strategy}", "vit-base images", batch, seconds, results["eval_accuracy"], count, count * patches)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("| model | row | batch | samples/s | tokens/s | MFU | peak memory | accuracy |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in report["rows"]:
        mem = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']} GiB"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        print(f"| {r['model']} | {r['row']} | {r['batch']} | {r['samples_per_s']:.0f} | {r['tokens_per_s']:,} | {100 * r['mfu']:.1f} % | {mem} | {acc} |")


if __name__ == "__main__":
    main()
