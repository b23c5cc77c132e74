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

Unpacking is bounded (:class:`Limits`, ``data.archive_max_bytes`` and ``data.archive_max_ratio``): the total
size of the members is known before anything is written (zip: the central directory, whose sizes also bound
what Python's ``zipfile`` writes; tar: one pass over the member headers, stopped at the first header past a
limit, so a bomb is never inflated), and an archive over a limit (or larger than the free space) is refused
with one line naming the archive and the limit. A 1.6 MB zip that inflates to 1.5 GB (ratio ~1000:1) is
refused by the ratio alone.

An unsafe or too large member refuses the whole archive (:class:`~hsbcala.core.errors.DataError` naming archive
and member) and leaves nothing behind: members are extracted into a temporary directory that is renamed into
place only when the archive is complete, under a file lock so parallel jobs unpack an archive once; a
temporary directory left by a killed process is removed by the next one that unpacks the same archive.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hsbcala.core.errors import DataError
from hsbcala.core.fsutil import locked
from hsbcala.data.hashcache import HashCache, default_root

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
MAX_BYTES = 20_000_000_000  # data.archive_max_bytes: 20 GB unpacked (the shared Fraktur set is ~0.1 GB)
MAX_RATIO = 100.0  # data.archive_max_ratio: line images (PNG) hardly compress; deflate bombs reach ~1000:1


@dataclass(frozen=True)
class Limits:
    """Caps on unpacking one archive; 0 turns a cap off. ``keys`` name the config keys in the errors."""

    max_bytes: int = MAX_BYTES
    max_ratio: float = MAX_RATIO
    bytes_key: str = "data.archive_max_bytes"
    ratio_key: str = "data.archive_max_ratio"

    @classmethod
    def of(cls, data: Any) -> Limits:
        """The caps a config's ``data`` node sets (``data.archive_max_bytes``, ``data.archive_max_ratio``)."""
        return cls(int(data.archive_max_bytes), float(data.archive_max_ratio))


