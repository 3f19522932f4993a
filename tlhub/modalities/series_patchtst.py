"""transformers' PatchTST and PatchTSMixer, trained from scratch as series baselines
(``model.name_or_path: patchtst`` or ``patchtsmixer``, sized by ``model.config_overrides``), or
from a folder of their model type.

They name their inputs and outputs their own way (``target_values``, ``prediction_logits``,
``prediction_outputs``); these subclasses take the Trainer's ``labels``, compute the loss of
``config.problem_type`` and return ``logits`` / ``prediction_outputs`` as tlhub's tasks read
them, and save as plain folders of their type (``AutoConfig`` reads them, and
``PatchTSTForClassification.from_pretrained`` loads the weights without tlhub).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    PatchTSMixerConfig,
    PatchTSMixerForPrediction,
    PatchTSMixerForTimeSeriesClassification,
    PatchTSTConfig,
    PatchTSTForClassification,
    PatchTSTForPrediction,
    PretrainedConfig,
)
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


class PatchTSMixerClassifier(PatchTSMixerForTimeSeriesClassification):
    """PatchTSMixer's classifier with tlhub's names: ``labels`` in, ``logits`` out."""

    def forward(self, past_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        from tlhub.models import head_loss

        kwargs.pop("output_hidden_states", None)
        out = super().forward(past_values=past_values, return_loss=False, return_dict=True)
        loss = head_loss(out.prediction_outputs, labels, self.config.problem_type) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=out.prediction_outputs)

    def feature_backbone(self) -> Any:
        raise ConfigError("strategy.name: feature_extraction pools a body's outputs over patches; PatchTSMixer's are per channel "
                          "and patch: use full (from scratch) or partial")  # fmt: skip


class PatchTSMixerForecaster(PatchTSMixerForPrediction):
    """PatchTSMixer's forecaster, taking the Trainer's ``labels`` as its ``future_values``."""

    def forward(self, past_values: torch.Tensor, future_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        kwargs.pop("output_hidden_states", None)
        return super().forward(past_values=past_values, future_values=future_values if future_values is not None else labels, return_dict=True)

    def feature_backbone(self) -> Any:
        return PatchTSMixerClassifier.feature_backbone(self)  # type: ignore[arg-type]


# model.name_or_path (and the model_type of a saved folder) -> config class, classifier, forecaster
FAMILIES: dict[str, tuple[type[PretrainedConfig], type, type]] = {
    NAME: (PatchTSTConfig, PatchTSTClassifier, PatchTSTForecaster),
    "patchtsmixer": (PatchTSMixerConfig, PatchTSMixerClassifier, PatchTSMixerForecaster),
}


def patchtst_config(channels: int, length: int, patch_length: int, patch_stride: int, overrides: dict[str, Any], family: str = NAME,
                    **head: Any) -> PretrainedConfig:  # fmt: skip
    """A PatchTST (or PatchTSMixer: `family`) config for this data; ``model.config_overrides``
    set its size (d_model, num_hidden_layers / num_layers, ...), each checked to be one of its
    config's settings."""
    from tlhub.loading import check_config_overrides

    config_class = FAMILIES[family][0]
    config = config_class(num_input_channels=channels, context_length=length, patch_length=patch_length, patch_stride=patch_stride, **head)
    for key, value in check_config_overrides(config, overrides or {}).items():
        setattr(config, key, value)
    return config
