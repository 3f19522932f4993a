"""Object detection on a tiny DETR (timm's test_efficientnet backbone, width 32, one encoder and
decoder layer, 10 queries): box conversions, box-aware augmentation, the mAP metric on
hand-computed cases, training on coloured squares, reload in transformers' pipeline, the
strategies' trainable parts, and every bad input through the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from tests.detection_data import detection_config, write_backbone, write_squares
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.tasks.object_detection import BoxScorer, augmentation, center_to_corners, clip_box, to_coco


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detection")
    return {"root": root, "train": write_squares(root / "train", 24), "backbone": write_backbone(root / "backbone")}


def write_config(tmp: Path, config: dict) -> str:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


# --------------------------------------------------------------------------- boxes


def test_box_formats_become_coco_pixels() -> None:
    assert to_coco([10, 20, 30, 40], "coco", 100, 200) == [10, 20, 30, 40]
    assert to_coco([10, 20, 40, 60], "pascal_voc", 100, 200) == [10, 20, 30, 40]
    assert to_coco([0.25, 0.2, 0.3, 0.2], "yolo", 100, 200) == pytest.approx([10, 20, 30, 40])
    assert center_to_corners(torch.tensor([[0.5, 0.5, 0.2, 0.4]])).tolist()[0] == pytest.approx([0.4, 0.3, 0.6, 0.7])


def test_boxes_are_clipped_or_dropped() -> None:
    assert clip_box([10, 10, 20, 20], 100, 100) == ([10, 10, 20, 20], False)
    assert clip_box([90, -5, 20, 20], 100, 100) == ([90, 0, 10, 15], True)  # partly outside: cut to the image
    assert clip_box([120, 10, 20, 20], 100, 100) == (None, False)  # wholly outside
    assert clip_box([10, 10, 0, 20], 100, 100) == (None, False)  # zero area


def test_augmentation_keeps_boxes_inside_and_valid(tmp_path: Path) -> None:
    from PIL import Image

    cfg = config_from_dict(detection_config(tmp_path, tmp_path, tmp_path, box_crop_scale_min=0.3, color_jitter=0.2))
    augment = augmentation(cfg)
    image = Image.new("RGB", (80, 60), (128, 128, 128))
    boxes, ids = [[0, 0, 20, 10], [60, 40, 20, 20], [30, 20, 10, 10]], [0, 1, 0]
    torch.manual_seed(0)
    flipped = 0
    for _ in range(40):
        pixels, out_boxes, out_ids = augment(image, boxes, ids)
        height, width = pixels.shape[-2:]
        assert len(out_boxes) == len(out_ids) <= 3
        for x, y, w, h in out_boxes:
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= width + 1e-4 and y + h <= height + 1e-4
        # uncropped and flipped: the top-left box [0, 0, 20, 10] is now at the right edge
        flipped += (width, height) == (80, 60) and any(b[:3] == pytest.approx([60, 0, 20]) for b in out_boxes)
    assert flipped > 0


# --------------------------------------------------------------------------- the metric


def scored(predicted: list[list[float]], scores: list[float], truth: list[list[float]]) -> dict[str, float]:
    scorer = BoxScorer()
    scorer.update(
        [{"boxes": torch.tensor(predicted).reshape(-1, 4), "scores": torch.tensor(scores), "labels": torch.zeros(len(scores), dtype=torch.long)}],
        [{"boxes": torch.tensor(truth).reshape(-1, 4), "labels": torch.zeros(len(truth), dtype=torch.long)}],
    )
    return scorer.compute()


def test_map_on_hand_computed_cases() -> None:
    truth = [[0.0, 0.0, 100.0, 100.0]]
    perfect = scored(truth, [0.9], truth)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0) and perfect["mar_100"] == pytest.approx(1.0)
    # IoU 0.62: a match at thresholds 0.50, 0.55 and 0.60 of the ten (0.50:0.95), none at 0.75
    loose = scored([[0.0, 0.0, 100.0, 62.0]], [0.9], truth)
    assert loose["map_50"] == pytest.approx(1.0) and loose["map_75"] == pytest.approx(0.0) and loose["map"] == pytest.approx(0.3)
    # a wrong box scored above the right one: precision 1/2 at full recall, so AP@50 is 0.5
    ranked = scored([[200.0, 200.0, 260.0, 260.0], [0.0, 0.0, 100.0, 100.0]], [0.9, 0.8], truth)
    assert ranked["map_50"] == pytest.approx(0.5, abs=0.01)
    assert scored([[300.0, 300.0, 310.0, 310.0]], [0.9], truth)["map"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- training and reload


@pytest.fixture(scope="module")
def trained(toy: dict[str, Path]) -> Path:
    config = detection_config(toy["root"], toy["train"], toy["backbone"])
    config["training"].update(max_steps=80, learning_rate=2e-3, eval_strategy="no", warmup_steps=0)
    config["data"].update(augment=False)
    assert main(["train", write_config(toy["root"], config)]) == 0
    return toy["root"] / "run"


def test_loss_goes_down_on_coloured_squares(trained: Path) -> None:
    results = json.loads((trained / "all_results.json").read_text())
    for key in ("eval_map", "eval_map_50", "eval_map_75", "eval_mar_100"):
        assert 0.0 <= results[key] <= 1.0
    losses = [e["loss"] for e in json.loads((trained / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) >= 3 and losses[-1] < 0.8 * losses[0], losses


def test_run_loads_in_pipeline_and_agrees_with_predict(trained: Path, toy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import pipeline

    from tlhub.inference import load_run, predict

    image = str(toy["train"] / "img_000.png")
    run = load_run(trained)
    run.options["threshold"] = 0.0
    ours = predict(run, [image])[0]["objects"]
    theirs = pipeline("object-detection", model=str(trained), device="cpu")(image, threshold=0.0)
    assert len(ours) == len(theirs) == 10
    key = lambda o: (round(o["score"], 4), o["label"])  # noqa: E731
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        for side in ("xmin", "ymin", "xmax", "ymax"):
            assert abs(a["box"][side] - b["box"][side]) <= 1.0  # the pipeline rounds to whole pixels
    drawn = toy["root"] / "drawn.png"
    assert main(["predict", str(trained), image, "--threshold", "0.0", "--draw", str(drawn)]) == 0
    assert "box(es): " in capsys.readouterr().out and drawn.is_file()
    assert main(["evaluate", str(trained), "--data", str(toy["train"]), "--max-samples", "8"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["eval_samples"] == 8 and 0.0 <= scores["eval_map_50"] <= 1.0


def test_strategies_freeze_the_backbone_or_adapt_attention(toy: dict[str, Path]) -> None:
    from tlhub.modalities import get_modality
    from tlhub.strategies import get_strategy

    modality = get_modality("image")
    cfg = config_from_dict(detection_config(toy["root"], toy["train"], toy["backbone"]))
    model = modality.load_model(cfg, ["blue", "red"])
    backbone = {id(p) for p in modality.body(model, "object_detection").parameters()}
    applied = get_strategy("feature_extraction").apply(model, cfg.strategy, modality, "object_detection").model
    assert not any(p.requires_grad for p in applied.parameters() if id(p) in backbone)
    assert all(p.requires_grad for p in applied.parameters() if id(p) not in backbone)
    model = modality.load_model(cfg, ["blue", "red"])
    cfg.strategy.unfreeze_last_n = 1
    applied = get_strategy("partial").apply(model, cfg.strategy, modality, "object_detection").model
    trainable = {n for n, p in applied.named_parameters() if p.requires_grad}
    assert any(".blocks." in n for n in trainable) and not any("conv_stem" in n for n in trainable)
    assert any("encoder.layers" in n for n in trainable) and "class_labels_classifier.weight" in trainable
    cfg.strategy.backbone_lr_scale = 0.1  # the backbone at a tenth of the rate, as RT-DETR and DETR train it
    full = get_strategy("full").apply(model := modality.load_model(cfg, ["blue", "red"]), cfg.strategy, modality, "object_detection")
    backbone = {id(p) for p in modality.body(model, "object_detection").parameters()}
    assert {scale: all(id(p) in backbone for p in params) for params, scale in full.lr_scales} == {1.0: False, 0.1: True}
    assert sum(len(params) for params, scale in full.lr_scales if scale == 0.1) == len(backbone)


def test_contrastive_and_domain_adaptation_are_refused(toy: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = detection_config(toy["root"], toy["train"], toy["backbone"])
    config["strategy"] = {"name": "contrastive"}
    assert main(["train", write_config(toy["root"], config)]) == 2
    assert "contrastive" in capsys.readouterr().err
    config["strategy"] = {"name": "full"}
    config["domain_adaptation"] = {"target": str(toy["train"])}
    assert main(["train", write_config(toy["root"], config)]) == 2
    assert "domain_adaptation" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input


def test_bad_boxes_and_images_are_clipped_skipped_and_counted(toy: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    extra = [
        {"file_name": "img_000.png", "objects": {"bbox": [[50, 50, 30, 30]], "category": ["red"]}},  # partly outside a 64 px image
        {"file_name": "img_001.png", "objects": {"bbox": [[100, 100, 10, 10], [5, 5, 0, 10]], "category": ["red", "blue"]}},
        {"file_name": "img_002.png", "objects": {"bbox": [], "category": []}},  # a negative
        {"file_name": "missing.png", "objects": {"bbox": [[1, 1, 5, 5]], "category": ["red"]}},
    ]
    train = write_squares(tmp_path / "train", 16, extra=extra)
    config = detection_config(tmp_path, train, toy["backbone"])
    config["training"].update(max_steps=1, eval_strategy="no")
    with caplog.at_level(logging.WARNING):
        assert main(["train", write_config(tmp_path, config)]) == 0
    text = caplog.text
    assert "clipped 1 box(es)" in text and "dropped 2 box(es)" in text and "skipped 1 unreadable images" in text and "missing.png" in text
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["skipped_examples"] == {"train": 1} and results["train_samples"] + results["eval_samples"] == 19


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_category", "'green' does not occur in the training data"),
        ("bad_line", "metadata.jsonl: line 3: not a JSON object"),
        ("no_metadata", "no metadata.jsonl"),
        ("mismatch", "2 boxes but 1 categories"),
        ("bad_box", "box 1 is [1, 2, 3]"),
    ],
)
def test_bad_input_is_one_line(case: str, expected: str, toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_squares(tmp_path / "train", 6)
    config = detection_config(tmp_path, train, toy["backbone"])
    if case == "unknown_category":
        config["data"]["validation"] = str(write_squares(tmp_path / "val", 2, extra=[{"file_name": "img_000.png", "objects": {"bbox": [[1, 1, 9, 9]], "category": ["green"]}}]))
    meta = train / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    if case == "bad_line":
        lines[2] = '{"file_name": "img_002.png", "objects": '
    if case == "mismatch":
        lines[0] = json.dumps({"file_name": "img_000.png", "objects": {"bbox": [[1, 1, 5, 5], [2, 2, 5, 5]], "category": ["red"]}})
    if case == "bad_box":
        lines[0] = json.dumps({"file_name": "img_000.png", "objects": {"bbox": [[1, 2, 3]], "category": ["red"]}})
    meta.write_text("\n".join(lines) + "\n")
    if case == "no_metadata":
        meta.unlink()
    assert main(["train", write_config(tmp_path, config)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_coco_annotations_read_like_metadata(toy: dict[str, Path], tmp_path: Path) -> None:
    """data.annotations: a COCO file in the folder gives the same rows as metadata.jsonl."""
    from tlhub.data import load_data
    from tlhub.modalities import get_modality

    rows = [json.loads(line) for line in (toy["train"] / "metadata.jsonl").read_text().splitlines()]
    names = sorted({c for r in rows for c in r["objects"]["category"]})
    coco = {
        "images": [{"id": i, "file_name": r["file_name"], "width": 64, "height": 64} for i, r in enumerate(rows)],
        "categories": [{"id": 10 + k, "name": n} for k, n in enumerate(names)],
        "annotations": [{"id": j, "image_id": i, "bbox": b, "category_id": 10 + names.index(c), "area": b[2] * b[3], "iscrowd": 0}
                        for i, r in enumerate(rows) for j, (b, c) in enumerate(zip(r["objects"]["bbox"], r["objects"]["category"]))],
    }  # fmt: skip
    (toy["train"] / "instances.json").write_text(json.dumps(coco))
    modality = get_modality("image")
    loaded = [load_data(config_from_dict(detection_config(tmp_path, toy["train"], toy["backbone"], **extra)), modality)
              for extra in ({}, {"annotations": "instances.json"})]  # fmt: skip
    assert loaded[0].label_names == loaded[1].label_names == ["blue", "red"]
    for split in ("train", "validation"):
        assert loaded[0].splits[split]["boxes"] == loaded[1].splits[split]["boxes"]
        assert loaded[0].splits[split]["labels"] == loaded[1].splits[split]["labels"]


def assert_merged_model_agrees(run_dir: Path, image: str) -> None:
    """A lora run's merged model in pipeline("object-detection") scores as tlhub's reload does."""
    from transformers import pipeline

    from tlhub.inference import load_run, predict

    run = load_run(run_dir)
    run.options["threshold"] = 0.0
    ours = sorted(o["score"] for o in predict(run, [image])[0]["objects"])
    merged = sorted(o["score"] for o in pipeline("object-detection", model=str(run_dir / "merged"), device="cpu")(image, threshold=0.0))
    assert ours == pytest.approx(merged, abs=1e-4)


def test_lora_is_refused_on_a_built_detector_and_adapts_a_whole_one(toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """model.detector builds a new transformer on a CNN: LoRA would adapt random weights and leave
    the heads random, so it is refused in one line. A whole detector (here a finished run's
    folder as model.name_or_path) is adapted: LoRA on its attention, its heads trained in full,
    and tlhub's reload and the merged model agree."""
    config = detection_config(tmp_path, toy["train"], toy["backbone"])
    config["strategy"] = {"name": "lora", "lora": {"r": 4, "alpha": 8}}
    assert main(["train", write_config(tmp_path, config)]) == 2
    assert capsys.readouterr().err == (
        "tlhub: error: strategy.name: lora adapts pretrained attention; model.detector builds a new transformer on a convolutional "
        "backbone: use feature_extraction, partial or full, or name a whole pretrained detector in model.name_or_path\n"
    )
    config["strategy"] = {"name": "full"}
    config["training"].update(max_steps=2, eval_strategy="no")
    assert main(["train", write_config(tmp_path, config)]) == 0  # a whole detector: the run folder
    whole = tmp_path / "whole"
    (tmp_path / "run").rename(whole)
    config["model"] = {"name_or_path": str(whole)}
    config["strategy"] = {"name": "lora", "lora": {"r": 4, "alpha": 8}}
    config["training"].update(max_steps=4, learning_rate=1e-2)
    from tlhub.modalities import get_modality
    from tlhub.strategies import get_strategy

    modality, cfg = get_modality("image"), config_from_dict(config)
    lora = get_strategy("lora").apply(modality.load_model(cfg, ["blue", "red"]), cfg.strategy, modality, "object_detection")
    assert lora.notes[:2] == ["lora targets: q_proj, v_proj", "trained in full: class_labels_classifier, bbox_predictor"]
    assert main(["train", write_config(tmp_path, config)]) == 0
    assert_merged_model_agrees(tmp_path / "run", str(toy["train"] / "img_001.png"))


