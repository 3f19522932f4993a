"""`tlhub train` with test probes, for tests that launch real processes.

    accelerate launch ... tests/launch_probe.py train CONFIG [overrides]
    accelerate launch ... tests/launch_probe.py recipes/finetune.py CONFIG [overrides]
    python tests/launch_probe.py train CONFIG [overrides]

Runs exactly `tlhub.cli.main(argv)` (or the given script, as `__main__`), after wrapping `tlhub.pipeline.build_trainer` so that
the Trainer it builds also

- records, per process, every training example its data loader hands out
  (``$TLHUB_PROBE_DIR/rank<RANK>.jsonl``: the token ids of each example) and the
  process's distributed setup (``$TLHUB_PROBE_DIR/rank<RANK>.env.json``), so a test
  can check that processes saw different shards;
- with ``TLHUB_PROBE_STALL_AT=N``, after the checkpoint of step N is saved, writes
  ``$TLHUB_PROBE_DIR/saved-N`` and sleeps, so a test can SIGKILL a run at a known point;
- with ``TLHUB_PROBE_STALL_IN_SAVE=1``, in the final save after the model files are in
  place and before trainer_state.json and all_results.json, writes
  ``$TLHUB_PROBE_DIR/final-save`` and sleeps;
- with ``TLHUB_PROBE_SIGNAL_AT=N``, at the end of step N (before tlhub's own step-end check),
  writes ``$TLHUB_PROBE_DIR/step-N.rank<RANK>`` holding the process id and waits until this
  process has received a signal (tlhub.preemption's record of it), so a test can signal a run
  at a known step; ``TLHUB_PROBE_SIGNAL_RANKS`` (default: all) names the ranks that wait;
- with ``TLHUB_PROBE_STALL_IN_CHECKPOINT=N``, in the save of checkpoint-N after its model
  files and before its optimizer and trainer state, writes ``$TLHUB_PROBE_DIR/checkpoint-N``
  and sleeps (``TLHUB_PROBE_STALL_S`` seconds, default 60), so a test can interrupt a
  checkpoint half-written;
- at the end of training, writes a hash of every parameter the Trainer trained (the
  model and what a method adds, such as DANN's domain classifier) to
  ``$TLHUB_PROBE_DIR/rank<RANK>.params.json``, so a test can check that processes agree.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

import tlhub.pipeline
from tlhub.cli import main

PROBE_DIR = Path(os.environ.get("TLHUB_PROBE_DIR", "."))
RANK = os.environ.get("RANK", "0")


class Stall(TrainerCallback):
    """Sleep after the checkpoint of step `step` is written (a stand-in for a long run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 - Trainer's callback signature
        if state.global_step == self.step and state.is_world_process_zero:
            (PROBE_DIR / f"saved-{self.step}").write_text("saved\n")
            time.sleep(300)


class WaitForSignal(TrainerCallback):
    """At the end of step `step`, say so (with the pid) and wait until this process got a signal."""

    def __init__(self, trainer, step: int) -> None:  # noqa: ANN001
        self.trainer, self.step = trainer, step

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.global_step != self.step:
            return
        (PROBE_DIR / f"step-{self.step}.rank{RANK}").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + 120
        stop = self.trainer.signal_stop  # None with training.save_on_signal false: the signal ends the process here
        while not (stop is not None and stop.received) and time.monotonic() < deadline:
            time.sleep(0.05)


class ParameterHash(TrainerCallback):
    """At the end of training, a hash of each trained parameter on this process."""

    def on_train_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        import hashlib

        hashes = {name: hashlib.sha256(p.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]
                  for name, p in model.named_parameters() if p.requires_grad}  # fmt: skip
        (PROBE_DIR / f"rank{RANK}.params.json").write_text(json.dumps(hashes, sort_keys=True))


def _stalling_final_save(write_json):  # noqa: ANN001
    def write(path, data):  # noqa: ANN001, ANN202
        if Path(path).name == "trainer_state.json":
            (PROBE_DIR / "final-save").write_text("saving\n")
            time.sleep(300)
        return write_json(path, data)

    return write


def _recording(collate):  # noqa: ANN001
    log = PROBE_DIR / f"rank{RANK}.jsonl"

    def collate_and_record(features):  # noqa: ANN001
        batch = collate(features)
        with log.open("a") as f:
            if "input_ids" in batch:  # token ids without padding
                rows = [[i for i, m in zip(ids, mask) if m] for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())]
            else:  # cached features, pixels or waveforms: a rounded fingerprint of each example
                key = next(k for k in ("features", "pixel_values", "input_values") if k in batch)
                rows = [[round(v, 4) for v in row.flatten()[:16].tolist()] for row in batch[key]]
            f.writelines(json.dumps(row) + "\n" for row in rows)
        return batch

    return collate_and_record


