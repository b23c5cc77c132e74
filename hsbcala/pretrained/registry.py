"""The registry of pretrained models (``hsbcala/pretrained_registry.json``) and the checks against it.

Owns: :class:`Entry` (one registered model), reading and validating the registry (:func:`load_registry`,
one-line ConfigErrors), recording an archive's checksum in it (:func:`record`), checking a model folder
against an entry (:func:`check_model`: members, Calamari version, model version, network, weights), a
model's :func:`status` in ``DIR``, ``list`` (:func:`list_models`) and the ``get`` command that installs a
warm-start model (:func:`get_command`). Downloading and installing are in :mod:`hsbcala.pretrained.fetch`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import stat
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hsbcala import engines
from hsbcala.core.console import say, warn
from hsbcala.core.errors import ConfigError, DataError
from hsbcala.core.fsutil import atomic_write_json, locked
from hsbcala.engines.modeljson import ModelInfo, read_model

PROG = "python -m hsbcala.pretrained"
REGISTRY = Path(__file__).parent.with_name("pretrained_registry.json")  # hsbcala/, beside this package
REGISTRY_ENV = "HSBCALA_PRETRAINED_REGISTRY"
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


def known(registry: dict[str, Entry], name: str, path: Path) -> Entry:
    """``name``'s entry; ConfigError (one line naming the registered models) when it is none."""
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


def record(registry: Path, e: Entry, size: int, sha: str) -> None:
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
    from hsbcala import engines

    engine = engines.for_major(major)
    missing = engine.check_weights(file, version) if engine else f"no engine for Calamari {major}"
    if missing:
        raise DataError(f"{file} has no weights: {missing}")


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
        if e.sha256:
            print(f"  pinned: {size}, sha256 {e.sha256} (checked before anything is installed)")
        else:  # no checksum is invented: only an archive hsbcala has read can be pinned
            print(f"  not pinned: {size}, no sha256 recorded yet (the first get records the archive's)")
    pinned = [e.name for e in models.values() if e.sha256]
    print(
        f"\n{len(pinned)} of {len(models)} pinned by sha256{': ' + ', '.join(pinned) if pinned else ''}; a get "
        f"records an unpinned archive's sha256 in {registry}: commit that file to publish it"
    )
