"""Object detection: boxes with a class and a score per image, as transformers'
object-detection example trains them (DETR, Conditional DETR).

Data: an image folder with ``metadata.jsonl`` (the Hugging Face image-folder layout:
``{"file_name": ..., "objects": {"bbox": [[...], ...], "category": [...]}}``), or a Hub /
saved dataset with an image column and an ``objects`` column of that shape (``data.objects_column``).
Boxes are read in ``data.box_format`` (coco, pascal_voc, yolo) and kept as COCO boxes in pixels.
A box partly outside its image is clipped to it, one wholly outside or of zero area is dropped
(both counted in one warning per split); an image without boxes is a valid negative; an image
that cannot be read is skipped and counted (``data.max_bad_fraction``).

Models: ``model.name_or_path`` a whole detection checkpoint (``AutoModelForObjectDetection``:
facebook/detr-resnet-50), its classification head resized to the data's classes; or
``model.detector`` (detr | conditional_detr | rt_detr) built from transformers' config on the timm
backbone ``model.backbone`` (a converted folder such as EfficientNet-Lite0, or a timm name),
the backbone's pretrained weights copied in by name (``model.pretrained: false``: timm's own
random initialisation), the transformer and heads new (initialised from the training seed, so a
LoRA adapter's base rebuilds identically). The backbone's batch norms are frozen, as DETR freezes
them, through timm's ``FrozenBatchNormAct2d`` (which keeps each norm's activation).

Images are resized to ``data.image_size`` square by the model's image processor (saved with the
run, so ``transformers.pipeline("object-detection")`` preprocesses alike); training adds a
horizontal flip, a random crop (``data.box_crop_scale_min``) and colour jitter (``data.color_jitter``)
with torchvision's box-aware transforms, which move, cut and drop the boxes with the pixels.
Scores: COCO mAP, mAP@50, mAP@75 and mAR@100 (torchmetrics' MeanAveragePrecision, pycocotools
behind it) of the predictions post-processed by the image processor, as ``eval_map``...
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import nn

from tlhub.errors import DataError, ModelError, TlhubError
from tlhub.tasks.base import TASKS, ImageSide, Task

if TYPE_CHECKING:
    from PIL import Image

    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)

BOXES = "boxes"  # COCO boxes in pixels, after prepare()
CATEGORIES = "categories"  # each box's class name, after prepare()
METADATA = "metadata.jsonl"
BOX_FORMATS = ("coco", "pascal_voc", "yolo")


# --------------------------------------------------------------------------- boxes


def to_coco(box: list[float], box_format: str, width: int, height: int) -> list[float]:
    """One box as COCO ``[x, y, width, height]`` in pixels, from `box_format`."""
    a, b, c, d = (float(v) for v in box)
    if box_format == "coco":
        return [a, b, c, d]
    if box_format == "pascal_voc":
        return [a, b, c - a, d - b]
    if box_format == "yolo":  # centre and size, as fractions of the image
        return [(a - c / 2) * width, (b - d / 2) * height, c * width, d * height]
    raise ValueError(f"unknown box format '{box_format}'")


def clip_box(box: list[float], width: int, height: int) -> tuple[list[float] | None, bool]:
    """A COCO box cut to the image: (the box, whether it was cut); None when nothing of it is
    inside the image (wholly outside, or zero area)."""
    x0, y0, x1, y1 = box[0], box[1], box[0] + box[2], box[1] + box[3]
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        return None, False
    return [cx0, cy0, cx1 - cx0, cy1 - cy0], (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)


def center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x0, y0, x1, y1), any scale."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


# --------------------------------------------------------------------------- reading


def read_metadata(folder: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
    """An image folder's ``metadata.jsonl`` as rows (image path, objects as JSON text). A line
    that is not a JSON object with a ``file_name`` is an error naming the file and line."""
    data = cfg.data
    if data.annotations:
        return read_coco(folder, cfg, key)
    meta = folder / METADATA
    if not meta.is_file():
        raise DataError(
            f"{key}: {folder}: no {METADATA}; object detection reads an image folder with {METADATA} rows "
            '{"file_name": ..., "objects": {"bbox": [[x, y, w, h], ...], "category": [...]}}'
        )
    images, objects = [], []
    for number, line in enumerate(meta.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta}: line {number}: not a JSON object ({exc.msg}); fix or remove the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise DataError(f"{meta}: line {number}: no 'file_name'; each line needs the image's file name and its objects")
        images.append(str(folder / row["file_name"]))
        objects.append(json.dumps(row.get(data.objects_column, {"bbox": [], "category": []})))
    if not images:
        raise DataError(f"{key}: {meta} lists no images")
    return datasets.Dataset.from_dict({data.image_column: images, data.objects_column: objects})


def read_coco(folder: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
    """A COCO annotation file (``data.annotations``, in `folder`) as rows like metadata.jsonl's."""
    data = cfg.data
    assert data.annotations is not None
    path = folder / data.annotations
    if not path.is_file():
        raise DataError(f"data.annotations: {path}: no such file; name the COCO annotation file in each split's folder")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: str(c["name"]) for c in coco["categories"]}
        objects: dict[Any, dict[str, list]] = {image["id"]: {"bbox": [], "category": []} for image in coco["images"]}
        for number, ann in enumerate(coco.get("annotations", []), 1):
            if ann["image_id"] not in objects or ann["category_id"] not in names:
                raise DataError(f"{path}: annotation {number} names image {ann['image_id']} and category {ann['category_id']}, "
                                "which images/categories lack")  # fmt: skip
            objects[ann["image_id"]]["bbox"].append(ann["bbox"])
            objects[ann["image_id"]]["category"].append(names[ann["category_id"]])
        images = [(str(folder / image["file_name"]), json.dumps(objects[image["id"]])) for image in coco["images"]]
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not JSON ({exc.msg})") from None
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO annotation file (missing {exc}); it needs images, categories and annotations") from None
    if not images:
        raise DataError(f"{key}: {path} lists no images")
    return datasets.Dataset.from_dict({data.image_column: [i for i, _ in images], data.objects_column: [o for _, o in images]})


