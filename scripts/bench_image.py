"""Image benchmark: `tlhub train` vs a plain transformers Trainer script, same model, same data.

    python scripts/bench_image.py [--epochs 1] [--strategy partial] [--out runs/bench_image]

Model: EfficientNet-Lite0 pretrained on ImageNet (converted by tlhub.convert.efficientnet_lite
into transformers' TimmWrapper format), or --model DIR. Data: ../shared/datasets/hymenoptera
(train/ 245 images, val/ 153; ants vs bees). Both runs train the same parameters (the
last block stage, the head convolution and the new classifier for `partial`; everything
for `full`) with the same augmentation (RandomResizedCrop 224 bicubic + flip, mean=std=0.5),
batch size, learning rate, epochs and seed, evaluate once at the end, and are timed one
after the other in this process's run. Prints a Markdown table: accuracy, training images/s
(Trainer's train_samples_per_second) and the tlhub/plain throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
# Parameters that `partial` with unfreeze_last_n=1 trains in timm's EfficientNet: the last
# block stage and everything above it (head convolution, its batch norm, the classifier).
PARTIAL_PREFIXES = ("timm_model.blocks.6.", "timm_model.conv_head.", "timm_model.bn2.", "timm_model.classifier.")


def tlhub_run(model: Path, out: Path, args: argparse.Namespace) -> dict:
    config = {
        "modality": "image",
        "task": "classification",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(DATA), "validation": str(DATA)},
        "strategy": {"name": args.strategy, **{"partial": {"unfreeze_last_n": 1}, "feature_extraction": {"cache": False}}.get(args.strategy, {})},
        "training": {
            "output_dir": str(out),
            "num_train_epochs": args.epochs,
            "learning_rate": args.lr,
            "per_device_train_batch_size": args.batch_size,
            "per_device_eval_batch_size": args.batch_size,
            "eval_strategy": "no",
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
            "seed": 0,
            "report_to": "none",
        },
    }
    path = out.parent / "tlhub_config.yaml"
    path.write_text(f"# tlhub train {path}\n" + yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tlhub", "train", str(path)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "all_results.json").read_text())
    return {**results, "wall_s": wall}


def plain_run(model_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    """What a user writes with transformers alone (after the run_image_classification example)."""
    import numpy as np
    import torch
    from datasets import load_dataset
    from PIL import Image
    from torchvision.transforms import v2
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    start = time.perf_counter()
    ds = load_dataset("imagefolder", data_dir=str(DATA))  # train/ and validation (val/) splits, label from folder
    names = ds["train"].features["label"].names
    processor = AutoImageProcessor.from_pretrained(model_dir)
    cfg = processor.data_config
    side = tuple(cfg["input_size"][1:])
    mode = v2.InterpolationMode.BICUBIC
    normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"]))]
    train_tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(side, interpolation=mode, antialias=True), v2.RandomHorizontalFlip(), *normalize])
    eval_tf = v2.Compose([v2.PILToTensor(), v2.Resize(side, interpolation=mode, antialias=True), v2.CenterCrop(side), *normalize])

    def with_tf(tf):
        def apply(batch):
            return {"pixel_values": [tf(img.convert("RGB")) for img in batch["image"]], "labels": batch["label"]}

        return apply

    ds["train"].set_transform(with_tf(train_tf))
    evaluation = ds["validation"]
    evaluation.set_transform(with_tf(eval_tf))
    model = AutoModelForImageClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    if args.strategy == "partial":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(PARTIAL_PREFIXES))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}

    def metrics(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    training_args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        eval_strategy="no",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        report_to="none",
        remove_unused_columns=False,
        logging_steps=25,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=ds["train"], eval_dataset=evaluation, data_collator=collate, compute_metrics=metrics)
    results = dict(trainer.train().metrics)
    results.update(trainer.evaluate())
    results.update(trainable_params=trainable, wall_s=time.perf_counter() - start)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a transformers image-classification folder (default: converted EfficientNet-Lite0)")
    parser.add_argument("--strategy", default="partial", choices=["partial", "full"])
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="runs/bench_image")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else out / "efficientnet-lite0"
    if not (model / "config.json").is_file():
        from tlhub.convert.efficientnet_lite import convert

        convert(model)
    plain = plain_run(model, out / "plain", args)
    ours = tlhub_run(model, out / "tlhub", args)
    rows = [("plain transformers Trainer", plain), ("tlhub train", ours)]
    print(f"\nEfficientNet-Lite0 (ImageNet) on hymenoptera, strategy {args.strategy}, {args.epochs:g} epoch(s), batch {args.batch_size}")
    print("| run | trainable params | eval accuracy | train images/s | train runtime (s) | wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        print(
            f"| {name} | {r['trainable_params']:,} | {r['eval_accuracy']:.3f} | {r['train_samples_per_second']:.2f} | "
            f"{r['train_runtime']:.1f} | {r['wall_s']:.1f} |"
        )
    print(f"\nthroughput ratio tlhub / plain: {ours['train_samples_per_second'] / plain['train_samples_per_second']:.2f}")
    (out / "bench.json").write_text(json.dumps({"plain": plain, "tlhub": ours, "args": vars(args)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
