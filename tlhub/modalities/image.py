"""Images: classification with any ``AutoModelForImageClassification`` model (ViT, DeiT,
ResNet, ConvNeXt, Swin, EfficientNet, MobileNet, ...); the image tasks that bring their own
side (object_detection: ``Task.image``) are delegated to it.

Data comes from an image folder (``<root>/<label>/*.jpg``, or a root holding ``train/``,
``val/`` and ``test/`` folders of that shape), a table (CSV/JSON/Parquet) with an image
path and a label (paths relative to the table's folder), or a Hub / ``save_to_disk``
dataset with an ``Image`` column (read undecoded and decoded here).

``prepare`` decodes every image once up front (cheaply: JPEGs decode at reduced scale)
so that unreadable or truncated files are skipped and counted, and the run fails only
when more than ``data.max_bad_fraction`` is bad. The pixels are produced lazily in the
``set_transform`` function with torchvision transforms v2, sized and normalised by the
model's image processor (size, crop size, mean, std): training gets
RandomResizedCrop + horizontal flip (+ ``data.rand_augment`` / ``data.color_jitter``),
evaluation gets Resize + CenterCrop; ``data.augment: false`` makes training use the
evaluation transform. Greyscale, palette and RGBA images become RGB (transparency
composited on white), and EXIF orientation is applied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision.transforms import v2
from transformers import AutoImageProcessor, AutoModelForImageClassification

from tlhub.errors import DataError
from tlhub.labels import label_tensor
from tlhub.loading import label_head, load_auto_model, model_error
from tlhub.modalities.base import MODALITIES, Modality
from tlhub.modalities.media import UnreadableExample, cell_source, drop_unreadable, label_folder_rows
from tlhub.tasks import TASKS, get_task
from tlhub.tasks.base import ImageSide

if TYPE_CHECKING:
    from tlhub.config import RunConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation", "valid"), "test": ("test",)}
KEY_SPLITS = {"data.train": "train", "data.validation": "validation", "data.test": "test"}
MIN_CROP_SCALE = 0.08  # RandomResizedCrop's default lower bound of the crop area


# --------------------------------------------------------------------------- decoding


class ImageReadError(UnreadableExample):
    """An image PIL cannot decode (missing, not an image, truncated)."""


def _source(value: Any, base_dir: Path | None = None) -> tuple[Any, str]:
    """What PIL opens for one cell and how messages name it: a PIL image as it is, else
    as `tlhub.data.cell_source` (a path relative to `base_dir`, bytes, a Hub Image cell)."""
    if isinstance(value, Image.Image):
        return value, "<image>"
    return cell_source(value, base_dir, ImageReadError, "image")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB whatever the mode: greyscale and palette converted, transparency (RGBA, LA,
    palette with a transparent colour) composited on white rather than dropped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greyscale: scale to 8 bits
        pixels = np.asarray(image, dtype=np.float64)
        if not np.isfinite(pixels).all():  # a float image (TIFF) may hold NaN: no pixels to train on
            raise ValueError(f"{int((~np.isfinite(pixels)).sum())} NaN or infinite pixel value(s)")
        if image.mode == "F":  # floats in [0, 1] (or already 0-255)
            pixels = pixels * 255.0 if pixels.size and pixels.max() <= 1.0 else pixels
        else:
            pixels = pixels / 256.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(value: Any, base_dir: Path | None = None, min_size: int | None = None) -> Image.Image:
    """Decode one cell to an RGB PIL image (EXIF orientation applied).

    `min_size`: JPEGs may decode at a reduced scale (1/2, 1/4, 1/8) as long as both
    sides stay at least this many pixels: much faster for small model inputs, with no
    loss at the size the model sees. Raises ImageReadError when the image cannot be read.
    """
    source, name = _source(value, base_dir)
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            image = Image.open(source)
            if min_size and image.format == "JPEG":
                image.draft("RGB", (min_size, min_size))
        image.load()  # decodes everything: truncated files fail here
        return to_rgb(ImageOps.exif_transpose(image) or image)
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise many kinds; all mean "unreadable"
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(f"{name}: unreadable image ({first})") from None


# --------------------------------------------------------------------------- sizes and transforms


def _size_value(size: Any, key: str) -> Any:
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def image_sizes(processor: Any) -> tuple[int | tuple[int, int], int | tuple[int, int]]:
    """(resize, crop) the model expects, read from its image processor.

    ``size`` {height, width} (ViT): resize to exactly that, crop the same. ``size``
    {shortest_edge} (ResNet, ConvNeXt): resize the short side; crop to ``crop_size``
    when the processor centre-crops, else a square of the short side; ConvNeXt's
    ``crop_pct`` resizes to shortest_edge / crop_pct first, as its processor does.
    """
    timm = getattr(processor, "data_config", None)  # transformers' TimmWrapperImageProcessor
    if isinstance(timm, dict) and timm.get("input_size"):
        side = (int(timm["input_size"][1]), int(timm["input_size"][2]))
        if timm.get("crop_mode") == "squash":
            return side, side
        return int(max(side) / float(timm.get("crop_pct") or 0.875)), side
    size, crop_size = getattr(processor, "size", None), getattr(processor, "crop_size", None)
    height, width = _size_value(size, "height"), _size_value(size, "width")
    shortest = _size_value(size, "shortest_edge")
    crop: int | tuple[int, int] | None = None
    if crop_size is not None and getattr(processor, "do_center_crop", False):
        crop = (int(_size_value(crop_size, "height")), int(_size_value(crop_size, "width")))
    if height and width:
        resize: int | tuple[int, int] = (int(height), int(width))
        return resize, crop or resize
    if shortest:
        crop = crop or int(shortest)
        crop_pct = getattr(processor, "crop_pct", None)
        resize = int(int(shortest) / crop_pct) if crop_pct and crop == int(shortest) else int(shortest)
        return resize, crop
    if crop:
        return crop, crop
    return 224, 224


def _longest(size: int | tuple[int, int]) -> int:
    return max(size) if isinstance(size, tuple) else size


def normalisation(processor: Any) -> tuple[list[float], list[float]] | None:
    """The processor's (mean, std), or None when it does not normalise."""
    timm = getattr(processor, "data_config", None)
    if isinstance(timm, dict) and timm.get("mean") is not None:
        return list(timm["mean"]), list(timm["std"])
    if getattr(processor, "do_normalize", True) and getattr(processor, "image_mean", None) is not None:
        return list(processor.image_mean), list(processor.image_std)
    return None


