"""A frozen backbone with a pooling step and a new linear head.

Feature extraction trains only a head on top of a pretrained backbone. transformers'
`...ForSequenceClassification` heads read features the way the checkpoint was
pretrained to give them (BERT's `pooler_output`), but many checkpoints ship an
untrained pooler (sentence-transformers' MiniLM, for one): a frozen random projection
then sits between the backbone and the head. :class:`PooledClassifier` pools the
backbone's hidden states itself (mean over tokens, frames or pixels by default; the
last real token for decoder language models; CLS token or the model's pooler on request;
or no pooling at all, a label per token, for token classification), for every modality.

With ``weighted_layer_sum=True`` it pools every hidden layer (the embeddings' output and
each block's) and learns a softmax-weighted sum of them, as the SUPERB benchmark does
for frozen speech models: lower layers of wav2vec2 or Whisper often hold what a task
needs better than the last one, and the weights cost one parameter per layer.

A saved run is a folder of tlhub's own model type (``config.json``:
``model_type: tlhub_pooled_classifier``, :class:`PooledClassifierConfig`), so that no tool
reads it as a plain ``BertForSequenceClassification`` whose head would be new, random
weights: the backbone is a normal transformers folder in ``backbone/`` (``AutoModel.
from_pretrained(run_dir, subfolder="backbone")``), the head beside it
(``pooled_head.safetensors``, ``pooled_head.json``), and this file as ``modeling_tlhub.py``,
named in ``config.json``'s ``auto_map``. ``transformers.pipeline(task, model=RUN_DIR,
trust_remote_code=True)`` loads the whole classifier without tlhub (this module imports
nothing of tlhub's but its error class, and only where it is installed); where tlhub is
imported the classes are registered with transformers' auto classes, so the same call
works without the flag; and without either, transformers refuses the folder, naming
``trust_remote_code``, instead of loading a wrong model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
    WhisperFeatureExtractor,
)
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

try:  # tlhub's own error where tlhub is installed; a run folder's copy of this file runs without it
    from tlhub.errors import ConfigError
except ImportError:
    ConfigError = ValueError  # type: ignore[misc,assignment]

HEAD_WEIGHTS = "pooled_head.safetensors"
HEAD_CONFIG = "pooled_head.json"
REMOTE_CODE = "modeling_tlhub.py"  # this file, in a run folder
BACKBONE_FOLDER = "backbone"  # in a run folder: the frozen backbone, a plain transformers folder
MODEL_TYPE = "tlhub_pooled_classifier"
# The auto classes whose pipelines a pooled classifier serves (text, image, audio classification; tokens).
AUTO_CLASSES = {
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
    "AutoModelForImageClassification": AutoModelForImageClassification,
    "AutoModelForAudioClassification": AutoModelForAudioClassification,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
}
# from_pretrained keywords the backbone's loader understands; pipeline() passes others (_from_pipeline, ...)
LOAD_KEYWORDS = ("dtype", "device_map", "revision", "cache_dir", "local_files_only", "token", "attn_implementation")


def feature_dim(config: PretrainedConfig, backbone: nn.Module | None = None) -> int:
    """Width of the backbone's hidden states, whatever the architecture calls it."""
    for name in ("hidden_size", "d_model", "dim", "hidden_dim"):  # hidden_dim: EfficientNet's top convolution
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    sizes = getattr(config, "hidden_sizes", None)  # convolutional stages (ResNet, ConvNeXt)
    if sizes:
        return int(sizes[-1])
    # MobileNet v1/v2 derive their width from a multiplier: read the last convolution
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)] if backbone is not None else []
    if convs:
        return int(convs[-1].out_channels)
    raise ValueError(f"cannot tell the feature size of a {type(config).__name__}")


