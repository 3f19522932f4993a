"""One run per folder: claiming ``training.output_dir``, checking a resume, clearing a used
folder, finding, restoring and saving checkpoints and the run's model.

A run folder holds the files of one config. ``config.yaml`` is written when a run starts
(so every checkpoint in the folder is known to come from it) and again at the end;
``tlhub_run.json`` and ``all_results.json``, written last, mark a finished run. Before
anything trains, :func:`prepare_output_dir` compares the config of the run with the one
the folder holds:

- a fresh run (no resume) into a folder of *another* config is refused, naming what
  differs, unless ``training.overwrite_output_dir: true``; then, and for a rerun of the
  same config, the folder is cleared first, so that no file of the earlier run (a LoRA
  adapter, a pooled head, checkpoints) can be loaded as the new run's;
- a resume (``training.resume_from_checkpoint``) needs the checkpoint's config to be the
  current one, except for how long training goes (``num_train_epochs``, ``max_steps``,
  ``early_stopping_patience``), which may grow to continue a run;
- settings that do not change what is trained (logging, progress bars, trackers, data
  loader workers, the resume and overwrite switches themselves) are ignored.

Clearing renames the folder aside in one step, so a crash midway leaves either the old run
whole or an empty folder, never a mix that loads. A finished run waits aside
(``.<name>.tlhub-previous``) until the new run has written its results, and comes back if the
new run fails (:func:`run_folder`, :func:`recover`): a full disk in the final save loses nothing.

A folder is one live run's at a time (:func:`claim_output_dir`): a lock file beside it,
``.<name>.tlhub-lock``, is held (``flock``) for as long as the run lives and names its owner's
pid, host and start; a second run into the folder is refused whatever its overwrite flag. The
operating system drops the lock when its owner exits, also on a crash or SIGKILL, so a lock
left behind by a dead run is simply taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlhub.errors import ConfigError, Stopped, TlhubError, WriteError
from tlhub.io import guarded_write, previous_run_dir, write_failure
from tlhub.settings import read_yaml, write_yaml

if TYPE_CHECKING:
    from torch import nn
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    from tlhub.config import RunConfig
    from tlhub.trainer import TlhubTrainer

RUN_CONFIG = "config.yaml"
RUN_INFO = "tlhub_run.json"
RESULTS = "all_results.json"
TARGET_PREDICTIONS = "target_predictions.jsonl"  # domain adaptation: the model's labels for the target rows
CHECKPOINT_PREFIX = "checkpoint-"
LOCK_SUFFIX = ".tlhub-lock"
SAVE_STAGING = ".tlhub-save.tmp"  # inside the folder: the final save, before its files are renamed into place

# `training` keys that say how a run is carried out or watched, not what it trains.
NOT_IDENTITY = frozenset(
    {
        "output_dir",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "save_on_signal",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_dir",
        "logging_nan_inf_filter",
        "disable_tqdm",
        "report_to",
        "run_name",
        "project",
        "trackio_space_id",
        "dataloader_num_workers",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "dataloader_pin_memory",
        "save_total_limit",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
    }
)
# How long training goes: a resume may raise these to continue a finished run.
LENGTH_KEYS = frozenset({"training.num_train_epochs", "training.max_steps", "training.early_stopping_patience"})


def identity(config: dict[str, Any]) -> dict[str, str]:
    """The settings that define a run, flattened to dotted keys (``strategy.lora.r``)."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                if prefix == "training." and key in NOT_IDENTITY:
                    continue
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = repr(node)

    walk(config, "")
    return flat


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each defining setting that differs between two configs."""
    a, b = identity(old), identity(new)
    missing = repr(None)
    return [f"{key}: {a.get(key, missing)} -> {b.get(key, missing)}" for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def _shown(diffs: list[str]) -> str:
    return "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds (part of) a tlhub run: its config, results or checkpoints."""
    if not folder.is_dir():
        return False
    if any((folder / name).exists() for name in (RUN_CONFIG, RUN_INFO, RESULTS)):
        return True
    return any(child.name.startswith(CHECKPOINT_PREFIX) for child in folder.iterdir())


def stored_config(folder: Path) -> dict[str, Any] | None:
    """The config a run folder was written by (None when it has no readable config.yaml)."""
    try:
        return read_yaml(folder / RUN_CONFIG)
    except TlhubError:
        return None


