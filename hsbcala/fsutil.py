"""Small file-system helpers used everywhere: atomic writes and advisory locks (one implementation each).

Atomic: write a temporary file in the target's directory, then ``os.replace`` it over the target, so a reader
(or a relaunch after a crash) sees the old file or the new one, never half of one; the temporary file is
removed when writing fails (a full disk leaves nothing behind).
Locks: ``fcntl.flock`` on a lock file; blocking (wait for another process building the same thing) or not
(refuse a second user, :class:`Busy`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Busy(Exception):
    """A non-blocking :func:`locked` found the lock held by another process."""


def atomic_write_text(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding) as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: Path) -> dict:
    """The JSON object in ``path``, or {} when it is missing, unreadable or not JSON."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


@contextlib.contextmanager
def locked(lock_file: Path, *, wait: bool = True) -> Iterator[Any]:
    """Hold an exclusive flock on ``lock_file`` (created); ``wait=False`` raises :class:`Busy` at once."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(str(lock_file)) from None
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
