"""Pretrained Calamari models for warm starts: list them, get them, check them, install them.

    python -m hsbcala.pretrained list [--dir DIR]
    python -m hsbcala.pretrained get NAME… [--dir DIR] [--from URL|DIR|ARCHIVE] [--force]

``DIR`` defaults to ``pretrained/`` in the current directory, where ``warmstart.pretrained_dir`` points by
default (``${paths.root}/pretrained``); ``preset=full`` warm-starts from ``DIR/<name>/0.ckpt.json``.

The models and their release archives are listed in ``hsbcala/pretrained_registry.json`` (kept in the
repository; the sources of each URL are in it). ``get`` installs a model only when all of this holds:

1. the archive comes from the registry's URL (urllib, a progress line every few seconds) or from ``--from``:
   a URL (of the archive, or of a mirror holding the archives under their release file names), a local
   mirror directory holding them, or one archive file (cluster compute nodes are offline);
2. its size and SHA-256 are the registry's, checked before anything is unpacked. A checksum the registry
   does not know yet is recorded there (atomically) once the model has passed every check, so later gets
   verify it; commit the registry then;
3. it unpacks safely into a temporary directory beside ``DIR/<name>``: tar with ``filter="data"``, and in any
   archive no absolute path, no ``..`` component, no link, no device file, and no more than ``MAX_RATIO``
   times the archive's size;
4. the model folder in it (``path_in_archive``; release archives hold the model in a subfolder) has the
   registry's ensemble members ``0.ckpt.json`` … (each read by ``modeljson.read_model``)
   of the registry's Calamari version, model version and network, each with its weights (Calamari 2 model
   version 6: ``<i>.ckpt/`` with ``saved_model.pb`` and ``variables/``; Calamari 2 up to model version 5 and
   Calamari 1: ``<i>.ckpt.h5``).

Only then is it renamed into place as ``DIR/<name>`` (an existing complete model is left alone unless
``--force``). Any failure (HTTP error, a download broken off, a checksum mismatch, an unsafe member, a model
of the wrong Calamari version, Ctrl-C, SIGTERM) is one line, exit 2 (130 when interrupted), and the temporary
directory is removed: ``DIR`` holds complete models only. One left by a killed ``get`` (SIGKILL) is removed by
the next ``get`` of that model.

Environment: ``HSBCALA_PRETRAINED_REGISTRY`` (another registry file, e.g. a copy in tests; ``--registry``
too), ``HSBCALA_PROGRESS_SECONDS`` (seconds between progress lines, default 5).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import http.client
import json
import os
import re
import shlex
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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hsbcala import engines
from hsbcala.archives import is_archive
from hsbcala.console import say, warn
from hsbcala.engines.modeljson import ModelInfo, read_model
from hsbcala.engines.process import deferred, interruptible
from hsbcala.errors import ConfigError, DataError, clean_exit
from hsbcala.fsutil import Busy, atomic_write_json, locked

PROG = "python -m hsbcala.pretrained"
REGISTRY = Path(__file__).with_name("pretrained_registry.json")
REGISTRY_ENV = "HSBCALA_PRETRAINED_REGISTRY"
PROGRESS_ENV = "HSBCALA_PROGRESS_SECONDS"
PROGRESS_S = 5.0
TIMEOUT_S = 60  # a connection that sends nothing for this long fails
CHUNK = 1 << 20
MAX_RATIO = 20  # unpacked / archive size: weights hardly compress, a zip bomb does by ~1000:1
STALE_S = 60  # a temporary directory without lock file is a get's that just started, or stale after this
MEMBER = re.compile(r"(\d+)\.ckpt\.json")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One model of the registry (see the ``about`` text in the registry file)."""

    name: str
    calamari: str  # the engine that loads it: cala1 | cala2
    url: str
    network: str | None = None
    model_version: int | None = None
    members: int | None = None
    path_in_archive: str | None = None
    size: int | None = None
    sha256: str | None = None
    description: str = ""
    source: str = ""

    @property
    def major(self) -> int:
        return engines.get(self.calamari).major

    @property
    def archive_name(self) -> str:
        """The release archive's file name (also its name in a mirror directory)."""
        return PurePosixPath(urllib.parse.urlsplit(self.url).path).name


# ---------------------------------------------------------------------------------------------- registry


def registry_path(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get(REGISTRY_ENV) or REGISTRY).expanduser()


