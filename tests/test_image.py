"""Image modality: folders, tables and saved datasets; RGB conversion; augmentation in
training only; every strategy trains only what it should on a tiny ViT and ResNet;
unreadable images skipped and counted; `tlhub train` and `tlhub predict` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import cpu_training, with_sections
from tests.tiny_models import make_tiny_resnet, make_tiny_vit, toy_image_folder
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.errors import ConfigError, DataError
from tlhub.modalities import get_modality
from tlhub.modalities.image import build_transforms, image_sizes, load_image, to_rgb
from tlhub.strategies import STRATEGIES, count_parameters


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_resnet(tmp_path_factory.mktemp("tiny-resnet"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_image_folder(tmp_path_factory.mktemp("images") / "data")


def image_config(model: Path, train: str | Path, out: Path, method: str = "full", **sections) -> dict:
    cfg = {
        "modality": "image",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(train), "validation_split": 0.25},
        "strategy": {"name": method, **({"unfreeze_last_n": 1} if method == "partial" else {})},
        "training": cpu_training(out, num_train_epochs=4, learning_rate=3e-3, per_device_train_batch_size=8, eval_strategy="no"),
    }
    return with_sections(cfg, sections)


def error_of(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tlhub: error: ") and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- decoding and data


def test_every_mode_becomes_rgb_and_transparency_goes_white() -> None:
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(clear).mode == "RGB" and to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)
    for mode in ("L", "P", "LA", "CMYK", "I;16"):
        assert to_rgb(Image.new(mode, (4, 4))).mode == "RGB", mode


def test_folder_reads_every_image_as_rgb(image_folder: Path, tiny_vit: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(image_config(tiny_vit, image_folder, tmp_path))
    loaded = load_data(cfg, get_modality("image"))
    assert loaded.label_names == ["bright", "dark"] and loaded.skipped == {}
    assert len(loaded.splits["train"]) + len(loaded.splits["validation"]) == 24
    modes = {Image.open(p).mode for p in loaded.splits["train"]["image"]}
    assert {"RGB", "L", "P", "RGBA"} <= modes  # the files really are mixed
    assert {load_image(p).mode for p in loaded.splits["train"]["image"]} == {"RGB"}


def test_table_paths_are_relative_to_the_table(image_folder: Path, tiny_vit: Path, tmp_path: Path) -> None:
    table = image_folder / "labels.csv"
    rows = [{"file": f"{p.parent.name}/{p.name}", "cls": p.parent.name} for p in sorted(image_folder.glob("*/*.*"))]
    pd.DataFrame(rows).to_csv(table, index=False)
    try:
        cfg = config_from_dict(image_config(tiny_vit, table, tmp_path, data={"image_column": "file", "label_column": "cls"}))
        loaded = load_data(cfg, get_modality("image"))
    finally:
        table.unlink()
    assert loaded.label_names == ["bright", "dark"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in loaded.splits["train"]["file"])


def test_saved_dataset_with_an_image_feature(image_folder: Path, tiny_vit: Path, tmp_path: Path) -> None:
    files = sorted(image_folder.glob("*/*.*"))
    ds = datasets.Dataset.from_dict(
        {"img": [str(p) for p in files], "label": [p.parent.name for p in files]}
    ).cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = config_from_dict(image_config(tiny_vit, tmp_path / "saved", tmp_path / "out", data={"image_column": "img"}))
    modality = get_modality("image")
    loaded = load_data(cfg, modality)
    split = loaded.splits["train"]
    split.set_transform(modality.transform(modality.load_processor(cfg), cfg, train=False))
    assert split[0]["pixel_values"].shape == (3, 32, 32) and split[0]["labels"] in (0, 1)


def test_split_root_with_train_and_val_folders(image_folder: Path, tiny_vit: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(image_folder, root / "train")
    shutil.copytree(image_folder / "dark", root / "val" / "dark")
    with pytest.raises(DataError, match=r"data.validation: .*root has train/ and val/ folders; set data.validation: "):
        load_data(config_from_dict(image_config(tiny_vit, root, tmp_path)), get_modality("image"))
    cfg = config_from_dict(image_config(tiny_vit, root, tmp_path, data={"validation": str(root)}))
    loaded = load_data(cfg, get_modality("image"))
    assert len(loaded.splits["train"]) == 24 and len(loaded.splits["validation"]) == 12
    assert set(loaded.splits["validation"]["labels"]) == {loaded.label_names.index("dark")}


def test_folder_errors_are_clear(image_folder: Path, tiny_vit: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    shutil.copytree(image_folder / "dark", one / "dark")
    with pytest.raises(DataError, match=r"only one class folder with images \('dark'\)"):
        load_data(config_from_dict(image_config(tiny_vit, one, tmp_path)), get_modality("image"))
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(image_folder.glob("dark/*.jpg")), flat / "a.jpg")
    with pytest.raises(DataError, match=r"no images .* in class subfolders; .*the 1 images directly in it"):
        load_data(config_from_dict(image_config(tiny_vit, flat, tmp_path)), get_modality("image"))


def test_folder_rows_are_label_folders_images_sorted_whatever_else_lies_there(image_folder: Path, tmp_path: Path) -> None:
    """datasets' imagefolder lists the files; the rows stay tlhub's: (absolute path, folder name)
    sorted by label then path, any-case extensions, nothing deeper or loose, no metadata read."""
    root = tmp_path / "odd [folder]"
    jpeg = next(image_folder.glob("dark/*.jpg")).read_bytes()
    for rel in ("a/2.jpg", "a/1.JPG", "a-b/0.Png", "a/deeper/3.jpg", "a/.hidden.jpg", "loose.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg)
    (root / "a" / "notes.txt").write_text("not an image")
    # A metadata file with a column of its own, in a label folder: datasets would then drop every label
    (root / "a" / "metadata.jsonl").write_text(json.dumps({"file_name": "2.jpg", "label": "other", "extra": 1}) + "\n")
    cfg = config_from_dict(image_config(tmp_path / "model", root, tmp_path / "out"))
    rows = get_modality("image").load_folder(root, cfg, "data.train")
    assert rows.column_names == ["image", "label"]
    assert rows.to_list() == [
        {"image": str(root / "a" / "1.JPG"), "label": "a"},
        {"image": str(root / "a" / "2.jpg"), "label": "a"},
        {"image": str(root / "a-b" / "0.Png"), "label": "a-b"},
    ]


def test_unreadable_images_fail_above_max_bad_fraction(image_folder: Path, tiny_vit: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "bad"
    shutil.copytree(image_folder, data)
    for i in range(4):
        (data / "dark" / f"broken_{i}.jpg").write_bytes(b"not an image")
    cfg = image_config(tiny_vit, data, tmp_path / "out", data={"max_bad_fraction": 0.1})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    err = error_of(["train", str(config)], capsys)
    assert "4 of 28 images (14%) are unreadable, more than data.max_bad_fraction=0.1" in err and "broken_0.jpg" in err


# --------------------------------------------------------------------------- transforms


def test_augmentation_applies_in_training_only(tiny_vit: Path, tmp_path: Path) -> None:
    modality = get_modality("image")
    cfg = config_from_dict(image_config(tiny_vit, tmp_path, tmp_path, data={"color_jitter": 0.4, "rand_augment": True}))
    processor = modality.load_processor(cfg)
    picture = tmp_path / "gradient.png"
    ramp = np.tile(np.arange(96, dtype=np.uint8)[None, :, None] * 2, (64, 1, 3))
    Image.fromarray(ramp).save(picture)
    batch = {"image": [str(picture)] * 8}

    torch.manual_seed(0)
    train = torch.stack(modality.transform(processor, cfg, train=True)(batch)["pixel_values"])
    evaluation = torch.stack(modality.transform(processor, cfg, train=False)(batch)["pixel_values"])
    assert train.shape == evaluation.shape == (8, 3, 32, 32)
    assert all(not torch.equal(train[0], t) for t in train[1:])  # random crops, flips, jitter differ
    assert all(not torch.equal(t, evaluation[0]) for t in train)
    assert torch.equal(evaluation[0].expand_as(evaluation), evaluation)  # resize + centre crop is deterministic
    names = [type(t).__name__ for t in build_transforms(processor, cfg, train=True)[0].transforms]
    assert names[1:5] == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment", "ColorJitter"]

    off = config_from_dict(image_config(tiny_vit, tmp_path, tmp_path, data={"augment": False}))
    plain = torch.stack(modality.transform(processor, off, train=True)(batch)["pixel_values"])
    assert torch.equal(plain, evaluation)
    # ViT's processor: rescale to [0, 1] then normalise with mean = std = 0.5 -> [-1, 1]
    assert evaluation.min() >= -1.0 and evaluation.max() <= 1.0 and evaluation.min() < -0.9


def test_sizes_come_from_the_image_processor() -> None:
    from transformers import ConvNextImageProcessor, DeiTImageProcessor, ViTImageProcessor

    assert image_sizes(ViTImageProcessor(size={"height": 224, "width": 224})) == ((224, 224), (224, 224))
    assert image_sizes(ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)) == (256, 224)
    deit = DeiTImageProcessor(size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224})
    assert image_sizes(deit) == ((256, 256), (224, 224))


# --------------------------------------------------------------------------- strategies


def _prefixes(model: torch.nn.Module, *names: str) -> int:
    modules = dict(model.named_modules())
    return sum(p.numel() for n in names for p in modules[n].parameters())


CASES = {
    # (model, strategy, extra strategy settings): expected trainable parameter count
    ("vit", "full"): lambda m: sum(p.numel() for p in m.parameters()),
    ("vit", "partial"): lambda m: _prefixes(m, "vit.layers.1", "vit.layernorm", "classifier"),
    ("vit", "feature_extraction"): lambda m: 32 * 2 + 2,
    ("vit", "lora"): lambda m: 2 * 2 * 8 * (32 + 32) + _prefixes(m, "classifier"),  # q, v in 2 layers, r=8
    ("resnet", "full"): lambda m: sum(p.numel() for p in m.parameters()),
    ("resnet", "partial"): lambda m: _prefixes(m, "resnet.encoder.stages.1", "classifier"),
    ("resnet", "feature_extraction"): lambda m: 16 * 2 + 2,
    ("resnet", "lora"): None,  # explicit convolution targets; counted from the LoRA layers below
}


@pytest.mark.parametrize(("family", "strategy"), list(CASES))
def test_strategy_trains_only_what_it_should(family: str, strategy: str, tiny_vit: Path, tiny_resnet: Path, tmp_path: Path) -> None:
    path = tiny_vit if family == "vit" else tiny_resnet
    lora = {"target_modules": ["convolution"]} if family == "resnet" else {}
    cfg = config_from_dict(image_config(path, tmp_path, tmp_path, strategy, strategy={"lora": lora} if strategy == "lora" else {}))
    modality = get_modality("image")
    model = modality.load_model(cfg, ["a", "b"])
    expected_fn = CASES[(family, strategy)]
    expected = expected_fn(model) if expected_fn else None
    applied = STRATEGIES.get(strategy)().apply(model, cfg.strategy, modality, "classification")
    trainable, _ = count_parameters(applied.model)
    if expected is None:  # LoRA on every Conv2d named "convolution": its A and B matrices plus the head
        lora_params = sum(p.numel() for n, p in applied.model.named_parameters() if "lora_" in n)
        expected = lora_params + 16 * 2 + 2
        assert lora_params > 0
    assert trainable == expected

    before = {n: p.detach().clone() for n, p in applied.model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in applied.model.parameters() if p.requires_grad], lr=0.5)
    applied.model.train()
    for _ in range(2):
        out = applied.model(pixel_values=torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 0, 1]))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in applied.model.named_parameters() if not torch.equal(p, before[n])}
    should = {n for n, p in applied.model.named_parameters() if p.requires_grad}
    # every trainable tensor may change (LoRA's B starts at zero, so A moves only from step 2)
    assert changed == should


def test_lora_auto_on_a_convolutional_model_names_the_layers(tiny_resnet: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(image_config(tiny_resnet, tmp_path, tmp_path, "lora"))
    modality = get_modality("image")
    with pytest.raises(ConfigError, match=r"found no attention projections .* e.g. target_modules: \[convolution\]"):
        STRATEGIES.get("lora")().apply(modality.load_model(cfg, ["a", "b"]), cfg.strategy, modality, "classification")


def test_blocks_and_pooled_features_across_families() -> None:
    from transformers import (
        AutoModelForImageClassification,
        ConvNextConfig,
        EfficientNetConfig,
        MobileNetV2Config,
        SwinConfig,
    )

    from tlhub.models import PooledClassifier
    from tlhub.strategies import backbone_of, find_blocks

    configs = {
        "ConvNextStage": ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "SwinStage": SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4),
        "EfficientNetBlock": EfficientNetConfig(image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128),
        "MobileNetV2InvertedResidual": MobileNetV2Config(image_size=32, depth_multiplier=0.25),
    }
    for block, config in configs.items():
        config.num_labels = 2
        model = AutoModelForImageClassification.from_config(config)
        stacks = find_blocks(backbone_of(model))
        assert stacks and type(stacks[0][0]).__name__ == block
        logits = PooledClassifier(backbone_of(model), 2).eval()(pixel_values=torch.randn(2, 3, 32, 32)).logits
        assert logits.shape == (2, 2), block


# --------------------------------------------------------------------------- end to end


def test_train_skips_corrupt_images_and_predict_labels_files(
    image_folder: Path, tiny_vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    good = next((data / "bright").glob("*.jpg")).read_bytes()
    (data / "bright" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (data / "dark" / "empty.png").write_bytes(b"")
    cfg = image_config(tiny_vit, data, tmp_path / "run", "full", training={"num_train_epochs": 6})
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config)]) == 0
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["skipped_examples"] == {"train": 2}
    assert results["train_samples"] + results["eval_samples"] == 24
    assert results["eval_accuracy"] >= 0.8  # light vs dark: chance is 0.5
    config_json = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config_json["id2label"] == {"0": "bright", "1": "dark"}
    assert (tmp_path / "run" / "preprocessor_config.json").is_file()
    capsys.readouterr()

    dark, bright = next((data / "dark").glob("*.png")), next((data / "bright").glob("*.jpg"))
    assert main(["predict", str(tmp_path / "run"), str(dark), str(bright)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["dark", "bright"]
    assert all(0.5 <= float(line.split("\t")[1]) <= 1.0 for line in lines)

    err = error_of(["predict", str(tmp_path / "run"), str(tmp_path / "nope.jpg")], capsys)
    assert err == f"tlhub: error: predict: {tmp_path / 'nope.jpg'}: no such file"
    err = error_of(["predict", str(tmp_path / "run"), str(data / "dark" / "empty.png")], capsys)
    assert err.startswith(f"tlhub: error: predict: {data / 'dark' / 'empty.png'}: unreadable image")


@pytest.mark.parametrize("strategy", ["feature_extraction", "lora", "partial"])
def test_other_strategies_learn_and_reload(strategy: str, image_folder: Path, tiny_vit: Path, tiny_resnet: Path, tmp_path: Path) -> None:
    from tlhub.pipeline import finetune, load_run, predict

    model = tiny_resnet if strategy == "partial" else tiny_vit
    training = {"num_train_epochs": 8, "learning_rate": 2e-2 if strategy == "feature_extraction" else 5e-3}
    results = finetune(config_from_dict(image_config(model, image_folder, tmp_path / "run", strategy, training=training)))
    assert results["eval_accuracy"] >= 0.8, results
    run = load_run(tmp_path / "run")
    rows = predict(run, [str(next((image_folder / "dark").glob("*.jpg")))])
    assert rows[0]["label"] == "dark"


def test_timm_wrapper_models_train_with_each_strategy(tmp_path: Path) -> None:
    """transformers' TimmWrapper (how timm checkpoints load): sizes and normalisation from
    timm's data config; `partial` unfreezes the timm model's last block stage and the head;
    feature extraction trains a new head alone; LoRA names the conv layers to adapt."""
    pytest.importorskip("timm")
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    data_config = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 1.0}
    config = TimmWrapperConfig(architecture="test_efficientnet", num_labels=3, pretrained_cfg={**data_config, "crop_mode": "squash"})
    TimmWrapperForImageClassification(config).save_pretrained(tmp_path / "timm")
    modality = get_modality("image")
    cfg = config_from_dict(image_config(tmp_path / "timm", tmp_path, tmp_path, "partial"))
    processor = modality.load_processor(cfg)
    assert image_sizes(processor) == ((32, 32), (32, 32))
    steps = build_transforms(processor, cfg, train=False)[0].transforms
    assert type(steps[-1]).__name__ == "Normalize" and steps[1].interpolation.value == "bicubic"

    model = modality.load_model(cfg, ["a", "b"])
    applied = STRATEGIES.get("partial")().apply(model, cfg.strategy, modality, "classification")
    trainable = {n.split(".")[1] + ("." + n.split(".")[2] if n.split(".")[1] == "blocks" else "") for n, p in applied.model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{len(model.timm_model.blocks) - 1}", "conv_head", "bn2", "classifier"}

    fe = config_from_dict(image_config(tmp_path / "timm", tmp_path, tmp_path, "feature_extraction"))
    model = modality.load_model(fe, ["a", "b"])
    width = model.timm_model.num_features
    applied = STRATEGIES.get("feature_extraction")().apply(model, fe.strategy, modality, "classification")
    assert count_parameters(applied.model)[0] == width * 2 + 2  # the new 2-way head alone

    # From random weights: timm's own initialisation, not transformers' N(0, 0.02), under which
    # a deep convnet's activations vanish (EfficientNet-Lite0: ~1e-21 by the last stage)
    scratch = image_config(tmp_path / "timm", tmp_path, tmp_path, "full")
    scratch["model"]["pretrained"] = False
    model = modality.load_model(config_from_dict(scratch), ["a", "b"]).eval()
    fan_out = model.timm_model.conv_stem.weight[0].numel() // 3 * model.timm_model.conv_stem.out_channels
    assert model.timm_model.conv_stem.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.3)  # 0.096, not 0.02

    lora = config_from_dict(image_config(tmp_path / "timm", tmp_path, tmp_path, "lora"))
    model = modality.load_model(lora, ["a", "b"])
    with pytest.raises(ConfigError, match=r"found no attention projections .*name the layers to adapt, e\.g\. target_modules: \[conv"):
        STRATEGIES.get("lora")().apply(model, lora.strategy, modality, "classification")


# --------------------------------------------------------------------------- non-finite pixels (issue 27)


def test_a_float_image_holding_nan_is_unreadable(tmp_path: Path) -> None:
    from PIL import Image

    from tlhub.modalities.image import ImageReadError, load_image

    pixels = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    Image.fromarray(pixels, "F").save(tmp_path / "ok.tif")
    assert load_image(tmp_path / "ok.tif").mode == "RGB" and np.asarray(load_image(tmp_path / "ok.tif")).mean() > 60  # [0, 1] floats scaled
    pixels[3, 3] = np.nan
    Image.fromarray(pixels, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"nan.tif: unreadable image \(1 NaN or infinite pixel value\(s\)\)"):
        load_image(tmp_path / "nan.tif")
