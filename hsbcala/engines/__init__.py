"""The Calamari engines: one module per version, behind :class:`~hsbcala.engines.base.Engine`.

``get("cala2")`` is the only way the rest of hsbcala learns about a version; ``NAMES`` are the valid
``version.name`` values (the schema's enumeration). Layout:

- ``base.py``: the Engine interface, the training vocabulary table, TrainInputs, the progress-parser base;
- ``cala1.py``, ``cala2.py``: everything Calamari 1 / Calamari 2;
- ``modeljson*.py``: reading a model's ``.ckpt.json`` (version, network, codec) without TensorFlow;
- ``process.py``: the one way to start, stream, signal and stop an engine process;
- ``envs.py``: the engine environments (uv-built from pinned locks, a site venv, PATH; module loads).
"""

from __future__ import annotations

from pathlib import Path

from hsbcala.engines.base import Engine, TrainInputs
from hsbcala.engines.cala1 import Cala1
from hsbcala.engines.cala2 import Cala2

_ENGINES: dict[str, Engine] = {e.name: e for e in (Cala1(), Cala2())}
NAMES: tuple[str, ...] = tuple(sorted(_ENGINES))


ALL: tuple[Engine, ...] = tuple(_ENGINES[n] for n in NAMES)
#: the normalisations of the engines' calamari-eval (eval.normalization's values besides "engine")
EVAL_RULES: tuple[str, ...] = tuple(e.eval_rules for e in ALL)


def weights_of(model_json: Path) -> list[Path]:
    """The weights beside a model file, whichever engine wrote it (empty: none)."""
    return sorted({w for e in ALL for w in e.weights_of(model_json)})


def get(name: str) -> Engine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown Calamari version {name!r} (one of: {', '.join(NAMES)})") from None


def for_major(major: int) -> Engine | None:
    """The engine of a Calamari major version as model files record it (None: no engine for it)."""
    return next((e for e in _ENGINES.values() if e.major == major), None)


def label(major: int) -> str:
    """``cala2`` for 2, else ``Calamari <major>`` (for messages about a model file)."""
    e = for_major(major)
    return e.name if e else f"Calamari {major}"


def owner(model_dir: Path) -> str | None:
    """Which engine's files are in ``model_dir`` (None: none yet)."""
    return next((e.name for e in _ENGINES.values() if e.owns(model_dir)), None)


__all__ = [
    "ALL",
    "EVAL_RULES",
    "NAMES",
    "Engine",
    "TrainInputs",
    "for_major",
    "get",
    "label",
    "owner",
    "weights_of",
]
