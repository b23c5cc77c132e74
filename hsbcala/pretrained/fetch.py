"""``get``: fetch a registered model's release archive, check it and install it as ``DIR/<name>``.

Owns the steps of the package docstring's ``get``: the download with progress lines (or the copy ``--from``
a mirror or an archive), the archive's size and SHA-256 against the registry, the safe extraction into a
temporary directory beside ``DIR/<name>``, finding the model folder in it, the atomic rename into place,
and removing the temporary directories a killed ``get`` left. The registry, its checks of a model folder and
the recording of a new checksum are :mod:`hsbcala.pretrained.registry`'s.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from hsbcala import engines
from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, DataError
from hsbcala.core.fsutil import Busy, locked
from hsbcala.data.archives import is_archive, unsafe_member
from hsbcala.engines.process import deferred, interruptible
from hsbcala.pretrained.registry import (
    Entry,
    check_model,
    known,
    load_registry,
    record,
    registry_path,
    status,
)

PROGRESS_ENV = "HSBCALA_PROGRESS_SECONDS"
PROGRESS_S = 5.0
TIMEOUT_S = 60  # a connection that sends nothing for this long fails
CHUNK = 1 << 20
MAX_RATIO = 20  # unpacked / archive size: weights hardly compress, a zip bomb does by ~1000:1
STALE_S = 60  # a temporary directory without lock file is a get's that just started, or stale after this

LINK_NOTE = " (links are refused in model archives)"


def get(
    names: Sequence[str],
    directory: Path,
    *,
    source: str | None = None,
    force: bool = False,
    registry: Path | None = None,
) -> None:
    """Install each named model as ``directory/<name>`` (see the module docstring); stops at the first
    failure (models installed before it stay: they are complete)."""
    registry = registry or registry_path()
    models = load_registry(registry)
    entries = [known(models, n, registry) for n in dict.fromkeys(names)]
    if source and len(entries) > 1 and _single_archive(source):
        raise ConfigError(f"--from {source} is one archive: name one model, not {len(entries)}")
    directory = Path(directory).expanduser().absolute()
    created = not directory.exists()
    try:
        with interruptible("interrupted by {signal}") as state:
            for e in entries:
                state.message = (
                    f"{e.name}: interrupted by {{signal}}; nothing was installed (temporary files removed)"
                )
                digest = _get_one(e, directory, source, force)
                if digest is not None and (e.sha256 is None or e.size is None):
                    record(registry, e, *digest)
    except BaseException:
        if created:  # a directory made by this get and left empty goes again
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _single_archive(source: str) -> bool:
    if "://" in source:
        return is_archive(urllib.parse.urlsplit(source).path)
    return Path(source).expanduser().is_file()


def _get_one(e: Entry, directory: Path, source: str | None, force: bool) -> tuple[int, str] | None:
    """Install one model; its archive's (size, sha256), or None when it was already there."""
    target = directory / e.name
    if target.exists() and not force:
        st = status(target, e)
        if st == "present":
            say(f"{e.name}: already present in {target} (--force replaces it)")
            return None
        raise DataError(f"{target} exists but is no complete {e.name} ({st}); move it away or add --force")
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale(directory, e.name)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".tmp-{e.name}-"))
    try:
        with locked(tmp / ".lock"):  # tells a later get (_remove_stale) that this directory is alive
            archive, where = _fetch(e, source, tmp)
            size, sha = _digest(archive)
            _check_archive(e, where, size, sha)
            unpacked = tmp / "unpacked"
            unpacked.mkdir()
            _extract(archive, unpacked, f"{e.name}: archive {where}")
            folder = _find_model(unpacked, e, where)
            try:
                infos = check_model(folder, e)
            except DataError as exc:  # name the member inside the archive, not the temporary path
                msg = str(exc).replace(f"{unpacked}{os.sep}", "")
                raise DataError(f"{e.name}: archive {where}: {msg}; nothing was installed") from None
            with deferred():  # no signal between moving an old model aside and the new one in
                installed = _install(folder, target, tmp, e, force)
    finally:
        with deferred():
            shutil.rmtree(tmp, ignore_errors=True)
    if installed:
        say(
            f"{e.name}: installed {target} ({len(infos)} members, Calamari {e.major}, network "
            f"{infos[0].network})"
        )
    return size, sha


