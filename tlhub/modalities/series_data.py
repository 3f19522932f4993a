"""Series as data: the ``.ts`` files of the UCR/UEA archive (sktime's format), a series cell of
a table read into an array, and the checks every series passes before a model sees it.

A ``.ts`` file has header lines (``@problemName``, ``@univariate`` or ``@dimensions``,
``@classLabel true A B ...``, ...), then after ``@data`` one series per line: each channel's
values separated by commas, channels separated by ``:``, the class label last; ``?`` or
``NaN`` is a missing value. Comment lines start with ``#``. The reader needs nothing of
sktime (sktime's wheel ships the archive's sets: ``pip download --no-deps sktime==1.2.0``).

A series is an array (channels, steps). Missing values inside it are filled by linear
interpolation (the ends by the nearest observed value) and counted; a channel with no value
at all cannot be filled and the row is skipped (and counted); an infinite value is a user
error naming the row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from tlhub.errors import DataError
from tlhub.modalities.media import UnreadableExample

MISSING = ("?", "nan", "NaN", "")


class UnusableSeries(UnreadableExample):
    """A series no model can read (no observed value in a channel, fewer steps than a patch)."""


# --------------------------------------------------------------------------- .ts files


def read_ts(path: Path, key: str, series_column: str, label_column: str) -> datasets.Dataset:
    """The series of a ``.ts`` file as rows of (channels x steps, label); a malformed line is a
    DataError naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{key}: {path}: not UTF-8 text; a .ts file is plain text") from None
    header: dict[str, str] = {}
    series: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):  # comments (UnitTest.ts writes "%#")
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{key}: {path}: line {number}: expected a header line (@...) or @data before the series, got {line[:60]!r}")
            name, _, value = line[1:].partition(" ")
            header[name.lower()] = value.strip()
            in_data = name.lower() == "data"
            if name.lower() == "timestamps" and value.strip().lower() == "true":
                raise DataError(f"{key}: {path}: line {number}: @timeStamps true (time-stamped values) is not read; give plain values")
            continue
        channels, label = _ts_line(line, header, path, key, number)
        if series and len(channels) != len(series[0]):
            raise DataError(f"{key}: {path}: line {number}: {len(channels)} channel(s) where line(s) before have {len(series[0])}; "
                            "separate every channel by ':'")  # fmt: skip
        series.append(channels)
        labels.append(label)
    if not in_data:
        raise DataError(f"{key}: {path}: no @data line; a .ts file has its header, then @data, then one series per line")
    if not series:
        raise DataError(f"{key}: {path}: no series after @data")
    columns: dict[str, Any] = {series_column: series}
    if labels[0] is not None:
        columns[label_column] = labels
    return datasets.Dataset.from_dict(columns)


def _ts_line(line: str, header: dict[str, str], path: Path, key: str, number: int) -> tuple[list[list[float]], str | None]:
    """One data line: its channels' values and its label (None when the file has none)."""
    parts = line.split(":")
    labelled = header.get("classlabel", "false").split(" ")[0].lower() == "true" or header.get("targetlabel", "false").lower() == "true"
    label = None
    if labelled:
        if len(parts) < 2:
            raise DataError(f"{key}: {path}: line {number}: no label after the values (values:label); the header says @classLabel true")
        label = parts.pop().strip()
        if not label:
            raise DataError(f"{key}: {path}: line {number}: empty label after the last ':'")
    expected = 1 if header.get("univariate", "").lower() == "true" else int(header.get("dimensions", "0") or 0) or None
    if expected is not None and len(parts) != expected:
        raise DataError(f"{key}: {path}: line {number}: {len(parts)} channel(s), the header says {expected}")
    channels = []
    for channel, text in enumerate(parts, 1):
        values = []
        for position, cell in enumerate(text.split(","), 1):
            cell = cell.strip()
            if cell in MISSING:
                values.append(math.nan)
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise DataError(f"{key}: {path}: line {number}: channel {channel}, value {position}: {cell[:30]!r} is not a number "
                                "(use ? for a missing value)") from None  # fmt: skip
        channels.append(values)
    return channels, label


# --------------------------------------------------------------------------- series cells