def load_registry(path: Path) -> dict[str, Entry]:
    """The registry's models by name; ConfigError (one line naming the file and model) when it is broken."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"pretrained registry {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"pretrained registry {path} is not valid JSON: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f"pretrained registry {path} has no 'models' object")
    return {name: _entry(path, name, m) for name, m in models.items()}


def _entry(path: Path, name: str, m: object) -> Entry:
    where = f"pretrained registry {path}: model {name!r}"
    if not isinstance(m, dict):
        raise ConfigError(f"{where} is not an object")
    if m.get("calamari") not in engines.NAMES:
        raise ConfigError(
            f"{where}: 'calamari' must be one of {', '.join(engines.NAMES)}, not {m.get('calamari')!r}"
        )
    if not isinstance(m.get("url"), str) or not m["url"]:
        raise ConfigError(f"{where} has no 'url'")
    for key in ("model_version", "members", "size"):
        v = m.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ConfigError(f"{where}: '{key}' must be a whole number or null, not {v!r}")
    for key in ("network", "path_in_archive", "description", "source"):
        if m.get(key) is not None and not isinstance(m[key], str):
            raise ConfigError(f"{where}: '{key}' must be a string or null, not {m[key]!r}")
    sha = m.get("sha256")
    if sha is not None and not (isinstance(sha, str) and SHA256.fullmatch(sha)):
        raise ConfigError(f"{where}: 'sha256' must be 64 lower-case hex digits or null, not {sha!r}")
    fields = set(Entry.__dataclass_fields__) - {"name"}
    return Entry(name=name, **{k: v for k, v in m.items() if k in fields and v is not None})


def _known(registry: dict[str, Entry], name: str, path: Path) -> Entry:
    if name not in registry:
        raise ConfigError(
            f"unknown pretrained model {name!r} (known: {', '.join(registry)}; registry {path}; "
            f"see {PROG} list)"
        )
    return registry[name]


def get_command(model: str | os.PathLike) -> str | None:
    """The ``get`` command that installs the warm-start model ``model`` (``<dir>/<name>/<i>.ckpt.json``), or
    None when ``<name>`` is no registered model (or the registry cannot be read)."""
    path = Path(model)
    if not path.name.endswith(".json"):
        path = path.with_name(path.name + ".json")
    if not MEMBER.fullmatch(path.name):
        return None
    with contextlib.suppress(ConfigError):
        if path.parent.name in load_registry(registry_path()):
            where = shlex.quote(str(path.parent.parent.absolute()))
            return f"{PROG} get {shlex.quote(path.parent.name)} --dir {where}"
    return None


# ------------------------------------------------------------------------------------------ model checks


def check_model(folder: Path, entry: Entry) -> list[ModelInfo]:
    """The ensemble members in ``folder``, each read and checked against ``entry``; DataError (one line) with
    the first problem: no or gappy members, another count, Calamari version, model version or network than
    the registry's, missing weights."""
    found = sorted(
        (int(m.group(1)), p) for p in folder.glob("*.ckpt.json") if (m := MEMBER.fullmatch(p.name))
    )
    if not found:
        raise DataError(f"no ensemble member (0.ckpt.json, 1.ckpt.json, …) in {folder}")
    numbers = [n for n, _ in found]
    if numbers != list(range(len(numbers))):
        raise DataError(f"the ensemble members in {folder} are not numbered 0, 1, …: {numbers}")
    if entry.members is not None and len(found) != entry.members:
        raise DataError(f"{folder} holds {len(found)} ensemble members, the registry expects {entry.members}")
    infos = []
    for _, file in found:
        info = read_model(file)
        if info.version != entry.major:
            raise DataError(
                f"{file} is a Calamari {info.version} model, but {entry.name} is registered as "
                f"{entry.calamari} (Calamari {entry.major})"
            )
        version = json.loads(file.read_text(encoding="utf-8")).get("version")
        if entry.model_version is not None and version != entry.model_version:
            raise DataError(
                f"{file} has model version {version!r}, the registry expects {entry.model_version} "
                f"(another release of {entry.name}?)"
            )
        if entry.network and info.network != entry.network:
            raise DataError(
                f"{file} has the network {info.network!r}, the registry expects {entry.network!r}"
            )
        _check_weights(file, entry.major, version)
        infos.append(info)
    return infos


def _check_weights(file: Path, major: int, version: object) -> None:
    ckpt = file.with_name(file.name[: -len(".json")])
    h5 = ckpt.with_name(ckpt.name + ".h5")
    if major == 2 and not (isinstance(version, int) and version <= 5):  # 2.3 (model version 6): a SavedModel
        variables = ckpt / "variables"
        if not (
            (ckpt / "saved_model.pb").is_file()
            and (variables / "variables.index").is_file()
            and any(p.stat().st_size > 0 for p in variables.glob("variables.data-*"))
        ):
            raise DataError(
                f"{file} has no weights: expected the SavedModel {ckpt}/ (saved_model.pb, "
                f"variables/variables.index, variables/variables.data-*)"
            )
    elif not (h5.is_file() and h5.stat().st_size > 0):
        raise DataError(f"{file} has no weights: expected {h5}")


def status(target: Path, entry: Entry) -> str:
    """``present``, ``missing`` or ``incomplete: <why>`` for ``DIR/<name>``."""
    if not target.exists():
        return "missing"
    try:
        check_model(target, entry)
    except DataError as exc:
        return f"incomplete: {exc}"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return "present"