def _remove_stale(directory: Path, name: str) -> None:
    """Temporary directories of ``name`` whose get is gone (its lock is free, or it never took one)."""
    for d in directory.glob(f".tmp-{glob.escape(name)}-*"):
        lock = d / ".lock"
        if not lock.exists():
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime > STALE_S:
                    shutil.rmtree(d, ignore_errors=True)
            continue
        with contextlib.suppress(Busy, OSError), locked(lock, wait=False):
            shutil.rmtree(d, ignore_errors=True)


def _fetch(e: Entry, source: str | None, tmp: Path) -> tuple[Path, str]:
    """The archive as a local file (downloaded into ``tmp`` if it comes from a URL), and how to name it."""
    if source is None or "://" in source:
        url = source or e.url
        if source and not is_archive(urllib.parse.urlsplit(source).path):
            url = f"{source.rstrip('/')}/{e.archive_name}"  # a mirror's base URL
        dest = tmp / (e.archive_name or "archive")
        _download(url, dest, e)
        return dest, url
    path = Path(source).expanduser()
    if path.is_dir():
        file = path / e.archive_name
        if not file.is_file():
            raise DataError(
                f"{e.name}: --from {path}: no {e.archive_name} in it (the release archive {e.url})"
            )
        return file, str(file)
    if path.is_file():
        return path, str(path)
    raise DataError(f"{e.name}: --from {source}: no such archive, directory or URL")


def _download(url: str, dest: Path, e: Entry) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "hsbcala (urllib)"})
    tail = "nothing was installed"
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{e.name}: download of {url} failed: HTTP {exc.code} {exc.reason}; {tail}") from None
    except urllib.error.URLError as exc:
        raise DataError(
            f"{e.name}: cannot download {url}: {exc.reason}; {tail} (offline? --from DIR|ARCHIVE)"
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"{e.name}: cannot download {url}: {exc or type(exc).__name__}; {tail}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and e.size is not None and total != e.size:
            raise DataError(
                f"{e.name}: {url} has {total:,} bytes, the registry expects {e.size:,} (another archive?); "
                f"{tail}"
            )
        expected = total if total is not None else e.size
        say(f"{e.name}: downloading {url}" + (f" ({_size(expected)})" if expected else ""))
        every = _progress_seconds()
        got, start = 0, time.monotonic()
        last = start
        read = getattr(response, "read1", response.read)  # what has arrived: progress on slow links too
        with open(dest, "wb") as f:
            while True:
                try:
                    chunk = read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise DataError(
                        f"{e.name}: download of {url} broke off after {got:,} bytes "
                        f"({exc or type(exc).__name__}); {tail}, run the same command again"
                    ) from None
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                now = time.monotonic()
                if now - last >= every:
                    last = now
                    of = f" of {expected / 1e6:.1f} MB ({100 * got / expected:.0f}%)" if expected else " MB"
                    say(f"{e.name}: {got / 1e6:.1f}{of}, {got / 1e6 / (now - start):.1f} MB/s")
    if total is not None and got != total:
        raise DataError(
            f"{e.name}: download of {url} broke off after {got:,} of {total:,} bytes (the connection "
            f"closed); {tail}, run the same command again"
        )
    say(f"{e.name}: downloaded {_size(got)} in {time.monotonic() - start:.0f} s")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _progress_seconds() -> float:
    try:
        return float(os.environ.get(PROGRESS_ENV, PROGRESS_S))
    except ValueError:
        return PROGRESS_S


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _check_archive(e: Entry, where: str, size: int, sha: str) -> None:
    tail = "nothing was installed"
    if e.size is not None and size != e.size:
        raise DataError(
            f"{e.name}: archive {where} has {size:,} bytes, the registry expects {e.size:,}; {tail}"
        )
    if e.sha256 is not None:
        if sha != e.sha256:
            raise DataError(
                f"{e.name}: archive {where} has sha256 {sha}, the registry expects {e.sha256} (a damaged or "
                f"another archive); {tail}"
            )
        say(f"{e.name}: archive verified ({size:,} bytes, sha256 {sha})")
    else:
        say(
            f"{e.name}: the registry has no sha256 for this archive yet; it is recorded once the model "
            f"checks pass"
        )


def _extract(archive: Path, target: Path, where: str) -> None:
    """Unpack ``archive`` into the empty directory ``target``, refusing unsafe members (DataError)."""
    limit = MAX_RATIO * max(archive.stat().st_size, 1) + CHUNK
    total = 0

    def refuse(member: str, problem: str) -> DataError:
        return DataError(f"{where}: member {member!r} {problem}; refusing the archive, nothing was installed")

    def count(member: str, size: int) -> None:
        nonlocal total
        total += max(size, 0)
        if total > limit:
            raise refuse(member, f"makes it unpack to more than {MAX_RATIO} times its size (a zip bomb?)")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():  # every member checked before anything is written
                    problem = unsafe_member(
                        info.filename,
                        link="symbolic link" if stat.S_ISLNK(info.external_attr >> 16) else "",
                        link_note=LINK_NOTE,
                    )
                    if problem:
                        raise refuse(info.filename, problem)
                    count(info.filename, info.file_size)
                zf.extractall(target)
        else:

            def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
                kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else ""
                problem = unsafe_member(member.name, link=kind, link_note=LINK_NOTE)
                if problem is None and not (member.isreg() or member.isdir()):
                    problem = "is neither a regular file nor a directory"
                if problem:
                    raise refuse(member.name, problem)
                count(member.name, member.size)
                return tarfile.data_filter(member, path)

            with tarfile.open(archive) as tf:
                tf.extractall(target, filter=check)
    except tarfile.FilterError as exc:
        member = exc.tarinfo.name if getattr(exc, "tarinfo", None) is not None else "?"
        raise refuse(member, str(exc)) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{where} does not unpack ({type(exc).__name__}: {exc}); nothing was installed"
        ) from None