def pool(outputs: Any, pooling: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Turn a backbone's outputs into one vector per example (or per token).

    ``mean``: the mean over tokens (honouring `attention_mask` when it matches the
    sequence), frames, or pixels of a convolutional feature map. ``cls``: the first
    token. ``last``: the last token the mask keeps (a decoder's, which has read all the
    others). ``pooler``: the model's own ``pooler_output``. ``token``: no pooling, a
    vector per token (token classification).
    """
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError("this model has no pooler_output; use strategy.pooling: mean or cls")
        return pooled.flatten(1)
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    return pool_hidden(hidden, pooling, attention_mask)


def pool_hidden(hidden: torch.Tensor, pooling: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One hidden-state tensor (batch, tokens, width) or feature map (batch, channels,
    height, width) pooled to (batch, width) by ``mean``, ``cls`` or ``last``, or left per
    token by ``token``; see :func:`pool`."""
    if hidden.dim() == 4:  # (batch, channels, height, width) from a convolutional backbone
        if pooling != "mean":
            raise ValueError(f"a convolutional backbone has no tokens to pool by '{pooling}'; use strategy.pooling: mean")
        return hidden.mean(dim=(2, 3))
    if pooling == "token":
        return hidden
    if pooling == "cls":
        return hidden[:, 0]
    masked = attention_mask is not None and attention_mask.shape[:2] == hidden.shape[:2]
    if pooling == "last":
        if not masked:
            return hidden[:, -1]
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
        last = (positions * attention_mask.to(positions.dtype)).argmax(1)  # right or left padding alike
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if masked:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden.mean(dim=1)


def feature_backbone(model: PreTrainedModel, backbone: nn.Module) -> PreTrainedModel:
    """`backbone` (``backbone_of(model)``) as a transformers model that PooledClassifier can
    run with keyword inputs, save, and load back.

    Usually it already is one (BERT's ``bert``, Whisper's encoder). A timm model wrapped
    by transformers (``TimmWrapperForImageClassification``) has a raw timm module as its
    base model, with no config and positional inputs only: it goes into a
    ``TimmWrapperModel`` that shares its weights, with the timm classifier removed (the
    PooledClassifier brings its own head), so the saved backbone loads with AutoModel.
    """
    own = getattr(model, "feature_backbone", None)
    if callable(own):  # inputs that reach the backbone through layers of the model's own (a series' patch embedding)
        return own()
    if isinstance(backbone, PreTrainedModel):
        return backbone
    if hasattr(backbone, "forward_features") and hasattr(backbone, "reset_classifier"):
        from transformers import TimmWrapperModel

        backbone.reset_classifier(0)
        wrapper = TimmWrapperModel(model.config)
        wrapper.timm_model = backbone
        return wrapper
    raise ValueError(f"cannot run the backbone of {type(model).__name__} ({type(backbone).__name__}) on its own")


class MaskedWhisperFeatureExtractor(WhisperFeatureExtractor):
    """Whisper's feature extractor, returning the attention mask unless told not to.

    A pooled classifier on Whisper's encoder averages the clip's own frames, not the
    padding to the window; tlhub asks for the mask, and transformers' audio-classification
    pipeline does not, so a run folder's preprocessor_config.json names this class
    (:func:`mask_whisper_frames`) and the pipeline predicts what tlhub does.
    """

    def __call__(self, raw_speech: Any, *args: Any, return_attention_mask: bool | None = True, **kwargs: Any) -> Any:
        return super().__call__(raw_speech, *args, return_attention_mask=return_attention_mask, **kwargs)


def mask_whisper_frames(directory: Path) -> None:
    """Point a saved Whisper feature extractor in `directory` at :class:`MaskedWhisperFeatureExtractor`
    (remote code in the run folder); other extractors are left as they are."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if config.get("feature_extractor_type") == "WhisperFeatureExtractor":
        config["auto_map"] = {**config.get("auto_map", {}), "AutoFeatureExtractor": f"{REMOTE_CODE[:-3]}.{MaskedWhisperFeatureExtractor.__name__}"}
        path.write_text(json.dumps(config, indent=2) + "\n")


def has_conv_frames(config: PretrainedConfig) -> bool:
    """Whether the model turns samples into frames by a stack of 1-D convolutions (wav2vec2,
    HuBERT, WavLM), whose sizes its config records."""
    return bool(getattr(config, "conv_kernel", None)) and bool(getattr(config, "conv_stride", None))


def frame_lengths(config: PretrainedConfig, lengths: torch.Tensor) -> torch.Tensor:
    """How many frames the convolutional feature encoder makes of clips of `lengths` samples
    (``floor((n - kernel) / stride) + 1`` per layer, and the adapter's layers where it has
    them), from the config alone, as the model computes it internally."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    if getattr(config, "add_adapter", False):
        for _ in range(config.num_adapter_layers):
            lengths = torch.div(lengths - 1, config.adapter_stride, rounding_mode="floor") + 1
    return lengths


def frame_mask(config: PretrainedConfig, frames: int, sample_mask: torch.Tensor) -> torch.Tensor:
    """A mask over `frames` frames from a mask over samples: the first frame_lengths(...)
    frames of each clip are its own, the rest cover padding."""
    lengths = frame_lengths(config, sample_mask.sum(-1)).to(sample_mask.device)
    return (torch.arange(frames, device=sample_mask.device)[None, :] < lengths[:, None]).to(sample_mask.dtype)


def _backbone_class(config_file: Path) -> Any:
    """The class a saved backbone loads with: AutoModel, or the transformers class named in
    its config when AutoModel would build a different model (Whisper's encoder alone,
    which AutoModel reads as the whole encoder-decoder)."""
    config = json.loads(config_file.read_text())
    name = (config.get("architectures") or [None])[0]
    if name and name.endswith("Encoder") and config.get("model_type"):
        import importlib

        module_name = config["model_type"].replace("-", "_")
        try:
            module = importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")
        except ImportError:
            return AutoModel
        return getattr(module, name, AutoModel)
    return AutoModel


def hidden_layer_count(config: PretrainedConfig) -> int:
    """How many hidden states a backbone returns with ``output_hidden_states``: one per
    block plus the embeddings' output (``num_hidden_layers + 1``)."""
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise ValueError(f"cannot tell how many layers a {type(config).__name__} has")
    return layers + 1


def backbone_of(model: nn.Module) -> nn.Module:
    """The pretrained body of a transformers task model (``model.base_model``).

    A classifier on the encoder alone of an encoder-decoder family has no base-model
    attribute (``WhisperForAudioClassification``: encoder, projector, classifier): its
    body is the encoder.
    """
    base = getattr(model, "base_model", model)
    encoder = getattr(model, "encoder", None)
    if base is model and isinstance(encoder, PreTrainedModel) and getattr(model, "decoder", None) is None:
        return encoder
    return base


def head_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of a classification head, as transformers' ``...ForSequenceClassification``
    computes it for ``config.problem_type``: mean squared error for regression, binary
    cross-entropy on logits for multi-label (`weight`: each label's positive weight), and
    cross-entropy otherwise (`weight`: each class's; labels of -100 ignored)."""
    if problem_type == "regression":
        if logits.shape[-1] == 1:
            return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(logits.shape[:-1]))
        return nn.functional.mse_loss(logits.float(), labels.float())
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weight)
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), weight=weight, ignore_index=-100
    )


