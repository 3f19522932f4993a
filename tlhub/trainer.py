"""The Trainer side of tlhub: the arguments of every Trainer a run builds, the one Trainer
subclass (:class:`TlhubTrainer`) with every override tlhub makes, and how a run trains or
restores a finished checkpoint (the checkpoint's restore and the model's save are
:mod:`tlhub.rundir`'s).

A run may train more than once in one process: contrastive pair tuning or DAPT's continued
pretraining come before the run's own training. accelerate holds one precision per process,
so every such stage derives its arguments from the run's resolved ones (:func:`stage_arguments`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer

from tlhub.errors import TlhubError
from tlhub.io import guarded_write, previous_run_dir
from tlhub.preemption import SaveOnSignal
from tlhub.progress import quiet
from tlhub.rundir import checkpoint_state, restore_finished, training_finished
from tlhub.tasks import Task, get_task
from tlhub.tasks.base import RowScorer

if TYPE_CHECKING:
    from tlhub.config import RunConfig
    from tlhub.domain.adaptation import Adaptation
    from tlhub.training_args import TrainingConfig


class TrainingDiverged(TlhubError):
    """The training loss became NaN or infinite: the run stopped before saving anything."""


# --------------------------------------------------------------------------- arguments


def gpu_defaults(modality: str, user: dict[str, Any], gpu: bool, bf16_supported: bool) -> dict[str, Any]:
    """Throughput settings tlhub picks where the config leaves them out.

    On a GPU: pinned host memory (without one it only warns); bfloat16 mixed precision
    where the GPU has it (Ampere or newer) and neither ``bf16`` nor ``fp16`` is set; PyTorch's
    fused AdamW (the same update in one kernel per step instead of one per tensor); and for
    images and audio, whose decoding runs on the CPU, dataloader worker processes.
    """
    out: dict[str, Any] = {"dataloader_pin_memory": gpu}
    if gpu and bf16_supported and "bf16" not in user and "fp16" not in user:
        out["bf16"] = True
    if gpu and "optim" not in user:
        out["optim"] = "adamw_torch_fused"
    if gpu and modality in ("image", "audio"):
        out["dataloader_num_workers"] = min(4, max(1, (os.cpu_count() or 2) // 2))
    return out


def training_arguments(cfg: RunConfig) -> TrainingConfig:
    """The run's training arguments: the config's `training` section (checked when the config
    was built, :class:`~tlhub.training_args.TrainingConfig`) with what only the run knows,
    wherever the section leaves it out: the task's label names, best-model metric and
    generation settings, and on a GPU :func:`gpu_defaults`. Always: the seq2seq form of the
    arguments, whose generation settings serve the tasks that generate, and no push by the
    Trainer (training.push_to_hub pushes the finished run folder: ``push_run``).
    """
    task = get_task(cfg.task)
    main, greater = task.best_metric(cfg)
    given = cfg.training
    values: dict[str, Any] = {"label_names": list(task.label_names), **task.training_defaults}  # e.g. detection: eval batches kept apart
    if task.metrics_read_inputs:  # EvalPrediction.inputs: a forecast's history (seasonal-naive floor, MASE's scale)
        values["include_for_metrics"] = ["inputs"]
    if task.generates(cfg):  # a decoder LM generates in TlhubTrainer.prediction_step, a seq2seq model in Seq2SeqTrainer's
        values.update(predict_with_generate=not task.prompted, generation_max_length=cfg.data.max_target_length)
    if cfg.early_stopping_patience is not None:
        values.update(load_best_model_at_end=True, metric_for_best_model=main, greater_is_better=greater)
    gpu = torch.cuda.is_available() and not cfg.training_args.use_cpu
    values.update(gpu_defaults(cfg.modality, given, gpu, gpu and torch.cuda.is_bf16_supported()))
    values = {key: value for key, value in values.items() if key not in given}  # the config's own keys win
    if quiet():  # tlhub --quiet: the Trainer's bars go too
        values["disable_tqdm"] = True
    values.update(push_to_hub=False, remove_unused_columns=False)
    return dataclasses.replace(cfg.training_args, **values)


# TrainingArguments fields that belong to the process rather than to one training: a stage's
# Trainer (contrastive pair tuning, DAPT) copies them from the run's resolved arguments, because
# accelerate allows one precision per process, and a stage should run where the run runs.
PROCESS_ARGUMENTS = (
    "bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "tf32", "use_cpu", "ddp_backend", "ddp_timeout",
    "dataloader_pin_memory", "disable_tqdm", "logging_steps", "seed",
)  # fmt: skip


def stage_arguments(run: Seq2SeqTrainingArguments, output_dir: str | Path, **values: Any) -> Seq2SeqTrainingArguments:
    """TrainingArguments for a stage of a run (its own output folder, epochs, learning rate,
    batch size in `values`) with the run's precision and device settings (PROCESS_ARGUMENTS):
    tlhub's bf16 default on a GPU reaches every Trainer of the process, or accelerate refuses
    the second one ("AcceleratorState has already been initialized and cannot be changed")."""
    inherited = {key: getattr(run, key) for key in PROCESS_ARGUMENTS}
    defaults = {"save_strategy": "no", "eval_strategy": "no", "report_to": "none", "remove_unused_columns": False}
    return Seq2SeqTrainingArguments(output_dir=str(output_dir), **{**inherited, **defaults, **values})


def layered_optimizer(lr_scales: list[tuple[list[nn.Parameter], float]] | None, args: Seq2SeqTrainingArguments) -> torch.optim.Optimizer | None:
    """AdamW with one parameter group per learning-rate scale (layer-wise decay), or None for
    the Trainer's own optimizer."""
    if not lr_scales:
        return None
    groups = [{"params": params, "lr": args.learning_rate * scale, "weight_decay": args.weight_decay} for params, scale in lr_scales]
    fused = str(args.optim).endswith("adamw_torch_fused") and torch.cuda.is_available() and not args.use_cpu
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, fused=fused or None)


