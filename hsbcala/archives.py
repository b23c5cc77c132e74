"""GT archives: a ``.tar.gz``/``.tgz``/``.tar``/``.tar.bz2``/``.tar.xz`` or ``.zip`` of line images and
``.gt.txt`` files is accepted wherever a data directory is (``data.train``, ``data.val``).

In a data pattern an archive can stand for a directory (:func:`expand_pattern`):

- ``/gt/set.zip`` (or a glob matching archives, ``/gt/*.tar.gz``): every image inside;
- ``/gt/set.tar.gz/book1/*.png``: a glob inside the archive.

Each archive is unpacked once into ``<data.cache_dir>/archives/<first 20 hex of its SHA-256>/`` and reused
(idempotent; the same content under another name shares the directory; a changed archive gets a new one).
Unpacking is safe: nothing may land outside the target directory.

- tar: Python's ``tarfile`` with ``filter="data"`` (refuses members with ``..`` leaving the target, links
  pointing outside it, device files; strips leading ``/`` and unsafe permission bits);
- zip: every member is checked before anything is written (no absolute path, no drive letter, no ``..``
  component, no symbolic link), then extracted.

An unsafe member refuses the whole archive (:class:`~hsbcala.errors.DataError` naming archive and member) and
leaves nothing behind: members are extracted into a temporary directory that is renamed into place only when
the archive is complete, under a file lock so parallel jobs unpack an archive once.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from hsbcala.errors import DataError
from hsbcala.hashcache import HashCache, default_root

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


def is_archive(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(SUFFIXES)


def _unsafe_zip_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "has an absolute path"
    if path.parts and len(path.parts[0]) >= 2 and path.parts[0][1] == ":":
        return "has a drive letter"
    if ".." in path.parts:
        return "would be extracted outside the target directory (a '..' component)"
    return None


def _extract(archive: Path, target: Path, key: str) -> None:
    """Extract ``archive`` into the (empty) directory ``target``; DataError on an unsafe or broken archive."""
    where = f"{key}: archive {archive}"
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    problem = _unsafe_zip_member(info)
                    if problem is not None:
                        raise DataError(
                            f"{where}: member {info.filename!r} {problem}; refusing the archive "
                            f"(nothing was unpacked)"
                        )
                zf.extractall(target)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")
    except tarfile.FilterError as exc:
        member = exc.tarinfo.name if getattr(exc, "tarinfo", None) is not None else "?"
        raise DataError(
            f"{where}: member {member!r}: {exc}; refusing the archive (nothing was unpacked)"
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{where} does not unpack: {type(exc).__name__}: {exc}") from None


def unpack(
    archive: Path, *, key: str = "data", root: Path | str | None = None, cache: HashCache | None = None
) -> Path:
    """Unpack ``archive`` (once) and return its directory under ``<root>/archives/``."""
    archive = Path(os.path.abspath(archive))
    root = Path(root).expanduser() if root else default_root()
    own = cache is None
    cache = cache or HashCache(root)
    try:
        digest = cache.file_sha256(archive)
    except OSError as exc:
        raise DataError(f"{key}: cannot read archive {archive}: {exc.strerror or exc}") from None
    finally:
        if own:
            cache.save()
    base = root / "archives"
    target = base / digest[:20]
    if target.is_dir():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        lock = open(base / f".{digest[:20]}.lock", "w")  # noqa: SIM115 - held until the end of the with
    except OSError as exc:
        raise DataError(
            f"{key}: cannot unpack archive {archive} into {base}: {exc.strerror or exc} (set data.cache_dir)"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another job may be unpacking the same archive: wait for it
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".tmp-"))
        try:
            _extract(archive, tmp, key)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _split_at_archive(pattern: str) -> tuple[str, str] | None:
    """(archive path, rest) when a leading part of ``pattern`` is an existing archive file, else None."""
    parts = Path(pattern).parts
    for i in range(1, len(parts)):
        head = os.path.join(*parts[:i])
        if is_archive(head) and os.path.isfile(head):
            return head, os.path.join(*parts[i:])
    return None


def expand_pattern(
    pattern: str, *, key: str, root: Path | str | None = None, cache: HashCache | None = None
) -> list[str]:
    """Patterns to glob instead of ``pattern`` (an absolute glob): archives in it replaced by their
    unpacked directories. A pattern without archives comes back unchanged, as the only element."""
    split = _split_at_archive(pattern)
    if split is not None:
        archive, rest = split
        return [os.path.join(glob.escape(str(unpack(Path(archive), key=key, root=root, cache=cache))), rest)]
    if not is_archive(pattern):
        return [pattern]
    matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
    if not matches:
        return [pattern]  # the caller reports the pattern that matches nothing
    return [
        os.path.join(glob.escape(str(unpack(Path(m), key=key, root=root, cache=cache))), "**", "*")
        for m in matches
    ]


def involves_archive(patterns: list[str] | tuple[str, ...], base: Path) -> bool:
    """Whether any pattern names (or globs) an archive: its lines must be passed to the engine as files."""
    for raw in patterns:
        pattern = os.path.expanduser(str(raw))
        full = pattern if os.path.isabs(pattern) else os.path.join(str(base), pattern)
        if is_archive(full) or _split_at_archive(full) is not None:
            return True
    return False
