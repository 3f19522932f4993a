"""Issue 13: every strategy's run loads in the task's ``transformers.pipeline`` with no tlhub
import, through the code its model card gives, and predicts what ``tlhub predict`` does."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import text_config
from tests.test_audio import audio_config, write_tones
from tests.test_image import image_config
from tests.tiny_models import make_tiny_bert, make_tiny_vit, make_tiny_wav2vec2, make_tiny_whisper, toy_image_folder, toy_sentiment_rows, write_rows
from tlhub.config import config_from_dict
from tlhub.pipeline import finetune, load_run, predict


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ecosystem")
    tones = root / "tones"
    pd.DataFrame(write_tones(tones, per_class=12)).to_csv(tones / "manifest.csv", index=False)
    return {
        "bert": make_tiny_bert(root / "bert"),
        "vit": make_tiny_vit(root / "vit"),
        "w2v": make_tiny_wav2vec2(root / "w2v"),
        "whisper": make_tiny_whisper(root / "whisper"),
        "text": write_rows(root / "toy.csv", toy_sentiment_rows(240)),
        "images": toy_image_folder(root / "images"),
        "tones": tones,
    }


def card_loader(run_dir: Path) -> str:
    """The Python block under 'How to load it' in the run's README.md."""
    card = (run_dir / "README.md").read_text()
    return re.search(r"## How to load it\n\n```python\n(.*?)```", card, re.S).group(1)


def pipeline_from_card(run_dir: Path):
    """Run the card's loading code as a user pastes it (RUN_DIR pointed at the folder), in a
    namespace without tlhub, and return its `pipe`."""
    code = card_loader(run_dir)
    assert "tlhub" not in code.split("\n# or")[0], code  # the first way to load it needs no tlhub
    namespace: dict = {}
    exec(code.replace(f'RUN_DIR = "{run_dir}"', f"RUN_DIR = {str(run_dir)!r}"), namespace)  # noqa: S102
    return namespace["pipe"]


CASES = [
    *[("text", s) for s in ("full", "partial", "lora", "feature_extraction", "contrastive")],
    *[("image", s) for s in ("full", "partial", "lora", "feature_extraction")],
    *[("audio", s) for s in ("full", "partial", "lora", "feature_extraction")],
    ("whisper", "feature_extraction"),
]


@pytest.mark.parametrize(("modality", "strategy"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_the_run_loads_in_transformers_pipeline_and_predicts_what_tlhub_predicts(modality, strategy, data, tmp_path) -> None:
    out = tmp_path / "run"
    if modality == "text":
        learning_rate = {"lora": 1e-2, "feature_extraction": 3e-2}.get(strategy, 1e-3)
        cfg = text_config(data["bert"], data["text"], out, strategy, training={"learning_rate": learning_rate})
        cfg["strategy"]["contrastive"] = {"iterations": 2}
        inputs = [r["text"] for r in toy_sentiment_rows(8, seed=5)]
        pipe_inputs = inputs
    elif modality == "image":
        cfg = image_config(data["vit"], data["images"], out, strategy, training={"num_train_epochs": 3})
        inputs = [str(p) for p in sorted(data["images"].rglob("*.*g"))[::4]]
        pipe_inputs = inputs
    else:
        model = data["w2v" if modality == "audio" else "whisper"]
        learning_rate = 3e-2 if strategy == "feature_extraction" else 3e-3  # the head alone, on cached features
        cfg = audio_config(model, data["tones"] / "manifest.csv", out, strategy=strategy, training={"learning_rate": learning_rate})
        inputs = [str(p) for p in sorted(data["tones"].rglob("*.wav"))[::4]]
        # no FFmpeg here: the pipeline gets the decoded clip, as its docs say to pass it
        pipe_inputs = []
        for path in inputs:
            clip, rate = sf.read(path, dtype="float32")
            pipe_inputs.append({"raw": clip, "sampling_rate": rate})
    finetune(config_from_dict(cfg))

    # one input a batch, as the pipeline runs them: a wav2vec2 without attention mask hears a batch's padding
    ours = predict(load_run(out), inputs, batch_size=1 if modality == "audio" else 32)
    pipe = pipeline_from_card(out)
    theirs = [o[0] if isinstance(o, list) else o for o in (pipe(x) for x in pipe_inputs)]
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert [t["score"] for t in theirs] == pytest.approx([o["score"] for o in ours], abs=2e-3)
    if (modality, strategy) != ("text", "partial"):  # tiny BERT with frozen random embeddings barely learns
        assert len({o["label"] for o in ours}) == 2  # a trained model, not one constant label
    if strategy in ("feature_extraction", "contrastive"):
        assert (out / "modeling_tlhub.py").is_file() and "tlhub" not in pipe.model.__class__.__module__.split(".")[0]
    if strategy == "lora":
        assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()


def test_a_text2text_run_loads_with_auto_classes_and_generates_what_tlhub_predicts(tiny_t5, tmp_path) -> None:
    from tests.test_text2text import t5_config

    out = tmp_path / "run"
    finetune(config_from_dict(t5_config(tiny_t5, write_rows(tmp_path / "toy.csv", toy_sentiment_rows(120)), out)))
    inputs = ["the food was great", "awful staff", "lovely place"]
    ours = [p["text"] for p in predict(load_run(out), inputs)]
    code = card_loader(out)  # transformers 5 has no text2text pipeline: the card loads the auto classes
    assert "AutoModelForSeq2SeqLM" in code and "'sentiment: '" in code
    namespace: dict = {}
    exec(code.replace(f'RUN_DIR = "{out}"', f"RUN_DIR = {str(out)!r}"), namespace)  # noqa: S102
    assert [namespace["generate"](text) for text in inputs] == ours
    assert set(ours) == {"positive", "negative"}
