"""Engine environments: where each Calamari version's commands run.

Calamari 1 (protobuf < 4), Calamari 2 and the launcher (mlflow 3, protobuf >= 5) cannot share one Python
environment, so each engine gets its own:

- ``kind: uv`` (default): a virtualenv built with uv from the pinned lock file in ``envs/``, at
  ``<root>/<version>-<first 12 hex of the lock's SHA-256>``. Built once (under a file lock, so parallel jobs
  wait instead of building twice), marked ready by a stamp file, reused afterwards; a changed lock file gives
  a new directory. uv's own cache makes a rebuild on the same machine take seconds.
- ``kind: venv``: an existing virtualenv, e.g. one the HPC site built against its TensorFlow module.
- ``kind: path``: commands as found on PATH.

On a machine with a GPU, ``kind: uv`` builds from the version's ``cuda_lock`` instead (the same pins plus
TensorFlow's CUDA libraries, ``tensorflow[and-cuda]``: without them TensorFlow trains on the CPU and says so only in
a warning): ``device: auto`` (default) when ``nvidia-smi`` lists a GPU this process may use, ``gpu``/``cpu`` to
choose. :func:`device` names what the engine will train on, for the start line.

``modules`` are loaded through a login shell before the command starts (``module`` is a shell function of
Lmod/Environment Modules, so it cannot be exec'd directly); the command itself is still passed as an argument
list (``exec "$@"``), never spliced into the shell string.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from hsbcala import fsutil
from hsbcala.console import say
from hsbcala.errors import ConfigError, EngineError

READY = ".hsbcala-ready"


def _uv() -> str:
    try:
        from uv import find_uv_bin  # the uv wheel in the launcher environment

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise EngineError(
                "uv not found: install it (pip install uv) or use an engine env of kind venv/path"
            )
        return found


@dataclass(frozen=True)
class EngineEnv:
    name: str  # cala1 | cala2
    kind: str
    prefix: Path | None  # the virtualenv (kind uv/venv)
    lock: Path | None
    python: str
    modules: tuple[str, ...] = ()
    cuda: bool = (
        False  # built with TensorFlow's CUDA libraries (kind=uv); venv/path: whatever the site installed
    )

    @property
    def ready(self) -> bool:
        if self.kind == "uv":
            return (self.prefix / READY).is_file()
        if self.kind == "venv":
            return (self.prefix / "bin" / "python").exists()
        return True

    def program(self, name: str) -> str:
        """Absolute path of an engine command (bare name for kind=path: found on PATH after module loads)."""
        return str(self.prefix / "bin" / name) if self.prefix else name

    def wrap(self, argv: list[str]) -> list[str]:
        """Prefix ``argv`` with the module loads of this environment, if any."""
        if not self.modules:
            return argv
        script = "module load " + " ".join(shlex.quote(m) for m in self.modules) + ' && exec "$@"'
        return ["bash", "-lc", script, "hsbcala-engine", *argv]

    def ensure(self) -> None:
        """Make the environment usable, creating it on first use (kind=uv); clear error otherwise."""
        if self.kind == "path":
            return
        if self.kind == "venv":
            if not self.ready:
                raise ConfigError(
                    f"engine venv {self.prefix} does not exist (cluster.env.venv / version.env.venv)"
                )
            return
        if self.ready:
            return
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        with fsutil.locked(self.prefix.with_suffix(".lock")):  # another job may be building it: wait
            if self.ready:
                return
            say(f"creating the {self.name} engine environment {self.prefix} from {self.lock} (once)")
            if self.prefix.exists():
                shutil.rmtree(self.prefix)  # a half-built env from an interrupted attempt
            uv = _uv()
            steps = [
                [uv, "venv", "--quiet", "--python", self.python, str(self.prefix)],
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(self.prefix / "bin" / "python"),
                    "-r",
                    str(self.lock),
                ],
            ]
            for step in steps:
                proc = subprocess.run(step, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                    shutil.rmtree(self.prefix, ignore_errors=True)
                    raise EngineError(f"creating engine env {self.prefix} failed: {tail}")
            (self.prefix / READY).write_text(self.lock.read_text())

    def freeze(self) -> str:
        """The exact package list of the environment (for the run's record)."""
        if self.prefix is None:
            return ""
        proc = subprocess.run(
            [_uv(), "pip", "freeze", "--python", str(self.prefix / "bin" / "python")],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout


def resolve(cfg: Any, project_root: Path) -> EngineEnv:
    """The engine environment of this run: the cluster's override if it has one, else the version's own."""
    spec = cfg.cluster.env if cfg.cluster.get("env") is not None else cfg.version.env
    key = "cluster.env" if cfg.cluster.get("env") is not None else "version.env"
    name = cfg.version.name
    modules = tuple(spec.modules or ())
    if spec.kind == "uv":
        if not spec.lock:
            raise ConfigError(f"{key}.lock is required for kind=uv")
        want = str(spec.get("device", "auto"))
        cuda = bool(spec.get("cuda_lock")) and (want == "gpu" or (want == "auto" and bool(visible_gpus())))
        field = "cuda_lock" if cuda else "lock"
        lock = Path(spec[field])
        lock = lock if lock.is_absolute() else project_root / lock
        if not lock.is_file():
            raise ConfigError(f"{key}.{field}: no such file {lock}")
        digest = hashlib.sha256(lock.read_bytes() + spec.python.encode()).hexdigest()[:12]
        prefix = Path(spec.root).expanduser() / f"{name}{'-cuda' if cuda else ''}-{digest}"
        return EngineEnv(name, "uv", prefix, lock, spec.python, modules, cuda)
    if spec.kind == "venv":
        if not spec.venv:
            raise ConfigError(f"{key}.venv is required for kind=venv")
        return EngineEnv(name, "venv", Path(spec.venv).expanduser(), None, spec.python, modules)
    return EngineEnv(name, "path", None, None, spec.python, modules)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``nvidia-smi -L``'s names, none when CUDA_VISIBLE_DEVICES hides them all."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip()
    smi = shutil.which("nvidia-smi")
    return [] if visible in ("", "-1") or not smi else list(_listed_gpus(smi))


@functools.lru_cache(maxsize=8)
def _listed_gpus(smi: str) -> tuple[str, ...]:
    """``nvidia-smi -L`` once per process (a launch asks when choosing the env and again for its start line)."""
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(
        x.split(":", 1)[1].split("(")[0].strip() for x in out.stdout.splitlines() if x.startswith("GPU")
    )


class Device(NamedTuple):
    text: str  # as the start line says it
    gpu: bool  # the engine should train on a GPU (then TensorFlow's fallback to the CPU is worth a warning)


def device(env: EngineEnv, gpus: list[str] | None = None) -> Device:
    """What the engine will train on: the GPUs when it can use them, else the CPU, with the reason when a GPU is
    there but this environment has no CUDA libraries."""
    import os

    gpus = visible_gpus() if gpus is None else gpus
    cpu = f"the CPU ({os.cpu_count()} cores)"
    if not gpus:
        return Device(cpu, False)
    if env.kind == "uv" and not env.cuda:
        why = f"not the GPU {gpus[0]}: its engine env has no CUDA libraries (version.env.device=cpu)"
        return Device(f"{cpu}, {why}", False)
    return Device(f"{len(gpus)} GPU(s) ({gpus[0]})", True)


# TensorFlow's own words when it falls back to the CPU (tensorflow/core/common_runtime/gpu/gpu_device.cc,
# tsl/cuda/cudart_stub.cc in 2.15): a warning among hundreds of engine lines, so the launcher repeats it.
TF_NO_GPU = ("Cannot dlopen some GPU libraries", "Could not find cuda drivers", "CUDA_ERROR_NO_DEVICE")


def gpu_fallback(line: str) -> bool:
    """Whether an engine line is TensorFlow saying it will not use the GPU."""
    return any(x in line for x in TF_NO_GPU)


def project_root() -> Path:
    """The repository holding conf/ and envs/ (the package's parent directory)."""
    return Path(__file__).resolve().parents[2]


if (
    __name__ == "__main__"
):  # python -m hsbcala.engines.envs cala1 cala2: build the engine environments ahead of time
    from hydra import compose, initialize_config_dir

    from hsbcala import schema

    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(project_root() / "conf")):
        from hsbcala import engines

        for version in sys.argv[1:] or engines.NAMES:
            cfg = compose("config", overrides=[f"version={version}"])
            env = resolve(cfg, project_root())
            env.ensure()
            print(f"{version}: {env.prefix or 'PATH'} ready")
