"""Load and validate datasets: files, folders, `save_to_disk` output or Hub ids.

Every split ends up as a :class:`datasets.Dataset` with the user's columns plus, for
classification, an integer ``labels`` column (a ``ClassLabel`` whose names are the
label names seen in train). Problems a user can fix raise :class:`DataError` naming
the file, row and column; unreadable examples (images, audio) are skipped and
counted by the modality instead.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import pandas as pd

from tlhub.errors import ConfigError, DataError
from tlhub.labels import (
    check_spellings,
    decide,
    encode_multi_label,
    encode_regression,
    label_counts,
    multi_label_names,
    spelling,
    warn_if_skewed,
)

if TYPE_CHECKING:
    from tlhub.config import RunConfig
    from tlhub.modalities import Modality

logger = logging.getLogger(__name__)

FILE_READERS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet", ".conll": "conll", ".txt": "conll"}
LABELS = "labels"


@dataclass
class Table:
    """One split as read: its rows, the folder relative paths in it start from (None for a Hub
    dataset), and how messages name it: the config key and the file, ``data.train (reviews.csv)``."""

    rows: datasets.Dataset
    base_dir: Path | None
    origin: str


@dataclass
class LoadedData:
    """The splits of one run and what was learned while loading them."""

    splits: datasets.DatasetDict
    label_names: list[str] | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None  # single_label | multi_label | regression (tlhub.labels); None: not classification


# --------------------------------------------------------------------------- reading


def read_table(path: Path, key: str, label_column: str | None = None, word_columns: tuple[str, str] = ("tokens", "ner_tags")) -> datasets.Dataset:
    """Read a CSV/TSV/JSON/JSONL/Parquet file, or a CoNLL file of tagged words (into
    `word_columns`), into a Dataset, with clear errors."""
    kind = FILE_READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{key}: {path}: unsupported file type '{path.suffix}'; use one of {', '.join(FILE_READERS)}")
    if kind == "conll":
        return read_conll(path, key, word_columns)
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) would otherwise stick to the first column's name
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", encoding="utf-8-sig", quoting=3 if kind == "tsv" else 0)
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, encoding="utf-8-sig")
        elif kind == "json":
            try:
                frame = pd.read_json(path, encoding="utf-8-sig")
            except ValueError:
                frame = pd.read_json(path, lines=True, encoding="utf-8-sig")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path}: not UTF-8 text ({_first_bad_byte(path, exc)}); re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path}: the file is empty") from None
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{key}: {path}: cannot read as {kind}: {first}") from None
    if len(frame) == 0:
        raise DataError(f"{key}: {path}: no rows")
    frame.columns = [str(c) for c in frame.columns]
    # Arrow needs one type per column. A label column that mixes numbers and strings is
    # a user error (is "1" the same class as 1?); other mixed columns become strings.
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = sorted({type(v).__name__ for v in frame[column] if not _missing(v)})
        if len(kinds) > 1:
            nested = next((row for row, v in enumerate(frame[column], 1) if isinstance(v, (dict, list))), None)
            if nested is not None:
                kind = "a list" if isinstance(frame[column].iloc[nested - 1], list) else "a mapping"
                raise DataError(f"{key} ({path}): row {nested}: column '{column}' holds {kind} where other rows hold "
                                f"{', '.join(k for k in kinds if k not in ('dict', 'list'))}; give every row the same kind of value")  # fmt: skip
            if column == label_column:
                raise DataError(
                    f"{key} ({path}): column '{column}' mixes value types ({', '.join(kinds)}); use only numbers or only strings"
                )
            frame[column] = frame[column].map(lambda v: None if _missing(v) else str(v))
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def text_column(ds: datasets.Dataset, column: str, origin: str, what: str = "text") -> datasets.Dataset:
    """`ds` with `column` checked to hold text in every row, and numbers (a column of codes or
    years, which the file reader typed as numbers) turned into their text. `what` names the
    text in messages (a prompt, a completion)."""
    for row, value in enumerate(ds[column], 1):
        if isinstance(value, (list, dict)):
            kind = "a list" if isinstance(value, list) else "a mapping"
            raise DataError(f"{origin}: row {row}: column '{column}' holds {kind}, not text; give one string per row")
        if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{origin}: row {row}: empty {what} in column '{column}'; fill it in or drop the row")
    feature = ds.features[column]
    if isinstance(feature, datasets.Value) and feature.dtype not in ("string", "large_string"):
        ds = ds.cast_column(column, datasets.Value("string"))
    return ds


def read_conll(path: Path, key: str, columns: tuple[str, str]) -> datasets.Dataset:
    """A CoNLL-style file: one ``token<TAB>tag`` (or ``token tag``; with more columns, as
    CoNLL-2003's, the first and the last) per line, a blank or tab-only line between
    sentences, ``-DOCSTART-`` lines skipped; rows of the sentences' words and tags."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path}: not UTF-8 text ({_first_bad_byte(path, exc)}); re-save the file as UTF-8") from None
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(text.splitlines() + [""], 1):
        if not line.strip():  # a sentence ends
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [part.strip() for part in parts]
        if len(parts) < 2 or not parts[0] or not parts[-1]:
            raise DataError(f"{key}: {path}: line {number}: expected a word and its tag (word<TAB>tag), got {line!r}")
        words.append(parts[0])
        tags.append(parts[-1])
    if not sentences:
        raise DataError(f"{key}: {path}: no tagged words (one word<TAB>tag per line, a blank line between sentences)")
    return datasets.Dataset.from_dict({columns[0]: [w for w, _ in sentences], columns[1]: [t for _, t in sentences]})


def _first_bad_byte(path: Path, exc: UnicodeDecodeError) -> str:
    """Where the first non-UTF-8 byte of `path` is, as "byte 0xe9 on line 2".

    Readers decode in chunks, so the offset in `exc` may be relative to a chunk;
    decoding the whole file again finds the real position.
    """
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as whole:
        exc = whole
    else:
        return f"byte {exc.object[exc.start]:#04x}"
    line = raw.count(b"\n", 0, exc.start) + 1
    return f"byte {raw[exc.start]:#04x} on line {line}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def read_source(spec: str, split: str, key: str, cfg: RunConfig, modality: Modality) -> Table:
    """Read one split (config key `key`) from a file, a folder or a Hub dataset id."""
    path = Path(spec).expanduser()
    origin = f"{key} ({path})"
    if path.is_file():
        own = modality.read_file(path, cfg, key)  # a format of the modality's own (.ts series), else a table
        rows = own if own is not None else read_table(path, key, cfg.data.label_column, (cfg.data.tokens_column, cfg.data.tags_column))
        return Table(rows, path.parent, origin)
    if path.is_dir():
        if _is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{key}: {path}: no split '{split}'; splits are: {', '.join(loaded)}")
                loaded = loaded[split]
            return Table(loaded, path, origin)
        return Table(modality.load_folder(path, cfg, key), path, origin)
    if spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in FILE_READERS:
        raise DataError(f"{key}: {spec}: no such file or folder")
    return Table(_load_hub(spec, split, key, cfg), None, key)


def _load_hub(spec: str, split: str, key: str, cfg: RunConfig) -> datasets.Dataset:
    try:
        return datasets.load_dataset(spec, cfg.data.dataset_config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "cannot load"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{key}: '{spec}' is not a local file or folder, and loading it from the Hub failed ({reason[:200]}). "
            "Check the name, or save the data locally (csv, json, parquet, save_to_disk) and pass its path."
        ) from None


# --------------------------------------------------------------------------- checking


def require_columns(ds: datasets.Dataset, columns: dict[str, str], origin: str) -> None:
    """Fail with a message naming the config key when a required column is missing."""
    for config_key, column in columns.items():
        if column not in ds.column_names:
            raise DataError(
                f"{origin}: no column '{column}' (set by {config_key}); columns are: {', '.join(ds.column_names)}"
            )


def is_sequence(feature: Any) -> bool:
    """Whether a column holds a list per row (a tag per word)."""
    return isinstance(feature, (list, datasets.Sequence, getattr(datasets, "List", datasets.Sequence), datasets.LargeList))


def label_names_from(ds: datasets.Dataset, column: str, origin: str) -> list[str]:
    """The sorted distinct labels of `column`, checked for missing values and mixed types.
    A column of lists (a tag per word) gives its tags' names, ``O`` first."""
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        check_class_ids(ds, column, origin)
        return list(feature.names)
    if is_sequence(feature):
        tags = {str(tag) for row in ds[column] for tag in row}
        return sorted(tags, key=lambda tag: (tag != "O", tag))
    values = ds[column]
    for row, value in enumerate(values, 1):
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{origin}: row {row}: empty label in column '{column}'; fill it in or drop the row")
    distinct = set(values)
    if len({isinstance(v, str) for v in distinct}) > 1:
        raise DataError(f"{origin}: column '{column}' mixes numbers and strings; use only one kind")
    if all(isinstance(v, (int, float)) for v in distinct):
        if not all(float(v).is_integer() for v in distinct):
            raise DataError(f"{origin}: column '{column}' holds fractional numbers; class labels must be integers or strings")
        return [str(int(v)) for v in sorted(distinct)]
    return sorted(str(v) for v in distinct)


def check_class_ids(ds: datasets.Dataset, column: str, origin: str) -> None:
    """A ClassLabel column holds ids in [0, number of names): -1 marks an unlabelled row
    (GLUE's test splits are all -1), which must never reach the loss."""
    feature = ds.features[column]
    for row, value in enumerate(ds[column], 1):
        if value is None or not 0 <= value < feature.num_classes:
            what = "no label (-1: an unlabelled row, as in GLUE's test splits)" if value in (-1, None) else f"label id {value}"
            raise DataError(
                f"{origin}: row {row}: {what} in column '{column}' of {feature.num_classes} classes; "
                "use a labelled split or drop such rows"
            )


def encode_labels(ds: datasets.Dataset, column: str, names: list[str], origin: str) -> datasets.Dataset:
    """Add the integer ``labels`` column; a label not in `names` is an error naming its row. A
    column of lists (a tag per word) becomes a list of tag ids per row."""
    if is_sequence(ds.features[column]):
        return encode_tags(ds, column, names, origin)
    if isinstance(ds.features[column], datasets.ClassLabel):
        check_class_ids(ds, column, origin)
    if isinstance(ds.features[column], datasets.ClassLabel) and list(ds.features[column].names) == names:
        return ds.cast_column(column, datasets.ClassLabel(names=names)).map(
            lambda b: {LABELS: b[column]}, batched=True, features=_with_labels(ds, names)
        )
    label_names_from(ds, column, origin)  # the same checks as train: empty and mixed values
    index = {name: i for i, name in enumerate(names)}
    source = ds.features[column]

    def normalise(value: Any) -> str:
        if isinstance(source, datasets.ClassLabel):
            return source.int2str(value)
        return str(int(value)) if isinstance(value, (int, float)) else str(value)

    for row, value in enumerate(ds[column], 1):
        if normalise(value) not in index:
            raise DataError(
                f"{origin}: row {row}: label '{normalise(value)}' does not occur in the training data "
                f"(labels: {', '.join(names)})"
            )
    return ds.map(
        lambda b: {LABELS: [index[normalise(v)] for v in b[column]]},
        batched=True,
        features=_with_labels(ds, names),
    )


def encode_tags(ds: datasets.Dataset, column: str, names: list[str], origin: str) -> datasets.Dataset:
    """Each row's tags as ids in ``labels``; a tag the training data lacks is an error naming it."""
    index = {name: i for i, name in enumerate(names)}
    for row, tags in enumerate(ds[column], 1):
        unknown = [str(tag) for tag in tags if str(tag) not in index]
        if unknown:
            raise DataError(
                f"{origin}: row {row}: tag '{unknown[0]}' does not occur in the training data (tags: {', '.join(names)}); "
                "add it to the training data or correct it"
            )
    return ds.map(lambda b: {LABELS: [[index[str(tag)] for tag in tags] for tags in b[column]]}, batched=True)


def _with_labels(ds: datasets.Dataset, names: list[str]) -> datasets.Features:
    features = ds.features.copy()
    features[LABELS] = datasets.ClassLabel(names=names)
    return features


def split_validation(ds: datasets.Dataset, fraction: float, seed: int, stratify: bool, origin: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hold out `fraction` of `ds`, stratified by ``labels`` when possible.

    A class with a single row cannot be both trained on and validated: an error naming it. When
    the held-out share is too small to hold every class, the split is a plain seeded one, said
    in a warning.
    """
    if len(ds) < 2:
        raise DataError(f"{origin}: {len(ds)} row(s) is too few to split off a validation set")
    stratify = stratify and not is_sequence(ds.features.get(LABELS))  # a tag per word: no class to stratify by
    if stratify:
        feature = ds.features[LABELS]
        counts = {i: 0 for i in range(feature.num_classes)}
        for label in ds[LABELS]:
            counts[label] += 1
        single = [feature.int2str(i) for i, n in counts.items() if n == 1]
        if single:
            raise DataError(
                f"{origin}: class {', '.join(repr(c) for c in single[:5])} has a single row, which a "
                "validation split (data.validation_split) cannot put in both training and validation; add rows of it, "
                "drop it, or give data.validation"
            )
    try:
        parts = ds.train_test_split(test_size=fraction, seed=seed, stratify_by_column=LABELS if stratify else None)
    except ValueError as exc:  # fewer held-out rows than classes: a plain seeded split
        logger.warning("%s: a stratified validation split is impossible (%s); splitting without stratification", origin, exc)
        parts = ds.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]


def split_by_group(ds: datasets.Dataset, column: str, fraction: float, seed: int, origin: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hold out about `fraction` of the rows as whole groups of `column` (data.group_column): the
    distinct values in a seeded order, groups taken until the held-out rows reach the fraction,
    so that no value (a passage) is in both train and validation."""
    import numpy as np

    if column not in ds.column_names:
        raise DataError(f"{origin}: no column '{column}' (set by data.group_column); columns are: {', '.join(ds.column_names)}")
    values = [str(v) for v in ds[column]]
    groups = list(dict.fromkeys(values))
    if len(groups) < 2:
        raise DataError(f"{origin}: column '{column}' (data.group_column) holds {len(groups)} distinct value(s); a split by group needs two or more")
    order = np.random.default_rng(seed).permutation(len(groups))
    wanted, held, taken = round(fraction * len(ds)), set(), 0
    sizes = {g: 0 for g in groups}
    for value in values:
        sizes[value] += 1
    for i in order[:-1]:  # at least one group stays in train
        if taken >= max(wanted, 1):
            break
        held.add(groups[i])
        taken += sizes[groups[i]]
    validation = [i for i, v in enumerate(values) if v in held]
    train = [i for i, v in enumerate(values) if v not in held]
    return ds.select(train), ds.select(validation)


def sample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """At most `n` rows, a seeded random sample (all rows when n is None or larger)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def fraction_of(ds: datasets.Dataset, fraction: float, seed: int, stratify: bool) -> datasets.Dataset:
    """A seeded `fraction` of `ds`, stratified by ``labels`` (at least one row per class).

    Each class's rows are shuffled once with `seed` and the first ``round(fraction * n)``
    are kept, so with the same seed a smaller fraction is a subset of a larger one: the
    points of a data-efficiency curve differ only by the rows added.
    """
    if fraction >= 1.0:
        return ds
    import numpy as np

    rng = np.random.default_rng(seed)
    if stratify and LABELS in ds.column_names and not is_sequence(ds.features[LABELS]):
        labels = np.asarray(ds[LABELS])
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    else:
        groups = [np.arange(len(ds))]
    keep = []
    for group in groups:
        order = rng.permutation(group)
        keep.extend(order[: max(1, round(fraction * len(group)))].tolist())
    return ds.select(sorted(keep))


def per_class(ds: datasets.Dataset, n: int, seed: int, names: list[str] | None, key: str = "data.samples_per_class") -> datasets.Dataset:
    """`n` rows of each class, a seeded draw that is nested as `n` grows.

    Each class's rows are put in one seeded order and the first `n` kept, so the draw of
    8 per class is part of the draw of 16 with the same seed. A class with fewer than `n`
    rows is an error naming it and its count.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if is_sequence(ds.features[LABELS]):  # a tag per word: `n` sentences, nested alike
        if n > len(ds):
            raise DataError(f"{key}: {n} is more than the {len(ds)} training sentences; use at most {len(ds)}")
        return ds.select(sorted(rng.permutation(len(ds))[:n].tolist()))
    labels = np.asarray(ds[LABELS])
    keep = []
    for value in range(len(names or [])) if names else np.unique(labels):
        rows = np.flatnonzero(labels == value)
        if len(rows) < n:
            name = names[value] if names else str(value)
            raise DataError(
                f"{key}: {n} is more than the {len(rows)} training rows of class '{name}'; "
                f"use at most {len(rows)}, or add rows of that class"
            )
        keep.extend(rng.permutation(rows)[:n].tolist())
    return ds.select(sorted(keep))


# --------------------------------------------------------------------------- the whole load


def load_data(cfg: RunConfig, modality: Modality) -> LoadedData:
    """Read, check and split the data of a run; see the module docstring."""
    data = cfg.data
    class_column = modality.class_column(cfg)  # the column of classes (a tag per word for tokens), if the task has one
    tables = {"train": read_source(data.train, data.train_split, "data.train", cfg, modality)}
    for name, spec in (("validation", data.validation), ("test", data.test)):
        if spec is not None:
            split = data.eval_split if name == "validation" else data.test_split
            tables[name] = read_source(spec, split, f"data.{name}", cfg, modality)

    columns = modality.required_columns(cfg)
    splits: dict[str, datasets.Dataset] = {}
    skipped: dict[str, int] = {}
    for name, table in tables.items():
        require_columns(table.rows, columns, table.origin)
        ds, bad = modality.prepare(table.rows, cfg, table.base_dir, table.origin)
        if len(ds) == 0:
            raise DataError(f"data.{name}: no usable rows")
        splits[name], skipped[name] = ds, bad

    label_names = None
    origin = tables["train"].origin
    problem = problem_of(cfg, modality, splits["train"], class_column, origin)  # single_label | multi_label | regression | None
    if class_column is not None:
        label_names = training_labels(splits, class_column, problem, data, origin, modality.min_classes(cfg))
        for name in splits:
            splits[name] = encode_split(splits[name], class_column, label_names, problem, data, tables[name].origin)

    classes = class_column is not None and problem in (None, "single_label")  # classes to stratify by
    if samples_per_class_refused(problem, data):
        raise ConfigError(f"data.samples_per_class: draws rows per class, for single-label classes; data.problem_type is {problem}: "
                          "use data.max_train_samples")  # fmt: skip
    if "validation" not in splits:
        own = modality.split(splits["train"], cfg, origin)  # by time, for windows of a long series
        if own is not None:
            splits["train"], splits["validation"] = own
        elif data.group_column is not None:  # whole groups (a passage and its questions) on one side
            splits["train"], splits["validation"] = split_by_group(splits["train"], data.group_column, data.validation_split, data.seed, origin)
        else:
            splits["train"], splits["validation"] = split_validation(splits["train"], data.validation_split, data.seed, classes, origin)
    splits["train"] = sample(splits["train"], data.max_train_samples, data.seed)
    splits["train"] = fraction_of(splits["train"], data.train_fraction, data.seed, stratify=classes)
    if data.samples_per_class is not None:
        if not classes:
            raise ConfigError(f"data.samples_per_class: draws rows per class, for classes; for task {cfg.task} use data.max_train_samples")
        splits["train"] = per_class(splits["train"], data.samples_per_class, data.seed, label_names)
    for name in ("validation", "test"):
        if name in splits:
            splits[name] = sample(splits[name], data.max_eval_samples, data.seed)
    if problem in ("single_label", "multi_label") and label_names:
        warn_if_skewed(label_counts(splits["train"], problem, label_names), "data.train")
    return LoadedData(datasets.DatasetDict(splits), label_names, {k: v for k, v in skipped.items() if v}, problem)


# --------------------------------------------------------------------------- problem types (issue 35)


def problem_of(cfg: RunConfig, modality: Modality, train: datasets.Dataset, column: str | None, origin: str) -> str | None:
    """The run's problem type (tlhub.labels), decided from the training split where
    ``data.problem_type`` is auto and written back to ``cfg.data.problem_type``, so the run's
    config.yaml records it; None for tasks without problem types (a tag per word)."""
    if column is None or not modality.problem_types(cfg):
        return None
    problem = decide(train, column, cfg.data, origin)
    if cfg.data.tune_threshold and problem != "multi_label":
        raise ConfigError(f"data.tune_threshold: tunes the decision threshold of multi_label runs; this run is {problem} "
                          f"(column '{column}'); remove data.tune_threshold or set data.problem_type: multi_label")  # fmt: skip
    cfg.data.problem_type = problem
    return problem


def samples_per_class_refused(problem: str | None, data: Any) -> bool:
    return data.samples_per_class is not None and problem in ("multi_label", "regression")


def training_labels(
    splits: dict[str, datasets.Dataset], column: str, problem: str | None, data: Any, origin: str, min_classes: int = 2
) -> list[str]:
    """The label names the head is sized to: the training split's classes (spellings checked,
    and merged with data.normalize_labels), its multi-label labels, or for regression the one
    output, named after the column. Fewer than `min_classes` (the modality's and task's: one
    for a detector of one kind of object) is a DataError."""
    train = splits["train"]
    if problem == "regression":
        return [column]
    if problem == "multi_label":
        names = multi_label_names(train, column, data, origin)
    else:
        if problem == "single_label" and isinstance(train.features[column], datasets.Value) and train.features[column].dtype in ("string", "large_string"):
            values = [v for v in train[column] if isinstance(v, str)]
            canonical = check_spellings(Counter(values), data.normalize_labels, column, origin)
            if any(raw != target for raw, target in canonical.items()):
                splits["train"] = train.map(lambda b: {column: [canonical.get(v, v) for v in b[column]]}, batched=True)
        names = label_names_from(splits["train"], column, origin)
    if not names:
        raise DataError(f"{origin}: no classes in column '{column}'; the training data needs labelled examples")
    if len(names) < min_classes:
        raise DataError(f"{origin}: only one class ('{names[0]}') in column '{column}'; classification needs at least two")
    return names


def encode_split(ds: datasets.Dataset, column: str, names: list[str], problem: str | None, data: Any, origin: str) -> datasets.Dataset:
    """Add ``labels`` to one split the way its problem type reads them: class ids, multi-hot
    vectors or numbers; a label training lacks, a missing value or text where a number belongs
    is a DataError naming the row."""
    if problem == "multi_label":
        return encode_multi_label(ds, column, names, data, origin)
    if problem == "regression":
        return encode_regression(ds, column, origin)
    feature = ds.features[column]
    if problem == "single_label" and data.normalize_labels and isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        spell = spelling(names, True)
        ds = ds.map(lambda b: {column: [spell(v) if isinstance(v, str) else v for v in b[column]]}, batched=True)
    return encode_labels(ds, column, names, origin)
