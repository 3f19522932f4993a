"""Labels of a classification run: which problem it is (one class, several labels, a number),
how label spellings are checked, and how a label column becomes the ``labels`` the model reads.

- ``single_label``: one class per row, an integer id (``datasets.ClassLabel``), cross-entropy.
- ``multi_label``: a list of labels per row (JSON/Parquet lists, a ``Sequence(ClassLabel)``,
  or a string split on ``data.label_separator``), a multi-hot float vector, sigmoid outputs
  with binary cross-entropy, as transformers' ``problem_type: multi_label_classification``.
- ``regression``: a number per row, a float, one output with mean squared error
  (``problem_type: regression``).

``data.problem_type: auto`` decides from the training split's label column and says what it
decided. The resolved type is written back to the run's config (``config.yaml``), so a finished
run is read back as what it was trained as.

Label spellings: labels that are equal once surrounding spaces are stripped (``pos`` and
``pos ``), or once case is folded (``Pos`` and ``pos``), are refused naming both, unless
``data.normalize_labels`` merges them into the most frequent spelling.

This module imports no torch (the config reads :func:`check_label_settings`).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from tlhub.errors import DataError
from tlhub.settings import check, check_choice

if TYPE_CHECKING:
    import datasets

    from tlhub.config import DataConfig

logger = logging.getLogger(__name__)

PROBLEM_TYPES = ("auto", "single_label", "multi_label", "regression")
# tlhub's names -> transformers' config.problem_type
HF_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
LABELS = "labels"


def check_label_settings(data: DataConfig) -> None:
    """The `data` keys of problem types and label spellings, each checked naming its key."""
    check_choice(data.problem_type, PROBLEM_TYPES, "data.problem_type", "problem type")
    check(0.0 < data.threshold < 1.0, "data.threshold", f"must be between 0 and 1, got {data.threshold}")
    check(data.label_separator is None or data.label_separator != "", "data.label_separator", "must be a non-empty string or null")
    check(
        not (data.tune_threshold and data.problem_type in ("single_label", "regression")),
        "data.tune_threshold",
        f"tunes the decision threshold of multi_label runs; data.problem_type is {data.problem_type}",
    )


def hf_problem_type(problem: str | None) -> str | None:
    """transformers' ``config.problem_type`` for tlhub's name (None: not a classification run)."""
    return HF_PROBLEM_TYPES.get(problem or "")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray"


def _looks_like_json_list(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]")


# --------------------------------------------------------------------------- the problem type


def decide(ds: datasets.Dataset, column: str, data: DataConfig, origin: str) -> str:
    """The run's problem type: ``data.problem_type``, or with ``auto`` what the training split's
    `column` holds (logged): lists (or strings holding `label_separator`, or JSON lists) are
    multi-label, numbers with fractions regression, anything else single-label."""
    if data.problem_type != "auto":
        return data.problem_type
    import datasets as hf

    feature = ds.features[column]
    reason = ""
    if isinstance(feature, hf.ClassLabel):
        problem = "single_label"
    elif isinstance(feature, (list, hf.Sequence, getattr(hf, "List", hf.Sequence), hf.LargeList)):
        problem, reason = "multi_label", "holds a list of labels per row"
    else:
        present = [v for v in ds[column] if not _missing(v)]
        texts = [v for v in present if isinstance(v, str)]
        if texts and data.label_separator and any(data.label_separator in v for v in texts):
            problem, reason = "multi_label", f"holds labels separated by {data.label_separator!r}"
        elif texts and all(_looks_like_json_list(v) for v in texts):
            problem, reason = "multi_label", "holds JSON lists of labels"
        elif present and not texts and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present) and any(
            not float(v).is_integer() for v in present
        ):
            problem, reason = "regression", "holds numbers with fractions"
        else:
            problem = "single_label"
    # said aloud where it departs from one class per row; the plain case, as every run before, in the info log
    (logger.info if problem == "single_label" else logger.warning)(
        "data.problem_type: auto decided %s: column '%s' of %s %s; set data.problem_type to choose",
        problem, column, origin, reason or "holds one class per row",
    )  # fmt: skip
    return problem


# --------------------------------------------------------------------------- reading the column


def label_lists(ds: datasets.Dataset, column: str, data: DataConfig, origin: str) -> list[list[str]]:
    """Each row's labels as strings (multi-label), checked: a row without labels, an empty list,
    or a column mixing lists and strings is a DataError naming the row."""
    import datasets as hf

    feature = ds.features[column]
    inner = getattr(feature, "feature", None)
    names = inner.names if isinstance(inner, hf.ClassLabel) else None
    rows: list[list[str]] = []
    first_list: int | None = None
    first_text: int | None = None
    for row, value in enumerate(ds[column], 1):
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{origin}: row {row}: no labels in column '{column}'; give at least one label or drop the row")
        if _is_list(value):
            first_list = first_list or row
            items = list(value)
        elif isinstance(value, str):
            first_text = first_text or row
            text = value.strip()
            if _looks_like_json_list(text) and not data.label_separator:
                try:
                    items = json.loads(text)
                except json.JSONDecodeError:
                    raise DataError(f"{origin}: row {row}: column '{column}' holds {value!r}, which is not a JSON list of labels") from None
            elif data.label_separator:
                items = [part for part in text.split(data.label_separator)]
            else:
                items = [text]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        else:
            raise DataError(f"{origin}: row {row}: column '{column}' holds a {type(value).__name__}; give a list of labels per row")
        if first_list is not None and first_text is not None:
            raise DataError(
                f"{origin}: row {max(first_list, first_text)}: column '{column}' holds "
                f"{'a list' if max(first_list, first_text) == first_list else 'a string'} where row {min(first_list, first_text)} holds "
                f"{'a string' if max(first_list, first_text) == first_list else 'a list'}; give every row a list of labels "
                "(or every row a string split by data.label_separator)"
            )
        labels = []
        for item in items:
            if _missing(item) or (isinstance(item, str) and not item.strip()):
                continue
            if names is not None and isinstance(item, int):
                item = names[item]
            labels.append(str(int(item)) if isinstance(item, float) and item.is_integer() else str(item))
        if not labels:
            raise DataError(
                f"{origin}: row {row}: empty label list in column '{column}'; multi-label rows need at least one label "
                "(drop the row, or add a label such as 'none')"
            )
        rows.append(list(dict.fromkeys(labels)))  # each label once, in order
    return rows


def numbers(ds: datasets.Dataset, column: str, origin: str) -> list[float]:
    """Each row's number (regression), checked: a missing value, NaN, infinity or text is a
    DataError naming the row."""
    out: list[float] = []
    for row, value in enumerate(ds[column], 1):
        if isinstance(value, bool) or _is_list(value) or isinstance(value, dict):
            raise DataError(f"{origin}: row {row}: column '{column}' holds {value!r}, not a number; regression needs one number per row")
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{origin}: row {row}: no value (empty or NaN) in column '{column}'; regression needs a number in every row: fill it in or drop the row")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise DataError(f"{origin}: row {row}: {value!r} in column '{column}' is not a number; regression (data.problem_type) needs a number in every row") from None
        if not math.isfinite(number):
            raise DataError(f"{origin}: row {row}: {value!r} in column '{column}' is not a finite number; fill in a number or drop the row")
        out.append(number)
    return out


# --------------------------------------------------------------------------- spellings


def _fold_spaces(name: str) -> str:
    return name.strip()


def _fold_case(name: str) -> str:
    return name.strip().casefold()


def check_spellings(counts: Counter[str], normalize: bool, column: str, origin: str) -> dict[str, str]:
    """Each spelling in `counts` (label -> rows) mapped to the label it stands for.

    Spellings equal after stripping spaces, then (separately) after folding case, are one
    label: without `normalize` a DataError names both; with it they merge into the most
    frequent spelling (stripped), which is logged."""
    canonical = {name: name for name in counts}
    for fold, how in ((_fold_spaces, "only in surrounding spaces"), (_fold_case, "only in case")):
        groups: dict[str, list[str]] = {}
        for name in sorted(set(canonical.values())):
            groups.setdefault(fold(name), []).append(name)
        for spellings in groups.values():
            if len(spellings) < 2:
                continue
            if not normalize:
                a, b = spellings[:2]
                raise DataError(
                    f"{origin}: labels {a!r} and {b!r} in column '{column}' differ {how}; correct the data, or set "
                    "data.normalize_labels: true to merge them"
                )
            weight = {s: sum(n for raw, n in counts.items() if canonical[raw] == s) for s in spellings}
            keep = max(spellings, key=lambda s: (weight[s], s == s.strip(), s))
            for raw, target in canonical.items():
                if target in spellings:
                    canonical[raw] = keep.strip()
            logger.warning(
                "data.normalize_labels: merged %s into %r (labels differing %s)",
                ", ".join(repr(s) for s in spellings if s != keep), keep.strip(), how,
            )  # fmt: skip
    if normalize:  # a label alone with stray spaces is stripped too
        canonical = {raw: target.strip() for raw, target in canonical.items()}
    return canonical


def spelling(names: list[str], normalize: bool) -> Any:
    """A function from a spelling in evaluation data to the training label it stands for: with
    `normalize`, by stripped, case-folded match; else the spelling itself."""
    folded = {_fold_case(name): name for name in names}
    if not normalize:
        return lambda value: value
    return lambda value: folded.get(_fold_case(value), value.strip())


# --------------------------------------------------------------------------- encoding


def multi_label_names(ds: datasets.Dataset, column: str, data: DataConfig, origin: str) -> list[str]:
    """The sorted labels of a multi-label training split, spellings checked."""
    rows = label_lists(ds, column, data, origin)
    counts = Counter(label for labels in rows for label in labels)
    canonical = check_spellings(counts, data.normalize_labels, column, origin)
    return sorted(set(canonical.values()))


def encode_multi_label(ds: datasets.Dataset, column: str, names: list[str], data: DataConfig, origin: str) -> datasets.Dataset:
    """Add ``labels``: a multi-hot float vector over `names` per row; a label the training
    data lacks is a DataError naming the row."""
    import datasets as hf

    index = {name: i for i, name in enumerate(names)}
    spell = spelling(names, data.normalize_labels)
    vectors = []
    for row, labels in enumerate(label_lists(ds, column, data, origin), 1):
        vector = [0.0] * len(names)
        for label in labels:
            label = spell(label)
            if label not in index:
                raise DataError(
                    f"{origin}: row {row}: label '{label}' does not occur in the training data "
                    f"(labels: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}); add it to the training data or correct it"
                )
            vector[index[label]] = 1.0
        vectors.append(vector)
    feature = hf.List(hf.Value("float32"), length=len(names)) if hasattr(hf, "List") else hf.Sequence(hf.Value("float32"), length=len(names))
    return _without_labels(ds).add_column(LABELS, vectors, feature=feature)


def encode_regression(ds: datasets.Dataset, column: str, origin: str) -> datasets.Dataset:
    """Add ``labels``: the row's number as float32; NaN or text is a DataError naming the row."""
    import datasets as hf

    values = numbers(ds, column, origin)
    return _without_labels(ds).add_column(LABELS, values, feature=hf.Value("float32"))


