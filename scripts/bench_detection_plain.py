"""The plain recipe beside `tlhub train`'s detector: transformers' object-detection example
(examples/pytorch/object-detection/run_object_detection.py) as a user copies it, on the same
tree-crown split, model and hyperparameters as scripts/bench_detection.py --detector rt_detr.

    python scripts/convert_efficientnet_lite.py /tmp/effl0
    nice -n 10 python scripts/bench_detection_plain.py /tmp/effl0 --steps 600 --image-size 192 --seeds 0 \
        --out docs/bench_detection_trees_plain.json

No tlhub import: the split is bench_detection.split_tiles (stdlib only), the rest is datasets,
PIL, torchvision, timm, transformers and torchmetrics. Where it departs from the example, and why:

- Model: the example loads a whole detection checkpoint (AutoModelForObjectDetection.from_pretrained).
  There is none here: RTDetrForObjectDetection is built from RTDetrConfig on a timm_backbone
  config (the sizes tlhub's model.detector builds: width 128, 2 encoder + 2 decoder layers,
  64 queries, strides 8/16/32). transformers would load the backbone's ImageNet weights with
  use_pretrained_backbone=True, which asks timm to download them from the Hub (unreachable, and
  the converted folder is not a timm Hub id); instead the converted folder is loaded with
  AutoModelForImageClassification.from_pretrained (transformers' TimmWrapper) and its timm
  state dict copied into the detector's timm backbone by name (load_state_dict, strict=False,
  checked: no backbone weight missing).
- Image processor: the example loads the checkpoint's; here RTDetrImageProcessor is built with
  the backbone's mean and std (0.5), normalising, resizing to --image-size square, no padding.
- Augmentation: the example uses albumentations (not installed here); this uses torchvision's
  box-aware transforms v2, the same as tlhub's: horizontal flip, for half the images a
  RandomResizedCrop of at least 50 % of the area, boxes clamped, those under a pixel dropped.
  Validation: boxes clamped to the image (the example's NoOp with clip=True).
- Trainer arguments: tlhub's for the run (max_steps, lr, batch 4, eval batch 8, weight decay
  1e-4, grad clip 0.1, warm-up 10, linear decay, seed), not the example's README command.
- Metric: the example's compute_metrics (torchmetrics MeanAveragePrecision, xyxy, class_metrics),
  eval_do_concat_batches=False. Evaluation batch 9 (tlhub: 8): with 8, the last batch holds one
  of the 9 held-out images and accelerate's gather_for_metrics cuts every label tensor of that
  batch to its first row (``tensor[:remainder]``, meant for batch-first tensors): the image's
  orig_size becomes [height] and compute_metrics fails ("not enough values to unpack"); had it
  not failed, the image's boxes would have been cut to one (transformers PR #43395 describes it
  for Mask2Former). A batch that divides the set leaves no remainder; the scores do not depend
  on the evaluation batch (the model is in eval mode, every image the same size).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detection import DATA, split_tiles  # noqa: E402  (stdlib only: the split by tile)


def load_split(folder: Path):
    """An image-folder metadata.jsonl (absolute file names) as a datasets.Dataset with an Image column."""
    import datasets

    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines() if line.strip()]
    ds = datasets.Dataset.from_dict({
        "image_id": list(range(len(rows))),
        "image": [r["file_name"] for r in rows],
        "objects": [{"bbox": [list(map(float, b)) for b in r["objects"]["bbox"]], "category": r["objects"]["category"]} for r in rows],
    })  # fmt: skip
    return ds.cast_column("image", datasets.Image())


def format_image_annotations_as_coco(image_id, categories, boxes):
    """As in the example: one image's boxes as COCO annotations for the image processor."""
    return {
        "image_id": image_id,
        "annotations": [{"image_id": image_id, "category_id": c, "iscrowd": 0, "area": b[2] * b[3], "bbox": list(b)} for c, b in zip(categories, boxes)],
    }  # fmt: skip


def make_transforms(image_size: int, train: bool):
    """torchvision v2 box-aware transforms (the example's albumentations, not installed here)."""
    from torchvision.transforms import v2

    steps = [v2.ClampBoundingBoxes()]  # boxes cut to the image first, as the example's clip=True
    if train:
        steps += [v2.RandomHorizontalFlip(), v2.RandomApply([v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True)], p=0.5)]
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)