def _find_model(root: Path, e: Entry, where: str) -> Path:
    """The folder with the ensemble in the unpacked archive: ``path_in_archive``, else the only folder with a
    ``0.ckpt.json`` (or the only one named like the model), else the only model of a one-model release
    (:func:`_single_model`)."""
    if e.path_in_archive and (root / e.path_in_archive / "0.ckpt.json").is_file():
        return root / e.path_in_archive
    found = sorted({p.parent for p in root.rglob("0.ckpt.json")})
    if not found and (single := _single_model(root, e, where)) is not None:
        return single
    named = [p for p in found if p.name == e.name]
    if len(found) == 1 or len(named) == 1:
        return found[0] if len(found) == 1 else named[0]
    tail = "nothing was installed"
    if not found:
        raise DataError(f"{e.name}: archive {where} holds no Calamari model (no 0.ckpt.json in it); {tail}")
    folders = ", ".join(str(p.relative_to(root)) for p in found)
    raise DataError(
        f"{e.name}: archive {where} holds several models ({folders}), none of them {e.name}; {tail}"
    )


def _single_model(root: Path, e: Entry, where: str) -> Path | None:
    """A release of one trained model (``evaluate.py … eval.export=true``: ``<name>/best.ckpt.json`` + its
    weights, a model card, provenance) as a one-member ensemble: its files renamed ``0.ckpt…`` in the unpacked
    copy, the name a warm start takes (``0.ckpt.json``, the first member). None when the archive holds no
    ``*.ckpt.json`` or several."""
    models = sorted(root.rglob("*.ckpt.json"))
    if len(models) != 1:
        return None
    model = models[0]
    stem = model.name.removesuffix(".ckpt.json")
    for f in [model, *engines.weights_of(model)]:  # X.ckpt.json, X.ckpt.h5 / X.ckpt/ -> 0.ckpt.…
        f.rename(f.with_name("0" + f.name.removeprefix(stem)))
    say(
        f"{e.name}: archive {where} holds one model, {model.relative_to(root)}: installed as the one "
        f"ensemble member 0.ckpt.json"
    )
    return model.parent


def _install(folder: Path, target: Path, tmp: Path, e: Entry, force: bool) -> bool:
    """Rename the checked ``folder`` to ``target`` (same file system: atomic); False: another get was
    faster."""
    if force and (target.exists() or target.is_symlink()):
        old = tmp / "replaced"  # removed with the temporary directory
        os.rename(target, old)
        try:
            os.rename(folder, target)
        except BaseException:
            os.rename(old, target)
            raise
        return True
    try:
        os.rename(folder, target)
    except OSError:
        if target.exists() and status(target, e) == "present":  # installed meanwhile by a parallel get
            say(f"{e.name}: meanwhile installed in {target} by another get; left as it is")
            return False
        raise
    return True
