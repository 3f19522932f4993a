"""A pretrained transformer body read over patches of a time series (GPT4TS, "One Fits All",
Zhou et al., NeurIPS 2023).

A text transformer (BERT, MiniLM, GPT-2, Llama, ...) keeps its blocks and its positions;
its token embedding gives way to a linear embedding of patches: each series is scaled per
channel (instance normalisation: the mean and standard deviation of each series, kept to
unscale forecasts), cut into patches of ``patch_length`` steps every ``patch_stride``, and
each patch becomes one input vector of the body. A classifier averages the body's outputs
over patches into a linear head; a forecaster flattens them into a linear head that predicts
the next ``prediction_length`` steps of each channel, then unscales them.

The classes are transformers models with their own config (``model_type:
tlhub_patch_transformer``): a run folder saves and loads as one folder with
``save_pretrained`` / ``from_pretrained``, and ``AutoModel`` (the body with its patch
embedding, what feature extraction freezes), ``AutoModelForSequenceClassification`` (the
classifier: transformers has no auto class of series classifiers) and
``AutoModelForTimeSeriesPrediction`` load it once this module is imported (tlhub imports it
with its modalities). The module imports only torch and transformers, so a saved folder
carries it as remote code (``trust_remote_code=True`` loads it without tlhub).

The layout serves tlhub's strategies without special cases: the pretrained body is the
model's base model (``base_model_prefix = "body"``), so ``partial`` and ``lora`` find its
blocks and attention projections there, and the new patch embedding and head sit beside it,
trained by every strategy but feature extraction. :meth:`partial_parameters` names what
GPT4TS trains inside the body (layer norms and position embeddings), and
:meth:`feature_backbone` gives feature extraction a backbone that reads series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTimeSeriesPrediction,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.utils import ModelOutput

MODEL_TYPE = "tlhub_patch_transformer"
SCALINGS = ("std", "mean", "none")
MIN_SCALE = 1e-5  # PatchTST's StdScaler floor: a constant series is not divided by zero


def _first(body: dict[str, Any], *names: str) -> Any:
    return next((body[n] for n in names if isinstance(body.get(n), int)), None)


class PatchTransformerConfig(PretrainedConfig):
    """The body's config (``body``, a text model's config as a dict) and how series reach it."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        body: dict[str, Any] | None = None,
        num_input_channels: int = 1,
        context_length: int = 64,
        patch_length: int = 16,
        patch_stride: int = 8,
        scaling: str = "std",
        head_dropout: float = 0.1,
        prediction_length: int = 0,
        channel_independent: bool = False,
        mask_ratio: float = 0.4,
        **kwargs: Any,
    ) -> None:
        self.body = dict(body or {})
        self.num_input_channels = num_input_channels
        self.context_length = context_length
        self.patch_length = patch_length
        self.patch_stride = patch_stride
        self.scaling = scaling
        self.head_dropout = head_dropout
        self.prediction_length = prediction_length
        self.channel_independent = channel_independent
        self.mask_ratio = mask_ratio  # pretraining: the share of patches masked and reconstructed
        # read by tools that size a head or count layers (tlhub's PooledClassifier)
        self.d_model = _first(self.body, "hidden_size", "n_embd", "d_model", "dim")
        self.num_hidden_layers = _first(self.body, "num_hidden_layers", "n_layer", "num_layers")
        super().__init__(**kwargs)

    @property
    def num_patches(self) -> int:
        """Patches per series: ``(context_length - patch_length) // patch_stride + 1``."""
        return (self.context_length - self.patch_length) // self.patch_stride + 1

    @property
    def patch_width(self) -> int:
        """Values per patch vector: one channel's patch, or every channel's side by side."""
        return self.patch_length * (1 if self.channel_independent else self.num_input_channels)


def body_config(body: dict[str, Any]) -> PretrainedConfig:
    """The body's transformers config from its dict, with a one-row token embedding (patches
    replace tokens) and no padding token that would index past it."""
    settings = {**body, "vocab_size": 1, "pad_token_id": None, "bos_token_id": None, "eos_token_id": None}
    return AutoConfig.for_model(settings.pop("model_type"), **settings)


def strip_body(body: nn.Module) -> nn.Module:
    """The body without what series do not use: its token embedding shrinks to one row (read
    by nothing; kept so the module has the shape its class expects) and its pooler goes."""
    embeddings = body.get_input_embeddings()
    if embeddings is not None and embeddings.weight.shape[0] != 1:
        body.set_input_embeddings(nn.Embedding(1, embeddings.weight.shape[1]))
    if getattr(body, "pooler", None) is not None:
        body.pooler = None
    body.config.vocab_size = 1
    body.config.pad_token_id = body.config.bos_token_id = body.config.eos_token_id = None
    return body