def augment_and_transform_batch(examples, transform, image_processor, label2id):
    """As the example's: augment each image with its boxes, then the image processor (resize,
    normalise, boxes to normalised cx, cy, w, h)."""
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    images, annotations = [], []
    for image_id, image, objects in zip(examples["image_id"], examples["image"], examples["objects"]):
        image = image.convert("RGB")
        pixels = tv_tensors.Image(v2.functional.pil_to_tensor(image))
        boxes = tv_tensors.BoundingBoxes(torch.tensor(objects["bbox"], dtype=torch.float32).reshape(-1, 4), format="XYWH",
                                         canvas_size=(image.height, image.width))  # fmt: skip
        labels = torch.tensor([label2id[c] for c in objects["category"]], dtype=torch.long)
        out = transform({"image": pixels, "boxes": boxes, "labels": labels})
        images.append(out["image"].as_subclass(torch.Tensor))
        annotations.append(format_image_annotations_as_coco(image_id, out["labels"].tolist(), out["boxes"].as_subclass(torch.Tensor).tolist()))
    result = image_processor(images=images, annotations=annotations, return_tensors="pt")
    result.pop("pixel_mask", None)
    return result


def collate_fn(batch):
    import torch

    data = {"pixel_values": torch.stack([x["pixel_values"] for x in batch]), "labels": [x["labels"] for x in batch]}
    if "pixel_mask" in batch[0]:
        data["pixel_mask"] = torch.stack([x["pixel_mask"] for x in batch])
    return data


def convert_bbox_yolo_to_pascal(boxes, image_size):
    """As the example's: normalised (cx, cy, w, h) -> absolute (x0, y0, x1, y1)."""
    import torch
    from torchvision.ops import box_convert

    boxes = box_convert(boxes, "cxcywh", "xyxy")
    height, width = image_size
    return boxes * torch.tensor([[width, height, width, height]])


def compute_metrics(evaluation_results, image_processor, threshold=0.0, id2label=None):
    """The example's compute_metrics (torchmetrics' MeanAveragePrecision)."""
    import numpy as np
    import torch
    from torchmetrics.detection.mean_ap import MeanAveragePrecision
    from transformers.utils import ModelOutput

    predictions, targets = evaluation_results.predictions, evaluation_results.label_ids
    image_sizes, post_processed_targets, post_processed_predictions = [], [], []
    for batch in targets:
        image_sizes.append(torch.tensor(np.array([x["orig_size"] for x in batch])))
        for image_target in batch:
            boxes = convert_bbox_yolo_to_pascal(torch.tensor(image_target["boxes"]), image_target["orig_size"])
            post_processed_targets.append({"boxes": boxes, "labels": torch.tensor(image_target["class_labels"])})
    for batch, target_sizes in zip(predictions, image_sizes):
        batch_logits, batch_boxes = batch[1], batch[2]
        output = ModelOutput(logits=torch.tensor(batch_logits), pred_boxes=torch.tensor(batch_boxes))
        post_processed_predictions.extend(image_processor.post_process_object_detection(output, threshold=threshold, target_sizes=target_sizes))
    metric = MeanAveragePrecision(box_format="xyxy", class_metrics=True)
    metric.update(post_processed_predictions, post_processed_targets)
    metrics = metric.compute()
    classes = metrics.pop("classes")
    map_per_class, mar_100_per_class = metrics.pop("map_per_class"), metrics.pop("mar_100_per_class")
    for class_id, class_map, class_mar in zip(classes.reshape(-1).tolist(), map_per_class.reshape(-1), mar_100_per_class.reshape(-1)):
        name = id2label[class_id] if id2label is not None else class_id
        metrics[f"map_{name}"], metrics[f"mar_100_{name}"] = class_map, class_mar
    return {k: round(v.item(), 6) for k, v in metrics.items()}


