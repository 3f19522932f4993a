"""Atomic writes: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_dir(path: str | Path, save: Callable[[Path], None], replace: bool = True) -> None:
    """Call ``save(tmp_dir)`` and rename the finished folder to `path`.

    An existing `path` is replaced (moved aside under a unique name, then deleted), or with
    ``replace=False`` kept: for content-addressed folders (the feature cache) another process
    that got there first wrote the same thing. Safe when processes race for the same `path`:
    each writes its own temporary folder, and a rename onto a folder that appeared meanwhile
    is retried rather than failing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save(tmp)
        while True:
            try:
                os.replace(tmp, path)  # a folder may replace only a missing or empty one
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            if not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            try:
                os.replace(path, old)
            except FileNotFoundError:  # another process moved it aside first
                old.rmdir()
                continue
            try:
                os.replace(tmp, path)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue  # yet another process put its folder there meanwhile: move that aside too
            finally:
                shutil.rmtree(old, ignore_errors=True)
            return
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
