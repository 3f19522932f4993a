"""Data-parallel runs through `accelerate launch`: two gloo processes on CPU.

`accelerate launch --multi_gpu --num_processes 2` with `training.use_cpu: true` starts
two processes (DistributedType.MULTI_CPU), the same code path as several GPUs. Each run
goes through tests/launch_probe.py, which records what every process trained on.

These launches stay on the CPU under TLHUB_TEST_DEVICE=cuda too (no CUDA device is visible
to them): NCCL refuses two ranks on one GPU, and the multi-process path is the same. The
single-process runs they are compared with are pinned to the CPU alike.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from tests.conftest import NUMBERS_REL, USE_CPU, text_config
from tests.tiny_models import toy_sentiment_rows, write_rows
from tlhub.cli import main

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
LAUNCH = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
STEPS, BATCH = 4, 4


def free_port() -> int:
    """A free TCP port, so parallel test runs do not collide on accelerate's default 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_rows(n: int) -> list[dict]:
    """Toy rows with distinct texts, so token ids identify an example."""
    seen, rows = set(), []
    for row in toy_sentiment_rows(4 * n, seed=1):
        if row["text"] not in seen and len(rows) < n:
            seen.add(row["text"])
            rows.append(row)
    return rows


def run_config(tmp_path: Path, model: Path, strategy: str, out: Path, batch: int = BATCH, cpu: bool = True) -> Path:
    data = write_rows(tmp_path / "train.csv", unique_rows(64))
    cfg = text_config(model, data, out, strategy=strategy)
    cfg["training"].update(
        use_cpu=cpu,
        max_steps=STEPS, per_device_train_batch_size=batch, per_device_eval_batch_size=4, logging_steps=1, learning_rate=0.01
    )
    config = tmp_path / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return config


