"""Whisper tiny.en speech recognition on spoken digits: zero-shot vs fine-tuned vs random weights.

    python scripts/convert_whisper_ct2.py models/whisper-tiny.en
    python scripts/bench_whisper_asr.py --model models/whisper-tiny.en --json docs/bench_whisper_asr.json

FSDD with one speaker (theo) held out: the other four speakers' 2,000 clips train, theo's
500 are scored (WER and CER on normalised text, `data.normalize_text`). Rows:

- zero-shot: the converted model as it is (`tlhub evaluate MODEL --task speech_recognition`),
  with Whisper's 30 s window and with a window cut to 3 s;
- fine-tuned, sequence to sequence, the same budget for each (1 epoch, batch 16): `partial`
  (the last 2 of 4 encoder and decoder blocks), `lora` (r 16 on q/v of both), and `full`
  from random weights (`model.pretrained: false`, the same architecture); the window
  follows the data (the longest training clip, 1 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from fsdd import write_manifests  # noqa: E402


def config(model: str, train: Path, heldout: Path, out: Path, strategy: dict, pretrained: bool = True, **training) -> dict:
    return {
        "modality": "audio",
        "task": "speech_recognition",
        "model": {"name_or_path": model, "pretrained": pretrained},
        "data": {"train": str(train), "validation": str(heldout), "audio_column": "path", "target_column": "transcript",
                 "max_target_length": 16},
        "strategy": strategy,
        "training": {"output_dir": str(out), "num_train_epochs": 1, "learning_rate": 1e-4, "warmup_steps": 0.1,
                     "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16, "eval_strategy": "no",
                     "save_strategy": "no", "logging_steps": 25, "seed": 0, "disable_tqdm": True, "overwrite_output_dir": True,
                     **training},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "whisper-tiny.en"))
    parser.add_argument("--holdout", default="theo")
    parser.add_argument("--max-train", type=int, default=None, help="fewer training clips (a quick check)")
    parser.add_argument("--json")
    args = parser.parse_args()

    from tlhub.config import config_from_dict
    from tlhub.pipeline import evaluate_run, finetune, load_pretrained

    rows = []
    with tempfile.TemporaryDirectory(prefix="tlhub-whisper-asr-") as tmp:
        work = Path(tmp)
        train, heldout = write_manifests(work / "fsdd", args.holdout)
        for label, window in (("zero-shot, 30 s window", []), ("zero-shot, 3 s window", ["data.max_duration_s=3"])):
            start = time.perf_counter()
            run = load_pretrained(args.model, "audio", "speech_recognition",
                                  ["data.audio_column=path", "data.target_column=transcript", "data.max_target_length=16", *window])  # fmt: skip
            metrics = evaluate_run(run, str(heldout))
            rows.append({"run": label, "wer": metrics["eval_wer"], "cer": metrics["eval_cer"], "eval_s": time.perf_counter() - start})
            print(json.dumps(rows[-1]), flush=True)
        variants = [
            ("partial (pretrained)", {"name": "partial", "unfreeze_last_n": 2}, True, {}),
            ("lora (pretrained)", {"name": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.05}}, True, {"learning_rate": 1e-3}),
            ("full (random weights)", {"name": "full"}, False, {"learning_rate": 1e-3}),
        ]
        for label, strategy, pretrained, training in variants:
            mapping = config(args.model, train, heldout, work / label.split()[0], strategy, pretrained, **training)
            if args.max_train:
                mapping["data"]["max_train_samples"] = args.max_train
            start = time.perf_counter()
            results = finetune(config_from_dict(mapping))
            rows.append({"run": label, "wer": results["eval_wer"], "cer": results["eval_cer"], "train_s": results["train_runtime"],
                         "wall_s": time.perf_counter() - start, "trainable_params": results["trainable_params"],
                         "train_samples": results["train_samples"]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    print("| run | held-out WER | held-out CER | train time |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['run']} | {row['wer']:.3f} | {row['cer']:.3f} | {row.get('train_s', 0):.0f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "holdout": args.holdout, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
