"""MiniLM on real review sentences: every strategy, and the same model from scratch.

    python scripts/bench_text_strategies.py [--epochs 4] [--out docs/bench_text_strategies.json]

Trains on ../shared/datasets/sentiment/amazon.tsv (90%; 10% held out, stratified and
seeded), evaluates on the held-out Amazon rows and on all of yelp.tsv (another
domain), with the offline configs in recipes/configs/text/minilm_sentiment_*.yaml.
Prints a markdown table for docs/benchmarks.md and writes the raw results as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [
    ("full", "full", True),
    ("partial (last 4 of 6 blocks)", "partial", True),
    ("feature_extraction (mean pooling)", "feature_extraction", True),
    ("lora (r=8, query/value)", "lora", True),
    ("full, from scratch", "full", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_text_strategies.json")
    args = parser.parse_args()

    from tlhub import finetune, load_config

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, strategy, pretrained in RUNS:
            config = ROOT / "recipes" / "configs" / "text" / f"minilm_sentiment_{strategy}.yaml"
            overrides = [
                f"training.output_dir={tmp}/{len(rows)}",
                f"training.num_train_epochs={args.epochs}",
                f"model.pretrained={str(pretrained).lower()}",
                "strategy.lora.merge=false",
            ]
            if not pretrained:
                overrides.append("training.learning_rate=1e-4")
            results = finetune(load_config(config, overrides))
            rows.append({"run": label, "config": str(config.relative_to(ROOT)), "overrides": overrides[1:], **results})
            print(f"{label}: {results['eval_accuracy']:.3f} / {results['test_accuracy']:.3f}", file=sys.stderr)
    args.out.write_text(json.dumps(rows, indent=2, default=str) + "\n")

    print("| run | amazon held-out acc | yelp acc (other domain) | train time (s) | trainable params |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['run']} | {r['eval_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['train_runtime']:.0f} | "
            f"{r['trainable_params']:,} ({r['trainable_percent']:.2f}%) |"
        )


if __name__ == "__main__":
    main()