def interpolation(processor: Any) -> v2.InterpolationMode:
    """The processor's resampling filter (ViT: bilinear, ConvNeXt and timm models: often bicubic)."""
    timm = getattr(processor, "data_config", None)
    name = timm.get("interpolation") if isinstance(timm, dict) else None
    if name in ("bicubic", "bilinear", "nearest"):
        return v2.InterpolationMode[name.upper()]
    modes = {0: v2.InterpolationMode.NEAREST, 2: v2.InterpolationMode.BILINEAR, 3: v2.InterpolationMode.BICUBIC}
    try:
        return modes.get(int(getattr(processor, "resample", 2)), v2.InterpolationMode.BILINEAR)
    except (TypeError, ValueError):
        return v2.InterpolationMode.BILINEAR


def build_transforms(processor: Any, cfg: RunConfig, train: bool) -> tuple[v2.Compose, int]:
    """The torchvision v2 pipeline (PIL image -> normalised float tensor) and the smallest
    side the decoder may reduce an image to without losing detail for this pipeline."""
    data = cfg.data
    resize, crop = image_sizes(processor)
    mode = interpolation(processor)
    steps: list[Any] = [v2.PILToTensor()]
    if train and data.augment:
        steps += [
            v2.RandomResizedCrop(crop, scale=(data.crop_scale_min, 1.0), interpolation=mode, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if data.rand_augment:
            steps.append(v2.RandAugment())
        if data.color_jitter > 0:
            j = data.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        # A crop of the smallest allowed area is still at least `crop` pixels wide when decoded this large
        min_size = math.ceil(_longest(crop) / math.sqrt(data.crop_scale_min))
    else:
        steps += [v2.Resize(resize, interpolation=mode, antialias=True), v2.CenterCrop(crop)]
        min_size = _longest(resize)
    steps.append(v2.ToDtype(torch.float32, scale=getattr(processor, "do_rescale", True)))
    stats = normalisation(processor)
    if stats is not None:
        steps.append(v2.Normalize(mean=stats[0], std=stats[1]))
    return v2.Compose(steps), min_size


def collate_images(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack ``pixel_values`` (all one size after the transforms) and the labels."""
    batch = {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])}
    if features and "labels" in features[0]:
        batch["labels"] = label_tensor([f["labels"] for f in features])  # class ids, numbers or multi-hot rows
    return batch


def timm_initialisation(model: nn.Module) -> None:
    """Give a timm-wrapped model built from its config timm's own random initialisation.

    transformers re-initialises every convolution of a TimmWrapper model with N(0, 0.02),
    which suits transformers but not a deep convnet: in EfficientNet-Lite0 the activations
    then shrink to ~1e-21 by the last stage, so the "random weights" baseline reads zeros.
    A fresh ``timm.create_model`` of the same architecture has timm's fan-out init (the
    features of a random network, ~1.4 on average), which is the baseline that matters.
    """
    import timm

    config = model.config
    fresh = timm.create_model(config.architecture, pretrained=False, num_classes=config.num_labels, **(config.model_args or {}))
    model.timm_model.load_state_dict(fresh.state_dict())


# --------------------------------------------------------------------------- folders


# The shape of a folder (a split root? loose images to point at?); its rows are listed by
# datasets' imagefolder in ImageModality.load_folder.


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_split_root(path: Path) -> bool:
    """A root holding ``train/<label>/<image>`` (and maybe val/, test/), not ``<label>/<image>``."""
    train = path / "train"
    return train.is_dir() and any(_images_in(sub) for sub in _class_folders(train)) and not _images_in(train)


# --------------------------------------------------------------------------- the modality


def image_side(cfg: RunConfig) -> ImageSide | None:
    """The task's own side of the image modality (object detection), where it brings one."""
    return get_task(cfg.task).image


def timm_stack(module: nn.Module) -> nn.Module | None:
    """A timm model's stack of stages: ``blocks`` (EfficientNet, MobileNet), ``stages`` (ConvNeXt),
    or a ResNet's ``layer1``..``layer4`` (gathered in a list that owns nothing)."""
    for name in ("blocks", "stages"):
        stack = getattr(module, name, None)
        if isinstance(stack, (nn.Sequential, nn.ModuleList)) and len(stack) >= 2:
            return stack
    layers = [getattr(module, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(layer, nn.Module) for layer in layers):
        return nn.ModuleList(layers)
    return None


@MODALITIES.register("image")
class ImageModality(Modality):
    name = "image"
    tasks = ("classification", *(name for name in TASKS.names() if TASKS.get(name).image is not None))

    def class_column(self, cfg: RunConfig) -> str | None:
        if side := image_side(cfg):
            return side.class_column(cfg)
        return super().class_column(cfg)

    def min_classes(self, cfg: RunConfig) -> int:
        if side := image_side(cfg):
            return side.min_classes(cfg)
        return super().min_classes(cfg)

    def body(self, model: nn.Module, task: str) -> nn.Module | None:
        side = get_task(task).image
        return side.body(model) if side else None

    def inner_heads(self, model: nn.Module, task: str) -> list[str]:
        side = get_task(task).image
        return side.inner_heads(model) if side else []

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        if side := image_side(cfg):
            return side.required_columns(cfg)
        return {"data.image_column": cfg.data.image_column, "data.label_column": cfg.data.label_column}

    def load_folder(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset:
        """``<label>/<image>`` -> rows of (absolute path, label), sorted, listed by `datasets`'
        imagefolder (:func:`tlhub.modalities.media.label_folder_rows`).

        A root with ``train/``, ``val/`` (or ``validation/``) and ``test/`` folders of
        that shape serves every split: data.train reads train/, data.validation val/,
        data.test test/ (so all three keys may name the same root), and a domain
        adaptation target the folder of ``domain_adaptation.target_split``.
        """
        if side := image_side(cfg):
            return side.load_folder(path, cfg, key)
        root = path
        if _is_split_root(path):
            split = KEY_SPLITS.get(key, "train")
            if cfg.domain_adaptation is not None and key == "domain_adaptation.target":
                split = cfg.domain_adaptation.target_split
                split = "validation" if split in SPLIT_FOLDERS["validation"] else split
            names = SPLIT_FOLDERS.get(split, (split,))
            found = [path / n for n in names if (path / n).is_dir()]
            if not found:
                raise DataError(f"{key}: {path} has a train/ folder but no {' or '.join(n + '/' for n in names)} folder for this split")
            path = found[0]
            if key == "data.train" and cfg.data.validation is None:
                val = [root / n for n in SPLIT_FOLDERS["validation"] if (root / n).is_dir()]
                if val:
                    raise DataError(
                        f"data.validation: {root} has train/ and {val[0].name}/ folders; set data.validation: {root} "
                        f"to validate on {val[0].name}/, or data.train: {path} to split validation off train/"
                    )
        data = cfg.data
        rows = label_folder_rows("image", path, data.image_column, data.label_column, IMAGE_EXTENSIONS)
        if rows is None:
            loose = len(_images_in(path))
            hint = f"; the {loose} images directly in it need to go into one subfolder per class" if loose else ""
            raise DataError(
                f"{key}: {path}: no images ({' '.join(IMAGE_EXTENSIONS)}) in class subfolders; expected "
                f"{path}/<label>/<image>.jpg{hint}"
            )
        with_images = sorted(set(rows[data.label_column]))
        if key == "data.train" and len(with_images) < 2:
            raise DataError(
                f"{key}: {path}: only one class folder with images ('{with_images[0]}'); classification needs a subfolder "
                "per class, at least two"
            )
        return rows

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        """Resolve paths and decode every image once; skip (and count) unreadable ones.

        Fails when more than ``data.max_bad_fraction`` of the rows is unreadable, naming
        the first bad files.
        """
        if side := image_side(cfg):
            return side.prepare(ds, cfg, base_dir, origin)
        data = cfg.data
        column = data.image_column
        if isinstance(ds.features[column], datasets.Image):  # Hub / saved dataset: keep bytes, decode here
            ds = ds.cast_column(column, datasets.Image(decode=False))
        ds, bad, _ = drop_unreadable(
            ds, column, lambda value: load_image(value, base_dir, min_size=64), origin, base_dir, data.max_bad_fraction, "images"
        )
        return ds, bad

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        if side := image_side(cfg):
            return side.load_processor(cfg, source)
        name = source or cfg.model.name_or_path
        if source and not (Path(source) / "preprocessor_config.json").is_file():
            # A timm model's TimmWrapperImageProcessor keeps its settings in the model's config.json
            # and does not save itself: a feature-extraction run has that config in backbone/, a
            # LoRA run holds only the adapter (the base model has it).
            if (Path(source) / "backbone" / "config.json").is_file():
                name = str(Path(source) / "backbone")
            elif not (Path(source) / "config.json").is_file():
                name, source = cfg.model.name_or_path, None
        try:
            return AutoImageProcessor.from_pretrained(
                name, revision=None if source else cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
            )
        except (OSError, ValueError, KeyError) as exc:
            raise model_error(cfg.model, exc) from None

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        if side := image_side(cfg):
            return side.load_model(cfg, label_names)
        assert label_names is not None
        model = load_auto_model(
            AutoModelForImageClassification,
            cfg.model,
            **label_head(label_names, cfg.data.problem_type),
        )
        if not cfg.model.pretrained and getattr(model, "timm_model", None) is not None:
            timm_initialisation(model)
        return model

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        if side := image_side(cfg):
            return side.transform(processor, cfg, train)
        column = cfg.data.image_column
        pipeline, min_size = build_transforms(processor, cfg, train)

        def apply(batch: dict[str, list]) -> dict[str, list]:
            pixels = []
            for value in batch[column]:
                try:
                    image = load_image(value, min_size=min_size)
                except ImageReadError as exc:  # went bad after prepare(): a clear stop, not a traceback
                    raise DataError(f"image: {exc}") from None
                pixels.append(pipeline(image))
            out: dict[str, list] = {"pixel_values": pixels}
            if "labels" in batch:
                out["labels"] = batch["labels"]
            return out

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        if side := image_side(cfg):
            return side.collator(processor, cfg, model)
        return collate_images

    def blocks(self, model: nn.Module) -> list[nn.ModuleList] | None:
        """timm models (transformers' TimmWrapper, or the timm backbone of a detector): the
        stages of the outermost timm module (:func:`timm_stack`); others: found by shape."""
        for module in model.modules():
            if type(module).__module__.startswith("timm."):
                stack = timm_stack(module)
                return [stack] if stack is not None else None  # type: ignore[list-item]  # indexable and sized like a ModuleList
        return None

    def peft_task_type(self, task: str) -> str | None:
        return None  # PEFT has no image task type; the head trains through modules_to_save

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        try:
            load_image(value, min_size=64)
        except ImageReadError as exc:
            raise DataError(f"predict: {exc}") from None
        return {cfg.data.image_column: str(Path(value).expanduser().resolve())}
