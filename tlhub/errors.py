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


class WriteError(TlhubError):
    """A file or folder tlhub writes could not be written: a full disk, a file over the size
    limit, a folder without write permission, a read-only filesystem.

    `kept` says what the run's folders still hold; whoever knows more adds to it on the way up
    (the run folder: the previous run restored, or the last complete checkpoint).
    """

    def __init__(self, path: object, reason: str, what: str = "", kept: Iterable[str] = ()) -> None:
        self.path, self.reason, self.what, self.kept = path, reason, what, list(kept)
        super().__init__(str(path))

    def __str__(self) -> str:
        target = f"{self.what} to {self.path}" if self.what else str(self.path)
        kept = "; ".join(self.kept) if self.kept else "nothing half-written was kept"
        return f"cannot write {target} ({self.reason}); {kept}; make room (or raise the limit) and run the same command again"


class Stopped(Exception):  # noqa: N818 - not an error: the run did what a signal asked
    """Training stopped on a signal (SIGTERM, SIGINT) after saving a checkpoint of `step`.

    Not a TlhubError: the command exits 128 + the signal's number (143, 130), as a process the
    signal had ended would, and prints how to resume instead of an error.
    """

    def __init__(self, signum: int, step: int, checkpoint: object, notes: Iterable[str] = ()) -> None:
        self.signum, self.step, self.checkpoint, self.notes = signum, step, checkpoint, list(notes)
        super().__init__(f"stopped by signal {signum} at step {step}")

    @property
    def signal_name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    def message(self, resume: str) -> str:
        """The one line the command prints; `resume` is how to continue (a command)."""
        notes = "".join(f"; {note}" for note in self.notes)
        return f"stopped by {self.signal_name} at step {self.step} ({self.checkpoint} saved){notes}; resume with: {resume}"
