"""Small file-system helpers used everywhere: atomic writes, strict reads and advisory locks (one implementation
each).

Atomic: write a temporary file in the target's directory, ``fsync`` it, ``os.replace`` it over the target and
``fsync`` the directory, so a reader (or a relaunch after a crash, even a node's power loss) sees the old file
or the new one, never half of one or an empty one (without the two ``fsync`` calls the rename can reach the
disk before the data: ext4, XFS and NFS may then show a file of length 0 after a crash); the temporary file is
removed when writing fails (a full disk leaves nothing behind).
Reads: :func:`read_json` tells "missing" (``{}``) from "there but unreadable" (:class:`Unreadable`, one line
naming the file, what is wrong and how to recover): hsbcala's files say what a relaunch must do (resume this
MLflow run, do not retrain a finished model), so a damaged one must never pass for "nothing there".
:func:`read_json_if_complete` is for the files an engine writes in place, where a damaged one is a write the
engine did not finish (a checkpoint record it was killed writing) and means "not there (yet)".
Locks: ``fcntl.flock`` on a lock file; blocking (wait for another process building the same thing) or not
(refuse a second user, :class:`Busy`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hsbcala.core.errors import FILE_SYSTEM_EXIT, DataError


class Busy(Exception):
    """A non-blocking :func:`locked` found the lock held by another process."""


class Unreadable(DataError):
    """A file hsbcala needs is there but cannot be read or is not what was written (permissions, truncated or
    corrupt JSON, not a JSON object). One line, exit 2 (damaged content) or 3 (the file system refuses to
    read it, like any path the user named); never read as "no such file"."""

    def __init__(self, path: Path, problem: str, recover: str = "", *, exit_code: int | None = None) -> None:
        self.path, self.problem = Path(path), problem
        hint = f"; {recover}" if recover else ""
        super().__init__(f"{path} cannot be read: {problem}{hint}", exit_code=exit_code)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable. File systems that cannot sync a directory (EINVAL
    on some network and FUSE file systems) have nothing more to offer: not an error."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp's 0600 would hide the file from the group a model directory is shared with: as open() does
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the rename can be
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)  # the rename itself on disk


def atomic_write_text(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: Path, *, recover: str = "") -> dict:
    """The JSON object in ``path``; {} only when there is no such file.

    A file that is there but cannot be read, is empty, is not JSON or holds no JSON object raises
    :class:`Unreadable` (``recover``: what the user can do, appended to its one line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise Unreadable(path, "it is not UTF-8 text (damaged?)", recover) from None
    except OSError as exc:
        raise Unreadable(path, exc.strerror or str(exc), recover, exit_code=FILE_SYSTEM_EXIT) from None
    if not text.strip():
        raise Unreadable(path, "it is empty (cut short by a crash or a full disk?)", recover)
    try:
        d = json.loads(text)
    except ValueError as exc:
        raise Unreadable(path, f"it is not valid JSON, cut short or damaged ({exc})", recover) from None
    if not isinstance(d, dict):
        raise Unreadable(path, f"it holds a JSON {type(d).__name__}, not an object", recover)
    return d


def read_json_if_complete(path: Path) -> dict:
    """The JSON object in a file another program (an engine) writes in place, or {} when it is missing or not
    (yet) a whole JSON object: a write that was cut short, e.g. the record of a checkpoint the engine was
    killed writing, which must not count as a checkpoint. A file that cannot be read at all still raises
    :class:`Unreadable`. Never for hsbcala's own files (those are written atomically: use :func:`read_json`)."""
    path = Path(path)
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise Unreadable(path, exc.strerror or str(exc), exit_code=FILE_SYSTEM_EXIT) from None
    except ValueError:  # cut short or garbage (UnicodeDecodeError is one too)
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
