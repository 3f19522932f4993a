"""Time series: classification by a pretrained transformer body read over patches (GPT4TS).

Data: ``.ts`` files (the UCR/UEA archive's format, :mod:`tlhub.modalities.series_data`), or a
table (CSV/JSON/Parquet/Hub) with one series per row in ``data.series_column`` (a list of
numbers, a list of lists for several channels, or their text) and ``data.label_column``.
``prepare`` reads every series once: missing values are interpolated and counted, a series
with a channel of no value or shorter than one patch is skipped and counted (the run fails
past ``data.max_bad_fraction``), an infinite value is an error naming the row. Series of
unequal lengths are cut or padded (with their last value) to ``data.series_length``, by
default the longest training series, and the log says how many were.

Model: :mod:`tlhub.modalities.series_model`: ``model.name_or_path`` names a text transformer
whose body is kept; a linear patch embedding (``model.patch_length``, ``model.patch_stride``)
replaces its token embedding, each series is scaled per channel inside the model
(``data.scaling``), and a linear head reads the mean of its outputs over patches.
``model.pretrained: false`` builds the same network from random weights. A run folder (or any
folder of this model type) loads back as it is.

The "processor" is :class:`SeriesProcessor`: the length and channel count every series is
brought to, saved with the run (``series_processor.json``) so that prediction reads new series
as training did.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch import nn
from transformers import AutoModel

from tlhub.errors import ConfigError, DataError
from tlhub.labels import label_tensor
from tlhub.loading import check_config_overrides, label_head, load_config, max_positions, model_error, weight_kwargs
from tlhub.modalities.base import MODALITIES, Modality
from tlhub.modalities.series_patchtst import FAMILIES, patchtst_config
from tlhub.modalities.series_data import UnusableSeries, as_array, clean, fit_length, long_series, read_ts, window_starts
from tlhub.modalities.series_model import (
    MODEL_TYPE,
    PatchTransformerConfig,
    PatchTransformerForClassification,
    PatchTransformerForPrediction,
    PatchTransformerForPretraining,
    strip_body,
)

if TYPE_CHECKING:
    from tlhub.config import RunConfig

logger = logging.getLogger(__name__)

PROCESSOR_FILE = "series_processor.json"
SERIES_FILES = (".ts",)
TABLE_FILES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


class SeriesProcessor:
    """What every series is brought to before the model: `length` steps (cut, or padded with
    the last value) and `channels` channels. Saved beside the model like a tokenizer."""

    def __init__(self, length: int, channels: int, columns: list[str] | None = None) -> None:
        self.length = length
        self.channels = channels
        self.columns = columns  # forecasting: the target columns, in the order of the channels

    def save_pretrained(self, directory: str | Path, **kwargs: Any) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        saved = {"length": self.length, "channels": self.channels, "columns": self.columns}
        (Path(directory) / PROCESSOR_FILE).write_text(json.dumps(saved, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SeriesProcessor:
        path = Path(directory) / PROCESSOR_FILE
        if not path.is_file():
            raise DataError(f"{directory}: no {PROCESSOR_FILE}; not a run folder of the timeseries modality")
        saved = json.loads(path.read_text())
        return cls(int(saved["length"]), int(saved["channels"]), saved.get("columns"))

    def __call__(self, series: list[Any]) -> dict[str, list[np.ndarray]]:
        """Cleaned series (channels, steps) -> ``past_values`` (steps, channels), float32."""
        return {"past_values": [fit_length(np.asarray(s, dtype=np.float64), self.length).T.astype(np.float32) for s in series]}


def folder_model_type(path: str) -> str | None:
    """The model type of a local model folder (a finished run: tlhub's patch transformer or
    PatchTST), or None."""
    config = Path(path) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def collate_series(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack ``past_values`` (all one shape after the processor) and the labels."""
    batch = {"past_values": torch.stack([torch.as_tensor(np.asarray(f["past_values"]), dtype=torch.float32) for f in features])}
    if features and "labels" in features[0]:
        labels = [f["labels"] for f in features]
        if np.ndim(labels[0]) == 0:  # class ids, or numbers (regression)
            batch["labels"] = label_tensor(labels)
        else:  # the future values of a forecast window, or multi-hot rows (multi-label)
            batch["labels"] = torch.stack([torch.as_tensor(np.asarray(label), dtype=torch.float32) for label in labels])
    return batch