# ------------------------------------------------------------------------------------------------- list


def list_models(directory: Path, registry: Path) -> None:
    """Print every registered model with its source and whether it is present in ``directory``."""
    models = load_registry(registry)
    print(f"pretrained models in {directory} (registry {registry}):")
    for e in models.values():
        st = status(directory / e.name, e)
        where = (
            f"{directory / e.name}"
            if st == "present"
            else f"get: {PROG} get {e.name} --dir {shlex.quote(str(directory))}"
        )
        print(f"\n{e.name}: {st} ({where})")
        facts = [f"Calamari {e.major} ({e.calamari})", f"network {e.network or '?'}"]
        facts += [f"model version {e.model_version or '?'}", f"{e.members or '?'} members"]
        print("  " + ", ".join(facts))
        if e.description:
            print(f"  {e.description}")
        print(f"  {e.url}")
        size = f"{e.size:,} bytes" if e.size is not None else "size not yet known"
        sha = f"sha256 {e.sha256}" if e.sha256 else "sha256 not yet known (recorded by the first get)"
        print(f"  {size}, {sha}")


# -------------------------------------------------------------------------------------------------- get


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
    entries = [_known(models, n, registry) for n in dict.fromkeys(names)]
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
                    _record(registry, e, *digest)
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


def _unsafe(name: str, link: bool) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if link:
        return "is a link (refused in model archives)"
    if path.is_absolute():
        return "has an absolute path"
    if path.parts and len(path.parts[0]) >= 2 and path.parts[0][1] == ":":
        return "has a drive letter"
    if ".." in path.parts:
        return "would be unpacked outside the target directory (a '..' component)"
    return None


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
                    problem = _unsafe(info.filename, stat.S_ISLNK(info.external_attr >> 16))
                    if problem:
                        raise refuse(info.filename, problem)
                    count(info.filename, info.file_size)
                zf.extractall(target)
        else:

            def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
                problem = _unsafe(member.name, member.issym() or member.islnk())
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
    ``0.ckpt.json`` (or the only one named like the model)."""
    if e.path_in_archive and (root / e.path_in_archive / "0.ckpt.json").is_file():
        return root / e.path_in_archive
    found = sorted({p.parent for p in root.rglob("0.ckpt.json")})
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


def _record(registry: Path, e: Entry, size: int, sha: str) -> None:
    """Write the archive's size and sha256 into the registry (atomically; others' edits kept)."""
    lock = (
        Path(tempfile.gettempdir())
        / f"hsbcala-registry-{hashlib.sha1(bytes(registry.absolute())).hexdigest()[:16]}.lock"
    )
    try:
        with locked(lock):
            data = json.loads(registry.read_text(encoding="utf-8"))
            model = data["models"][e.name]
            if model.get("sha256") not in (None, sha):
                warn(f"{e.name}: {registry} meanwhile has sha256 {model['sha256']}, not {sha}; left as it is")
                return
            model["sha256"] = sha
            if model.get("size") is None:
                model["size"] = size
            mode = stat.S_IMODE(registry.stat().st_mode)
            atomic_write_json(registry, data)
            os.chmod(registry, mode)  # the temporary file was 0600
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        warn(
            f"{e.name}: could not record the archive's checksum in {registry} ({why}): add "
            f'"sha256": "{sha}" (and "size": {size}) to {e.name} there by hand'
        )
        return
    say(
        f"{e.name}: recorded the archive's sha256 {sha} and size {size:,} in {registry}; commit it, so that "
        f"later gets are checked against it"
    )


# -------------------------------------------------------------------------------------------------- CLI


def default_dir() -> Path:
    """``warmstart.pretrained_dir``'s default: ``${paths.root}/pretrained``, paths.root being the current
    directory."""
    return Path.cwd() / "pretrained"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog=PROG, description="Pretrained Calamari models for warm starts.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the models live (default: ./pretrained, as warmstart.pretrained_dir)",
    )
    common.add_argument(
        "--registry", type=Path, default=None, help=f"registry file (default: ${REGISTRY_ENV} or {REGISTRY})"
    )
    sub.add_parser("list", parents=[common], help="the registered models and whether they are present")
    gp = sub.add_parser("get", parents=[common], help="download (or copy), check and install models")
    gp.add_argument("names", nargs="+", metavar="NAME")
    gp.add_argument(
        "--from",
        dest="source",
        metavar="URL|DIR|ARCHIVE",
        help="the archive's URL or a mirror's base URL, a local mirror directory, or an archive file",
    )
    gp.add_argument("--force", action="store_true", help="replace a model that is already present")
    args = ap.parse_args(argv)
    directory = (args.dir or default_dir()).expanduser().absolute()
    with clean_exit():
        registry = registry_path(args.registry)
        if args.cmd == "list":
            list_models(directory, registry)
        else:
            get(args.names, directory, source=args.source, force=args.force, registry=registry)


if __name__ == "__main__":
    main()