def test_rt_detr_reads_three_feature_maps_learns_and_agrees_with_the_pipeline(toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """model.detector: rt_detr on the timm backbone: its hybrid encoder reads the last three
    feature maps (strides 8, 16, 32), the processor normalises as the backbone was trained,
    and the saved run loads in pipeline("object-detection") with the same boxes as tlhub predict."""
    from transformers import pipeline

    from tlhub.inference import load_run, predict

    config = detection_config(tmp_path, toy["train"], toy["backbone"])
    config["model"].update(detector="rt_detr", feature_level=-1)
    config["training"].update(max_steps=30, learning_rate=2e-3, eval_strategy="no", warmup_steps=0)
    config["data"].update(augment=False)
    assert main(["train", write_config(tmp_path, config)]) == 0
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model_type"] == "rt_detr" and saved["feat_strides"] == [8, 16, 32] and saved["backbone_config"]["out_indices"] == [2, 3, 4]
    assert json.loads((run_dir / "preprocessor_config.json").read_text())["do_normalize"] is True
    losses = [e["loss"] for e in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) >= 3 and losses[-1] < 0.8 * losses[0], losses
    results = json.loads((run_dir / "all_results.json").read_text())
    assert 0.0 <= results["eval_map_50"] <= 1.0

    image = str(toy["train"] / "img_000.png")
    run = load_run(run_dir)
    run.options["threshold"] = 0.0
    ours = predict(run, [image])[0]["objects"]
    theirs = pipeline("object-detection", model=str(run_dir), device="cpu")(image, threshold=0.0)
    assert len(ours) == len(theirs) > 0
    key = lambda o: (round(o["score"], 4), o["label"])  # noqa: E731
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_lora_on_a_whole_rt_detr_trains_the_heads_it_keeps_inside_its_base_model(toy: dict[str, Path], tmp_path: Path) -> None:
    """RT-DETR keeps its class and box heads inside the base model (a pair per decoder layer, the
    encoder's query-selection heads, the denoising class embedding), where lora's rule (modules
    beside the base model) found none: the heads stayed frozen at their initialisation. They train
    in full now, are saved with the adapter, and the merged model predicts as tlhub does."""
    from safetensors.torch import load_file

    from tlhub.modalities import get_modality
    from tlhub.strategies import get_strategy

    config = detection_config(tmp_path, toy["train"], toy["backbone"])
    config["model"].update(detector="rt_detr", feature_level=-1)
    config["training"].update(max_steps=1, eval_strategy="no")
    assert main(["train", write_config(tmp_path, config)]) == 0
    whole = tmp_path / "whole"
    (tmp_path / "run").rename(whole)  # a whole RT-DETR checkpoint
    config["model"] = {"name_or_path": str(whole)}
    config["strategy"] = {"name": "lora", "lora": {"r": 4, "alpha": 8}}
    config["training"].update(max_steps=4, learning_rate=1e-2)

    modality, cfg = get_modality("image"), config_from_dict(config)
    applied = get_strategy("lora").apply(modality.load_model(cfg, ["blue", "red"]), cfg.strategy, modality, "object_detection")
    layers = json.loads((whole / "config.json").read_text())["decoder_layers"]
    heads = [f"model.decoder.class_embed.{i}" for i in range(layers)] + [f"model.decoder.bbox_embed.{i}" for i in range(layers)]
    named = applied.notes[1].removeprefix("trained in full: ").split(", ")
    assert set(heads + ["model.enc_score_head", "model.enc_bbox_head", "model.denoising_class_embed"]) == set(named), named
    trains = {n for n, p in applied.model.named_parameters() if p.requires_grad}
    assert any("decoder.class_embed.0.modules_to_save" in n for n in trains) and any("enc_score_head.modules_to_save" in n for n in trains)

    assert main(["train", write_config(tmp_path, config)]) == 0
    saved = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    source = load_file(str(whole / "model.safetensors"))
    key = next(k for k in saved if "decoder.class_embed.0" in k and k.endswith("weight"))
    assert not torch.equal(saved[key], source["model.decoder.class_embed.0.weight"]), "the class head did not train"
    assert_merged_model_agrees(tmp_path / "run", str(toy["train"] / "img_001.png"))
