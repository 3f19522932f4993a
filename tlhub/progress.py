"""Progress bars for tlhub's long steps outside the Trainer: checking every image or clip
up front, extracting cached features, reading weights to convert.

tqdm, as the Trainer and datasets draw theirs. A bar is drawn only on a terminal (tqdm's
``disable=None``), so logs of batch jobs and CI stay clean, and never under
``tlhub --quiet``, which sets ``TLHUB_QUIET=1`` so that processes started by ``accelerate
launch`` or by ``tlhub compare`` stay quiet too (the Trainer's bars then go as well).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

QUIET_ENV = "TLHUB_QUIET"
T = TypeVar("T")


def quiet() -> bool:
    """Whether progress bars are off for this process (``tlhub --quiet``)."""
    return os.environ.get(QUIET_ENV, "").lower() not in ("", "0", "false")


def bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar to update by hand (``with bar(n, "features") as b: b.update(k)``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=True if quiet() or not enabled else None)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, advancing a bar (see :func:`bar`) as they are consumed."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    with bar(total, desc, unit) as b:
        for item in items:
            yield item
            b.update(1)
