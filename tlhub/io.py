"""Atomic writes: a crash never leaves a half-written file that looks complete, and a write
that fails (a full disk, a file over the size limit, a folder without write permission, a
read-only filesystem) is a :class:`~tlhub.errors.WriteError` naming the path and the reason,
which the command prints in one line.

:func:`write_failure` is the one place that recognises a failed write, whatever raised it:
``OSError`` from Python's own files, safetensors' ``SafetensorError`` (``... (os error 27)``)
and the ``RuntimeError`` of PyTorch's zip writer (``torch.save``: ``unexpected pos``), which
carry no errno; :func:`guarded_write` turns one into a WriteError.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlhub.errors import TlhubError, WriteError

# What a write fails with when the machine, not the program, is at fault.
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)
_OS_ERROR = re.compile(r"os error (\d+)")


def _errno_reason(code: int) -> str:
    reason = f"{os.strerror(code)} [{errno.errorcode.get(code, code)}]"
    if code == errno.EFBIG:
        limit = _file_size_limit()
        reason += f": the file-size limit, ulimit -f, is {limit} bytes" if limit is not None else ""
    return reason


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not Unix
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _diagnosis(path: Path) -> str:
    """Why a write without an errno (PyTorch's zip writer) most likely failed."""
    limit = _file_size_limit()
    if limit is not None:
        return _errno_reason(errno.EFBIG)
    folder = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "the write failed"
    if free < 64 * 2**20:
        return f"{_errno_reason(errno.ENOSPC)}: {free // 2**20} MiB free"
    if not os.access(folder if folder.is_dir() else folder.parent, os.W_OK):
        return _errno_reason(errno.EACCES)
    return "the write failed"


def write_failure(exc: BaseException, path: Path) -> str | None:
    """Why writing `path` failed, when `exc` is a failed write (else None)."""
    if isinstance(exc, TlhubError):
        return None
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return _errno_reason(exc.errno)
    if type(exc).__name__ == "SafetensorError":  # safetensors' Rust error, e.g. "I/O error: File too large (os error 27)"
        found = _OS_ERROR.search(str(exc))
        if found:
            return _errno_reason(int(found.group(1)))
    if isinstance(exc, RuntimeError) and "inline_container" in str(exc) and "Reader" not in str(exc):  # torch.save's zip writer
        return _diagnosis(path)
    return None


@contextmanager
def guarded_write(path: str | Path | Callable[[], Path], what: str = "") -> Iterator[None]:
    """Turn a failed write inside the block into a WriteError naming `path` (a callable is asked
    at the time of the failure), or the error's own file where that lies inside `path`. The
    temporary names of atomic writes are not shown: they lie beside the path, not in it."""
    try:
        yield
    except Exception as exc:
        target = Path(path() if callable(path) else path)
        reason = write_failure(exc, target)
        if reason is None:
            raise
        named = getattr(exc, "filename", None)  # a file inside a folder being written names the fault more precisely
        inside = bool(named) and not what and target.resolve() in Path(os.path.abspath(named)).parents
        raise WriteError(Path(named) if inside else target, reason, what) from exc


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    with guarded_write(path):
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
    is retried rather than failing. A failed write leaves no temporary folder behind and is a
    WriteError naming `path`.
    """
    path = Path(path)
    with guarded_write(path):
        _save_dir(path, save, replace)


def _save_dir(path: Path, save: Callable[[Path], None], replace: bool) -> None:
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


PREVIOUS_SUFFIX = ".tlhub-previous"  # beside the folder: the finished run a new run replaces, until it finishes


def previous_run_dir(output_dir: Path) -> Path:
    """Where a finished run waits while a new run replaces it: ``.<name>.tlhub-previous`` beside
    the folder (the same filesystem, so moving it there and back is one rename each)."""
    folder = Path(os.path.abspath(output_dir))
    return folder.parent / f".{folder.name}{PREVIOUS_SUFFIX}"
