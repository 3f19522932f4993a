"""Media cells (images, audio clips): where a cell's bytes are, skipping the rows whose media
cannot be decoded, and reading a folder of ``<label>/<file>`` into rows. Shared by the image
and audio modalities; ``tlhub.data`` reads tables and knows nothing of media.
"""

from __future__ import annotations

import glob
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import datasets

from tlhub.errors import DataError
from tlhub.progress import progress

logger = logging.getLogger(__name__)


class UnreadableExample(Exception):
    """An example (an image, an audio clip) that cannot be decoded; the message names it."""


def absolute_path(value: str, base_dir: Path | None) -> str:
    """A path cell as an absolute path (``~`` expanded; a relative one is relative to `base_dir`)."""
    path = Path(value).expanduser()
    return str(base_dir / path if base_dir is not None and not path.is_absolute() else path)


def cell_source(value: Any, base_dir: Path | None, error: type[UnreadableExample], noun: str) -> tuple[Any, str]:
    """What a decoder reads for one image or audio cell (a path or a BytesIO) and how
    messages name it; `error` (naming the cell) when there is nothing to read.

    A cell is a path (relative to `base_dir`), raw bytes, or a Hub Image/Audio cell read
    with ``decode=False``: ``{"bytes": ..., "path": ...}``.
    """
    if isinstance(value, dict):
        if value.get("bytes"):
            return io.BytesIO(value["bytes"]), str(value.get("path") or "<bytes>")
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value), "<bytes>"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise error(f"no {noun} (cell is {value!r})")
    path = absolute_path(value, base_dir)
    if not Path(path).is_file():
        raise error(f"{path}: no such file")
    return path, path


def label_folder_rows(
    kind: Literal["image", "audio"], path: Path, media_column: str, label_column: str, extensions: tuple[str, ...]
) -> datasets.Dataset | None:
    """``<path>/<label>/<file>`` as rows of (absolute file path, label), listed by `datasets`'
    folder builder of `kind` ("image": imagefolder, "audio": audiofolder); None when no label
    folder holds a file of `extensions`.

    datasets finds the files (skipping hidden files and folders, and special ones such as
    ``__MACOSX``) and names each file's label after its folder, as it does for anyone who
    loads such a folder. tlhub's own conventions stay on top of it, so that rows (and the
    benchmarks read from them) do not depend on which release lists a folder:

    - only files directly in a label folder (``*/*``): nothing deeper, no loose files in
      `path` (the caller's message points at those), and not the members of a ``.zip``
      (which the builder extracts into its cache);
    - only `extensions`, in any case: the files tlhub's decoder reads (the builder's own
      lists are longer: video containers, formats PIL opens only with Ghostscript);
    - metadata files (``metadata.jsonl``, ``.csv``, ``.parquet``) are not read: a label is
      its folder's name (with one in a label folder the builder would drop every label);
    - the cells are plain strings, not decoded: the builder's Image and Audio features are
      replaced by strings, since Audio cannot even store a path without torchcodec (tlhub
      decodes with PIL and soundfile, see the modalities);
    - sorted by label, then path, as the rows were when tlhub walked the folders itself
      (the builder orders by the whole path, which puts ``a-b/`` before ``a/``).
    """
    root = path.resolve()
    features = datasets.Features({kind: datasets.Value("string"), "label": datasets.Value("string")})
    try:
        found = datasets.load_dataset(
            f"{kind}folder",
            data_files={"train": f"{glob.escape(root.as_posix())}/*/*"},
            split="train",
            features=features,
            drop_labels=False,
            metadata_filenames=[""],  # no file is called "": no metadata file, labels from folders
        )
    except (FileNotFoundError, ValueError):  # no file matched / none of the builder's extensions
        return None
    rows = sorted(
        (label, file)
        for file, label in zip(found[kind], found["label"])
        if Path(file).suffix.lower() in extensions and Path(file).parent.parent == root
    )
    if not rows:
        return None
    return datasets.Dataset.from_dict({media_column: [file for _, file in rows], label_column: [label for label, _ in rows]})


def drop_unreadable(
    ds: datasets.Dataset,
    column: str,
    check: Callable[[Any], Any],
    origin: str,
    base_dir: Path | None,
    max_bad_fraction: float,
    noun: str,
) -> tuple[datasets.Dataset, int, list[Any]]:
    """Skip, and count, the rows whose `column` cell `check` rejects with UnreadableExample.

    More than `max_bad_fraction` bad rows is a DataError naming the first of them (`noun`:
    "images", "audio clips"); fewer are logged. Plain path cells become absolute paths.
    Returns the good rows, how many were skipped, and `check`'s result for each good row.
    """
    good: list[int] = []
    bad: list[str] = []
    results: list[Any] = []
    paths: list[str] = []
    for row, value in enumerate(progress(ds[column], f"checking {noun} ({origin.split(' (')[0]})", unit=noun.split()[-1])):
        try:
            results.append(check(value))
        except UnreadableExample as exc:
            bad.append(f"row {row + 1}: {exc}")
            continue
        good.append(row)
        if isinstance(value, str):
            paths.append(absolute_path(value, base_dir))
    if bad:
        fraction = len(bad) / len(ds)
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        if fraction > max_bad_fraction:
            raise DataError(
                f"{origin}: {len(bad)} of {len(ds)} {noun} ({fraction:.0%}) are unreadable, more than "
                f"data.max_bad_fraction={max_bad_fraction}: {shown}"
            )
        logger.warning("%s: skipped %d unreadable %s: %s", origin, len(bad), noun, shown)
    if len(good) < len(ds):
        ds = ds.select(good)
    if paths and len(paths) == len(ds):  # plain path cells: store absolute paths
        ds = ds.remove_columns(column).add_column(column, paths)
    return ds, len(bad), results
