"""Shared fixtures: tiny random models and toy data, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny_models import make_tiny_bert, make_tiny_t5, toy_sentiment_rows, write_rows  # noqa: E402

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# The one switch that runs the suite on a GPU: TLHUB_TEST_DEVICE=cuda. The shared training
# section then stops pinning the CPU, so runs take tlhub's GPU defaults (bf16 mixed precision,
# pinned memory), and tests that compare numbers use BF16_REL, a tolerance bf16 holds.
TEST_DEVICE = os.environ.get("TLHUB_TEST_DEVICE", "cpu")
if TEST_DEVICE not in ("cpu", "cuda"):
    raise pytest.UsageError(f"TLHUB_TEST_DEVICE: '{TEST_DEVICE}' is not cpu or cuda")
USE_CPU = TEST_DEVICE == "cpu"
NUMBERS_REL = 1e-4 if USE_CPU else 2e-2  # relative tolerance of numbers two runs should share (bf16: 8 mantissa bits)


def pytest_configure(config: pytest.Config) -> None:
    import torch

    if not USE_CPU and not torch.cuda.is_available():
        raise pytest.UsageError("TLHUB_TEST_DEVICE=cuda, but torch sees no CUDA device")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 learnable sentences with string labels (neg/pos)."""
    return write_rows(tmp_path_factory.mktemp("toy") / "train.csv", toy_sentiment_rows(240))


def cpu_training(out: Path, **values) -> dict:
    """The `training` section of a test run: on the test device (the CPU unless
    TLHUB_TEST_DEVICE=cuda), no checkpoints, quiet, seeded."""
    return {"output_dir": str(out), "save_strategy": "no", "use_cpu": USE_CPU, "disable_tqdm": True, "seed": 0, **values}


def with_sections(cfg: dict, sections: dict) -> dict:
    """`cfg` with each of `sections` merged in (mappings updated, other values replaced)."""
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


def text_config(model: Path, data: Path, out: Path, strategy: str = "full", **sections) -> dict:
    """A minimal text classification config as a mapping (the YAML file's shape)."""
    cfg = {
        "modality": "text",
        "task": "classification",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "validation_split": 0.25},
        "strategy": {"name": strategy},
        "training": cpu_training(out, num_train_epochs=8, learning_rate=1e-3, per_device_train_batch_size=16),
    }
    return with_sections(cfg, sections)


def config_file(path: Path, cfg: dict) -> Path:
    """`cfg` written as the YAML config file `path`."""
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """What `tlhub` prints for a user error in `argv`: exit code 2, one line that starts with
    ``tlhub: error: ``, no traceback."""
    from tlhub.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("tlhub: error: ") and err.count("\n") == 1, err
    return err


def requires_shared(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"{path} is absent: real datasets live in ../shared/datasets beside the project")
    return path