# --------------------------------------------------------------------------- the Trainer


class TlhubTrainer(Seq2SeqTrainer):
    """transformers' Trainer, in its seq2seq form (generation at evaluation, for the tasks whose
    model generates; a plain Trainer otherwise), with every override tlhub makes:

    - ``__init__``: ``model_accepts_loss_kwargs = False``. transformers 5 treats a model whose
      forward takes ``**kwargs`` as one that divides its loss by ``num_items_in_batch``, and then
      neither divides by gradient_accumulation_steps nor undoes its scaling by the number of
      processes. The heads tlhub trains return per-batch means and ignore that count, so their
      loss and gradients grew with both; False restores the plain per-batch-mean arithmetic.
      With an `adaptation` (a run adapting to a target domain) the model is wrapped in its
      DomainAdaptedModel, so that DDP, checkpoints and resume see the domain classifier too.
    - :meth:`train`: with ``save_on_signal`` (the run's Trainer), SIGTERM and SIGINT save a
      checkpoint at the next step boundary and stop (tlhub.preemption); a checkpoint that cannot
      be written is a WriteError naming it.
    - :meth:`training_step`: a NaN or infinite loss stops the run (TrainingDiverged) before the
      optimizer applies it, naming the step and the learning rate; the Trainer itself would
      only leave it out of the logged loss (``logging_nan_inf_filter``) and train on.
    - :meth:`compute_loss`: with an adaptation, each training batch gets a target batch and the
      method's loss is added to the task loss (:meth:`Adaptation.loss`).
    - :meth:`create_optimizer`: with dann or cdan, the domain classifier's own group and rate
      (:meth:`Adaptation.add_classifier_group`).
    - :meth:`evaluate` and :meth:`predict`: Seq2SeqTrainer's only where the model generates
      (its eval_loss averages batches, not rows), the Trainer's otherwise; without the
      model-placement timing the Trainer adds when evaluation is the first to place the model
      (a run restored from its last checkpoint reports the keys of one that trained).
    - :meth:`log`: with an adaptation, the method's own loss and the schedule's coefficient.
    - :meth:`prediction_step`: a batch the task scores itself (:meth:`Task.prediction_step`: a
      decoder LM's, on the completion's loss and the completion it generates from the prompt);
      other batches as the Trainer (and Seq2SeqTrainer's generation) score them.
    - :meth:`evaluate` also adds the task's metrics computed from the Trainer's own (a language
      model's perplexity), and remembers the validation metrics with the step they scored, so
      that :meth:`final_evaluation` need not score the same weights twice.
    """

    def __init__(
        self, *args: Any, adaptation: Adaptation | None = None, patience: int | None = None, task: Task | None = None,
        save_on_signal: bool = False, **kwargs: Any,
    ) -> None:  # fmt: skip
        if adaptation is not None:
            kwargs["model"] = adaptation.wrap(kwargs["model"])
        if patience is not None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EarlyStoppingCallback(early_stopping_patience=patience)]
        super().__init__(*args, **kwargs)
        self.adaptation = adaptation
        self.task = task
        self.model_accepts_loss_kwargs = False
        self.last_evaluation: tuple[int, dict[str, float]] | None = None  # (global step, metrics) of the validation set
        self.loss_is_scaled_for_ga = False  # a compute_loss_func (class weights) returns a per-batch mean too
        self.signal_stop = SaveOnSignal() if save_on_signal else None
        if self.signal_stop is not None:
            self.add_callback(self.signal_stop)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's training; with ``save_on_signal``, SIGTERM/SIGINT save a checkpoint at
        the next step and raise Stopped (tlhub.preemption). A checkpoint write that fails is a
        WriteError naming the checkpoint."""
        with guarded_write(lambda: Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"):
            if self.signal_stop is None:
                return super().train(*args, **kwargs)
            with self.signal_stop.listening():
                output = super().train(*args, **kwargs)
                self.signal_stop.after_training(self)
            return output

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():  # one sync a step, as the Trainer's own NaN filter makes
            raise TrainingDiverged(self.divergence(float(loss)))
        return loss

    def divergence(self, loss: float) -> str:
        """What to tell the user when the loss became `loss` (NaN or infinite)."""
        step = self.state.global_step + 1
        rate = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.args.learning_rate
        checkpoints = sorted(Path(self.args.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
        kept = f"the last checkpoint, {checkpoints[-1].name}, is kept" if checkpoints else "no checkpoint was saved before it"
        if previous_run_dir(Path(self.args.output_dir)).is_dir():  # tlhub.rundir.recover gives it back
            kept = f"{self.args.output_dir} holds the finished run it was replacing again"
        return (
            f"training.learning_rate: the training loss became {loss} at step {step} (learning rate {rate:.3g}); the run "
            f"stopped and saved nothing ({kept}). Try a lower training.learning_rate, training.warmup_steps or "
            "training.max_grad_norm, and check the inputs for NaN or infinite values"
        )

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: torch.Tensor | int | None = None
    ) -> Any:
        if self.adaptation is None or not model.training:  # evaluation: the plain task loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        # Training beside a target domain: the method's loss added to the task's (tlhub.domain.adaptation)
        task_loss = partial(super().compute_loss, model, return_outputs=True, num_items_in_batch=num_items_in_batch)
        return self.adaptation.loss(self, task_loss, inputs, num_items_in_batch, return_outputs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.adaptation is not None:  # dann/cdan: the domain classifier's own group and rate (tlhub.domain.adaptation)
            self.adaptation.add_classifier_group(optimizer, self.model, self.args.learning_rate)
        return optimizer

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval", **kwargs: Any) -> dict[str, float]:
        # Seq2SeqTrainer's evaluation only where the model generates: its gathering (accelerator.gather,
        # not gather_for_metrics) averages eval_loss over batches, a short last batch counting as a
        # whole one; the Trainer's averages over rows.
        evaluate = super().evaluate if self.args.predict_with_generate else partial(Trainer.evaluate, self)
        if isinstance(self.compute_metrics, RowScorer):  # it reads the evaluated rows too (question answering's windows)
            self.compute_metrics.dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics = evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)
        # The Trainer times the model's placement when evaluation is the first to place it (a run
        # restored from its last checkpoint, `tlhub evaluate`): not a metric of the model.
        metrics = {k: v for k, v in metrics.items() if not k.endswith("_model_preparation_time")}
        metrics = {**metrics, **(self.task.derived_metrics(metrics, metric_key_prefix) if self.task is not None else {})}
        if eval_dataset is None and metric_key_prefix == "eval":
            self.last_evaluation = (self.state.global_step, metrics)
        return metrics

    def final_evaluation(self, cfg: RunConfig) -> dict[str, float]:
        """The validation metrics of the weights training left, after what the task tunes on
        validation (a multi-label threshold: Task.tune, its settings in the results too).

        The Trainer's last evaluation (``eval_strategy: epoch`` scores after the last epoch) is
        reused when it scored these very weights, as they are scored now: taken at the last step,
        no best model loaded back after it, nothing tuned since. Otherwise (no evaluation at the
        end, an earlier best model restored, a closed-form head, a tuned threshold) it scores now.
        With generation a pass is minutes: SmolLM2 on 990 rows spent 339 s, then 318 s again."""
        tuned = self.task.tune(cfg, self) if self.task is not None else {}
        best = self.state.best_global_step if self.args.load_best_model_at_end else None
        last = self.last_evaluation
        if not tuned and last is not None and last[0] == self.state.global_step and best in (None, self.state.global_step):
            return dict(last[1])
        return {**tuned, **self.evaluate()}

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test", **kwargs: Any) -> Any:
        predict = super().predict if self.args.predict_with_generate else partial(Trainer.predict, self)  # as evaluate
        if isinstance(self.compute_metrics, RowScorer):  # as evaluate: it reads the rows it scores
            self.compute_metrics.dataset = test_dataset
        return predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None, **gen_kwargs: Any
    ) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        own = self.task.prediction_step(self, model, inputs, prediction_loss_only) if self.task is not None else None
        if own is not None:  # the task scores this batch itself (a decoder LM generates from the prompt)
            return own
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self.adaptation is not None and "loss" in logs:
            logs.update(self.adaptation.log_entries(self.model))
        super().log(logs, *args, **kwargs)


def build_trainer(
    cfg: RunConfig,
    processor: Any,
    model: nn.Module,
    splits: dict[str, Any],
    collator: Any,
    args: Seq2SeqTrainingArguments,
    label_names: list[str] | None,
    lr_scales: list[tuple[list[nn.Parameter], float]] | None = None,
    adaptation: Adaptation | None = None,
) -> TlhubTrainer:
    """A run's TlhubTrainer: `model` trained on ``splits["train"]`` and evaluated on
    ``splits["validation"]``, batched by `collator`, scored by the task's metrics, with the
    task's loss where it brings one (class weights)."""
    task = get_task(cfg.task)
    main, greater = task.best_metric(cfg)  # the problem type is known now (data.problem_type: auto is decided with the data)
    if args.load_best_model_at_end and "metric_for_best_model" not in cfg.training and args.metric_for_best_model != main:
        args = dataclasses.replace(args, metric_for_best_model=main, greater_is_better=greater)
    return TlhubTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
        data_collator=collator,
        compute_metrics=get_task(cfg.task).compute_metrics(cfg, processor, label_names, args.predict_with_generate),
        optimizers=(layered_optimizer(lr_scales, args), None),
        adaptation=adaptation,
        patience=cfg.early_stopping_patience,
        task=task,
        compute_loss_func=task.loss_function(cfg, label_names, splits.get("train")),
        save_on_signal=cfg.training_args.save_on_signal,
    )


