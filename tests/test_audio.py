"""Audio modality: decoding without FFmpeg, resampling, skipped clips, strategies,
classification and CTC speech recognition with a tiny random wav2vec2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tests.conftest import config_file, cpu_training, one_line_error, with_sections
from tests.tiny_models import make_tiny_wav2vec2
from tlhub.cli import main
from tlhub.config import config_from_dict
from tlhub.data import load_data
from tlhub.errors import ConfigError, DataError
from tlhub.modalities import get_modality
from tlhub.pipeline import finetune, load_run, predict
from tlhub.tasks import get_task
from tlhub.strategies import STRATEGIES, count_parameters

TONES = {"low": 220.0, "high": 1760.0}


def tone(freq: float, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def write_tones(folder: Path, per_class: int, rate: int = 8000, seed: int = 0) -> list[dict]:
    """`<label>/<i>.wav` tone clips at 8 kHz (0.4-0.7 s): a learnable two-class task."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, freq in TONES.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / label / f"{i}.wav"
            sf.write(path, tone(freq * rng.uniform(0.9, 1.1), rng.uniform(0.4, 0.7), rate, rng), rate)
            rows.append({"path": f"{label}/{i}.wav", "label": label, "transcript": label})
    return rows


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-w2v"))


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of <label>/*.wav, manifest.csv with relative paths, labels and transcripts)."""
    folder = tmp_path_factory.mktemp("tones")
    rows = write_tones(folder, per_class=24)
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder, folder / "manifest.csv"


def audio_config(model: Path, train: Path, out: Path, task: str = "classification", strategy: str | dict = "full", **sections) -> dict:
    cfg = {
        "modality": "audio",
        "task": task,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(train), "validation_split": 0.25, "audio_column": "path", "target_column": "transcript"},
        "strategy": strategy if isinstance(strategy, dict) else {"name": strategy},
        "training": cpu_training(out, num_train_epochs=6, learning_rate=3e-3, per_device_train_batch_size=8),
    }
    return with_sections(cfg, sections)


def test_8khz_stereo_clip_reaches_the_model_at_16khz(tiny_w2v: Path, tmp_path: Path) -> None:
    rate, seconds = 8000, 0.5
    t = np.arange(int(rate * seconds)) / rate
    left = np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "a.wav", np.stack([left, np.zeros_like(left)], axis=1), rate)  # stereo, 8 kHz
    cfg = config_from_dict(audio_config(tiny_w2v, tmp_path, tmp_path / "run", data={"audio_column": "audio"}))
    modality = get_modality("audio")
    processor = modality.load_processor(cfg)
    assert processor.sampling_rate == 16000
    features = modality.transform(processor, cfg, train=False)({"audio": [str(tmp_path / "a.wav")], "labels": [0]})
    values = np.asarray(features["input_values"][0])
    assert values.shape == (8000,)  # 0.5 s at 16 kHz, one channel
    spectrum = np.abs(np.fft.rfft(values))
    assert np.argmax(spectrum) * 16000 / len(values) == pytest.approx(440, abs=4)  # the tone survives resampling
    batch = modality.collator(processor, cfg, None)([{k: v[0] for k, v in features.items()}])
    assert batch["input_values"].shape == (1, 8000) and batch["labels"].tolist() == [0]
    model = modality.load_model(cfg, ["low", "high"])
    with torch.no_grad():
        hidden = model.wav2vec2(batch["input_values"]).last_hidden_state
    assert hidden.shape[1] == 24  # 8000 samples / 320 (the feature encoder's stride), minus the edges

    # data.max_duration_s crops (and the collator pads) to a fixed length
    cfg = config_from_dict(audio_config(tiny_w2v, tmp_path, tmp_path / "run", data={"audio_column": "audio", "max_duration_s": 0.25}))
    features = modality.transform(processor, cfg, train=True)({"audio": [str(tmp_path / "a.wav")], "labels": [0]})
    assert len(features["input_values"][0]) == 4000
    cfg = config_from_dict(audio_config(tiny_w2v, tmp_path, tmp_path / "run", data={"audio_column": "audio", "max_duration_s": 1.0}))
    batch = modality.collator(processor, cfg, None)([{k: v[0] for k, v in features.items()}])
    assert batch["input_values"].shape == (1, 16000)


def test_corrupt_clip_is_skipped_and_counted(tiny_w2v: Path, tmp_path: Path) -> None:
    write_tones(tmp_path / "clips", per_class=5)
    (tmp_path / "clips" / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    cfg = config_from_dict(audio_config(tiny_w2v, tmp_path / "clips", tmp_path / "run", data={"audio_column": "audio"}))
    loaded = load_data(cfg, get_modality("audio"))
    assert loaded.skipped == {"train": 1}
    assert sum(len(s) for s in loaded.splits.values()) == 10
    assert loaded.label_names == ["high", "low"]

    cfg = audio_config(tiny_w2v, tmp_path / "clips", tmp_path / "run", data={"audio_column": "audio", "max_bad_fraction": 0.05})
    with pytest.raises(DataError, match=r"1 of 11 audio clips \(9%\) are unreadable.*broken\.wav"):
        load_data(config_from_dict(cfg), get_modality("audio"))


def test_a_folder_named_relatively_gives_absolute_sorted_rows_without_torchcodec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datasets' audiofolder lists the clips undecoded (its Audio feature would need torchcodec);
    a relative folder still gives absolute paths, which prepare() reads from anywhere."""
    write_tones(tmp_path / "clips", per_class=2)
    (tmp_path / "clips" / "low" / "1.wav").rename(tmp_path / "clips" / "low" / "1.WAV")
    (tmp_path / "clips" / "metadata.csv").write_text("file_name,label\nlow/0.wav,high\n")
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(audio_config(tmp_path / "model", Path("clips"), tmp_path / "run", data={"audio_column": "audio"}))
    rows = get_modality("audio").load_folder(Path("clips"), cfg, "data.train")
    clips = tmp_path / "clips"
    assert rows.to_list() == [
        {"audio": str(clips / "high" / "0.wav"), "label": "high"},
        {"audio": str(clips / "high" / "1.wav"), "label": "high"},
        {"audio": str(clips / "low" / "0.wav"), "label": "low"},
        {"audio": str(clips / "low" / "1.WAV"), "label": "low"},
    ]
    ds, bad = get_modality("audio").prepare(rows, cfg, Path("clips"), "data.train")  # base_dir as tlhub.data passes it
    assert (len(ds), bad) == (4, 0)


def test_cli_errors_name_the_file(tiny_w2v: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"path": "missing.wav", "label": "a"}, {"path": "gone.flac", "label": "b"}]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "c.yaml").write_text(json.dumps(audio_config(tiny_w2v, tmp_path / "m.csv", tmp_path / "run")))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "2 of 2 audio clips (100%) are unreadable" in err and "missing.wav: no such file" in err


def test_strategies_train_the_expected_parameters(tiny_w2v: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(audio_config(tiny_w2v, tmp_path, tmp_path / "run"))
    modality = get_modality("audio")

    def applied(name: str, **settings) -> tuple[int, int]:
        strategy = config_from_dict(audio_config(tiny_w2v, tmp_path, tmp_path / "run", strategy={"name": name, **settings})).strategy
        return count_parameters(STRATEGIES.get(name)().apply(modality.load_model(cfg, ["a", "b", "c"]), strategy, modality, "classification").model)

    model = modality.load_model(cfg, ["a", "b", "c"])
    _, total = count_parameters(model)
    head = sum(p.numel() for m in (model.projector, model.classifier) for p in m.parameters())
    layer = sum(p.numel() for p in model.wav2vec2.encoder.layers[-1].parameters())
    assert head == 32 * 32 + 32 + 32 * 3 + 3
    assert applied("full") == (total, total)
    trainable, _ = applied("feature_extraction")
    assert trainable == 32 * 3 + 3  # only the new linear head over mean-pooled frames
    assert applied("partial", unfreeze_last_n=1)[0] == head + layer  # conv encoder and layer 0 frozen
    assert applied("partial", unfreeze_last_n=0)[0] == head
    lora_trainable, lora_total = applied("lora", lora={"r": 4})
    # r=4 on q_proj and v_proj (32x32) of 2 layers, plus the trained copy of the head
    assert lora_trainable == 2 * 2 * (4 * 32 + 32 * 4) + head
    assert lora_total == total + lora_trainable


def test_classification_trains_saves_and_predicts(tiny_w2v: Path, tones: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    folder, _ = tones
    results = finetune(config_from_dict(audio_config(tiny_w2v, folder, tmp_path / "run", data={"audio_column": "audio"})))
    assert results["eval_accuracy"] >= 0.9, results
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "hi.flac", tone(1760, 0.5, 22050, rng), 22050)  # another rate and format
    sf.write(tmp_path / "lo.wav", tone(220, 0.5, 8000, rng), 8000)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "hi.flac"), str(tmp_path / "lo.wav")]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [(line[0], line[2]) for line in lines] == [("high", str(tmp_path / "hi.flac")), ("low", str(tmp_path / "lo.wav"))]
    assert all(0.5 < float(line[1]) <= 1.0 for line in lines)
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav: no such file" in capsys.readouterr().err


def test_lora_and_feature_extraction_runs_load_back(tiny_w2v: Path, tones: tuple[Path, Path], tmp_path: Path) -> None:
    folder, manifest = tones  # the manifest's paths are relative to its folder
    for strategy in ("lora", "feature_extraction"):
        cfg = audio_config(tiny_w2v, manifest, tmp_path / strategy, strategy=strategy, training={"num_train_epochs": 1, "learning_rate": 1e-2})
        results = finetune(config_from_dict(cfg))
        assert results["trainable_params"] < results["total_params"] / 4
        run = load_run(tmp_path / strategy)
        rows = predict(run, [str(folder / "low" / "0.wav"), str(folder / "high" / "0.wav")])
        assert [r["label"] in ("low", "high") for r in rows] == [True, True]


def test_ctc_metrics_decode_logits_and_padding() -> None:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    from tlhub.tasks.speech_recognition import build_ctc_tokenizer

    import tempfile

    tokenizer = build_ctc_tokenizer(set("high low"), Path(tempfile.mkdtemp()))
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(), tokenizer=tokenizer)
    vocab = tokenizer.get_vocab()
    assert list(vocab)[:3] == ["[PAD]", "[UNK]", "|"] and len(tokenizer) == 3 + len(set("highlow"))

    def logits_for(frames: list[str], length: int) -> np.ndarray:
        out = np.full((length, len(vocab)), -100.0, dtype=np.float32)  # the Trainer's padding
        for i, token in enumerate(frames):
            out[i, vocab[token]] = 1.0
        return out

    predictions = np.stack([logits_for(["h", "h", "[PAD]", "i", "g", "h"], 9), logits_for(["l", "o", "o", "w", "|", "l"], 9)])
    labels = np.full((2, 6), -100)
    labels[0, :4] = tokenizer("high")["input_ids"]
    labels[1, :3] = tokenizer("low")["input_ids"]

    class Pred:
        pass

    pred = Pred()
    pred.predictions, pred.label_ids = predictions, labels
    from types import SimpleNamespace

    cfg = SimpleNamespace(task="speech_recognition", data=SimpleNamespace(normalize_text=False))
    metrics = get_task(cfg.task).compute_metrics(cfg, processor, None, False)(pred)
    assert metrics["wer"] == pytest.approx(0.5)  # "high" right; "low l" has one inserted word
    assert metrics["cer"] == pytest.approx(2 / 7)


LETTERS = {"a": 300.0, "b": 900.0, "c": 2000.0}


def write_spelled_words(folder: Path, n: int, rate: int = 8000, seed: int = 0) -> Path:
    """Clips of 1-3 tones of 0.15 s, one per letter (a, b, c), transcribed as the letters:
    a toy speech-recognition task that CTC learns in seconds. Returns the manifest."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        letters = rng.choice(list(LETTERS), size=int(rng.integers(1, 4)))
        word = "".join(c for j, c in enumerate(letters) if j == 0 or c != letters[j - 1])
        sf.write(folder / f"{i}.wav", np.concatenate([tone(LETTERS[c], 0.15, rate, rng) for c in word]), rate)
        rows.append({"path": f"{i}.wav", "transcript": word.upper() + "!"})  # normalised to lower case, "!" ignored
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_ctc_frames_over_batch_padding_decode_as_blank(tiny_w2v: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "short.wav", tone(300, 0.2, 16000, rng), 16000)
    sf.write(tmp_path / "long.wav", tone(300, 0.6, 16000, rng), 16000)
    manifest = tmp_path / "m.csv"
    pd.DataFrame([{"path": "short.wav", "transcript": "ab"}, {"path": "long.wav", "transcript": "ba"}]).to_csv(manifest, index=False)
    cfg = config_from_dict(audio_config(tiny_w2v, manifest, tmp_path / "run", task="speech_recognition"))
    modality = get_modality("audio")
    loaded = load_data(cfg, modality)  # records the training characters for the vocabulary
    processor = modality.load_processor(cfg)
    model = modality.load_model(cfg, None).eval()
    assert model.config.vocab_size == len(processor.tokenizer) == 5 and model.config.pad_token_id == 0
    features = modality.transform(processor, cfg, train=False)({"path": [str(tmp_path / "short.wav"), str(tmp_path / "long.wav")], "transcript": ["ab", "ba"]})
    batch = modality.collator(processor, cfg, model)([{k: v[i] for k, v in features.items()} for i in range(2)])
    assert batch["labels"].tolist() == [[3, 4], [4, 3]]
    with torch.no_grad():
        ids = model(**batch).logits.argmax(-1)
    short_frames = int(model._get_feat_extract_output_lengths(torch.tensor(3200)))
    assert ids.shape[1] > short_frames and (ids[0, short_frames:] == 0).all()
    assert sum(len(s) for s in loaded.splits.values()) == 2


def test_speech_recognition_trains_saves_and_transcribes(tiny_w2v: Path, tmp_path: Path, capsys) -> None:
    manifest = write_spelled_words(tmp_path / "words", 64)
    cfg = audio_config(
        tiny_w2v, manifest, tmp_path / "ctc", task="speech_recognition",
        data={"chars_to_ignore": "!", "augment": False}, training={"num_train_epochs": 30, "learning_rate": 3e-3},
    )
    results = finetune(config_from_dict(cfg))
    assert results["eval_cer"] < 0.3 and results["eval_wer"] < 0.5, results
    vocab = json.loads((tmp_path / "ctc" / "vocab.json").read_text())
    assert set(vocab) == {"[PAD]", "[UNK]", "|", "a", "b", "c"}
    transcripts = pd.read_csv(manifest).transcript.str.rstrip("!").str.lower()
    capsys.readouterr()
    files = [str(tmp_path / "words" / f"{i}.wav") for i in range(8)]
    assert main(["predict", str(tmp_path / "ctc"), *files]) == 0  # one padded batch of 8 clips
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[1] for line in lines] == files
    assert sum(text == truth for (text, _), truth in zip(lines, transcripts)) >= 6, (lines, transcripts[:8].tolist())

    # issue 13: the run is a plain CTC folder: transformers' ASR pipeline transcribes each clip as tlhub does
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "ctc"), device="cpu")
    for path in files[:4]:
        audio, rate = sf.read(path, dtype="float32")
        ours = predict(load_run(tmp_path / "ctc"), [path], batch_size=1)[0]["text"]
        assert asr({"raw": audio, "sampling_rate": rate})["text"] == ours and ours


def test_weighted_layer_sum_learns_a_mix_of_layers_cached_or_not(
    tiny_w2v: Path, tones: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SUPERB-style feature extraction: every hidden layer (the feature projection's output
    and the 2 transformer layers' outputs) pooled, mixed by 3 learned weights, then the head."""
    from safetensors.torch import load_file

    from tlhub.models import PooledClassifier

    monkeypatch.setenv("TLHUB_CACHE", str(tmp_path / "cache"))
    folder, _ = tones
    strategy = {"name": "feature_extraction", "weighted_layer_sum": True}
    training = {"num_train_epochs": 40, "learning_rate": 0.05, "eval_strategy": "no", "logging_strategy": "no"}
    results = {}
    for cache in (True, False):
        cfg = audio_config(tiny_w2v, folder, tmp_path / f"cache-{cache}", strategy={**strategy, "cache": cache},
                           data={"audio_column": "audio", "augment": False, "max_duration_s": 0.4}, training=training)
        results[cache] = finetune(config_from_dict(cfg))
    assert results[True]["trainable_params"] == 32 * 2 + 2 + 3  # the 2-way head and one weight per hidden state
    assert results[True]["feature_cache_hit"] is False and "feature_cache_hit" not in results[False]
    assert results[True]["eval_accuracy"] >= 0.9, results[True]
    # The cache stores every layer's pooled features: (clips, 3 layers, 32)
    (entry,) = [p for p in Path(results[True]["feature_cache_dir"]).iterdir() if (p / "key.json").read_text().count('"train"')]
    assert load_file(str(entry / "features.safetensors"))["features"].shape[1:] == (3, 32)
    # Same features either way (clips cut to one length: no padding for group norm to see),
    # so the two runs learn the same mix and the same head
    saved = [load_file(str(tmp_path / f"cache-{c}" / "pooled_head.safetensors")) for c in (True, False)]
    assert torch.allclose(saved[0]["layer_weights"], saved[1]["layer_weights"], atol=1e-4)
    assert saved[0]["layer_weights"].abs().max() > 1e-3  # moved from the uniform start
    # The saved run loads back whole and predicts as the trained model did
    model = PooledClassifier.from_pretrained(tmp_path / "cache-True")
    assert model.layer_weights is not None and torch.equal(model.layer_weights.data, saved[0]["layer_weights"])
    rows = predict(load_run(tmp_path / "cache-True"), [str(folder / "low" / "1.wav"), str(folder / "high" / "1.wav")])
    assert [r["label"] for r in rows] == ["low", "high"]


def test_weighted_layer_sum_config_errors(tiny_w2v: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = audio_config(tiny_w2v, tmp_path, tmp_path / "run", strategy={"name": "feature_extraction", "weighted_layer_sum": True, "pooling": "pooler"})
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.strip() == (
        "tlhub: error: strategy.weighted_layer_sum: pools every hidden layer with strategy.pooling mean or cls; "
        "the pooler reads the last layer only"
    )


def test_config_overrides_reach_the_model_and_heavy_spec_augment_warns(
    tiny_w2v: Path, tones: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SpecAugment masks at least mask_time_min_masks x mask_time_length frames per clip: on
    short clips that is most of the clip, so loading warns and names the override to set."""
    folder, _ = tones  # 0.4-0.7 s clips: ~20-35 frames of 20 ms
    modality = get_modality("audio")

    def load(overrides: dict | None) -> torch.nn.Module:
        mapping = audio_config(tiny_w2v, folder, tmp_path / "run", data={"audio_column": "audio"})
        mapping["model"]["config_overrides"] = overrides
        cfg = config_from_dict(mapping)
        loaded = load_data(cfg, modality)  # records the clips' median length
        return modality.load_model(cfg, loaded.label_names)

    caplog.clear()
    model = load({"mask_time_length": 10, "hidden_dropout": 0.3})  # at least 2 x 10 frames masked
    assert model.config.mask_time_length == 10 and model.config.hidden_dropout == 0.3
    warning = next(r.getMessage() for r in caplog.records if "SpecAugment" in r.getMessage())
    assert "masks at least 20 of the ~" in warning and "model.config_overrides: {mask_time_min_masks: 0}" in warning
    caplog.clear()
    load({"mask_time_length": 10, "mask_time_min_masks": 0})
    assert not [r for r in caplog.records if "SpecAugment" in r.getMessage()]

    with pytest.raises(ConfigError, match=r"^model.config_overrides.mask_tim_length: not a setting of Wav2Vec2Config \(did you mean 'mask_time_length'\?\)$"):
        load({"mask_tim_length": 10})


def test_whisper_encoder_reads_a_short_window_and_trains_with_each_strategy(tones: tuple[Path, Path], tmp_path: Path) -> None:
    """WhisperForAudioClassification with data.max_duration_s: 1 reads 1 s of log-mel frames
    (100, not Whisper's 3,000) through a positional table cut to 50 rows; every strategy
    trains what it should; the run loads back with the short window and predicts."""
    from tests.tiny_models import make_tiny_whisper

    folder, _ = tones
    whisper = make_tiny_whisper(tmp_path / "whisper")
    modality = get_modality("audio")
    cfg = config_from_dict(audio_config(whisper, folder, tmp_path / "run", data={"audio_column": "audio", "max_duration_s": 1.0}))
    processor = modality.load_processor(cfg)
    model = modality.load_model(cfg, ["high", "low"])
    assert type(model).__name__ == "WhisperForAudioClassification"
    assert model.encoder.embed_positions.num_embeddings == 50 and model.config.max_source_positions == 50
    features = modality.transform(processor, cfg, train=False)({"audio": [str(folder / "low" / "0.wav")], "labels": [1]})
    batch = modality.collator(processor, cfg, model)([{k: v[0] for k, v in features.items()}])
    assert batch["input_features"].shape == (1, 80, 100)
    with torch.no_grad():
        assert model(**batch).logits.shape == (1, 2)

    encoder_layer = sum(p.numel() for p in model.encoder.layers[-1].parameters())
    head = sum(p.numel() for m in (model.projector, model.classifier) for p in m.parameters())
    expected = {
        "feature_extraction": 32 * 2 + 2,  # a new head on the mean of the encoder's frames
        "partial": encoder_layer + model.encoder.layer_norm.weight.numel() * 2 + head,  # last layer, final norm, head
        "lora": 2 * 2 * (4 * 32 + 32 * 4) + head,  # r=4 on the encoder's q_proj and v_proj, the head in full
        "full": None,
    }
    for name, trainable in expected.items():
        strategy = {"name": name, **{"partial": {"unfreeze_last_n": 1}, "lora": {"lora": {"r": 4}}}.get(name, {})}
        mapping = audio_config(whisper, folder, tmp_path / name, strategy=strategy, data={"audio_column": "audio", "max_duration_s": 1.0})
        mapping["training"].update(num_train_epochs=1)
        results = finetune(config_from_dict(mapping))
        assert results["trainable_params"] == (trainable or results["total_params"]), name
        rows = predict(load_run(tmp_path / name), [str(folder / "high" / "1.wav")])
        assert rows[0]["label"] in ("high", "low") and 0.5 <= rows[0]["score"] <= 1.0
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["max_source_positions"] == 50
    assert json.loads((tmp_path / "full" / "preprocessor_config.json").read_text())["chunk_length"] == 1


def test_whisper_defaults_follow_the_data_and_pool_only_the_clip(tones: tuple[Path, Path], tmp_path: Path) -> None:
    """Without data.max_duration_s the window is the longest training clip rounded up (the
    tones: 1 s, not Whisper's 30 s), feature extraction's mean covers only the clip's frames
    (its features do not change with more padding), and the default run scores within 2
    points of the explicit 1 s run."""
    from tests.tiny_models import make_tiny_whisper
    from tlhub.models import PooledClassifier

    folder, _ = tones
    whisper = make_tiny_whisper(tmp_path / "whisper")
    runs = {}
    for name, data in (("default", {"audio_column": "audio"}), ("1s", {"audio_column": "audio", "max_duration_s": 1.0})):
        mapping = audio_config(whisper, folder, tmp_path / name, strategy="feature_extraction", data=data)
        mapping["training"].update(num_train_epochs=30, learning_rate=0.05)
        runs[name] = finetune(config_from_dict(mapping))
        assert json.loads((tmp_path / name / "backbone" / "config.json").read_text())["max_source_positions"] == 50
    assert runs["default"]["eval_accuracy"] >= runs["1s"]["eval_accuracy"] - 0.02

    # The mean over frames of real audio: the same clip padded to a 1 s or a 2 s window pools
    # alike (Whisper's attention still sees the padding, so alike, not equal)
    from transformers import WhisperForAudioClassification

    from tlhub.modalities.whisper_window import fit_encoder, fit_extractor

    modality = get_modality("audio")
    cfg = config_from_dict(audio_config(whisper, folder, tmp_path / "x", data={"audio_column": "audio"}))
    clip = str(folder / "low" / "0.wav")
    pooled, plain = [], []
    for seconds in (1, 2):
        processor = fit_extractor(modality.load_processor(cfg, source=str(whisper)), seconds)
        encoder = fit_encoder(WhisperForAudioClassification.from_pretrained(whisper), seconds).encoder
        model = PooledClassifier(encoder, 2).eval()
        features = modality.transform(processor, cfg, train=False)({"audio": [clip]})
        batch = modality.collator(processor, cfg, model)([{k: v[0] for k, v in features.items()}])
        assert batch["attention_mask"].shape[1] == 100 * seconds
        with torch.no_grad():
            pooled.append(model.features(**batch)[0])
            plain.append(encoder(batch["input_features"]).last_hidden_state.mean(1)[0])
    masked_gap = (pooled[0] - pooled[1]).norm() / pooled[0].norm()
    plain_gap = (plain[0] - plain[1]).norm() / plain[0].norm()
    assert masked_gap < 0.5 * plain_gap, (masked_gap, plain_gap)  # the padding no longer dominates the mean


def test_hub_style_audio_column_is_decoded_without_ffmpeg(tiny_w2v: Path, tmp_path: Path) -> None:
    """A datasets `Audio` column (a Hub dataset, here through save_to_disk) is read undecoded,
    as bytes, and decoded with soundfile: the run never touches torchcodec or FFmpeg."""
    import io

    import datasets

    rng = np.random.default_rng(0)
    cells, labels = [], []
    for i in range(16):
        label = ("low", "high")[i % 2]
        buffer = io.BytesIO()
        sf.write(buffer, tone(TONES[label], 0.5, 8000, rng), 8000, format="WAV")
        cells.append({"bytes": buffer.getvalue(), "path": f"{i}.wav"})
        labels.append(label)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"audio": cells, "label": labels}).cast_column("audio", datasets.Audio()).save_to_disk(str(saved))
    cfg = audio_config(tiny_w2v, saved, tmp_path / "run", data={"audio_column": "audio"}, training={"num_train_epochs": 1})
    results = finetune(config_from_dict(cfg))
    assert results["train_samples"] + results["eval_samples"] == 16 and results["skipped_examples"] == {}
    assert 0.0 <= results["eval_accuracy"] <= 1.0


# --------------------------------------------------------------------------- bad clips and windows (issue 27)


def sine_clips(folder: Path, n: int = 10) -> list[dict]:
    """`n` 0.5 s sines a class (low, high) as 8 kHz float WAV files, and their manifest rows."""
    rows = []
    for label, freq in (("low", 220.0), ("high", 1760.0)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            t = np.arange(4000) / 8000
            sf.write(folder / label / f"{i}.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, subtype="FLOAT")
            rows.append({"path": f"{label}/{i}.wav", "label": label})
    return rows


def test_a_clip_holding_nan_is_skipped_and_counted_or_stops_the_run(tmp_path: Path, capsys) -> None:
    rows = sine_clips(tmp_path / "clips")
    poisoned = np.zeros(4000, dtype=np.float32)
    poisoned[100] = np.nan
    sf.write(tmp_path / "clips" / "low" / "nan.wav", poisoned, 8000, subtype="FLOAT")
    pd.DataFrame([*rows, {"path": "low/nan.wav", "label": "low"}]).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    model = make_tiny_wav2vec2(tmp_path / "w2v")
    cfg = audio_config(model, tmp_path / "clips" / "manifest.csv", tmp_path / "run", training={"num_train_epochs": 1})
    assert main(["train", str(config_file(tmp_path / "c.yaml", cfg))]) == 0
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert sum(results["skipped_examples"].values()) == 1 and np.isfinite(results["eval_loss"]) and results["train_loss"] > 0
    err = one_line_error(capsys, ["train", str(tmp_path / "c.yaml"), "data.max_bad_fraction=0", "training.overwrite_output_dir=true"])
    assert "nan.wav: 1 NaN or infinite sample(s), the first at sample 100" in err and "data.max_bad_fraction=0" in err


def test_a_text_file_named_mp3_is_named_as_unreadable_audio(tmp_path: Path, capsys) -> None:
    rows = sine_clips(tmp_path / "clips")
    (tmp_path / "clips" / "low" / "fake.mp3").write_text("not audio at all\n" * 20)
    pd.DataFrame([*rows, {"path": "low/fake.mp3", "label": "low"}]).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    cfg = audio_config(make_tiny_wav2vec2(tmp_path / "w2v"), tmp_path / "clips" / "manifest.csv", tmp_path / "run", data={"max_bad_fraction": 0.0})
    err = one_line_error(capsys, ["train", str(config_file(tmp_path / "c.yaml", cfg))])
    assert "fake.mp3: unreadable audio (not a format soundfile reads); readable formats: " in err and "convert it, e.g. to WAV" in err
    assert "does not exist" not in err


def test_whisper_reads_at_most_its_window(tmp_path: Path, capsys) -> None:
    from tests.tiny_models import make_tiny_whisper

    rows = sine_clips(tmp_path / "clips")
    pd.DataFrame(rows).to_csv(tmp_path / "clips" / "manifest.csv", index=False)
    cfg = audio_config(make_tiny_whisper(tmp_path / "whisper"), tmp_path / "clips" / "manifest.csv", tmp_path / "run", data={"max_duration_s": 45})
    err = one_line_error(capsys, ["train", str(config_file(tmp_path / "c.yaml", cfg))])
    assert err == "tlhub: error: data.max_duration_s: 45 s is longer than the 30 s window this Whisper model reads; set at most 30\n"