def as_array(value: Any, where: str) -> np.ndarray:
    """One cell as a float array (channels, steps): a list of numbers (one channel), a list of
    lists (a channel each), or their text (JSON, or ``1,2,3:4,5,6`` as in .ts files)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [
                [math.nan if c.strip() in MISSING else float(c) for c in part.split(",")] for part in text.split(":")
            ]
        except ValueError:
            raise DataError(f"{where}: {text[:40]!r} is not a series; give a list of numbers ([1.5, 2.0, ...]), "
                            "or a list of lists for several channels") from None  # fmt: skip
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{where}: no series (the cell is {value!r}); give a list of numbers")
    rows = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else None for v in value]
    if all(r is None for r in rows):
        rows = [list(value)]
    elif any(r is None for r in rows):
        raise DataError(f"{where}: mixes numbers and lists; give a list of numbers, or a list of lists (one per channel)")
    if len({len(r) for r in rows}) > 1:
        raise DataError(f"{where}: channels of {sorted({len(r) for r in rows})} steps; give every channel of a series the same length")
    try:
        return np.asarray([[math.nan if v is None else float(v) for v in r] for r in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: a value is not a number; give numbers (null or NaN for a missing value)") from None


def clean(array: np.ndarray, where: str, min_steps: int) -> tuple[np.ndarray, int]:
    """The series with missing values interpolated, and how many were; UnusableSeries for a
    channel with no value or a series shorter than `min_steps` (one patch); DataError for an
    infinite value."""
    infinite = np.isinf(array)
    if infinite.any():
        channel, step = (int(i) + 1 for i in np.argwhere(infinite)[0])
        raise DataError(f"{where}: an infinite value (channel {channel}, step {step}); replace it with a number, "
                        "or leave it empty (NaN) to be interpolated")  # fmt: skip
    if array.shape[1] < min_steps:
        raise UnusableSeries(f"{array.shape[1]} steps, shorter than one patch ({min_steps} steps: model.patch_length)")
    missing = np.isnan(array)
    if not missing.any():
        return array, 0
    steps = np.arange(array.shape[1])
    for channel, gaps in enumerate(missing):
        if gaps.all():
            raise UnusableSeries(f"channel {channel + 1} has no value (all NaN)")
        if gaps.any():
            array[channel, gaps] = np.interp(steps[gaps], steps[~gaps], array[channel, ~gaps])
    return array, int(missing.sum())


def fit_length(array: np.ndarray, length: int) -> np.ndarray:
    """(channels, steps) -> (channels, length): the first `length` steps of a longer series; a
    shorter one padded at its end with its last value (the patches then see a flat tail, not
    a jump to zero)."""
    if array.shape[1] >= length:
        return array[:, :length]
    return np.concatenate([array, np.repeat(array[:, -1:], length - array.shape[1], axis=1)], axis=1)


# --------------------------------------------------------------------------- long series (forecasting)


def long_series(ds: datasets.Dataset, time_column: str | None, targets: list[str] | None, origin: str) -> tuple[np.ndarray, list[str], int]:
    """The target columns of a table of one row per step as an array (steps, columns), sorted by
    `time_column` when given; missing values interpolated (and counted). A column of no value
    or an infinite value is a DataError naming it."""
    frame = ds.to_pandas()
    if time_column is not None:
        frame = frame.sort_values(time_column, kind="stable")
    if targets is None:
        targets = [c for c in frame.columns if c != time_column and np.issubdtype(frame[c].dtype, np.number)]
        if not targets:
            raise DataError(f"{origin}: no numeric column to forecast; name them in data.target_columns")
    values = np.empty((len(frame), len(targets)))
    filled = 0
    for i, column in enumerate(targets):
        try:
            values[:, i] = frame[column].astype(float).to_numpy()
        except (TypeError, ValueError):
            raise DataError(f"{origin}: column '{column}' (data.target_columns) holds text; give numbers, one per row") from None
        where = f"{origin}: column '{column}'"
        if np.isnan(values[:, i]).all():
            raise DataError(f"{where}: no value (all missing); drop it from data.target_columns")
        if np.isinf(values[:, i]).any():
            row = int(np.argwhere(np.isinf(values[:, i]))[0][0]) + 1
            raise DataError(f"{where}: row {row}: an infinite value; replace it with a number, or leave it empty to be interpolated")
        array, count = clean(values[:, i][None, :].copy(), where, 1)
        values[:, i] = array[0]
        filled += count
    return values, targets, filled


def window_starts(steps: int, context: int, horizon: int, stride: int = 1, first_future: int = 0, last_future: int | None = None) -> list[int]:
    """Starts of the windows (`context` steps read, `horizon` forecast) of a series of `steps`
    steps, every `stride`, whose forecast lies within [first_future, last_future)."""
    last_future = steps if last_future is None else last_future
    return [s for s in range(0, steps - context - horizon + 1, stride) if s + context >= first_future and s + context + horizon <= last_future]