def build_model(backbone_dir: Path, args: argparse.Namespace, id2label: dict, seed: int, pretrained: bool = True):
    """RT-DETR from transformers' config on the timm backbone, its ImageNet weights copied in."""
    import timm
    from transformers import AutoModelForImageClassification, RTDetrConfig, RTDetrForObjectDetection, set_seed

    arch = json.loads((backbone_dir / "config.json").read_text())["architecture"]
    info = timm.create_model(arch, pretrained=False, features_only=True).feature_info
    last = len(info) - 1
    out_indices = [last - 2, last - 1, last]  # strides 8, 16, 32
    width = args.width
    config = RTDetrConfig(
        backbone_config={"model_type": "timm_backbone", "backbone": arch, "features_only": True, "use_pretrained_backbone": False,
                         "out_indices": out_indices, "num_channels": 3, "freeze_batch_norm_2d": True},
        d_model=width, encoder_layers=args.layers, decoder_layers=args.layers, encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_dim=4 * width, decoder_ffn_dim=4 * width, num_queries=args.queries,
        encoder_in_channels=[info.channels()[i] for i in out_indices], feat_strides=[info.reduction()[i] for i in out_indices],
        encoder_hidden_dim=width, decoder_in_channels=[width] * 3, num_feature_levels=3, encode_proj_layers=[2],
        num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )  # fmt: skip
    set_seed(seed)
    model = RTDetrForObjectDetection(config)
    if pretrained:
        body = model.model.backbone.model._backbone  # the timm features_only model inside TimmBackbone
        imagenet = AutoModelForImageClassification.from_pretrained(backbone_dir).timm_model.state_dict()
        missing = [k for k in body.state_dict() if k not in imagenet and not k.endswith("num_batches_tracked")]
        if missing:
            raise SystemExit(f"the converted backbone lacks {len(missing)} weights: {missing[:3]}")
        body.load_state_dict({k: v for k, v in imagenet.items() if k in body.state_dict()}, strict=False)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", type=Path)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=9, help="9: the held-out tiles in one batch (see the docstring: 8 crashes)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="no training: build, one loss on a training batch, evaluate the untrained model")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_detection_trees_plain.json")
    args = parser.parse_args()

    import torch
    from transformers import RTDetrImageProcessor, Trainer, TrainingArguments

    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="plain-det-") as tmp:
        train_dir, validation_dir, held = split_tiles(DATA, Path(tmp) / "data", args.split_seed)
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            train_ds, eval_ds = load_split(train_dir), load_split(validation_dir)
            categories = sorted({c for cats in train_ds["objects"] for c in cats["category"]})
            id2label = dict(enumerate(categories))
            label2id = {v: k for k, v in id2label.items()}

            pretrained_cfg = json.loads((args.backbone / "config.json").read_text()).get("pretrained_cfg", {})
            image_processor = RTDetrImageProcessor(
                image_mean=list(pretrained_cfg.get("mean", (0.485, 0.456, 0.406))), image_std=list(pretrained_cfg.get("std", (0.229, 0.224, 0.225))),
                do_normalize=True, size={"height": args.image_size, "width": args.image_size}, do_pad=False,
            )  # fmt: skip
            train_ds = train_ds.with_transform(partial(augment_and_transform_batch, transform=make_transforms(args.image_size, True),
                                                       image_processor=image_processor, label2id=label2id))  # fmt: skip
            eval_ds = eval_ds.with_transform(partial(augment_and_transform_batch, transform=make_transforms(args.image_size, False),
                                                     image_processor=image_processor, label2id=label2id))  # fmt: skip
            model = build_model(args.backbone, args, id2label, seed)
            training_args = TrainingArguments(
                output_dir=str(Path(tmp) / f"run-{seed}"), max_steps=args.steps, learning_rate=args.lr, weight_decay=1e-4, max_grad_norm=0.1,
                per_device_train_batch_size=args.batch, per_device_eval_batch_size=args.eval_batch, warmup_steps=10, lr_scheduler_type="linear",
                eval_strategy="no", save_strategy="no", logging_steps=25, report_to=[], use_cpu=True, seed=seed,
                dataloader_num_workers=0, remove_unused_columns=False, eval_do_concat_batches=False,
            )  # fmt: skip
            trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=image_processor,
                              data_collator=collate_fn, compute_metrics=partial(compute_metrics, image_processor=image_processor, id2label=id2label))  # fmt: skip
            if args.check:
                batch = collate_fn([train_ds[i] for i in range(args.batch)])
                print("loss of an untrained batch:", float(model(**batch).loss.detach()), file=sys.stderr)
                print("untrained:", json.dumps(trainer.evaluate()), file=sys.stderr)
                print("trainable params:", sum(p.numel() for p in model.parameters() if p.requires_grad), file=sys.stderr)
                return
            train_result = trainer.train()
            trainer.save_model()
            metrics = trainer.evaluate()
            row = {"recipe": "plain", "seed": seed, "pretrained": True, "wall_s": round(time.perf_counter() - start, 1),
                   **{k: metrics[k] for k in ("eval_map", "eval_map_50", "eval_map_75", "eval_mar_100", "eval_loss")},
                   "train_loss": train_result.training_loss, "train_runtime": train_result.metrics["train_runtime"],
                   "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}  # fmt: skip
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
            args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "held_out": held, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
