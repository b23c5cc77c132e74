"""A cache of per-file facts (SHA-256, image size, decode result) keyed by the file's (size, mtime_ns, inode).

Hashing and decoding every line image is the expensive part of the data step (:mod:`hsbcala.data.step`); a
resumed or repeated training on unchanged data must not pay for it again. The cache lives under
``<data.cache_dir>/files/`` (default ``~/.cache/hsbcala/files/``), one small JSON file per image directory
(named by the SHA-256 of the directory's path), so a data set of 100 books is 100 files of a few KB, loaded
only for the directories a run uses.

Rules that keep it correct:

- An entry is used only if size, ``st_mtime_ns`` and inode all still match; anything else re-reads the file.
- A file modified less than :data:`RACY_S` seconds before the scan started is not cached ("racily clean", as
  git calls it): a write in the same timestamp tick as our read would leave the mtime unchanged.
- Writes are atomic and durable (:func:`hsbcala.core.fsutil.atomic_write_text`) and merge with what another process
  wrote meanwhile, so parallel jobs (a sweep) at worst both compute an entry. A file that is damaged all the
  same (written by a tool of its own) is discarded with a message naming it: its files are read again. JSON, not SQLite: home directories on clusters
  are often NFS, where SQLite's locking is unreliable.
- :data:`VERSION` is part of every file: changing what is cached (e.g. the image check) invalidates it all.
- A cache directory that cannot be written is not an error: the run just is not cached.

Deleting the cache directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from hsbcala.core import fsutil
from hsbcala.core.console import say

VERSION = 1
RACY_S = 2.0
_CHUNK = 1 << 20


def default_root() -> Path:
    """``$HSBCALA_CACHE_DIR``, else ``~/.cache/hsbcala`` (the config default of ``data.cache_dir``)."""
    env = os.environ.get("HSBCALA_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hsbcala"


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class HashCache:
    """Per-file facts for the files of one scan. ``root=None`` disables caching (every lookup misses)."""

    def __init__(self, root: Path | str | None) -> None:
        self.dir = Path(root).expanduser() / "files" if root else None
        self._shards: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._discarded: set[Path] = set()  # damaged files already reported (a save reads them again)
        self._racy_before_ns = time.time_ns() - int(RACY_S * 1e9)
        self.hits = 0
        self.misses = 0

    def _shard_file(self, directory: str) -> Path:
        assert self.dir is not None
        return self.dir / (
            hashlib.sha256(directory.encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".json"
        )

    def _read_shard(self, directory: str) -> dict[str, Any]:
        try:
            d = fsutil.read_json(self._shard_file(directory))
        except fsutil.Unreadable as exc:  # only a cache: say what is dropped, then work without it
            if exc.path not in self._discarded:
                self._discarded.add(exc.path)
                say(
                    f"hash cache {exc.path} discarded ({exc.problem}); the files of {directory} are read again"
                )
            return {}
        if d.get("version") != VERSION or d.get("dir") != directory:
            return {}
        entries = d.get("entries")
        return entries if isinstance(entries, dict) else {}

    def _shard(self, directory: str) -> dict[str, Any]:
        shard = self._shards.get(directory)
        if shard is None:
            shard = self._shards[directory] = self._read_shard(directory) if self.dir else {}
        return shard

    def get(self, path: Path | str, st: os.stat_result) -> dict[str, Any] | None:
        """The cached entry of ``path`` if the file is unchanged (``st`` = its ``os.stat``), else None."""
        directory, name = os.path.split(os.fspath(path))
        entry = self._shard(directory).get(name) if self.dir else None
        if entry is not None and entry.get("k") == _key(st):
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def put(self, path: Path | str, st: os.stat_result, entry: dict[str, Any]) -> None:
        """Remember ``entry`` for ``path`` as it was when ``st`` was taken (not if it changed just now)."""
        if self.dir is None or st.st_mtime_ns >= self._racy_before_ns:
            return
        directory, name = os.path.split(os.fspath(path))
        self._shard(directory)[name] = {"k": _key(st), **entry}
        self._dirty.add(directory)

    def save(self) -> None:
        """Write the changed directories' entries (merged with what is on disk now); never raises."""
        if self.dir is None or not self._dirty:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for directory in sorted(self._dirty):
                merged = {**self._read_shard(directory), **self._shards[directory]}
                shard = {"version": VERSION, "dir": directory, "entries": merged}
                fsutil.atomic_write_text(
                    self._shard_file(directory), json.dumps(shard, ensure_ascii=False, separators=(",", ":"))
                )
        except OSError:
            pass  # a read-only or full cache directory: this run is simply not cached
        self._dirty.clear()

    def file_sha256(self, path: Path) -> str:
        """SHA-256 of a (large) file, e.g. a GT archive, cached like everything else."""
        st = os.stat(path)
        entry = self.get(path, st)
        if entry is not None and "sha256" in entry:
            return entry["sha256"]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        self.put(path, st, {"sha256": digest})
        return digest