def scale(values: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instance normalisation of (batch, time, channels): each series minus its mean, over its
    standard deviation (``std``), over its mean absolute value (``mean``) or as it is (``none``).
    Returns the scaled values and the (batch, 1, channels) location and scale that undo it."""
    if how == "none":
        ones = torch.ones_like(values[:, :1])
        return values, torch.zeros_like(ones), ones
    if how == "mean":
        loc = torch.zeros_like(values[:, :1])
        spread = values.abs().mean(1, keepdim=True).clamp(min=MIN_SCALE)
        return values / spread, loc, spread
    loc = values.mean(1, keepdim=True)
    spread = torch.sqrt(values.var(1, keepdim=True, unbiased=False) + MIN_SCALE)
    return (values - loc) / spread, loc, spread


def patches(values: torch.Tensor, config: PatchTransformerConfig) -> torch.Tensor:
    """(batch, time, channels) -> (batch, patches, patch_length * channels), or, channel by
    channel, (batch * channels, patches, patch_length)."""
    if values.shape[1] != config.context_length:
        raise ValueError(f"past_values has {values.shape[1]} steps; this model reads {config.context_length}")
    if config.channel_independent:
        values = values.permute(0, 2, 1).reshape(-1, values.shape[1], 1)  # (batch * channels, time, 1)
    cut = values.unfold(1, config.patch_length, config.patch_stride)  # (batch, patches, channels, patch_length)
    return cut.reshape(cut.shape[0], cut.shape[1], -1)


class PatchTransformerPreTrainedModel(PreTrainedModel):
    config_class = PatchTransformerConfig
    base_model_prefix = "body"
    main_input_name = "past_values"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Only this module's own layers; the body initialises itself (random or pretrained)."""
        if isinstance(module, nn.Linear):  # the body's own are its own model's to initialise
            init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)

    def _build(self, config: PatchTransformerConfig) -> None:
        self.patch_embedding = nn.Linear(config.patch_width, config.d_model)
        self.body = strip_body(AutoModel.from_config(body_config(config.body)))

    def encode(self, past_values: torch.Tensor, output_hidden_states: bool | None = None) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The body's outputs over the scaled series' patch embeddings, and the location and
        scale of each series."""
        scaled, loc, spread = scale(past_values.to(self.patch_embedding.weight.dtype), self.config.scaling)
        return self.read(self.patch_embedding(patches(scaled, self.config)), output_hidden_states), loc, spread

    def read(self, embedded: torch.Tensor, output_hidden_states: bool | None = None) -> Any:
        """The body's outputs over embedded patches (batch, patches, width), every patch attended."""
        mask = torch.ones(embedded.shape[:2], dtype=torch.long, device=embedded.device)
        return self.body(inputs_embeds=embedded, attention_mask=mask, output_hidden_states=output_hidden_states, return_dict=True)

    def partial_parameters(self) -> dict[str, list[nn.Parameter]]:
        """What GPT4TS trains inside the pretrained body, by kind: every normalisation layer
        and the position embeddings (attention and MLP stay as pretrained)."""
        norms = [p for m in self.body.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) or type(m).__name__.endswith("RMSNorm") for p in m.parameters(recurse=False)]
        tokens = self.body.get_input_embeddings()
        positions = [p for m in self.body.modules() if isinstance(m, nn.Embedding) and m is not tokens for p in m.parameters(recurse=False)]
        return {"layer norms": norms, "position embeddings": positions}


class PatchTransformerModel(PatchTransformerPreTrainedModel):
    """Patch embedding + body: (batch, time, channels) -> (batch, patches, width)."""

    def __init__(self, config: PatchTransformerConfig) -> None:
        super().__init__(config)
        self._build(config)
        self.post_init()

    def forward(self, past_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs: Any) -> BaseModelOutput:
        outputs, _, _ = self.encode(past_values, output_hidden_states)
        return BaseModelOutput(last_hidden_state=outputs.last_hidden_state, hidden_states=outputs.hidden_states)


def head_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """The loss transformers' ``...ForSequenceClassification`` computes for ``problem_type``.
    (tlhub.models.head_loss's rule, repeated: this file is a run folder's remote code, loaded without tlhub.)"""
    if problem_type == "regression":
        return nn.functional.mse_loss(logits.float().reshape(labels.shape), labels.float())
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