def check_output_dir(path: Path) -> None:
    """A usable output folder: not a file, creatable."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"training.output_dir: {path} is a file; name a folder for the run's outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"training.output_dir: cannot create {path} ({exc.strerror or exc}); choose a writable folder") from None


def clear_run_dir(path: Path) -> None:
    """Empty `path` for a new run; a finished run in it is kept aside until the new one finishes.

    The folder is renamed aside in one step (the old run leaves output_dir at once): a finished
    run (all_results.json) to :func:`previous_run_dir`, from where :func:`run_folder` deletes it
    once the new run has written its own results, or gives it back when the new run fails; an
    unfinished one to a trash folder that is deleted at once. Where that rename is impossible (a
    mount point), the files that mark a finished run go first, then the rest, so a crash midway
    never leaves a folder that loads (and nothing can be kept aside).
    """
    path = path.resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise ConfigError(
            f"training.output_dir: {path} is the working folder or above it; tlhub clears a used run folder "
            "before a new run, so give the run a folder of its own"
        )
    trash = path.with_name(f".{path.name}.tlhub-replaced")
    shutil.rmtree(trash, ignore_errors=True)
    aside = trash
    if (path / RESULTS).is_file():  # newer than any run kept aside before it
        aside = previous_run_dir(path)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(path, aside)
    except OSError:
        for name in (RESULTS, RUN_INFO, RUN_CONFIG):
            (path / name).unlink(missing_ok=True)
        for child in path.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(trash, ignore_errors=True)


def recover(output_dir: Path) -> str:
    """After a run failed in its folder (main process): drop what must not be loaded (the save's
    staging folder, checkpoints cut short) and give back the finished run this one was replacing;
    return what the folder keeps, for the error message."""
    out = Path(output_dir)
    shutil.rmtree(out / SAVE_STAGING, ignore_errors=True)
    if out.is_dir():
        for folder in out.glob(f"{CHECKPOINT_PREFIX}*"):
            if folder.is_dir() and not complete_checkpoint(folder):
                shutil.rmtree(folder, ignore_errors=True)
    previous = previous_run_dir(out)
    if previous.is_dir() and not (out / RESULTS).is_file():
        failed = out.with_name(f".{out.name}.tlhub-failed")
        try:
            shutil.rmtree(failed, ignore_errors=True)
            if out.exists():
                os.replace(out, failed)
            os.replace(previous, out)
        except OSError:
            return f"the previous run is kept in {previous}"
        shutil.rmtree(failed, ignore_errors=True)
        return f"{out} holds the previous run again, as it was"
    if (out / RESULTS).is_file():
        return f"{out} keeps its finished run"
    last = last_complete_checkpoint(out)
    if last is not None:
        return f"{out} keeps its last complete checkpoint, {Path(last).name} (resume with training.resume_from_checkpoint=true)"
    return f"{out} holds no finished run and no checkpoint"


@contextmanager
def run_folder(cfg: RunConfig, args: TrainingArguments) -> Iterator[str | None]:
    """``training.output_dir`` held for this run while the block runs (:func:`claim_output_dir`,
    on the main process), made this config's (:func:`prepare_output_dir`); yields the checkpoint
    to resume from.

    How the block ends decides what the folder keeps (main process):

    - it finishes: a finished run this one replaced (kept aside by :func:`clear_run_dir`) is deleted;
    - a signal stopped training (:class:`Stopped`, after a checkpoint): the checkpoint stays for
      the resume, and a replaced finished run stays aside until the resumed run finishes;
    - anything else (a failed write, a crash, a diverged loss): :func:`recover` gives back the
      replaced run, or keeps the complete checkpoints, and drops what is half-written. A failed
      write, whatever raised it (:func:`tlhub.io.write_failure`), becomes a WriteError that
      names the path and says what was kept: the command prints it in one line.
    """
    out = cfg.output_dir
    main = args.process_index == 0
    try:
        with guarded_write(lock_path(out)):
            lock = claim_output_dir(out) if main else None
    except WriteError as exc:  # a read-only or full filesystem: nothing was touched yet
        exc.kept.append(f"{out} is untouched")
        raise
    prepared = False
    try:
        checkpoint = prepare_output_dir(cfg, args)
        prepared = True
        yield checkpoint
    except Stopped as exc:
        if main and previous_run_dir(out).is_dir():
            exc.notes.append(f"the finished run it replaces waits in {previous_run_dir(out)} until it finishes")
        raise
    except BaseException as exc:
        ours = prepared or isinstance(exc, WriteError)  # a write fails in prepare only once the folder is this run's
        kept = recover(out) if main and ours else None
        if isinstance(exc, WriteError):
            exc.kept += [kept] if kept else []
            raise
        reason = write_failure(exc, out) if isinstance(exc, Exception) else None
        if reason is None:
            raise
        named = getattr(exc, "filename", None)
        raise WriteError(Path(named) if named else out, reason, kept=[kept] if kept else []) from exc
    else:
        if main:
            shutil.rmtree(previous_run_dir(out), ignore_errors=True)
    finally:
        if lock is not None:
            lock.release()


def prepare_output_dir(cfg: RunConfig, args: TrainingArguments) -> str | None:
    """Make ``training.output_dir`` this run's folder; return the checkpoint to resume from.

    The main process checks, clears and claims the folder first; the other processes then
    only look up the checkpoint, which is the same for all.
    """
    out = cfg.output_dir
    current = cfg.to_dict()
    overwrite = cfg.overwrite_output_dir
    with args.main_process_first(desc="run folder", local=False):
        if not args.process_index == 0:
            return resume_checkpoint(cfg)
        check_output_dir(out)
        checkpoint = resume_checkpoint(cfg)
        source = Path(checkpoint).parent if checkpoint else out
        if checkpoint is not None or holds_run(out):
            old = stored_config(source)
            diffs = differences(old, current) if old is not None else [f"{source / RUN_CONFIG}: missing, so its config is unknown"]
            defining = [d for d in diffs if d.split(":")[0] not in LENGTH_KEYS]
            if checkpoint is not None and defining:
                if not overwrite:
                    raise ConfigError(
                        f"training.resume_from_checkpoint: {checkpoint} was written by another config ({_shown(defining)}); "
                        "resume with that config, or set training.overwrite_output_dir=true to start afresh"
                    )
                checkpoint = None
            if checkpoint is None:
                if diffs and not overwrite:
                    raise ConfigError(
                        f"training.output_dir: {out} holds a run of another config ({_shown(diffs)}); "
                        "set training.overwrite_output_dir=true to replace it, or choose another output_dir"
                    )
                clear_run_dir(out)
            elif diffs:  # a resume that trains longer: the finished run's results no longer hold
                for name in (RESULTS, RUN_INFO, TARGET_PREDICTIONS):
                    (out / name).unlink(missing_ok=True)
        write_yaml(cfg.to_dict(), out / RUN_CONFIG)  # every checkpoint from now on is this config's
        return checkpoint


# --------------------------------------------------------------------------- one live run per folder


def lock_path(output_dir: Path) -> Path:
    """The lock file of a run folder: beside it, so that clearing the folder keeps the lock."""
    folder = Path(os.path.abspath(output_dir))
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


class RunLock:
    """A run's hold on its output folder; :meth:`release` (or the process ending) lets go."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still held: a waiting claimant then makes a new file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_output_dir(output_dir: Path) -> RunLock:
    """Hold `output_dir` for this run, or raise a ConfigError naming the live run that holds it.

    A second run into a folder in use would clear it under the first (with
    ``overwrite_output_dir``) or mix their files, and both would report success, so it is
    refused whatever the overwrite flag. The lock is an ``flock`` on a file beside the folder
    that holds the owner's pid, host and start: the kernel releases it when the owner exits,
    crashes or is killed, so a lock file left by a dead run is taken over without a question.
    """
    import fcntl

    path = lock_path(output_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"training.output_dir: cannot create {path.parent} ({exc.strerror or exc}); choose a writable folder") from None
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"training.output_dir: {output_dir} is in use by {_owner(path)}; wait for it to finish, "
                              "or give this run another output_dir") from None  # fmt: skip
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner removed the file as we opened it: claim the new one
            os.close(fd)
            continue
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "command": " ".join(sys.argv)}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        return RunLock(path, fd)
    raise ConfigError(f"training.output_dir: {output_dir}: could not take its lock {path}; try again")