def category_names(feature: Any) -> list[str] | None:
    """The class names of a Hub dataset's ``objects.category`` (a list of ClassLabel ids), if so."""
    inner = feature.get("category") if isinstance(feature, dict) else None
    inner = getattr(inner, "feature", inner)
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def image_size_of(value: Any, base_dir: Path | None) -> tuple[int, int]:
    """(width, height) of one image cell as the model sees it (EXIF orientation applied);
    ImageReadError when it cannot be read."""
    from tlhub.modalities.image import load_image

    return load_image(value, base_dir).size


# --------------------------------------------------------------------------- models


def detector_classes(detector: str) -> tuple[Any, Any, Any]:
    """(config class, model class, image processor class) of a detector family."""
    import transformers as tf

    families = {
        "detr": (tf.DetrConfig, tf.DetrForObjectDetection, tf.DetrImageProcessor),
        "conditional_detr": (tf.ConditionalDetrConfig, tf.ConditionalDetrForObjectDetection, tf.ConditionalDetrImageProcessor),
        "rt_detr": (tf.RTDetrConfig, tf.RTDetrForObjectDetection, tf.RTDetrImageProcessor),
    }
    return families[detector]


def backbone_source(name: str) -> tuple[str, dict[str, Any], Path | None, dict[str, Any]]:
    """(timm architecture, its model_args, the weights file or None, its pretrained_cfg) of
    `name`: a folder of a timm model in transformers' format (config.json with
    ``architecture``), or a timm model name."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if "architecture" not in config:
            raise ModelError(
                f"model.backbone: {folder} is not a timm model in transformers' format (no 'architecture' in config.json); "
                "convert one (python scripts/convert_efficientnet_lite.py DIR) or name a timm model"
            )
        weights = next((f for f in (folder / "model.safetensors",) if f.is_file()), None)
        return config["architecture"], dict(config.get("model_args") or {}), weights, dict(config.get("pretrained_cfg") or {})
    import timm

    if not timm.is_model(name):
        raise ModelError(f"model.backbone: '{name}' is neither a folder nor a timm model name (timm.list_models() lists them)")
    cfg = timm.models.get_pretrained_cfg(name)
    return name, {}, None, cfg.to_dict() if cfg is not None else {}


def timm_module(module: nn.Module) -> nn.Module | None:
    """The outermost timm model inside `module`."""
    return next((m for m in module.modules() if type(m).__module__.startswith("timm.")), None)


def backbone_weights(cfg: RunConfig, arch: str, model_args: dict[str, Any], weights: Path | None, out_indices: list[int]) -> dict[str, torch.Tensor]:
    """The backbone's weights by timm's names: the folder's pretrained ones, timm's pretrained
    ones for a timm name (from the Hub), or timm's random initialisation (model.pretrained: false)."""
    import timm

    if cfg.model.pretrained and weights is not None:
        from safetensors.torch import load_file

        return {k.removeprefix("timm_model."): v for k, v in load_file(str(weights)).items()}
    try:
        fresh = timm.create_model(arch, pretrained=cfg.model.pretrained, features_only=True, out_indices=out_indices, **model_args)
    except Exception as exc:  # noqa: BLE001 - timm's download fails in many ways: offline, unknown tag
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model.backbone: cannot load timm's pretrained '{arch}' ({first}); offline, convert a checkpoint to a folder "
            "and name that, or set model.pretrained: false"
        ) from None
    return fresh.state_dict()


