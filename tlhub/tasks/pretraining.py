"""Self-supervised pretraining on unlabelled series (``modality: timeseries``, ``task:
pretraining``): masked patches reconstructed, as PatchTST is pretrained. The run folder is a
source model: a later classification or forecasting run names it as ``model.name_or_path``
and starts from its patch embedding and body. Scored by the reconstruction's mean squared
error on the validation series' masked patches (``eval_loss``; the same patches every
evaluation), against 1.0 for predicting each series' mean under the default std scaling."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tlhub.errors import ConfigError
from tlhub.tasks.base import TASKS, Task

if TYPE_CHECKING:
    import torch

    from tlhub.config import RunConfig


@TASKS.register("pretraining")
class Pretraining(Task):
    name = "pretraining"
    main_metric = ("loss", False)
    label_names = ()  # no labels: the model reconstructs its own input and returns the loss

    def compute_metrics(self, cfg: RunConfig, processor: Any, label_names: list[str] | None, generative: bool) -> Callable[[Any], dict[str, float]]:
        return lambda pred: {}  # the loss is the score (the Trainer reports eval_loss)

    def predict(self, run: Any, batch: dict[str, torch.Tensor], inputs: list[str]) -> list[dict[str, Any]]:
        raise ConfigError(
            f"predict: {run.cfg.output_dir} is a pretraining run (masked patches); name its folder as model.name_or_path of a "
            "classification or forecasting run, and predict with that"
        )
