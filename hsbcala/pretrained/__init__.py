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

The package: :mod:`~hsbcala.pretrained.registry` (the registry, checking a model folder against it, the
status of ``DIR/<name>``, ``list``), :mod:`~hsbcala.pretrained.fetch` (``get``: download, checksums, safe
extraction, atomic install), :mod:`~hsbcala.pretrained.cli` (the command line; ``__main__`` runs it). The
names other modules use are imported here, e.g. ``from hsbcala.pretrained import get_command``.
"""

from hsbcala.pretrained.cli import default_dir, main
from hsbcala.pretrained.fetch import (
    CHUNK,
    MAX_RATIO,
    PROGRESS_ENV,
    PROGRESS_S,
    STALE_S,
    TIMEOUT_S,
    get,
)
from hsbcala.pretrained.registry import (
    MEMBER,
    PROG,
    REGISTRY,
    REGISTRY_ENV,
    SHA256,
    Entry,
    check_model,
    get_command,
    list_models,
    load_registry,
    registry_path,
    status,
)

__all__ = [
    "CHUNK",
    "MAX_RATIO",
    "MEMBER",
    "PROG",
    "PROGRESS_ENV",
    "PROGRESS_S",
    "REGISTRY",
    "REGISTRY_ENV",
    "SHA256",
    "STALE_S",
    "TIMEOUT_S",
    "Entry",
    "check_model",
    "default_dir",
    "get",
    "get_command",
    "list_models",
    "load_registry",
    "main",
    "registry_path",
    "status",
]