def build_detector(cfg: RunConfig, label_names: list[str]) -> nn.Module:
    """``model.detector`` from transformers' config on the timm backbone ``model.backbone``."""
    import timm

    from tlhub.loading import check_config_overrides, label_head

    m = cfg.model
    assert m.detector is not None and m.backbone is not None
    arch, model_args, weights, _ = backbone_source(m.backbone)
    info = timm.create_model(arch, pretrained=False, features_only=True, **model_args).feature_info
    last = len(info) + m.feature_level
    # DETR and Conditional DETR read one feature map; RT-DETR three, the last of them model.feature_level's
    out_indices = [last - 2, last - 1, last] if m.detector == "rt_detr" else [last]
    if out_indices[0] < 0:
        raise ModelError(f"model.feature_level: {m.feature_level} leaves fewer than the three feature maps RT-DETR reads in {arch}; use -1")
    config_class, model_class, _ = detector_classes(m.detector)
    width = m.detector_width
    heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
    backbone_config = {
        "model_type": "timm_backbone", "backbone": arch, "features_only": True, "use_pretrained_backbone": False,
        "out_indices": out_indices, "num_channels": 3,
        # timm's frozen norms keep each norm's activation (EfficientNet's BatchNormAct2d); DETR's own would drop it
        "freeze_batch_norm_2d": True,
    }  # fmt: skip
    levels: dict[str, Any] = {}
    if m.detector == "rt_detr":  # its hybrid encoder: each level's channels and stride, all projected to the width
        levels = {"encoder_in_channels": [info.channels()[i] for i in out_indices], "feat_strides": [info.reduction()[i] for i in out_indices],
                  "encoder_hidden_dim": width, "decoder_in_channels": [width] * 3, "num_feature_levels": 3, "encode_proj_layers": [2]}  # fmt: skip
    config = config_class(
        backbone_config=backbone_config, d_model=width, encoder_layers=m.detector_layers, decoder_layers=m.detector_layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * width, decoder_ffn_dim=4 * width,
        num_queries=m.detector_queries, **levels, **label_head(label_names),
    )  # fmt: skip
    for key, value in check_config_overrides(config, m.config_overrides or {}).items():
        setattr(config, key, value)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # the new transformer and heads: the same for the same seed (LoRA's base rebuilds)
        model = model_class(config)
    body = timm_module(model)
    assert body is not None
    state = backbone_weights(cfg, arch, model_args, weights, out_indices)
    own = body.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"model.backbone: {m.backbone} lacks {len(missing)} weight(s) of timm's {arch} ({', '.join(missing[:3])})")
    body.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return model


