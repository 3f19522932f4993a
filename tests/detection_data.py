"""Toy detection data and a tiny timm backbone for the object-detection tests: coloured squares
on a plain background (learnable in seconds), written in the image-folder layout with
metadata.jsonl; the backbone is timm's test_efficientnet (82 k weights) saved as the
EfficientNet-Lite0 converter saves its model (a timm model in transformers' format)."""

from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}


def write_squares(folder: Path, n: int, seed: int = 0, size: int = 64, extra: list[dict] | None = None) -> Path:
    """`n` images of one or two squares (red or blue, 14-24 px) on grey; metadata.jsonl with COCO boxes."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image = Image.new("RGB", (size, size), (128, 128, 128))
        pen = ImageDraw.Draw(image)
        boxes, categories = [], []
        for _ in range(rng.choice([1, 2])):
            side = rng.randint(14, 24)
            x, y = rng.randint(0, size - side), rng.randint(0, size - side)
            colour = rng.choice(list(COLOURS))
            pen.rectangle([x, y, x + side - 1, y + side - 1], fill=COLOURS[colour])
            boxes.append([x, y, side, side])
            categories.append(colour)
        name = f"img_{i:03d}.png"
        image.save(folder / name)
        lines.append({"file_name": name, "objects": {"bbox": boxes, "category": categories}})
    lines += extra or []
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def write_backbone(folder: Path, seed: int = 0) -> Path:
    """timm's test_efficientnet with seeded random weights, in transformers' timm format."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"timm_model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {
        "architecture": "test_efficientnet", "model_type": "timm_wrapper", "num_classes": 10, "num_features": model.num_features,
        "pretrained_cfg": {"architecture": "test_efficientnet", "input_size": [3, 64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash", "classifier": "classifier"},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def detection_config(tmp: Path, train: Path, backbone: Path, **data: object) -> dict:
    """A run config for a tiny DETR (width 32, one encoder and decoder layer, 10 queries) on `backbone`."""
    return {
        "modality": "image",
        "task": "object_detection",
        "model": {"detector": "detr", "backbone": str(backbone), "detector_layers": 1, "detector_queries": 10, "detector_width": 32,
                  "feature_level": -2},  # fmt: skip
        "data": {"train": str(train), "image_size": 64, "validation_split": 0.25, **data},
        "strategy": {"name": "full"},
        "training": {"output_dir": str(tmp / "run"), "num_train_epochs": 1, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 5, "learning_rate": 1e-3,
                     "logging_steps": 5, "save_strategy": "no", "report_to": "none", "use_cpu": True},  # fmt: skip
    }