@MODALITIES.register("timeseries")
class TimeseriesModality(Modality):
    name = "timeseries"
    tasks = ("classification", "forecasting", "pretraining")

    def __init__(self) -> None:
        self.channels: int | None = None  # set by prepare() of data.train, or by the saved processor
        self.longest: int | None = None  # the longest training series (data.series_length's default)
        self.length: int | None = None  # set by load_processor(): what the model reads
        self.columns: list[str] | None = None  # forecasting: the target columns, set by prepare() of data.train

    def required_columns(self, cfg: RunConfig) -> dict[str, str]:
        data = cfg.data
        if cfg.task == "forecasting":
            columns = {f"data.target_columns[{i}]": c for i, c in enumerate(data.target_columns or [])}
            return {**({"data.time_column": data.time_column} if data.time_column else {}), **columns}
        if cfg.task == "pretraining":  # unlabelled series
            return {"data.series_column": data.series_column}
        return {"data.series_column": data.series_column, "data.label_column": data.label_column}

    def read_file(self, path: Path, cfg: RunConfig, key: str) -> datasets.Dataset | None:
        """A ``.ts`` file (UCR/UEA); None for a table, which tlhub.data reads."""
        if path.suffix.lower() in SERIES_FILES:
            return read_ts(path, key, cfg.data.series_column, cfg.data.label_column)
        return None

    def prepare(self, ds: datasets.Dataset, cfg: RunConfig, base_dir: Path | None, origin: str) -> tuple[datasets.Dataset, int]:
        """Every series read, checked and cleaned (see the module docstring); for forecasting,
        the long series cut into windows."""
        if cfg.task == "forecasting":
            return self.prepare_windows(ds, cfg, origin), 0
        column = cfg.data.series_column
        good: list[int] = []
        arrays: list[list[list[float]]] = []
        bad: list[str] = []
        filled = 0
        for row, value in enumerate(ds[column], 1):
            where = f"{origin}: row {row}: column '{column}'"
            try:
                array, count = clean(as_array(value, where), where, cfg.model.patch_length)
            except UnusableSeries as exc:
                bad.append(f"row {row}: {exc}")
                continue
            channels = self.channels if self.channels is not None else array.shape[0]
            if array.shape[0] != channels:
                raise DataError(f"{where}: {array.shape[0]} channel(s) where the training series have {channels}; "
                                "give every series the same channels")  # fmt: skip
            self.channels = channels
            filled += count
            good.append(row - 1)
            arrays.append(array.astype(np.float32).tolist())
        if bad:
            shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
            if len(bad) / len(ds) > cfg.data.max_bad_fraction:
                raise DataError(f"{origin}: {len(bad)} of {len(ds)} series ({len(bad) / len(ds):.0%}) are unusable, more than "
                                f"data.max_bad_fraction={cfg.data.max_bad_fraction}: {shown}")  # fmt: skip
            logger.warning("%s: skipped %d unusable series: %s", origin, len(bad), shown)
        if filled:
            logger.warning("%s: %d missing value(s) filled by linear interpolation", origin, filled)
        lengths = [len(a[0]) for a in arrays]
        if origin.startswith("data.train") and lengths:
            self.longest = max(lengths)
        target = cfg.data.series_length or self.longest
        if lengths and target and (min(lengths) != target or max(lengths) != target):
            cut, padded = sum(n > target for n in lengths), sum(n < target for n in lengths)
            logger.warning("%s: series of %d to %d steps: %d cut and %d padded (with their last value) to %d steps (data.series_length)",
                           origin, min(lengths), max(lengths), cut, padded, target)  # fmt: skip
        ds = ds.select(good) if len(good) < len(ds) else ds
        if ds.column_names == [column]:  # unlabelled series (pretraining): no other column to keep the row count
            return datasets.Dataset.from_dict({column: arrays}), len(bad)
        ds = ds.remove_columns(column).add_column(column, arrays)
        return ds, len(bad)

    def prepare_windows(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> datasets.Dataset:
        """Forecasting: the target columns of a table (one row per step) as windows of
        ``data.context_length`` steps read and ``data.prediction_length`` forecast, every step
        (the training part is thinned to ``data.window_stride`` by :meth:`split`); each row keeps
        where its forecast starts (``forecast_start``) so that the split can go by time."""
        data = cfg.data
        values, columns, filled = long_series(ds, data.time_column, data.target_columns, origin)
        if origin.startswith("data.train"):
            self.columns, self.channels = columns, len(columns)
        elif self.columns is not None and columns != self.columns:
            raise DataError(f"{origin}: columns {columns} to forecast where the training data has {self.columns}; give the same columns")
        if filled:
            logger.warning("%s: %d missing value(s) filled by linear interpolation", origin, filled)
        need = data.context_length + data.prediction_length
        if len(values) < need:
            raise DataError(f"{origin}: {len(values)} steps, fewer than data.context_length + data.prediction_length ({data.context_length} + "
                            f"{data.prediction_length} = {need}); shorten them or give a longer series")  # fmt: skip
        if data.seasonality >= data.context_length:
            raise ConfigError(f"data.seasonality: {data.seasonality} steps is not shorter than data.context_length ({data.context_length}); "
                              "the seasonal-naive forecast repeats the last season of the context")  # fmt: skip
        starts = window_starts(len(values), data.context_length, data.prediction_length)
        past = [values[s : s + data.context_length].astype(np.float32).tolist() for s in starts]
        future = [values[s + data.context_length : s + need].astype(np.float32).tolist() for s in starts]
        return datasets.Dataset.from_dict({"past_values": past, "labels": future, "forecast_start": [s + data.context_length for s in starts],
                                           "steps": [len(values)] * len(starts)})  # fmt: skip

    def split(self, ds: datasets.Dataset, cfg: RunConfig, origin: str) -> tuple[datasets.Dataset, datasets.Dataset] | None:
        """Forecasting without data.validation: the last ``data.validation_split`` of the series
        (at least one horizon) is held out by time; the validation windows forecast inside it,
        reading the steps before (which may be training steps: the past is known); the training
        windows end before it. Classification: None, the usual stratified split."""
        if cfg.task != "forecasting":
            return None
        data = cfg.data
        steps = int(ds["steps"][0])
        held = max(data.prediction_length, round(data.validation_split * steps))
        boundary = steps - held
        starts = np.asarray(ds["forecast_start"])
        train = np.flatnonzero(starts + data.prediction_length <= boundary)[:: data.window_stride]
        validation = np.flatnonzero(starts >= boundary)
        if len(train) == 0:
            raise DataError(f"{origin}: {steps} steps leave {boundary} for training after the last {held} held out for validation "
                            f"(data.validation_split), fewer than one window of data.context_length + data.prediction_length "
                            f"({data.context_length + data.prediction_length}); shorten them, or give data.validation")  # fmt: skip
        return ds.select(train.tolist()), ds.select(validation.tolist())

    def load_processor(self, cfg: RunConfig, source: str | None = None) -> Any:
        """The run's SeriesProcessor (`source`: a finished run's folder, which saved one)."""
        if source is not None:
            processor = SeriesProcessor.from_pretrained(source)
        elif cfg.task == "forecasting":
            if self.channels is None:
                raise ConfigError("data.target_columns: unknown until the training data is read (load the data first)")
            if cfg.data.context_length < cfg.model.patch_length:
                raise ConfigError(f"data.context_length: {cfg.data.context_length} steps is shorter than one patch (model.patch_length: "
                                  f"{cfg.model.patch_length}); lower model.patch_length")  # fmt: skip
            processor = SeriesProcessor(cfg.data.context_length, self.channels, self.columns)
        else:
            length, channels = cfg.data.series_length or self.longest, self.channels
            if length is None or channels is None:
                raise ConfigError("data.series_length: unknown until the training series are read (load the data first), or set it")
            if length < cfg.model.patch_length:
                raise ConfigError(f"data.series_length: {length} steps is shorter than one patch (model.patch_length: "
                                  f"{cfg.model.patch_length}); lower model.patch_length")  # fmt: skip
            processor = SeriesProcessor(length, channels)
        self.length, self.channels, self.columns = processor.length, processor.channels, processor.columns
        return processor

    def patch_config(self, cfg: RunConfig, body: dict[str, Any], **head: Any) -> PatchTransformerConfig:
        """The model's config: the body's, and how the series reach it."""
        if self.length is None or self.channels is None:
            raise ConfigError("timeseries: load the processor (load_processor) before the model, to size its inputs")
        m = cfg.model
        config = PatchTransformerConfig(
            body=body, **{"num_input_channels": self.channels, "context_length": self.length, "patch_length": m.patch_length,
                          "patch_stride": m.patch_stride, "scaling": cfg.data.scaling, **head},
        )  # fmt: skip
        limit = max_positions(body_config_object(body))
        if limit is not None and config.num_patches > limit:
            raise ConfigError(f"model.patch_stride: {config.num_patches} patches of {self.length} steps are more than the "
                              f"{limit} positions of {m.name_or_path}; use a larger model.patch_stride or a shorter data.series_length")  # fmt: skip
        return config

    def load_model(self, cfg: RunConfig, label_names: list[str] | None) -> nn.Module:
        m = cfg.model
        dtype = None if m.dtype == "auto" else getattr(torch, m.dtype)
        cls = {"forecasting": PatchTransformerForPrediction, "pretraining": PatchTransformerForPretraining}.get(cfg.task, PatchTransformerForClassification)
        if cfg.task == "forecasting":
            head: dict[str, Any] = {"prediction_length": cfg.data.prediction_length, "channel_independent": True}
        elif cfg.task == "pretraining":
            head = {"mask_ratio": m.mask_ratio}
            if m.patch_stride < m.patch_length:  # overlapping patches would show a masked patch's values in its neighbours
                logger.warning("task: pretraining masks patches of %d steps cut every %d steps, as PatchTST pretrains: cut every "
                               "model.patch_stride=%d, a masked patch's values would show in its neighbours. A later run reads "
                               "patches every model.patch_stride again", m.patch_length, m.patch_length, m.patch_stride)  # fmt: skip
                head["patch_stride"] = m.patch_length
        else:
            assert label_names is not None
            head = {**label_head(label_names, cfg.data.problem_type), "channel_independent": False}  # every channel of a patch together
        kind = folder_model_type(m.name_or_path)
        if m.name_or_path in FAMILIES or kind in FAMILIES:
            if cfg.task == "pretraining":
                raise ConfigError("task: pretraining masks the patches of a transformer body read over series (model.name_or_path: a "
                                  "text model or a tlhub series folder); PatchTST from its config is not pretrained here")  # fmt: skip
            return self.load_patchtst(cfg, head, dtype, m.name_or_path if m.name_or_path in FAMILIES else str(kind))
        try:
            if kind == MODEL_TYPE:  # a finished run, or a pretraining run's folder: its patch embedding and body, this run's head
                return self.from_series_folder(cls, cfg, head, dtype)
            body_cfg = load_config(m)
            if m.config_overrides:
                for key, value in check_config_overrides(body_cfg, m.config_overrides).items():
                    setattr(body_cfg, key, value)
            model = cls(self.patch_config(cfg, body_cfg.to_dict(), **head))
            if m.pretrained:
                body = AutoModel.from_pretrained(m.name_or_path, config=body_cfg, dtype=torch.float32, **weight_kwargs(m))  # a GGUF file too (SmolLM2)
                missing, unexpected = model.body.load_state_dict(strip_body(body).state_dict(), strict=False)
                if missing or unexpected:
                    raise ValueError(f"the body's weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        except (OSError, ValueError, KeyError) as exc:
            raise model_error(m, exc) from None
        return model.to(dtype) if dtype is not None else model

    def from_series_folder(self, cls: type, cfg: RunConfig, head: dict[str, Any], dtype: torch.dtype | None) -> nn.Module:
        """A model of this modality's type from a folder: a finished run as it is, or another
        run's patch embedding and body (a pretraining run) under a new head for this run's task,
        reading this run's series (length, channels, scaling, patch stride; `head` over them). A weight whose shape no longer
        fits (several channels read together where the source read one) starts anew, and the
        log says which."""
        import transformers

        fit = {"context_length": self.length, "num_input_channels": self.channels, "scaling": cfg.data.scaling,
               "patch_stride": cfg.model.patch_stride} if self.length else {}  # fmt: skip
        level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # the new head's weights are new: transformers' notice would say so at length
        try:
            model, info = cls.from_pretrained(cfg.model.name_or_path, dtype=dtype or "auto", ignore_mismatched_sizes=True,
                                              output_loading_info=True, **{**fit, **head})  # fmt: skip
        finally:
            transformers.logging.set_verbosity(level)
        resized = [name for name, *_ in info.get("mismatched_keys", [])]
        if resized:
            logger.warning("model.name_or_path: %s starts anew (its shape in %s differs for these series)", ", ".join(resized), cfg.model.name_or_path)
        return model.train()

    def load_patchtst(self, cfg: RunConfig, head: dict[str, Any], dtype: torch.dtype | None, family: str) -> nn.Module:
        """transformers' PatchTST or PatchTSMixer (`family`): from its config (``model.name_or_path:
        patchtst | patchtsmixer``, always from random weights, sized by ``model.config_overrides``),
        or from a folder of its type."""
        m = cfg.model
        _, classifier, forecaster = FAMILIES[family]
        cls = forecaster if cfg.task == "forecasting" else classifier
        try:
            if m.name_or_path not in FAMILIES:
                return cls.from_pretrained(m.name_or_path, dtype=dtype or "auto").train()
            if self.length is None or self.channels is None:
                raise ConfigError("timeseries: load the processor (load_processor) before the model, to size its inputs")
            if cfg.task == "forecasting":
                head = {"prediction_length": head["prediction_length"]}
            else:
                head = {k: v for k, v in head.items() if k != "channel_independent"}
                head = {**head, "num_targets": head["num_labels"]}
            scaling = {"none": None}.get(cfg.data.scaling, cfg.data.scaling)
            config = patchtst_config(self.channels, self.length, m.patch_length, m.patch_stride, m.config_overrides or {}, family,
                                     scaling=scaling, **head)  # fmt: skip
            model = cls(config)
        except (OSError, ValueError, KeyError) as exc:
            raise model_error(m, exc) from None
        return model.to(dtype) if dtype is not None else model

    def transform(self, processor: Any, cfg: RunConfig, train: bool) -> Callable[[dict[str, list]], dict[str, list]]:
        column = cfg.data.series_column
        if cfg.task == "forecasting":  # windows, cut by prepare(); a command-line series, to its last context
            return lambda batch: {
                "past_values": [np.asarray(v, dtype=np.float32)[-processor.length :] for v in batch["past_values"]],
                **({"labels": [np.asarray(v, dtype=np.float32) for v in batch["labels"]]} if "labels" in batch else {}),
            }

        def apply(batch: dict[str, list]) -> dict[str, list]:
            out: dict[str, list] = dict(processor(batch[column]))
            if "labels" in batch:
                out["labels"] = batch["labels"]
            return out

        return apply

    def collator(self, processor: Any, cfg: RunConfig, model: nn.Module) -> Callable[[list[dict]], dict]:
        return collate_series

    def input_row(self, value: str, cfg: RunConfig) -> dict[str, Any]:
        """One series written out (``0.1,0.4,...``; channels separated by ``:``)."""
        where = "predict: the input"
        try:
            array, _ = clean(as_array(value, where), where, cfg.model.patch_length)
        except UnusableSeries as exc:  # a file's unusable row is skipped; a series on the command line is an error
            raise DataError(f"{where}: {exc}") from None
        if cfg.task == "forecasting":
            return {"past_values": self.history(array.T, where)}
        return {cfg.data.series_column: array.tolist()}

    def history(self, values: np.ndarray, where: str) -> list[list[float]]:
        """Forecasting: the last context of a series (steps, channels) that `tlhub predict` continues."""
        assert self.length is not None
        if len(values) < self.length:
            raise DataError(f"{where}: {len(values)} steps, fewer than the {self.length} the model reads (data.context_length)")
        if self.channels is not None and values.shape[1] != self.channels:
            raise DataError(f"{where}: {values.shape[1]} series where the model forecasts {self.channels} ({', '.join(self.columns or [])})")
        return values[-self.length :].tolist()

    def input_rows(self, value: str, cfg: RunConfig) -> list[tuple[str, dict[str, Any]]]:
        """A file of series (``.ts``, CSV/JSON/Parquet with data.series_column): a row each,
        named ``FILE:ROW``; anything else is one series written out."""
        path = Path(value).expanduser()
        if path.suffix.lower() not in SERIES_FILES + TABLE_FILES:
            return [(value, self.input_row(value, cfg))]
        if not path.is_file():
            raise DataError(f"predict: {path}: no such file")
        from tlhub.data import read_table, require_columns

        if cfg.task == "forecasting":  # the continuation of the table's target columns
            values, _, _ = long_series(read_table(path, "predict"), cfg.data.time_column, self.columns, f"predict ({path})")
            return [(path.name, {"past_values": self.history(values, f"predict ({path})")})]
        own = self.read_file(path, cfg, "predict")
        rows = own if own is not None else read_table(path, "predict")
        require_columns(rows, {"data.series_column": cfg.data.series_column}, f"predict ({path})")
        out = []
        for row, cell in enumerate(rows[cfg.data.series_column], 1):
            where = f"predict ({path}): row {row}: column '{cfg.data.series_column}'"
            try:
                array, _ = clean(as_array(cell, where), where, cfg.model.patch_length)
            except UnusableSeries as exc:
                raise DataError(f"{where}: {exc}") from None
            out.append((f"{path.name}:{row}", {cfg.data.series_column: array.tolist()}))
        if not out:
            raise DataError(f"predict: {path}: no series")
        return out


def body_config_object(body: dict[str, Any]) -> Any:
    """The body's transformers config object from its dict (to read its positions)."""
    from transformers import AutoConfig

    settings = dict(body)
    return AutoConfig.for_model(settings.pop("model_type"), **settings)