# --------------------------------------------------------------------------- the image side


# RT-DETR (and D-FINE, DEIM) keep their heads inside the base model: a class and a box head per
# decoder layer, the encoder's query-selection heads and the denoising queries' class embedding.
# Each is sized to the classes or new to the data, so under lora each trains in full.
NESTED_HEADS = ("class_embed", "bbox_embed", "enc_score_head", "enc_bbox_head", "denoising_class_embed")


class DetectionImage(ImageSide):
    """The image modality's side of object detection."""

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        return {"data.image_column": cfg.data.image_column, "data.objects_column": cfg.data.objects_column}

    def class_column(self, cfg: RunConfig) -> str | None:
        return CATEGORIES

    def min_classes(self, cfg: RunConfig) -> int:
        return 1  # a detector of one class (trees) tells it from the background

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        return read_metadata(path, cfg, key)

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        """Every row's image read (size, and skipped and counted when unreadable) and its boxes
        turned into clipped COCO boxes with class names; see the module docstring."""
        from tlhub.modalities.image import ImageReadError

        data = cfg.data
        column = data.image_column
        if isinstance(ds.features[column], datasets.Image):  # Hub / saved dataset: keep bytes, decode here
            ds = ds.cast_column(column, datasets.Image(decode=False))
        names = category_names(ds.features[data.objects_column])
        images, boxes_out, categories_out, unreadable = [], [], [], []
        clipped = dropped = 0
        first_dropped = ""
        for row, (value, objects) in enumerate(zip(ds[column], ds[data.objects_column]), 1):
            try:
                width, height = image_size_of(value, base_dir)
            except ImageReadError as exc:
                unreadable.append(f"row {row}: {exc}")
                continue
            where = f"{origin}: row {row}"
            objects = json.loads(objects) if isinstance(objects, str) else (objects or {})
            if not isinstance(objects, dict):
                raise DataError(f"{where}: '{data.objects_column}' must be {{bbox: [...], category: [...]}}, got {type(objects).__name__}")
            bboxes, categories = objects.get("bbox") or [], objects.get("category") or []
            if len(bboxes) != len(categories):
                raise DataError(f"{where}: {len(bboxes)} boxes but {len(categories)} categories; give each box one category")
            kept_boxes, kept_categories = [], []
            for number, (box, category) in enumerate(zip(bboxes, categories), 1):
                if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
                    raise DataError(f"{where}: box {number} is {box!r}; a box is 4 finite numbers ({data.box_format}, data.box_format)")
                coco, cut = clip_box(to_coco(list(box), data.box_format, width, height), width, height)
                if coco is None:
                    dropped += 1
                    first_dropped = first_dropped or f"row {row} box {number} {list(box)} in a {width}x{height} image"
                    continue
                clipped += cut
                kept_boxes.append(coco)
                kept_categories.append(names[int(category)] if names is not None else str(category))
            images.append(value)
            boxes_out.append(kept_boxes)
            categories_out.append(kept_categories)
        self.check_unreadable(unreadable, len(ds), origin, data.max_bad_fraction)
        if clipped or dropped:
            logger.warning(
                "%s: clipped %d box(es) partly outside their image to it; dropped %d box(es) wholly outside their image or "
                "of zero area%s", origin, clipped, dropped, f" (first: {first_dropped})" if dropped else "",
            )  # fmt: skip
        image_feature = ds.features[column] if isinstance(ds.features[column], datasets.Image) else datasets.Value("string")
        if image_feature == datasets.Value("string"):
            from tlhub.modalities.media import absolute_path

            images = [absolute_path(v, base_dir) if isinstance(v, str) else v for v in images]
        features = datasets.Features({
            column: image_feature,
            BOXES: datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            CATEGORIES: datasets.List(datasets.Value("string")),
        })  # fmt: skip
        return datasets.Dataset.from_dict({column: images, BOXES: boxes_out, CATEGORIES: categories_out}, features=features), len(unreadable)

    @staticmethod
    def check_unreadable(bad: list[str], total: int, origin: str, max_bad_fraction: float) -> None:
        """Unreadable images are skipped and counted; more than the allowed fraction is an error."""
        if not bad:
            return
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        if len(bad) / total > max_bad_fraction:
            raise DataError(
                f"{origin}: {len(bad)} of {total} images ({len(bad) / total:.0%}) are unreadable, more than "
                f"data.max_bad_fraction={max_bad_fraction}: {shown}"
            )
        logger.warning("%s: skipped %d unreadable images: %s", origin, len(bad), shown)

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The detector's image processor: a finished run's as saved; otherwise the checkpoint's
        (or, for a built detector, its family's with the backbone's mean and std), resizing every
        image to ``data.image_size`` square (boxes are then fractions of the image either way)."""
        from transformers import AutoImageProcessor

        from tlhub.loading import model_error

        side = cfg.data.image_size
        resize = {"size": {"height": side, "width": side}, "do_pad": False}
        m = cfg.model
        try:
            if source is not None:
                return AutoImageProcessor.from_pretrained(source)
            if m.detector is not None and m.backbone == m.name_or_path:
                _, _, _, pretrained = backbone_source(m.backbone)
                mean, std = pretrained.get("mean") or (0.485, 0.456, 0.406), pretrained.get("std") or (0.229, 0.224, 0.225)
                # normalised as the backbone was trained (RT-DETR's processor would not normalise by default)
                return detector_classes(m.detector)[2](image_mean=list(mean), image_std=list(std), do_normalize=True, **resize)
            return AutoImageProcessor.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code, **resize)
        except (OSError, ValueError, KeyError) as exc:
            raise model_error(m, exc) from None

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        """A built detector (model.detector, on model.backbone) or a whole checkpoint with its
        head resized to `label_names` (a finished run's folder loads as such)."""
        from transformers import AutoModelForObjectDetection

        from tlhub.loading import label_head, load_auto_model

        assert label_names is not None
        m = cfg.model
        if m.detector is not None and m.backbone == m.name_or_path:
            return build_detector(cfg, label_names)
        return load_auto_model(AutoModelForObjectDetection, m, **label_head(label_names))

    def body(self, model: nn.Module) -> nn.Module | None:
        """The detector's convolutional backbone (transformers names it ``backbone`` in every family)."""
        from tlhub.models import backbone_of

        body = getattr(backbone_of(model), "backbone", None)
        return body if isinstance(body, nn.Module) else None

    def inner_heads(self, model: nn.Module) -> list[str]:
        """The heads RT-DETR keeps inside its base model (:data:`NESTED_HEADS`; a ModuleList's
        items one by one: PEFT wraps modules, not lists). DETR's sit beside it, where lora's
        ``head_names`` finds them."""
        from tlhub.models import backbone_of

        base = backbone_of(model)
        prefix = next((name for name, module in model.named_children() if module is base), None)
        if prefix is None:
            return []
        inner: list[str] = []
        for name, module in base.named_modules():
            if name.rsplit(".", 1)[-1] in NESTED_HEADS:
                items = [f"{name}.{i}" for i in range(len(module))] if isinstance(module, nn.ModuleList) else [name]
                inner += [f"{prefix}.{item}" for item in items]
        return inner

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        """Rows -> ``pixel_values`` and ``labels`` ({class_labels, boxes: normalised cx, cy, w, h,
        orig_size}), through the image processor; training augments first (:func:`augmentation`)."""
        from tlhub.modalities.image import ImageReadError, load_image

        column = cfg.data.image_column
        augment = augmentation(cfg) if train and cfg.data.augment else None

        def apply(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = {"pixel_values": [], "labels": []}
            labelled = "labels" in batch
            for i, value in enumerate(batch[column]):
                try:
                    image = load_image(value)
                except ImageReadError as exc:  # went bad after prepare(): a clear stop, not a traceback
                    raise DataError(f"image: {exc}") from None
                if not labelled:
                    out["pixel_values"].append(processor(images=image, return_tensors="pt")["pixel_values"][0])
                    continue
                boxes, ids = list(batch[BOXES][i]), list(batch["labels"][i])
                pixels: Any = image
                if augment is not None:
                    pixels, boxes, ids = augment(image, boxes, ids)
                annotations = {"image_id": i, "annotations": [
                    {"bbox": list(map(float, b)), "category_id": int(c), "area": float(b[2] * b[3]), "iscrowd": 0} for b, c in zip(boxes, ids)
                ]}  # fmt: skip
                encoded = processor(images=pixels, annotations=annotations, return_tensors="pt")
                target = encoded["labels"][0]
                out["pixel_values"].append(encoded["pixel_values"][0])
                # "image": a 0-dim tensor, so that accelerate's gather_for_metrics keeps each target whole.
                # At the end of evaluation it cuts every tensor of the last batch to the rows left
                # (``tensor[:remainder]``, meant for batch-first tensors: it would cut an image's boxes);
                # a 0-dim tensor cannot be cut, and it then returns the batch as it is, as DETR's 0-dim
                # loss terms already make it do for the predictions (one process has no rows to drop).
                out["labels"].append({"class_labels": target["class_labels"], "boxes": target["boxes"],
                                      "orig_size": torch.tensor([image.height, image.width]), "image": torch.tensor(i)})  # fmt: skip
            if not labelled:
                del out["labels"]
            return out

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        return collate_detection


def augmentation(cfg: RunConfig) -> Callable[[Image.Image, list, list], tuple[torch.Tensor, list, list]]:
    """Box-aware training augmentation (torchvision transforms v2): horizontal flip, for half the
    images a random crop of at least ``data.box_crop_scale_min`` of the area, colour jitter
    (``data.color_jitter``); boxes follow the pixels, are cut to the image, and those left with
    less than a pixel are dropped with their labels (SanitizeBoundingBoxes)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    data = cfg.data
    steps: list[Any] = [v2.RandomHorizontalFlip()]
    if data.box_crop_scale_min < 1.0:
        crop = v2.RandomResizedCrop(data.image_size, scale=(data.box_crop_scale_min, 1.0), antialias=True)
        steps.append(v2.RandomApply([crop], p=0.5))
    if data.color_jitter > 0:
        j = data.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    pipeline = v2.Compose(steps)

    def apply(image: Image.Image, boxes: list, ids: list) -> tuple[torch.Tensor, list, list]:
        pixels = tv_tensors.Image(v2.functional.pil_to_tensor(image))
        box_tensor = tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYWH",
                                              canvas_size=(image.height, image.width))  # fmt: skip
        out = pipeline({"image": pixels, "boxes": box_tensor, "labels": torch.tensor(ids, dtype=torch.long)})
        return out["image"].as_subclass(torch.Tensor), out["boxes"].as_subclass(torch.Tensor).tolist(), out["labels"].tolist()

    return apply


def collate_detection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``pixel_values`` (all ``data.image_size`` square) and keep ``labels`` a list of
    per-image dicts, as DETR's loss reads them."""
    batch: dict[str, Any] = {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])}
    if features and "labels" in features[0]:
        batch["labels"] = [{k: torch.as_tensor(v) for k, v in f["labels"].items()} for f in features]
    return batch


