"""Audio benchmark: spoken digits (FSDD), classification and CTC speech recognition.

The Free Spoken Digit Dataset (../shared/datasets/fsdd/recordings, 8 kHz WAV files named
``{digit}_{speaker}_{index}.wav``, five speakers) is split by speaker: one speaker is
held out, the other four train (manifests by scripts/fsdd.py: path, label = the digit's
English word, transcript = the same word). Each run reports eval_* on 10% of the four
speakers' clips kept out of training and test_* on the held-out speaker.

No pretrained audio weights are reachable offline, so both runs fine-tune a small
wav2vec2 from random weights (a 16 kHz model: every 8 kHz clip is resampled on the
fly). Both runs go through `tlhub.pipeline.finetune`, the code path of `tlhub train`.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_audio.py [--json OUT.json]

Runs on the GPU when there is one, else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fsdd import write_manifests  # scripts/fsdd.py


def make_small_wav2vec2(path: Path, hidden: int, layers: int) -> Path:
    """A small wav2vec2 from random weights: the real (base) model's 7-layer convolutional
    feature encoder geometry (320x downsampling, 20 ms frames, group norm) at 1/16 of
    its width, and a narrow transformer."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 4,
        conv_dim=(32,) * 7,
        feat_extract_norm="group",
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.05,
        mask_time_length=5,
        layerdrop=0.0,
        classifier_proj_size=hidden,
    )
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


def run(name: str, task: str, model: Path, train: Path, heldout: Path, out: Path, args: argparse.Namespace) -> dict:
    import torch

    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    cfg = {
        "modality": "audio",
        "task": task,
        # transformers' SpecAugment default masks at least 2 spans per clip: 10 of the ~25
        # frames of a spoken digit. Trained so, the CTC model read every clean clip as blank
        # (docs/benchmarks.md); no floor leaves ~5% masked, as intended.
        "model": {"name_or_path": str(model), "pretrained": True, "config_overrides": {"mask_time_min_masks": 0}},
        "data": {
            "train": str(train),
            "validation_split": 0.1,  # unseen clips of the training speakers: eval_*
            "test": str(heldout),  # the unseen speaker: test_*
            "audio_column": "path",
            "target_column": "transcript",
            "max_train_samples": args.max_train_samples,
            "augment": args.augment,
        },
        "strategy": {"name": "full"},
        "training": {
            "output_dir": str(out / name),
            "num_train_epochs": args.epochs if task == "classification" else args.ctc_epochs,
            "learning_rate": args.lr,
            "warmup_steps": 50,
            "per_device_train_batch_size": args.batch_size,
            "per_device_eval_batch_size": 32,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 50,
            "use_cpu": not torch.cuda.is_available(),
            "dataloader_num_workers": args.workers,
            "disable_tqdm": True,
            "seed": 0,
        },
    }
    start = time.perf_counter()
    results = finetune(config_from_dict(cfg))
    results["wall_s"] = round(time.perf_counter() - start, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", default="theo", help="speaker held out for evaluation")
    parser.add_argument("--epochs", type=float, default=3, help="classification epochs")
    parser.add_argument("--ctc-epochs", type=float, default=8, help="speech recognition epochs")
    parser.add_argument("--max-train-samples", type=int, default=1000, help="a seeded sample of the 2,000 training clips")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tasks", default="classification,speech_recognition")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True, help="training augmentation (gain, shift, noise)")
    parser.add_argument("--workers", type=int, default=0, help="dataloader worker processes (decode audio in parallel)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import pandas as pd

    from tlhub.pipeline import load_run, predict

    summary = {}
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        scratch = Path(tmp)
        train, heldout = write_manifests(scratch / "manifests", args.holdout)
        model = make_small_wav2vec2(scratch / "model", args.hidden, args.layers)
        for task in args.tasks.split(","):
            r = run(task, task, model, train, heldout, scratch / "runs", args)
            keys = [f"{split}_{metric}" for split in ("eval", "test") for metric in ("accuracy", "f1", "wer", "cer", "loss")]
            keys += ["train_runtime", "train_samples_per_second", "train_samples", "eval_samples", "total_params", "trainable_params", "wall_s", "epoch"]
            summary[task] = {k: r[k] for k in keys if k in r}
            print(task, json.dumps(summary[task]), flush=True)
            if task == "speech_recognition":  # a few transcripts: training speakers first, then the unseen one
                paths = [*pd.read_csv(train).path[::200], *pd.read_csv(heldout).path[::50]]
                files = [str((scratch / "manifests" / p).resolve()) for p in paths]
                rows = predict(load_run(scratch / "runs" / task), files)
                summary[task]["examples"] = [(Path(f).name, row["text"]) for f, row in zip(files, rows)]
                print(summary[task]["examples"])
    summary["settings"] = {k: str(v) for k, v in vars(args).items()}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