def _without_labels(ds: datasets.Dataset) -> datasets.Dataset:
    """`ds` without a column named ``labels`` (a label column of that name, read already)."""
    return ds.remove_columns(LABELS) if LABELS in ds.column_names else ds


def label_counts(ds: datasets.Dataset, problem: str, names: list[str]) -> dict[str, int]:
    """How many training rows carry each label (single- and multi-label)."""
    import numpy as np

    labels = np.asarray(ds.with_format(None)[LABELS])  # the raw column, whatever transform the split carries
    if problem == "multi_label":
        totals = labels.sum(0) if len(labels) else np.zeros(len(names))
    else:
        totals = np.bincount(labels, minlength=len(names))
    return {name: int(n) for name, n in zip(names, totals)}


def warn_if_skewed(counts: dict[str, int], origin: str, ratio: float = 10.0) -> None:
    """Log when the most frequent label has more than `ratio` times the rows of the rarest,
    naming training.class_weights."""
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < 2:
        return
    common, rare = max(present, key=present.get), min(present, key=present.get)
    if present[common] > ratio * present[rare]:
        logger.warning(
            "%s: skewed classes in the training split: '%s' has %d rows, '%s' %d (%.0fx); consider training.class_weights: "
            "balanced, and read the per-class recall in the results",
            origin, common, present[common], rare, present[rare], present[common] / present[rare],
        )  # fmt: skip


def label_tensor(labels: list[Any]) -> Any:
    """A batch's labels as the loss reads them: class ids as int64, numbers (regression) and
    multi-hot rows (multi-label) as float32."""
    import torch

    values = torch.as_tensor(labels)
    return values.long() if not values.is_floating_point() else values.float()