def _record_training_batches(trainer):  # noqa: ANN001
    """The training data loader (only it, not evaluation's) collates through the recorder."""
    build = trainer.get_train_dataloader

    def get_train_dataloader():  # noqa: ANN202
        collate = trainer.data_collator
        trainer.data_collator = _recording(collate)
        try:
            return build()
        finally:
            trainer.data_collator = collate

    trainer.get_train_dataloader = get_train_dataloader


def _stall_in_checkpoint(trainer, step: int) -> None:  # noqa: ANN001
    """The Trainer writes a checkpoint's model first (save_model), then the rest: stall between."""
    save_model = trainer.save_model

    def save(output_dir=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        save_model(output_dir, *args, **kwargs)
        if output_dir is not None and Path(output_dir).name == f"checkpoint-{step}":
            PROBE_DIR.mkdir(parents=True, exist_ok=True)
            (PROBE_DIR / f"checkpoint-{step}").write_text("model saved\n")
            for _ in range(int(float(os.environ.get("TLHUB_PROBE_STALL_S", "60")) / 0.05)):
                time.sleep(0.05)

    trainer.save_model = save


def _probed(build_trainer):  # noqa: ANN001
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003
        trainer = build_trainer(*args, **kwargs)
        if os.environ.get("TLHUB_PROBE_DIR"):
            PROBE_DIR.mkdir(parents=True, exist_ok=True)
            _record_training_batches(trainer)
            state = trainer.accelerator.state
            env = {
                "rank": state.process_index,
                "world_size": state.num_processes,
                "distributed_type": str(state.distributed_type),
                "ddp_find_unused_parameters": trainer.args.ddp_find_unused_parameters,
            }
            (PROBE_DIR / f"rank{RANK}.env.json").write_text(json.dumps(env))
            trainer.add_callback(ParameterHash())
        ranks = os.environ.get("TLHUB_PROBE_SIGNAL_RANKS")
        if os.environ.get("TLHUB_PROBE_SIGNAL_AT") and (ranks is None or RANK in ranks.split(",")):
            PROBE_DIR.mkdir(parents=True, exist_ok=True)  # first in line: before tlhub's own check at the step's end
            trainer.callback_handler.callbacks.insert(0, WaitForSignal(trainer, int(os.environ["TLHUB_PROBE_SIGNAL_AT"])))
        if os.environ.get("TLHUB_PROBE_STALL_IN_CHECKPOINT"):
            _stall_in_checkpoint(trainer, int(os.environ["TLHUB_PROBE_STALL_IN_CHECKPOINT"]))
        if os.environ.get("TLHUB_PROBE_STALL_AT"):
            trainer.add_callback(Stall(int(os.environ["TLHUB_PROBE_STALL_AT"])))
        return trainer

    return wrapper


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tlhub.pipeline.build_trainer = _probed(tlhub.pipeline.build_trainer)
    if os.environ.get("TLHUB_PROBE_STALL_IN_SAVE"):
        tlhub.pipeline.atomic_write_json = _stalling_final_save(tlhub.pipeline.atomic_write_json)
    if sys.argv[1].endswith(".py"):
        import runpy

        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        sys.exit(main(sys.argv[1:]))