def _owner(path: Path) -> str:
    """How an error names the run holding a lock file."""
    try:
        owner = json.loads(path.read_text())
        return f"another run (pid {owner['pid']} on {owner['host']}, since {owner['started']}: {owner['command']})"
    except (OSError, ValueError, KeyError):
        return f"another run (see {path})"


# --------------------------------------------------------------------------- checkpoints


def complete_checkpoint(folder: Path) -> bool:
    """True when the Trainer finished writing checkpoint `folder`.

    The Trainer writes a checkpoint in place: weights, optimizer, scheduler, RNG state,
    and ``trainer_state.json`` last. A run killed while saving leaves a folder without
    a readable trainer_state.json (or one for another step); such a folder is skipped.
    """
    import json

    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        step = int(folder.name.removeprefix(CHECKPOINT_PREFIX))
    except (OSError, ValueError):
        return False
    weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("pytorch_model*"))
    return state.get("global_step") == step and weights


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder in `output_dir`, or None."""
    if not output_dir.is_dir():
        return None
    found = []
    for folder in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = folder.name.removeprefix(CHECKPOINT_PREFIX)
        if folder.is_dir() and suffix.isdigit() and complete_checkpoint(folder):
            found.append((int(suffix), folder))
    return str(max(found)[1]) if found else None


def resume_checkpoint(cfg: RunConfig) -> str | None:
    """The checkpoint to resume from, per ``training.resume_from_checkpoint``.

    ``auto``: the last complete checkpoint in output_dir, or a fresh start when there is
    none. ``true``: the same, but having none is an error. A path: that checkpoint.
    Incomplete checkpoints (a run killed while saving) are skipped, not loaded.
    """
    value = cfg.training_args.resume_from_checkpoint
    if value in (None, False, "false", "False", ""):
        return None
    if value in ("auto", True, "true", "True"):
        found = last_complete_checkpoint(cfg.output_dir)
        if found is None and value != "auto":
            raise ConfigError(
                f"training.resume_from_checkpoint: no complete checkpoint in {cfg.output_dir}; "
                "use auto to start fresh when there is none"
            )
        return found
    path = Path(str(value))
    if not complete_checkpoint(path):
        raise ConfigError(
            f"training.resume_from_checkpoint: {path} is not a complete checkpoint folder "
            "(no trainer_state.json and weights); pass a checkpoint-N folder or auto"
        )
    return str(path)


# --------------------------------------------------------------------------- restoring and saving


def checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    """The trainer state a checkpoint recorded (its ``trainer_state.json``)."""
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())


def training_finished(state: dict[str, Any], args: Seq2SeqTrainingArguments) -> bool:
    """Whether a checkpoint's trainer state already reached the end the *current* settings ask for.

    The end is ``max_steps`` when set, else ``num_train_epochs``, read from the current
    arguments, so a resume with more epochs or steps continues training. A run that early
    stopping ended stays ended.
    """
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    step, epoch, planned = state.get("global_step", 0), state.get("epoch") or 0.0, state.get("max_steps", 0)
    if control.get("should_training_stop") and step < planned:  # stopped before its planned end: early stopping
        return True
    if args.max_steps > 0:
        return step >= args.max_steps
    return step >= planned > 0 and epoch >= args.num_train_epochs - 1e-6


def restore_finished(model: nn.Module, state: dict[str, Any], checkpoint: str, load_best: bool) -> dict[str, Any]:
    """Restore into `model` the weights of a checkpoint that finished training (of the best
    checkpoint, when the run loads the best model at the end and that folder is still there),
    and give the train_* metrics from its log: train_loss the mean of the logged losses,
    step-weighted; timings 0, so that all_results.json has an uninterrupted run's keys."""
    best = state.get("best_model_checkpoint")
    restore_weights(model, best if load_best and best and Path(best).is_dir() else checkpoint)
    total, steps, last = 0.0, 0, 0
    for entry in state.get("log_history", []):
        if "loss" in entry and "step" in entry:
            total += entry["loss"] * (entry["step"] - last)
            steps, last = steps + entry["step"] - last, entry["step"]
    return {
        "epoch": state.get("epoch"),
        "train_loss": total / steps if steps else float("nan"),
        "train_runtime": 0.0,
        "train_samples_per_second": 0.0,
        "train_steps_per_second": 0.0,
    }