# --------------------------------------------------------------------------- the task


def detection_arrays(predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """(class logits, predicted boxes) of one evaluation batch's model outputs (a tuple after
    the loss; the loss terms are a dict, the hidden states come after the boxes)."""
    arrays = [p for p in (predictions if isinstance(predictions, (tuple, list)) else [predictions]) if isinstance(p, np.ndarray) and p.ndim == 3]
    if len(arrays) < 2 or arrays[1].shape[-1] != 4:
        raise TlhubError("object_detection: the model's outputs hold no class logits and boxes (logits, pred_boxes)")
    return arrays[0], arrays[1]


class BoxScorer:
    """COCO mAP over images (torchmetrics' MeanAveragePrecision, xyxy boxes in pixels): fed
    predicted and true boxes image by image, it returns ``map``, ``map_50``, ``map_75``, ``mar_100``."""

    def __init__(self) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")

    def update(self, predicted: list[dict[str, torch.Tensor]], truth: list[dict[str, torch.Tensor]]) -> None:
        self.metric.update(predicted, truth)

    def compute(self) -> dict[str, float]:
        result = self.metric.compute()
        return {key: round(float(result[key]), 6) for key in ("map", "map_50", "map_75", "mar_100", "map_small", "map_medium", "map_large")}


@TASKS.register("object_detection")
class ObjectDetection(Task):
    name = "object_detection"
    main_metric = ("map", True)
    pipeline_tags = {"image": "object-detection"}
    image = DetectionImage()
    # Evaluation batches kept apart: each holds a list of per-image box sets (transformers' example does so)
    training_defaults = {"eval_do_concat_batches": False}

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        from transformers.utils import ModelOutput

        def compute(pred: Any) -> dict[str, float]:
            scorer = BoxScorer()
            for outputs, targets in zip(pred.predictions, pred.label_ids):
                logits, boxes = detection_arrays(outputs)
                sizes = torch.tensor(np.stack([t["orig_size"] for t in targets]))
                found = processor.post_process_object_detection(
                    ModelOutput(logits=torch.as_tensor(logits), pred_boxes=torch.as_tensor(boxes)), threshold=0.0, target_sizes=sizes
                )
                truth = []
                for target, (height, width) in zip(targets, sizes.tolist()):
                    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
                    true_boxes = center_to_corners(torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)) * scale
                    truth.append({"boxes": true_boxes, "labels": torch.as_tensor(target["class_labels"]).long().reshape(-1)})
                scorer.update([{"boxes": f["boxes"], "scores": f["scores"], "labels": f["labels"]} for f in found], truth)
            return scorer.compute()

        return compute

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        """Boxes above the threshold (0.5, the pipeline's; ``tlhub predict --threshold``), in
        pixels of each input image, with label and score: the pipeline's output shape."""
        from tlhub.modalities.image import load_image

        threshold = float(getattr(run, "options", {}).get("threshold", 0.5))
        outputs = run.model(**batch)
        sizes = torch.tensor([[image.height, image.width] for image in (load_image(v) for v in inputs)])
        found = run.processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=sizes)
        names = run.label_names or []
        rows = []
        for value, result in zip(inputs, found):
            objects = []
            for score, label, box in zip(result["scores"].tolist(), result["labels"].tolist(), result["boxes"].tolist()):
                name = names[label] if 0 <= label < len(names) else str(label)
                objects.append({"score": score, "label": name, "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box))})
            rows.append({"input": value, "objects": sorted(objects, key=lambda o: -o["score"])})
        return rows

    def describe(self, row: dict[str, Any]) -> str:
        found = "; ".join(
            f"{o['label']} {o['score']:.3f} [{o['box']['xmin']:.0f}, {o['box']['ymin']:.0f}, {o['box']['xmax']:.0f}, {o['box']['ymax']:.0f}]"
            for o in row["objects"]
        )  # fmt: skip
        return f"{len(row['objects'])} box(es): {found or '-'}\t{row['input']}"

    def draw(self, row: dict[str, Any], path: Path) -> None:
        """A copy of the input image with its predicted boxes, labels and scores drawn on it."""
        from PIL import ImageDraw

        from tlhub.modalities.image import load_image

        image = load_image(row["input"]).copy()
        pen = ImageDraw.Draw(image)
        for o in row["objects"]:
            b = o["box"]
            pen.rectangle([b["xmin"], b["ymin"], b["xmax"], b["ymax"]], outline=(255, 0, 0), width=2)
            pen.text((b["xmin"] + 2, b["ymin"] + 1), f"{o['label']} {o['score']:.2f}", fill=(255, 255, 0))
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)

    def card_code(self, cfg: RunConfig, pipeline_tag: str) -> str:
        return "from transformers import pipeline\npipe = pipeline('object-detection', model=RUN_DIR)\npipe('image.png', threshold=0.5)"
