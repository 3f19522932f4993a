"""User-facing errors.

Anything a user can fix (a config key, a file, a column, a label) raises a
:class:`TlhubError` whose message names the thing and the fix. The CLI prints the
message on one line and exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TlhubError(Exception):
    """An error the user can fix; the message says what and how."""


class ConfigError(TlhubError):
    """A bad config file, key, type or value."""


class DataError(TlhubError):
    """A missing file, column or label, or a dataset that cannot be used."""


class ModelError(TlhubError):
    """A model that cannot be found or loaded."""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