# --------------------------------------------------------------------------- training, or restoring a finished checkpoint


@dataclass
class Trained:
    """What training left: the train_* metrics of all_results.json, and for a run restored
    from a finished checkpoint rather than trained, that checkpoint's trainer state."""

    metrics: dict[str, Any]
    restored: dict[str, Any] | None = None

    def state(self, trainer: TlhubTrainer) -> dict[str, Any]:
        """What trainer_state.json records at the end: the Trainer's state (the evaluations
        after training included), on top of the checkpoint's for a restored run."""
        state = asdict(trainer.state)
        if self.restored is None:
            return state
        return {**self.restored, "log_history": self.restored.get("log_history", []) + state["log_history"]}


def train_or_restore(trainer: TlhubTrainer, checkpoint: str | None) -> Trained:
    """``trainer.train()`` (resuming from `checkpoint`), or, when that checkpoint already
    reached the end of training (a run killed after training, before its results were
    written), its weights restored instead: transformers would run one more step past
    max_steps when that is not the end of an epoch, or one more epoch after early stopping.
    The train_* metrics then come from the checkpoint's log (train_loss: the mean of the
    logged losses, step-weighted; timings 0), so all_results.json has the same keys as an
    uninterrupted run's. A checkpoint short of the current end resumes training.
    """
    state = checkpoint_state(checkpoint) if checkpoint else {}
    if not checkpoint or not training_finished(state, trainer.args):
        return Trained(dict(trainer.train(resume_from_checkpoint=checkpoint).metrics))
    # Already finished: its weights and the train_* metrics of its log (tlhub.rundir)
    return Trained(restore_finished(trainer.model, state, checkpoint, trainer.args.load_best_model_at_end), restored=state)