def launch_env(probe: Path) -> dict[str, str]:
    """Two CPU processes (gloo), whatever devices the machine has."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TLHUB_PROBE_DIR": str(probe), "PYTHONPATH": str(ROOT),
            "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip


def launch(tmp_path: Path, model: Path, strategy: str, entry: list[str]) -> tuple[subprocess.CompletedProcess, Path, Path]:
    out, probe = tmp_path / "run", tmp_path / "probe"
    config = run_config(tmp_path, model, strategy, out)
    proc = subprocess.run(
        [*LAUNCH, "--main_process_port", str(free_port()), str(ROOT / "tests" / "launch_probe.py"), *entry, str(config)],
        cwd=tmp_path, env=launch_env(probe), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out, probe


def check_run(proc: subprocess.CompletedProcess, out: Path, probe: Path, strategy: str) -> None:
    # Both processes ran, as one two-process CPU group.
    envs = [json.loads((probe / f"rank{r}.env.json").read_text()) for r in (0, 1)]
    assert [e["rank"] for e in envs] == [0, 1]
    assert all(e["world_size"] == 2 and e["distributed_type"] == "DistributedType.MULTI_CPU" for e in envs)
    assert all(e["ddp_find_unused_parameters"] is True for e in envs)

    # They trained on different shards: no example seen by both, each saw its own batches.
    seen = [set((probe / f"rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    assert all(len(s) >= STEPS * BATCH for s in seen), [len(s) for s in seen]
    assert not seen[0] & seen[1]

    # The run directory: written once, by the main process, complete, no temporaries left.
    results = json.loads((out / "all_results.json").read_text())
    for key in ("eval_accuracy", "eval_loss", "train_runtime", "trainable_params", "total_params"):
        assert key in results
    assert results["strategy"] == strategy and 0 < results["trainable_params"] < results["total_params"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert (out / "config.yaml").is_file() and (out / "tlhub_run.json").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    table = [line for line in proc.stdout.splitlines() if line.startswith("eval_accuracy ")]
    assert len(table) == 1, proc.stdout[-2000:]  # the results table printed once, by rank 0


def no_dropout_copy(model: Path, dest: Path) -> Path:
    """The tiny BERT without dropout: runs that see the same batches compute the same steps."""
    shutil.copytree(model, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_gradient_accumulation_matches_a_larger_batch(tmp_path: Path, tiny_bert: Path) -> None:
    """2 x batch 4 accumulated == batch 8: same losses and gradient norms at every step (on the
    test device: in bf16 on a GPU, to bf16's precision).

    transformers 5 skips the division by gradient_accumulation_steps for models whose
    forward takes **kwargs (BERT's does) although BERT's classification loss is a plain
    mean, so without tlhub's fix the losses and gradients come out twice as large.
    """
    model = no_dropout_copy(tiny_bert, tmp_path / "bert-no-dropout")
    logs = []
    for name, batch, steps in (("big", 2 * BATCH, 1), ("accumulated", BATCH, 2)):
        config = run_config(tmp_path, model, "full", tmp_path / name, batch=batch, cpu=USE_CPU)
        assert main(["train", str(config), f"training.gradient_accumulation_steps={steps}"]) == 0
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        logs.append([(e["loss"], e["grad_norm"]) for e in state["log_history"] if "loss" in e])
    assert len(logs[0]) == len(logs[1]) == STEPS
    for (loss_a, norm_a), (loss_b, norm_b) in zip(*logs):
        assert loss_b == pytest.approx(loss_a, rel=NUMBERS_REL) and norm_b == pytest.approx(norm_a, rel=10 * NUMBERS_REL)


def test_two_processes_partial(tmp_path: Path, tiny_bert: Path) -> None:
    """Also: 2 processes x batch 4 train exactly like 1 process x batch 8 (no dropout, so
    the only difference is DDP). A loss scaled by the number of processes (transformers'
    average_tokens_across_devices with a model that ignores num_items_in_batch) fails this."""
    model = no_dropout_copy(tiny_bert, tmp_path / "bert-no-dropout")
    proc, out, probe = launch(tmp_path, model, "partial", ["train"])
    check_run(proc, out, probe, "partial")
    assert (out / "model.safetensors").is_file()

    single = run_config(tmp_path, model, "partial", tmp_path / "single", batch=2 * BATCH)
    assert main(["train", str(single)]) == 0
    one = json.loads((tmp_path / "single" / "all_results.json").read_text())
    two = json.loads((out / "all_results.json").read_text())
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    assert one["eval_loss"] != pytest.approx(0.6931, abs=1e-3)  # training moved it away from chance


def test_two_processes_lora_through_recipe(tmp_path: Path, tiny_bert: Path) -> None:
    recipe = ROOT / "recipes" / "finetune.py"
    if not recipe.is_file():
        pytest.skip("recipes/finetune.py is absent")
    proc, out, probe = launch(tmp_path, tiny_bert, "lora", [str(recipe)])
    check_run(proc, out, probe, "lora")
    assert (out / "adapter_model.safetensors").is_file()


def test_two_processes_dann_keep_the_domain_classifier_in_sync(tmp_path: Path, tiny_bert: Path) -> None:
    """DANN's domain classifier is part of the module DDP wraps: its gradients are
    all-reduced like the model's, so both processes end with the same weights, and the
    checkpoints hold it."""
    data = write_rows(tmp_path / "target.csv", [{"review": r["text"]} for r in unique_rows(32)])
    out, probe = tmp_path / "run", tmp_path / "probe"
    config = run_config(tmp_path, tiny_bert, "full", out)
    cfg = yaml.safe_load(config.read_text())
    cfg["domain_adaptation"] = {"target": str(data), "text_column": "review", "method": "dann"}
    cfg["training"].update(save_strategy="steps", save_steps=STEPS)
    config.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [*LAUNCH, "--main_process_port", str(free_port()), str(ROOT / "tests" / "launch_probe.py"), "train", str(config)],
        cwd=tmp_path, env=launch_env(probe), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    hashes = [json.loads((probe / f"rank{r}.params.json").read_text()) for r in (0, 1)]
    classifier = [name for name in hashes[0] if "domain_classifier" in name]
    assert classifier and hashes[0] == hashes[1]
    from safetensors import safe_open

    with safe_open(str(out / f"checkpoint-{STEPS}" / "model.safetensors"), "pt") as f:
        assert any(key.startswith("domain_classifier.") for key in f.keys())
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # the run's model: the task model alone
        assert not any("domain_classifier" in key for key in f.keys())
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS and any("domain_loss" in e for e in state["log_history"])


def test_accelerate_configs_name_their_launch_command() -> None:
    """recipes/accelerate/*.yaml: valid accelerate configs whose first line is the launch command."""
    configs = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
    assert {p.stem for p in configs} >= {"single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2"}
    for path in configs:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# accelerate launch --config_file recipes/accelerate/" + path.name), path
        cfg = load_config_from_file(str(path))  # what `accelerate launch --config_file` reads
        assert cfg.compute_environment.value == "LOCAL_MACHINE"
    types = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in configs}
    assert types["fsdp"] == "FSDP" and types["deepspeed_zero2"] == "DEEPSPEED" and types["multi_gpu"] == "MULTI_GPU"
    fsdp = load_config_from_file(str(ROOT / "recipes" / "accelerate" / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_use_orig_params"] is True  # frozen + trainable weights in one unit (partial, lora)