class PooledClassifierConfig(PretrainedConfig):
    """A run folder's pooled classifier: tlhub's own model type, the backbone's config
    (``backbone``, which loads from ``backbone/``) and the head's settings."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        pooling: str = "mean",
        dropout: float = 0.1,
        weighted_layer_sum: bool = False,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        self.backbone = backbone or {}
        self.pooling = pooling
        self.dropout = dropout
        self.weighted_layer_sum = weighted_layer_sum
        self.normalize = normalize
        super().__init__(**kwargs)


class PooledClassifier(nn.Module):
    """backbone -> pool -> [weighted sum of layers] -> dropout -> linear, trained with cross-entropy.

    `forward` also accepts precomputed ``features`` (the pooled vectors, or with
    `weighted_layer_sum` the pooled vectors of every layer), which is how the feature cache
    trains the head without running the backbone again. With ``pooling="token"`` every
    token gets its own logits (token classification; labels of -100 are ignored).
    """

    config_class = PooledClassifierConfig  # what transformers' auto classes map it from

    def __init__(
        self,
        backbone: PreTrainedModel,
        num_labels: int,
        pooling: str = "mean",
        dropout: float = 0.1,
        freeze_backbone: bool = True,
        weighted_layer_sum: bool = False,
        normalize: bool = False,
        problem_type: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.normalize = normalize  # L2-normalise the pooled vector before the head
        # transformers' names: single_label_classification, multi_label_classification, regression (None: single)
        self.problem_type = problem_type
        self.pooling = pooling
        self.freeze_backbone = freeze_backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim(backbone.config, backbone), num_labels)
        # Zeros: the softmax starts as the plain average of all layers.
        self.layer_weights = nn.Parameter(torch.zeros(hidden_layer_count(backbone.config))) if weighted_layer_sum else None
        names = getattr(backbone.config, "id2label", None) or {}
        id2label = {i: names.get(i, f"LABEL_{i}") for i in range(num_labels)}
        self.config = PooledClassifierConfig(
            backbone=backbone.config.to_dict(), pooling=pooling, dropout=dropout, weighted_layer_sum=weighted_layer_sum,
            normalize=normalize, id2label=id2label, label2id={v: k for k, v in id2label.items()}, architectures=[type(self).__name__],
            problem_type=problem_type,
        )  # fmt: skip
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> PooledClassifier:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen features: no dropout, fixed batch-norm statistics
        return self

    def features(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The pooled backbone output for a batch of model inputs: (batch, width), or
        (batch, layers, width) with `weighted_layer_sum` (every hidden layer pooled); with
        token pooling a token axis after the batch's."""
        inputs.pop("labels", None)
        if self.layer_weights is not None:
            inputs["output_hidden_states"] = True
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            outputs = self.backbone(**inputs)
        mask = inputs.get("attention_mask")
        hidden = getattr(outputs, "last_hidden_state", None)
        if mask is not None and hidden is not None and mask.shape[1] != hidden.shape[1]:
            # Audio: a mask over samples; wav2vec2/HuBERT map it to frames, so that the
            # mean leaves out padding and a clip's features do not depend on its batch.
            if has_conv_frames(self.backbone.config):
                mask = frame_mask(self.backbone.config, hidden.shape[1], mask)
            elif mask.shape[1] == 2 * hidden.shape[1]:
                # Whisper: a mask over log-mel frames, which its convolutions halve; the mean
                # then covers the clip's own frames, not the padding to the window.
                mask = mask[:, ::2]
            else:
                mask = None
        if self.layer_weights is None:
            return pool(outputs, self.pooling, mask)
        layers = getattr(outputs, "hidden_states", None) or ()
        if len(layers) != len(self.layer_weights) or len({h.shape[-1] for h in layers}) != 1:
            raise ConfigError(
                f"strategy.weighted_layer_sum: {type(self.backbone).__name__} returned {len(layers)} hidden states "
                f"where {len(self.layer_weights)} of one width were expected; set weighted_layer_sum: false for this model"
            )
        return torch.stack([pool_hidden(h, self.pooling, mask) for h in layers], dim=1)

    def combine(self, features: torch.Tensor) -> torch.Tensor:
        """Per-layer features (batch, layers, [tokens,] width) -> their softmax-weighted sum."""
        if self.layer_weights is None:
            return features
        weights = self.layer_weights.softmax(0).to(features.dtype)
        return (features * weights.view(1, -1, *([1] * (features.dim() - 2)))).sum(1)

    def forward(
        self, labels: torch.Tensor | None = None, features: torch.Tensor | None = None, **inputs: torch.Tensor
    ) -> SequenceClassifierOutput | TokenClassifierOutput:
        if features is None:
            features = self.features(**inputs)
        features = self.combine(features.to(self.head.weight.dtype))
        if self.normalize:
            features = nn.functional.normalize(features, dim=-1)
        logits = self.head(self.dropout(features))
        loss = None
        if labels is not None:
            loss = head_loss(logits, labels, self.problem_type)
        if self.pooling == "token":
            return TokenClassifierOutput(loss=loss, logits=logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    # What transformers.pipeline asks of a model besides forward and config.
    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def can_generate(self) -> bool:
        return False

    @classmethod
    def register_for_auto_class(cls, auto_class: Any = "AutoModel") -> None:
        """Called by transformers when it loads this class as a run folder's remote code;
        saving always writes the code and auto_map anyway."""

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """The run folder's model: this config (tlhub's model type; ``auto_map`` sends the
        classification auto classes to this file, written beside it as its remote code), the
        backbone in ``backbone/`` and the head beside it."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory / BACKBONE_FOLDER, **kwargs)
        self.config.backbone = self.backbone.config.to_dict()
        self.config.auto_map = {"AutoConfig": f"{REMOTE_CODE[:-3]}.{PooledClassifierConfig.__name__}",
                                **{name: f"{REMOTE_CODE[:-3]}.{type(self).__name__}" for name in AUTO_CLASSES}}  # fmt: skip
        self.config.save_pretrained(directory)
        (directory / REMOTE_CODE).write_text(Path(__file__).read_text())
        tensors = {k: v.contiguous() for k, v in self.head.state_dict().items()}
        if self.layer_weights is not None:
            tensors["layer_weights"] = self.layer_weights.detach().contiguous()
        save_file(tensors, str(directory / HEAD_WEIGHTS))
        info = {
            "pooling": self.pooling,
            "num_labels": self.head.out_features,
            "dropout": self.dropout.p,
            "weighted_layer_sum": self.layer_weights is not None,
            "normalize": self.normalize,
            "problem_type": self.problem_type,
        }
        (directory / HEAD_CONFIG).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, *args: Any, **kwargs: Any) -> PooledClassifier:
        """Load a saved backbone and head, from a folder or a Hub repository (the backbone's
        loading keywords, dtype or revision, go to its ``from_pretrained``; others, such as
        the config transformers' auto classes pass, are not needed). A folder written before
        the backbone moved to ``backbone/`` loads too."""
        from transformers.utils import cached_file

        hub = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token") if k in kwargs}

        def fetch(name: str) -> str | None:
            if Path(directory, name).is_file():
                return str(Path(directory, name))
            try:
                return cached_file(str(directory), name, **hub)
            except OSError:  # not in the repository (or no network)
                return None

        info = json.loads(Path(fetch(HEAD_CONFIG)).read_text())
        loading = {k: v for k, v in kwargs.items() if k in LOAD_KEYWORDS}
        subfolder = BACKBONE_FOLDER if fetch(f"{BACKBONE_FOLDER}/config.json") else ""
        config_file = Path(fetch(f"{subfolder}/config.json" if subfolder else "config.json"))
        backbone = _backbone_class(config_file).from_pretrained(directory, subfolder=subfolder, **loading)
        weighted = bool(info.get("weighted_layer_sum", False))
        model = cls(
            backbone, info["num_labels"], info["pooling"], info.get("dropout", 0.1), weighted_layer_sum=weighted,
            normalize=bool(info.get("normalize", False)), problem_type=info.get("problem_type"),
        )  # fmt: skip
        tensors = load_file(fetch(HEAD_WEIGHTS))
        if weighted:
            model.layer_weights.data.copy_(tensors.pop("layer_weights"))
        model.head.load_state_dict(tensors)
        return model.eval()  # as transformers' from_pretrained leaves a model: ready to predict

    @staticmethod
    def is_saved_in(directory: str | Path) -> bool:
        """Whether `directory` holds a pooled classifier (its head's settings)."""
        return (Path(directory) / HEAD_CONFIG).exists()


# Registered with transformers' auto classes, here and in a run folder's copy of this file, so
# that the auto classes and pipelines take a run folder as this model (exist_ok: both register).
AutoConfig.register(MODEL_TYPE, PooledClassifierConfig, exist_ok=True)
for _auto in AUTO_CLASSES.values():
    _auto.register(PooledClassifierConfig, PooledClassifier, exist_ok=True)
