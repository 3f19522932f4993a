"""The target domain of a run: read and checked once for every run of a domain-adaptation
family (the source-only baseline, the teacher, the adapted run), its labels (where it has
them) kept for scoring only, and the rows a teacher labels joined to the source's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch

from tlhub.data import LABELS, encode_labels, read_source, require_columns, sample
from tlhub.errors import DataError

if TYPE_CHECKING:
    from tlhub.config import RunConfig
    from tlhub.modalities import Modality

TARGET_KEY = "domain_adaptation.target"


@dataclass
class TargetData:
    """The target's rows as read and checked, before any preprocessing (each run applies its own
    processor: :meth:`training_rows`, :meth:`scored_rows`)."""

    cfg: RunConfig  # the run's config with the target's column names
    unlabelled: datasets.Dataset  # every target row, labels removed (what adaptation sees), in the order read
    labelled: datasets.Dataset | None  # the same rows with their labels, for scoring only
    texts: list[str] | None  # raw target text (text modality), for dapt

    def training_rows(self, modality: Modality, processor: Any) -> datasets.Dataset:
        """The unlabelled rows as the Trainer's target batches read them (training transform)."""
        return self.unlabelled.with_transform(modality.transform(processor, self.cfg, train=True))

    def scored_rows(self, modality: Modality, processor: Any) -> datasets.Dataset:
        """Every target row as evaluation reads it: with its label where the target has them."""
        rows = self.labelled if self.labelled is not None else self.unlabelled
        return rows.with_transform(modality.transform(processor, self.cfg, train=False))


def target_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with the target's column names in ``data`` (so the modality reads the target)."""
    da = cfg.domain_adaptation
    assert da is not None
    changes = {
        key: getattr(da, key)
        for key in ("text_column", "image_column", "audio_column", "label_column")
        if getattr(da, key) is not None
    }
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def load_target(cfg: RunConfig, modality: Modality, label_names: list[str] | None) -> TargetData:
    """Read and check the target data of a run (its media decoded once, bad rows skipped), at
    most ``max_target_samples`` rows; its labels, where present, encoded as the source's."""
    da = cfg.domain_adaptation
    assert da is not None
    tcfg = target_config(cfg)
    table = read_source(da.target, da.target_split, TARGET_KEY, tcfg, modality)
    required = modality.required_columns(tcfg)
    required.pop("data.label_column", None)
    require_columns(table.rows, {k.replace("data.", "domain_adaptation."): v for k, v in required.items()}, table.origin)
    if da.label_column is not None:
        require_columns(table.rows, {"domain_adaptation.label_column": da.label_column}, table.origin)
    label_column = tcfg.data.label_column if tcfg.data.label_column in table.rows.column_names else None
    ds, _ = modality.prepare(table.rows, tcfg, table.base_dir, table.origin)
    if len(ds) == 0:
        raise DataError(f"{table.origin}: no usable rows")
    ds = sample(ds, da.max_target_samples, cfg.data.seed)
    labelled = None
    if label_column is not None and label_names is not None:
        labelled = encode_labels(ds, label_column, label_names, table.origin)
    unlabelled = ds.remove_columns([c for c in (label_column, LABELS) if c is not None and c in ds.column_names])
    texts = list(unlabelled[tcfg.data.text_column]) if cfg.modality == "text" else None
    return TargetData(tcfg, unlabelled, labelled, texts)


def with_pseudo_labelled_rows(
    train: datasets.Dataset, target: TargetData, cfg: RunConfig, modality: Modality, labels: torch.Tensor
) -> datasets.Dataset:
    """The source's training rows plus the target rows a teacher labelled (``labels`` >= 0,
    in the order of ``target.unlabelled``), under the source's column names and types: what
    a self_training round trains on. Both keep only the columns the model reads."""
    inputs = {key: column for key, column in modality.required_columns(cfg).items() if key != "data.label_column"}
    theirs = modality.required_columns(target.cfg)
    keep = (labels >= 0).nonzero().squeeze(1).tolist()
    rows = target.unlabelled.with_format(None).select(keep).select_columns([theirs[key] for key in inputs])
    rows = rows.rename_columns({theirs[key]: column for key, column in inputs.items() if theirs[key] != column})
    rows = rows.add_column(LABELS, labels[keep].tolist())
    ours = train.select_columns([*inputs.values(), LABELS])
    try:
        rows = rows.cast(ours.features)
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{TARGET_KEY}: its columns {', '.join(theirs[key] for key in inputs)} cannot take the types of data.train's "
            f"({error}); self_training rounds train on both, so give them the same format, or set "
            "domain_adaptation.self_training_rounds: 0"
        ) from None
    return datasets.concatenate_datasets([ours, rows])
