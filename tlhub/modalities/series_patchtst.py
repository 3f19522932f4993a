"""transformers' PatchTST, trained from scratch as the series baseline (``model.name_or_path:
patchtst``, sized by ``model.config_overrides``), or from a folder of its model type.

PatchTST names its inputs and outputs its own way (``target_values``, ``prediction_logits``);
these subclasses take the Trainer's ``labels`` and return ``logits`` / ``prediction_outputs``
as tlhub's tasks read them, and save as plain PatchTST folders (``AutoConfig`` reads them, and
``PatchTSTForClassification.from_pretrained`` loads the weights without tlhub).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PatchTSTConfig, PatchTSTForClassification, PatchTSTForPrediction
from transformers.modeling_outputs import SequenceClassifierOutput

from tlhub.errors import ConfigError

NAME = "patchtst"  # model.name_or_path that builds one from its config
MODEL_TYPE = "patchtst"


class PatchTSTClassifier(PatchTSTForClassification):
    """PatchTST's classifier with tlhub's names: ``labels`` in, ``logits`` out."""

    def forward(self, past_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        from tlhub.models import head_loss

        kwargs.pop("output_hidden_states", None)
        out = super().forward(past_values=past_values, return_dict=True)
        # the loss of config.problem_type (PatchTST's own is cross-entropy whatever the labels)
        loss = head_loss(out.prediction_logits, labels, self.config.problem_type) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=out.prediction_logits)

    def feature_backbone(self) -> Any:
        raise ConfigError("strategy.name: feature_extraction pools a body's outputs over patches; PatchTST's are per channel "
                          "and patch: use full (from scratch), partial or lora")  # fmt: skip


class PatchTSTForecaster(PatchTSTForPrediction):
    """PatchTST's forecaster, taking the Trainer's ``labels`` as its ``future_values``."""

    def forward(self, past_values: torch.Tensor, future_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        kwargs.pop("output_hidden_states", None)
        return super().forward(past_values=past_values, future_values=future_values if future_values is not None else labels, return_dict=True)

    def feature_backbone(self) -> Any:
        return PatchTSTClassifier.feature_backbone(self)  # type: ignore[arg-type]


def patchtst_config(channels: int, length: int, patch_length: int, patch_stride: int, overrides: dict[str, Any], **head: Any) -> PatchTSTConfig:
    """A PatchTST config for this data; ``model.config_overrides`` set its size (d_model,
    num_hidden_layers, ...), each checked to be one of PatchTSTConfig's settings."""
    from tlhub.loading import check_config_overrides

    config = PatchTSTConfig(num_input_channels=channels, context_length=length, patch_length=patch_length, patch_stride=patch_stride, **head)
    for key, value in check_config_overrides(config, overrides or {}).items():
        setattr(config, key, value)
    return config