def restore_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load the weights a Trainer checkpoint holds into `model` (what the Trainer trains: a
    transformers model, a PEFT model, or a module of tlhub's), from its safetensors files."""
    import torch  # (imported here: the rest of the run folder's code needs no torch)
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(checkpoint)
    if isinstance(model, PeftModel) and (folder / "adapter_model.safetensors").is_file():
        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        return
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("model*.safetensors")):
        state.update(load_file(str(file)))
    if not state:
        raise TlhubError(f"training.resume_from_checkpoint: {folder} holds no safetensors weights to restore")
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise TlhubError(f"training.resume_from_checkpoint: {folder} holds weights this model lacks ({', '.join(unexpected[:3])}); "
                         "resume with the config that wrote it")  # fmt: skip
    model.load_state_dict(state, strict=False)  # tied weights (an output projection) are saved once


def save_task_model(trainer: TlhubTrainer, model: nn.Module, directory: Path) -> None:
    """Save the run's model (`model`, what the strategy built) into `directory`, every process
    taking part (sharded weights are gathered first). Where the Trainer trained it inside a
    DomainAdaptedModel, the task model alone is saved: the domain classifier is a means."""
    if trainer.model is model:
        trainer.save_model(str(directory))
        return
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathers under FSDP/DeepSpeed
    if trainer.is_world_process_zero():
        own = {name.removeprefix("model."): tensor for name, tensor in state.items() if name.startswith("model.")}
        model.save_pretrained(str(directory), state_dict=own)
