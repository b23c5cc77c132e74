"""A model directory: every path in it, hsbcala's state file, its lock, and (through its engine) its checkpoints.

Engines write their own files there (checkpoints, the best model; see ``hsbcala/engines/cala*.py`` for each
layout). hsbcala adds:

- ``hsbcala-state.json``: the version, the MLflow run id (so a resumed training continues the same run),
  whether training finished (a finished model is not retrained), one history entry per launch;
- ``.hsbcala.lock``: held (flock) by the launch that trains in the directory, and ``.hsbcala-owner.json``
  beside it: host, pid, Slurm job, engine pid, heartbeat of that launch, readable from any node (a flock on
  NFS/BeeGFS may hold on one node only). A clean end removes it; one left behind names a launch that died
  (SIGKILL, OOM, node failure): its engine is refused while alive, and its MLflow run is marked KILLED;
- ``engine.log``: the engine's whole output, one header line per launch (not ``train.log``: Calamari 2
  writes that file itself, opening it afresh);
- ``manifest.json``, ``split.json``, the codec report (written by :mod:`hsbcala.data.step`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hsbcala import engines
from hsbcala.core import fsutil
from hsbcala.core.errors import ConfigError
from hsbcala.engines.base import Engine

STATE_FILE = "hsbcala-state.json"
LOCK_FILE = ".hsbcala.lock"
OWNER_FILE = ".hsbcala-owner.json"
STALE_S = 600  # an owner record on another host whose heartbeat is older than this belongs to a dead launch
HEARTBEAT_S = 60
SPOOL = ".hsbcala/pending-metrics.jsonl"  # metrics MLflow could not take (hsbcala.track.tracking.Tracker)
ENGINE_LOG = "engine.log"
WARMSTART_DIR = "warmstart"  # <model_dir>/warmstart/: the copy of the model a training starts from
OWNER_RECOVER = (
    "it names the launch that last trained here; make sure that no training or engine still runs in this "
    "directory, then delete it"
)


@dataclass
class State:
    version: str
    run_id: str | None = None
    tracking_uri: str | None = None
    status: str = "training"  # training | finished
    best_val_cer: float | None = None  # of the exported best model (its stage: the last one trained)
    best_epoch: float | None = None  # where best_val_cer was reached (the console's epoch in its stage)
    epochs_target: int | None = (
        None  # an extension's epochs per stage (train.extend_epochs), until it is done
    )
    best_val_cer_stage1: float | None = None  # the first stage's best, with augmentation
    history: list[dict] = field(
        default_factory=list
    )  # one entry per launch: start time, job id, resumed from


# A damaged state file is refused, never taken for "no state": read as none, a finished model would be trained
# again in a new MLflow run and an interrupted one would lose the run its curves belong to.
STATE_RECOVER = (
    "it records the MLflow run to continue and whether training finished, so hsbcala will not guess: restore "
    "it from a backup, or move it aside to train on from the newest checkpoint in a new MLflow run"
)
STATUSES = ("training", "finished")


def _read_state(path: Path) -> dict:
    """The state file's object ({}: none); :class:`fsutil.Unreadable` when it is damaged or not a state."""
    if Path(path).exists() and not Path(path).is_dir():  # the user's model_dir, not a damaged state file
        raise ConfigError(f"model_dir {path} is a file, not a directory; choose another model_dir")
    file = Path(path) / STATE_FILE
    d = fsutil.read_json(file, recover=STATE_RECOVER)
    if not d:
        return d
    if d.get("version") not in engines.NAMES:
        problem = f"its version {d.get('version')!r} is none of {', '.join(engines.NAMES)}"
        raise fsutil.Unreadable(file, problem, STATE_RECOVER)
    if d.get("status", "training") not in STATUSES:
        raise fsutil.Unreadable(file, f"its status {d.get('status')!r} is none of {STATUSES}", STATE_RECOVER)
    return d


def load_state(path: Path) -> State | None:
    """hsbcala's state of the model directory ``path``; None only when it has no state file."""
    d = _read_state(path)
    if not d:
        return None
    known = set(State.__dataclass_fields__)
    return State(**{k: v for k, v in d.items() if k in known})


