"""The feature cache: keys, equality with the uncached path, reuse across runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import USE_CPU, text_config
from tests.tiny_models import make_tiny_bert, toy_sentiment_rows, write_rows
from tlhub.cache import (
    FEATURES_FILE,
    cache_root,
    extract_features,
    feature_key,
    key_parts,
    load_or_extract,
    processor_identity,
)
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.modalities import get_modality
from tlhub.models import PooledClassifier
from tlhub.pipeline import finetune


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(model_dir: Path, data: Path, out: Path, /, **sections):
    mapping = text_config(model_dir, data, out, "feature_extraction")
    for section, values in sections.items():
        mapping[section].update(values)
    return config_from_dict(mapping)


def _key(cfg, split: str = "train") -> str:
    modality = get_modality("text")
    loaded = load_data(cfg, modality)
    processor = modality.load_processor(cfg)
    return feature_key(key_parts(cfg, processor_identity(processor), "mean", split, loaded.splits[split]._fingerprint))


def test_cache_root_follows_env(_cache_dir: Path) -> None:
    assert cache_root() == _cache_dir


def test_key_changes_with_model_preprocessing_and_data_only(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    base = _key(_cfg(tiny_bert, toy_csv, tmp_path / "a"))
    # Not part of the key: training settings, output_dir, the head, the cache switch itself
    same = _cfg(
        tiny_bert,
        toy_csv,
        tmp_path / "b",
        training={"learning_rate": 0.5, "num_train_epochs": 1},
        strategy={"cache": False},
    )
    assert _key(same) == base
    # The model: another folder with other weights, or random weights
    other_model = make_tiny_bert(tmp_path / "other-bert")
    assert _key(_cfg(other_model, toy_csv, tmp_path / "c")) != base
    assert _key(_cfg(tiny_bert, toy_csv, tmp_path / "c", model={"pretrained": False})) != base
    # Preprocessing
    assert _key(_cfg(tiny_bert, toy_csv, tmp_path / "c", data={"max_length": 8})) != base
    # The data: other rows, another sample, another split
    other_rows = write_rows(tmp_path / "other.csv", toy_sentiment_rows(240, seed=1))
    assert _key(_cfg(tiny_bert, other_rows, tmp_path / "c")) != base
    assert _key(_cfg(tiny_bert, toy_csv, tmp_path / "c", data={"max_train_samples": 100})) != base
    assert _key(_cfg(tiny_bert, toy_csv, tmp_path / "c"), split="validation") != base


def test_key_changes_when_the_weights_change(tmp_path: Path, toy_csv: Path) -> None:
    model = make_tiny_bert(tmp_path / "bert")
    before = _key(_cfg(model, toy_csv, tmp_path / "a"))
    make_tiny_bert(model)  # new random weights written over the same folder
    assert _key(_cfg(model, toy_csv, tmp_path / "a")) != before


def test_cached_features_equal_the_models_own(tiny_bert: Path, toy_csv: Path, tmp_path: Path, _cache_dir: Path) -> None:
    cfg = _cfg(tiny_bert, toy_csv, tmp_path / "run")
    modality = get_modality("text")
    loaded = load_data(cfg, modality)
    processor = modality.load_processor(cfg)
    model = PooledClassifier(modality.load_model(cfg, loaded.label_names).base_model, 2, "mean")
    train = loaded.splits["train"]

    first = load_or_extract(cfg, modality, processor, model, train, "train")
    again = load_or_extract(cfg, modality, processor, model, train, "train")
    assert not first.hit and again.hit
    assert (first.path / FEATURES_FILE).is_file() and first.path.parent == _cache_dir
    assert json.loads((first.path / "key.json").read_text())["split"] == "train"
    cached = torch.stack([row["features"] for row in again.dataset])
    assert cached.shape == (len(train), 32)
    assert torch.equal(again.dataset[:]["labels"], torch.tensor(list(train["labels"])))

    # What the uncached model computes inside forward, other batch sizes (other padding)
    transform = modality.transform(processor, cfg, train=False)
    collator = modality.collator(processor, cfg, model)
    direct = extract_features(model, train, transform, collator, batch_size=7, progress=False)["features"]
    assert torch.allclose(cached, direct, atol=1e-5)
    batch = collator([{k: v[0] for k, v in transform(train[i : i + 1]).items()} for i in range(3)])
    batch.pop("labels")
    model.eval()  # no dropout in the head
    with torch.no_grad():
        logits = model(**batch).logits
        from_cache = model(features=cached[:3]).logits
    assert torch.allclose(logits, from_cache, atol=1e-5)


def test_feature_extraction_run_reuses_the_cache_and_predicts(tiny_bert: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    from tlhub.cli import main

    # A random backbone's pooled features separate the toy classes only with a long-trained head
    training = {"learning_rate": 0.3, "num_train_epochs": 100, "eval_strategy": "no", "logging_strategy": "no"}
    first = finetune(_cfg(tiny_bert, toy_csv, tmp_path / "first", training=training))
    second = finetune(_cfg(tiny_bert, toy_csv, tmp_path / "second", training=training))
    plain = finetune(_cfg(tiny_bert, toy_csv, tmp_path / "plain", training=training, strategy={"cache": False}))
    assert first["feature_cache_hit"] is False and second["feature_cache_hit"] is True
    assert "feature_cache_hit" not in plain
    assert first["eval_accuracy"] > 0.7  # 60 held-out toy sentences, chance is 0.5
    assert second["eval_accuracy"] == pytest.approx(first["eval_accuracy"], abs=1e-6)
    assert plain["eval_accuracy"] == pytest.approx(first["eval_accuracy"], abs=0.05)
    assert first["trainable_params"] == 32 * 2 + 2  # only the head trains
    assert first["total_params"] == plain["total_params"]
    # The saved run is the whole model: predict reads raw text through the backbone
    assert PooledClassifier.is_saved_in(tmp_path / "first")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "first"), "the food was excellent", "the service was awful"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ["the food was excellent", "the service was awful"]):
        label, score, echoed = line.split("\t")
        assert label in ("neg", "pos") and 0.5 <= float(score) <= 1.0 and echoed == text


def test_group_by_length_works_with_lazy_preprocessing(tiny_bert: Path, toy_csv: Path, tmp_path: Path) -> None:
    training = {"num_train_epochs": 1, "train_sampling_strategy": "group_by_length"}
    results = finetune(config_from_dict(text_config(tiny_bert, toy_csv, tmp_path / "grouped", "full", training=training)))
    assert results["train_samples"] == 180 and results["epoch"] == pytest.approx(1.0)
    # With the cache the sampler falls back to random order over fixed-size vectors
    results = finetune(_cfg(tiny_bert, toy_csv, tmp_path / "grouped-fe", training=training))
    assert results["feature_cache_hit"] is False and results["epoch"] == pytest.approx(1.0)


def test_audio_cached_features_equal_uncached_and_train(tmp_path: Path) -> None:
    """Not text only: the cache goes through the Modality interface (wav2vec2 on tones)."""
    from tlhub.modalities import MODALITIES

    if "audio" not in MODALITIES:
        pytest.skip("the audio modality is not registered")
    import numpy as np
    import pandas as pd
    import soundfile as sf

    from tests.tiny_models import make_tiny_wav2vec2

    model_dir = make_tiny_wav2vec2(tmp_path / "w2v")
    rng = np.random.default_rng(0)
    rows = []
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        (tmp_path / label).mkdir()
        for i in range(16):
            t = np.arange(int(rng.uniform(0.3, 0.6) * 8000)) / 8000
            sf.write(tmp_path / label / f"{i}.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)
            rows.append({"path": f"{label}/{i}.wav", "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    mapping = {
        "modality": "audio",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(tmp_path / "manifest.csv"), "validation_split": 0.25, "audio_column": "path"},
        "strategy": {"name": "feature_extraction"},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 30, "learning_rate": 0.05, "eval_strategy": "no",
                     "save_strategy": "no", "logging_strategy": "no", "per_device_train_batch_size": 8, "use_cpu": USE_CPU,
                     "disable_tqdm": True, "seed": 0},
    }
    cfg = config_from_dict(mapping)
    modality = get_modality("audio")
    loaded = load_data(cfg, modality)
    processor = modality.load_processor(cfg)
    model = PooledClassifier(modality.load_model(cfg, loaded.label_names).base_model, 2, "mean")
    train = loaded.splits["train"]
    cached = load_or_extract(cfg, modality, processor, model, train, "train")
    transform = modality.transform(processor, cfg, train=False)
    collator = modality.collator(processor, cfg, model)
    # wav2vec2's group norm sees padding, so compare with the model on the same batch (all 24 clips)
    batch = collator([{k: v[0] for k, v in transform(train[i : i + 1]).items()} for i in range(len(train))])
    batch.pop("labels")
    model.eval()
    with torch.no_grad():
        direct = model(**batch).logits
        from_cache = model(features=torch.stack([row["features"] for row in cached.dataset])).logits
    assert torch.allclose(direct, from_cache, atol=1e-4)

    first = finetune(cfg)
    second = finetune(config_from_dict({**mapping, "training": {**mapping["training"], "output_dir": str(tmp_path / "again")}}))
    assert first["feature_cache_hit"] is False and second["feature_cache_hit"] is True
    assert second["eval_accuracy"] == pytest.approx(first["eval_accuracy"], abs=1e-6)
    assert first["trainable_params"] == 32 * 2 + 2


# --------------------------------------------------------------------------- keys on content, versions, batch size


def test_an_image_edited_in_place_recomputes_its_features(tmp_path: Path) -> None:
    """The split's fingerprint sees image paths, not pixels: the key adds each file's size
    and modification time, so an edit in place is a miss, an untouched rerun a hit."""
    import os

    from PIL import Image

    from tests.tiny_models import make_tiny_vit, toy_image_folder

    folder = toy_image_folder(tmp_path / "images", n_per_class=6)
    mapping = {
        "modality": "image",
        "model": {"name_or_path": str(make_tiny_vit(tmp_path / "vit"))},
        "data": {"train": str(folder), "validation_split": 0.25},
        "strategy": {"name": "feature_extraction"},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 1, "eval_strategy": "no", "save_strategy": "no",
                     "use_cpu": USE_CPU, "disable_tqdm": True, "seed": 0},
    }  # fmt: skip
    assert finetune(config_from_dict(mapping))["feature_cache_hit"] is False
    assert finetune(config_from_dict(mapping))["feature_cache_hit"] is True
    edited = next(folder.glob("dark/*.png"))
    Image.new("RGB", (32, 32), (250, 250, 250)).save(edited)
    stat = edited.stat()
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new modification time, whatever the clock
    assert finetune(config_from_dict(mapping))["feature_cache_hit"] is False


def test_key_changes_with_library_versions_and_audio_eval_batch_size(tiny_bert: Path, toy_csv: Path, tmp_path: Path, monkeypatch) -> None:
    import tlhub.cache

    cfg = _cfg(tiny_bert, toy_csv, tmp_path / "a")
    base = feature_key(key_parts(cfg, "p", "mean", "train", "f", eval_batch_size=8))
    # text features do not depend on the batch (masked mean): the eval batch size is not in the key
    assert feature_key(key_parts(cfg, "p", "mean", "train", "f", eval_batch_size=32)) == base
    audio = config_from_dict({**text_config(tiny_bert, toy_csv, tmp_path / "b"), "modality": "audio"})
    assert feature_key(key_parts(audio, "p", "mean", "train", "f", eval_batch_size=8)) != feature_key(
        key_parts(audio, "p", "mean", "train", "f", eval_batch_size=32)
    )
    monkeypatch.setattr(tlhub.cache, "library_versions", lambda: {"torch": "9.9", "transformers": "9.9", "tlhub": "9.9"})
    assert feature_key(key_parts(cfg, "p", "mean", "train", "f", eval_batch_size=8)) != base


# --------------------------------------------------------------------------- from a source checkout (issue 27)


def test_the_feature_cache_works_from_a_source_checkout(monkeypatch) -> None:
    """Without `pip install` there is no package metadata; the version comes from the source."""
    import importlib.metadata

    from tlhub.cache import library_versions
    from tlhub.version import __version__

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert library_versions()["tlhub"] == __version__