def is_archive(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(SUFFIXES)


def unsafe_member(name: str, *, link: str = "", link_note: str = "") -> str | None:
    """Why an archive member must not be unpacked (a symbolic or hard link, an absolute path, a drive letter, a
    ``..`` component), or None: one rule for GT archives and pretrained-model archives (hsbcala.pretrained.fetch).
    ``link``: "symbolic link" or "hard link" when the member is one."""
    path = PurePosixPath(name.replace("\\", "/"))
    if link:
        return f"is a {link}{link_note}"
    if path.is_absolute():
        return "has an absolute path"
    if path.parts and len(path.parts[0]) >= 2 and path.parts[0][1] == ":":
        return "has a drive letter"
    if ".." in path.parts:
        return "would be extracted outside the target directory (a '..' component)"
    return None


class _Budget:
    """The running total of an archive's members against :class:`Limits`; raises before anything is written."""

    def __init__(self, archive: Path, where: str, limits: Limits) -> None:
        self.archive, self.where, self.limits = archive, where, limits
        self.packed = max(archive.stat().st_size, 1)
        self.total = 0

    def add(self, size: int, member: str) -> None:
        self.total += max(size, 0)
        lim = self.limits
        if lim.max_bytes and self.total > lim.max_bytes:
            raise DataError(
                f"{self.where} unpacks to more than {lim.max_bytes:,} bytes ({lim.bytes_key}; "
                f"{self.total:,} bytes up to member {member!r}); refusing the archive (nothing was unpacked; "
                f"raise {lim.bytes_key} if you trust it)"
            )
        if lim.max_ratio and self.total > lim.max_ratio * self.packed:
            raise DataError(
                f"{self.where} unpacks to more than {lim.max_ratio:g} times its {self.packed:,} bytes "
                f"({lim.ratio_key}; {self.total:,} bytes up to member {member!r}: a zip bomb?); refusing the "
                f"archive (nothing was unpacked; raise {lim.ratio_key} if you trust it)"
            )

    def check_space(self, directory: Path) -> None:
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            return
        if self.total > free:
            raise DataError(
                f"{self.where} unpacks to {self.total:,} bytes but {directory} has {free:,} bytes free; "
                f"nothing was unpacked (set data.cache_dir to a larger disk)"
            )


def extract(archive: Path, target: Path, key: str, limits: Limits) -> None:
    """Extract ``archive`` into the (empty) directory ``target``; DataError on an unsafe, broken or too large
    archive, raised before the first member is written (every member checked, the sizes summed first)."""
    where = f"{key}: archive {archive}"
    try:
        budget = _Budget(archive, where, limits)
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    problem = unsafe_member(
                        info.filename, link="symbolic link" if stat.S_ISLNK(info.external_attr >> 16) else ""
                    )
                    if problem is not None:
                        raise DataError(
                            f"{where}: member {info.filename!r} {problem}; refusing the archive "
                            f"(nothing was unpacked)"
                        )
                    # zipfile never writes more than file_size (ZipExtFile cuts the stream there)
                    budget.add(info.file_size, info.filename)
                budget.check_space(target)
                zf.extractall(target)
        else:
            with tarfile.open(archive) as tf:
                # Headers only: reading a header skips the data before it, which for a compressed tar means
                # inflating it, but never past a limit (the first header beyond one raises here).
                for member in tf:
                    budget.add(member.size if member.isreg() else 0, member.name)
                budget.check_space(target)
                tf.extractall(target, filter="data")
    except tarfile.FilterError as exc:
        member = exc.tarinfo.name if getattr(exc, "tarinfo", None) is not None else "?"
        raise DataError(
            f"{where}: member {member!r}: {exc}; refusing the archive (nothing was unpacked)"
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{where} does not unpack: {type(exc).__name__}: {exc}") from None


def _remove_stale(base: Path, name: str) -> None:
    """Temporary directories of ``name`` left by a killed unpacker (we hold the archive's lock: none is live)."""
    for stale in base.glob(f".tmp-{glob.escape(name)}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def unpack(
    archive: Path,
    *,
    key: str = "data",
    root: Path | str | None = None,
    cache: HashCache | None = None,
    limits: Limits | None = None,
) -> Path:
    """Unpack ``archive`` (once, within ``limits``) and return its directory under ``<root>/archives/``."""
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
    name = digest[:20]
    target = base / name
    if target.is_dir():
        return target
    with contextlib.ExitStack() as stack:
        try:  # another job may be unpacking the same archive: wait for it
            stack.enter_context(locked(base / f".{name}.lock"))
        except OSError as exc:
            raise DataError(
                f"{key}: cannot unpack archive {archive} into {base}: {exc.strerror or exc} "
                f"(set data.cache_dir)"
            ) from None
        if target.is_dir():
            return target
        _remove_stale(base, name)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{name}-"))
        try:
            extract(archive, tmp, key, limits or Limits())
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
    pattern: str,
    *,
    key: str,
    root: Path | str | None = None,
    cache: HashCache | None = None,
    limits: Limits | None = None,
) -> list[str]:
    """Patterns to glob instead of ``pattern`` (an absolute glob): archives in it replaced by their
    unpacked directories. A pattern without archives comes back unchanged, as the only element."""
    kw = {"key": key, "root": root, "cache": cache, "limits": limits}
    split = _split_at_archive(pattern)
    if split is not None:
        archive, rest = split
        return [os.path.join(glob.escape(str(unpack(Path(archive), **kw))), rest)]
    if not is_archive(pattern):
        return [pattern]
    matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
    if not matches:
        return [pattern]  # the caller reports the pattern that matches nothing
    return [os.path.join(glob.escape(str(unpack(Path(m), **kw))), "**", "*") for m in matches]


def involves_archive(patterns: list[str] | tuple[str, ...], base: Path) -> bool:
    """Whether any pattern names (or globs) an archive: its lines must be passed to the engine as files."""
    for raw in patterns:
        pattern = os.path.expanduser(str(raw))
        full = pattern if os.path.isabs(pattern) else os.path.join(str(base), pattern)
        if is_archive(full) or _split_at_archive(full) is not None:
            return True
    return False
