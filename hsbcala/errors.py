"""The project's error type and the one place that turns it into a clean exit.

Every expected failure (bad config key, missing file, broken data, engine failure) is raised as
:class:`HsbcalaError` with a message of one line that names the bad key or file. Entry points wrap their
work in :func:`clean_exit`, which prints ``hsbcala: error: <message>`` to stderr and exits with the error's
code: never a traceback wall for bad input.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator


class HsbcalaError(Exception):
    """An expected failure, reported as one line and a non-zero exit code."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(HsbcalaError):
    """A config key or value is wrong (names the key)."""


class DataError(HsbcalaError):
    """Training or evaluation data is missing or broken (names the file or glob)."""


class EngineError(HsbcalaError):
    """The Calamari engine (or its environment) failed; carries the tail of its log."""

    exit_code = 3


class RestoreFailed(EngineError):
    """The engine could not read back the checkpoint it was to resume from (the runner sets it aside)."""

    def __init__(self, message: str, checkpoint: object) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class Interrupted(HsbcalaError):
    """Training was interrupted by a signal (SIGINT, SIGTERM, walltime); resumable from the last checkpoint."""

    exit_code = 130


FILE_SYSTEM_EXIT = (
    3  # the file system failed under a run (disk full, I/O error, read-only): like an engine failure
)


@contextlib.contextmanager
def clean_exit() -> Iterator[None]:
    """Turn :class:`HsbcalaError` into ``hsbcala: error: …`` on stderr and ``sys.exit(code)``; an OSError
    (a full disk, a file system gone read-only) into one line naming the file, exit 3."""
    try:
        yield
    except HsbcalaError as exc:
        if isinstance(exc, Interrupted):  # stopping already: a second Ctrl-C/SIGTERM must not kill the exit
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)
        print(f"hsbcala: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hsbcala: error: {exc.strerror or exc}{where}", file=sys.stderr, flush=True)
        sys.exit(FILE_SYSTEM_EXIT)
