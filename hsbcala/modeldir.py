"""A model directory: every path in it, hsbcala's state file, its lock, and (through its engine) its checkpoints.

Engines write their own files there (checkpoints, the best model; see ``hsbcala/engines/cala*.py`` for each
layout). hsbcala adds:

- ``hsbcala-state.json``: the version, the MLflow run id (so a resumed training continues the same run),
  whether training finished (a finished model is not retrained), one history entry per launch;
- ``.hsbcala.lock``: held (flock) by the launch that trains in the directory;
- ``train.log``: the engine's output, one header line per launch;
- ``manifest.json``, ``split.json``, the codec report (written by :mod:`hsbcala.datastep`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hsbcala import engines, fsutil
from hsbcala.engines.base import Engine
from hsbcala.errors import ConfigError

STATE_FILE = "hsbcala-state.json"
LOCK_FILE = ".hsbcala.lock"
ENGINE_LOG = "train.log"


@dataclass
class State:
    version: str
    run_id: str | None = None
    tracking_uri: str | None = None
    status: str = "training"  # training | finished
    best_val_cer: float | None = None
    history: list[dict] = field(
        default_factory=list
    )  # one entry per launch: start time, job id, resumed from


def load_state(path: Path) -> State | None:
    d = fsutil.read_json(Path(path) / STATE_FILE)
    if not d:
        return None
    known = set(State.__dataclass_fields__)
    return State(**{k: v for k, v in d.items() if k in known})


def detect_version(path: Path) -> str | None:
    """Which Calamari version wrote ``path`` (from hsbcala's state, else from the engine's files)."""
    version = fsutil.read_json(Path(path) / STATE_FILE).get("version")
    if version in engines.NAMES:
        return version
    return engines.owner(Path(path))


class ModelDir:
    """The model directory ``path`` trained by ``engine``."""

    def __init__(self, path: Path, engine: Engine) -> None:
        self.path = Path(path)
        self.engine = engine

    # paths
    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def engine_log(self) -> Path:
        return self.path / ENGINE_LOG

    def exists(self) -> bool:
        return self.path.is_dir()

    # state
    def load_state(self) -> State | None:
        return load_state(self.path)

    def save_state(self, state: State) -> None:
        """Write the state atomically (a crash never leaves a half-written state file)."""
        fsutil.atomic_write_json(self.state_file, asdict(state))

    def check_version(self) -> None:
        """Refuse a model directory written by the other Calamari version."""
        found = detect_version(self.path) if self.path.is_dir() else None
        if found is not None and found != self.engine.name:
            raise ConfigError(
                f"model_dir {self.path} holds a {found} model, but version={self.engine.name}; "
                f"choose version={found} or another model_dir"
            )

    # the engine's files
    def latest_checkpoint(self) -> Path | None:
        return self.engine.latest_checkpoint(self.path) if self.path.is_dir() else None

    def best_model(self) -> list[Path]:
        return self.engine.best_model(self.path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for one training; a second launch gets ConfigError naming the lock."""
        self.path.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(fsutil.locked(self.lock_file, wait=False))
            except fsutil.Busy:
                raise ConfigError(
                    f"model_dir {self.path} is in use by another training (lock {self.lock_file}); "
                    f"wait for it or choose another model_dir"
                ) from None
            yield
