"""Save and stop on SIGTERM and SIGINT: what a cluster's preemption, a time limit or a Ctrl-C
asks of a training run (``training.save_on_signal``, on by default).

Schedulers stop a job with SIGTERM and a grace period before SIGKILL (Slurm's
``--signal=TERM@120`` and time limits, Kubernetes, spot instances). While the Trainer trains,
:class:`SaveOnSignal` only records such a signal; at the next step boundary it has the Trainer
write its own full checkpoint (model, optimizer, scheduler, RNG states, the data position in
``trainer_state.json``) and end the loop, and :meth:`SaveOnSignal.after_training` raises
:class:`tlhub.errors.Stopped`, which ends the command with one line (how to resume) and exit
code 128 + the signal (143, 130), without evaluating or writing results as if the run had
finished. ``training.resume_from_checkpoint=true`` continues from exactly that step.

Under several processes (accelerate launch, torchrun) every process takes part in one
all-reduce of the flag at each step boundary, so all stop at the same step, whichever of
them got the signal, and one checkpoint is written (the Trainer's: the main process writes
the model and optimizer, each process its RNG state).

A second signal at least :data:`REPEAT_S` seconds after the first stops at once, as if tlhub
had no handler (SIGTERM ends the process, SIGINT raises KeyboardInterrupt); the checkpoint it
cuts short has no trainer_state.json and is never taken for a complete one
(tlhub.rundir.complete_checkpoint), and the Trainer deletes older checkpoints only after a
new one is whole, so the previous complete checkpoint stays usable. A signal the process
inherited as ignored (a background job's SIGINT, as a shell starts it) stays ignored when
repeated: the first request, save and stop, stands. A repeat within
:data:`REPEAT_S` counts as the same request: launchers forward the signal they receive to
every worker, and schedulers signal every process of a job.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tlhub.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_S = 3.0  # a repeat sooner than this is the same request, delivered twice


class SaveOnSignal(TrainerCallback):
    """Record SIGTERM/SIGINT during ``Trainer.train``; at the next step boundary save a
    checkpoint and stop, on every process at the same step."""

    def __init__(self) -> None:
        self.received = 0  # the signal this process got (0: none)
        self.received_at = 0.0
        self.stop_signal = 0  # the signal every process stops for, agreed at a step boundary
        self.saved_step: int | None = None  # the step of the last checkpoint the Trainer wrote
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------ the handlers

    @contextmanager
    def listening(self) -> Iterator[None]:
        """The handlers, installed for the block (training) and the previous ones restored after.
        Only the main thread can install handlers; elsewhere signals keep their behaviour."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.received, self.stop_signal, self.saved_step = 0, 0, None
        self._previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        for signum in SIGNALS:
            signal.signal(signum, self._handle)
        try:
            yield
        finally:
            self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not self.received:
            self.received, self.received_at = signum, now
            return
        if now - self.received_at < REPEAT_S:  # the same request, forwarded by a launcher or sent to every process
            return
        previous = self._previous.get(signum, signal.SIG_DFL)  # asked again: stop at once, as without tlhub
        if previous == signal.SIG_IGN:
            # Without tlhub this signal would be ignored (a background job's SIGINT, nohup): so is the
            # repeat, and the first request (save, then stop) stands; restoring the handlers here
            # would let the cut-short run end as if it had finished.
            return
        self._restore()
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    # ------------------------------------------------------------------ the Trainer's loop

    def agreed(self, args: TrainingArguments) -> int:
        """The signal any process received (0: none). Every process calls it at the same point."""
        flag = self.received
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            tensor = torch.tensor([flag], dtype=torch.int64, device=args.device)
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
            flag = int(tensor.item())
        return flag

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.stop_signal or not self._previous:
            return
        self.stop_signal = self.agreed(args)
        if self.stop_signal:  # save now, without the evaluation this step may have been due (the grace period is short)
            control.should_save = True
            control.should_evaluate = False

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.saved_step = state.global_step
        if self.stop_signal:
            # Set after the checkpoint is written: its trainer state must not read as a run that
            # stopped early (tlhub.rundir.training_finished), so that the resume trains on.
            control.should_training_stop = True

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.stop_signal:  # the epoch was cut short: no end-of-epoch evaluation or second save
            control.should_save = False
            control.should_evaluate = False

    def after_training(self, trainer: Any) -> None:
        """After ``Trainer.train`` returned: raise Stopped when a signal asked to stop, having
        saved a checkpoint of the last step if the signal came after the loop's last boundary."""
        if not self._previous:
            return
        signum = self.stop_signal or self.agreed(trainer.args)
        if not signum:
            return
        step = trainer.state.global_step
        if self.saved_step != step:
            from tlhub.compat import save_checkpoint

            save_checkpoint(trainer)
        raise Stopped(signum, step, Path(trainer.args.output_dir) / f"checkpoint-{step}")