def detect_version(path: Path) -> str | None:
    """Which Calamari version wrote ``path`` (from hsbcala's state, else from the engine's files)."""
    version = _read_state(path).get("version")
    if version is not None:
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

    def check_usable(self) -> None:
        """Refuse, before anything starts, a model_dir that is a file or that cannot be created or written."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"model_dir {self.path} is a file, not a directory; choose another model_dir")
        existing = next(p for p in (self.path, *self.path.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"model_dir {self.path}: {existing} is a file; choose another model_dir")
        if not os.access(existing, os.W_OK | os.X_OK):
            what = (
                "is not writable"
                if existing == self.path
                else f"cannot be created: {existing} is not writable"
            )
            raise ConfigError(f"model_dir {self.path} {what}; choose another model_dir")

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

    @property
    def lines_dir(self) -> Path:
        """Links to the lines of a long file list (hsbcala.train.plan.link_lines), one folder per split."""
        return self.path / "lines"

    @property
    def spool(self) -> Path:
        return self.path / SPOOL

    @property
    def owner_file(self) -> Path:
        return self.path / OWNER_FILE

    @contextlib.contextmanager
    def lock(self) -> Iterator[Owner]:
        """Hold the directory for one training; a second launch gets ConfigError naming the lock.

        Yields this launch's :class:`Owner`; its ``previous`` is the record a dead launch left behind (or None).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(fsutil.locked(self.lock_file, wait=False))
            except fsutil.Busy:
                raise ConfigError(
                    f"model_dir {self.path} is in use by another training (lock {self.lock_file}); "
                    f"wait for it or choose another model_dir"
                ) from None
            # damaged: refused, as it may name a live engine that still writes here
            previous = fsutil.read_json(self.owner_file, recover=OWNER_RECOVER) or None
            if previous:
                _refuse_live(self.path, previous)
            owner = Owner(self.owner_file, previous)
            owner.write()
            try:
                yield owner
            finally:
                with contextlib.suppress(OSError):
                    self.owner_file.unlink()


class Owner:
    """This launch's record in ``.hsbcala-owner.json`` (see the module docstring)."""

    def __init__(self, path: Path, previous: dict | None) -> None:
        self.path = path
        self.previous = previous
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": time.time(),
            "heartbeat": time.time(),
            "engine_pid": None,
        }
        self._beat = 0.0

    def write(self) -> None:
        fsutil.atomic_write_json(self.path, self.record)

    def engine_started(self, pid: int) -> None:
        self.record["engine_pid"] = pid
        self.write()

    def heartbeat(self) -> None:
        """Refresh the heartbeat (at most every HEARTBEAT_S; errors ignored: a full disk must not stop training)."""
        now = time.time()
        if now - self._beat >= HEARTBEAT_S:
            self._beat = now
            self.record["heartbeat"] = now
            with contextlib.suppress(OSError):
                self.write()

    def describe_previous(self) -> str:
        p = self.previous or {}
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.get("started", 0)))
        job = f", Slurm job {p['slurm_job_id']}" if p.get("slurm_job_id") else ""
        return f"pid {p.get('pid')} on {p.get('host')}{job}, started {when}"


def process_alive(pid: Any) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, dead but not yet reaped, does not count: in a
    container whose first process reaps nothing, a dead engine stays one)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _refuse_live(path: Path, previous: dict) -> None:
    """A record left by another launch: refuse while its engine (this host) or heartbeat (elsewhere) lives."""
    host = socket.gethostname()
    if previous.get("host") == host:
        if previous.get("pid") != os.getpid() and process_alive(previous.get("engine_pid")):
            raise ConfigError(
                f"model_dir {path}: the engine (pid {previous['engine_pid']}) of an earlier launch that died "
                f"still writes to it; wait for it to end or stop it (kill {previous['engine_pid']})"
            )
        return
    age = time.time() - float(previous.get("heartbeat") or 0)
    if age < STALE_S:
        job = f" (Slurm job {previous['slurm_job_id']})" if previous.get("slurm_job_id") else ""
        raise ConfigError(
            f"model_dir {path} is in use by a training on {previous.get('host')}{job}, last heard of "
            f"{age:.0f} s ago; wait for it or choose another model_dir"
        )