class PatchTransformerForClassification(PatchTransformerPreTrainedModel):
    """Patch embedding + body + mean over patches + linear head, trained with the loss of
    ``config.problem_type`` (cross-entropy; binary cross-entropy for multi-label; mean squared
    error for regression)."""

    def __init__(self, config: PatchTransformerConfig) -> None:
        super().__init__(config)
        self._build(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(
        self, past_values: torch.Tensor, labels: torch.Tensor | None = None, output_hidden_states: bool | None = None, **kwargs: Any
    ) -> SequenceClassifierOutput:
        outputs, _, _ = self.encode(past_values, output_hidden_states)
        logits = self.head(self.dropout(outputs.last_hidden_state.mean(1)))
        loss = head_loss(logits, labels, self.config.problem_type) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def feature_backbone(self) -> PatchTransformerModel:
        """What a frozen-feature head reads: this model's patch embedding and body (shared, not
        copied) as one :class:`PatchTransformerModel`, which saves and loads with AutoModel."""
        backbone = PatchTransformerModel(self.config)
        backbone.patch_embedding, backbone.body = self.patch_embedding, self.body
        return backbone


@dataclass
class ForecastOutput(ModelOutput):
    """Loss (MSE on the scaled values), and the forecast (batch, prediction_length, channels)
    in the series' own units."""

    loss: torch.Tensor | None = None
    prediction_outputs: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class PatchTransformerForPrediction(PatchTransformerPreTrainedModel):
    """Patch embedding + body + a linear head from all patches' outputs to the next
    ``prediction_length`` steps, channel by channel (GPT4TS's long-term forecasting)."""

    def __init__(self, config: PatchTransformerConfig) -> None:
        super().__init__(config)
        self._build(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.d_model * config.num_patches, config.prediction_length)
        self.post_init()

    def forward(
        self,
        past_values: torch.Tensor,
        future_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> ForecastOutput:
        """`future_values` (or `labels`, the Trainer's name): (batch, prediction_length, channels)."""
        future_values = future_values if future_values is not None else labels
        batch, _, channels = past_values.shape
        outputs, loc, spread = self.encode(past_values, output_hidden_states)
        flat = self.dropout(outputs.last_hidden_state.flatten(1))  # (batch * channels, patches * width)
        scaled = self.head(flat).reshape(batch, channels, -1).permute(0, 2, 1)  # (batch, prediction_length, channels)
        loss = None
        if future_values is not None:
            loss = nn.functional.mse_loss(scaled, (future_values.to(scaled.dtype) - loc) / spread)
        return ForecastOutput(loss=loss, prediction_outputs=scaled * spread + loc, hidden_states=outputs.hidden_states)


@dataclass
class MaskedPatchOutput(ModelOutput):
    """Loss (MSE of the masked patches' reconstruction, on the scaled values), the
    reconstruction of every patch (batch * channels, patches, patch_length) and which were masked."""

    loss: torch.Tensor | None = None
    prediction_outputs: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def patch_mask(shape: torch.Size, ratio: float, device: torch.device, seed: int | None = None) -> torch.Tensor:
    """Which patches to mask, (series, patches): `ratio` of each series' patches, at least one,
    chosen at random (`seed`: the same patches every time, for evaluation)."""
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    noise = torch.rand(shape, device=device, generator=generator)
    count = max(1, round(ratio * shape[1]))
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < count


class PatchTransformerForPretraining(PatchTransformerPreTrainedModel):
    """Self-supervised pretraining on unlabelled series, as PatchTST's: a share of each
    series' patches (``mask_ratio``) is replaced by a learned mask vector before the body, and
    a linear head reconstructs those patches' scaled values from the body's outputs. Channels
    are read one by one, so the patch embedding and body transfer to forecasting and to
    univariate classification (a later run names this folder as its model)."""

    def __init__(self, config: PatchTransformerConfig) -> None:
        config.channel_independent = True
        super().__init__(config)
        self._build(config)
        self.mask_embedding = nn.Parameter(torch.zeros(config.d_model))
        self.reconstruction = nn.Linear(config.d_model, config.patch_length)
        self.post_init()

    def forward(self, past_values: torch.Tensor, output_hidden_states: bool | None = None, return_loss: bool = True, **kwargs: Any) -> MaskedPatchOutput:
        scaled, _, _ = scale(past_values.to(self.patch_embedding.weight.dtype), self.config.scaling)
        cut = patches(scaled, self.config)  # (batch * channels, patches, patch_length)
        # evaluation masks the same patches each time, so that its loss compares across epochs
        masked = patch_mask(cut.shape[:2], self.config.mask_ratio, cut.device, seed=None if self.training else 0)
        embedded = self.patch_embedding(cut)
        embedded = torch.where(masked.unsqueeze(-1), self.mask_embedding.to(embedded.dtype), embedded)
        rebuilt = self.reconstruction(self.read(embedded, output_hidden_states).last_hidden_state)
        loss = ((rebuilt.float() - cut.float()) ** 2).mean(-1)[masked].mean()
        return MaskedPatchOutput(loss=loss, prediction_outputs=rebuilt, mask=masked)


# Registered with transformers' auto classes (here and in a run folder's copy of this file).
AutoConfig.register(MODEL_TYPE, PatchTransformerConfig, exist_ok=True)
AutoModel.register(PatchTransformerConfig, PatchTransformerModel, exist_ok=True)
AutoModelForSequenceClassification.register(PatchTransformerConfig, PatchTransformerForClassification, exist_ok=True)
AutoModelForTimeSeriesPrediction.register(PatchTransformerConfig, PatchTransformerForPrediction, exist_ok=True)
PatchTransformerConfig.register_for_auto_class()
PatchTransformerModel.register_for_auto_class("AutoModel")
PatchTransformerForClassification.register_for_auto_class("AutoModelForSequenceClassification")
PatchTransformerForPrediction.register_for_auto_class("AutoModelForTimeSeriesPrediction")
