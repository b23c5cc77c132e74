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

from hsbcala.core import fsutil
from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, EngineError

READY = ".hsbcala-ready"
START_SCRIPT = Path(__file__).with_name("engine_start.py")  # run by the engine env's Python (see there)


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

    def wrap(self, argv: list[str], *, expect_gpus: int = 0) -> list[str]:
        """Prefix ``argv`` with the module loads of this environment, if any, and with :data:`START_SCRIPT`
        in a CUDA environment (its own CUDA libraries first) or when the command expects ``expect_gpus``
        GPUs (refused in seconds when TensorFlow sees fewer)."""
        if self.cuda or expect_gpus > 0:
            check = ["--expect-gpus", str(expect_gpus)] if expect_gpus > 0 else []
            argv = [self.program("python"), str(START_SCRIPT), *check, "--", *argv]
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


def resolve(cfg: Any, project_root: Path, device: str | None = None) -> EngineEnv:
    """The engine environment of this run: the cluster's override if it has one, else the version's own.
    ``device`` (auto/cpu/gpu) overrides the spec's ``device``."""
    spec = cfg.cluster.env if cfg.cluster.get("env") is not None else cfg.version.env
    key = "cluster.env" if cfg.cluster.get("env") is not None else "version.env"
    name = cfg.version.name
    modules = tuple(spec.modules or ())
    if spec.kind == "uv":
        if not spec.lock:
            raise ConfigError(f"{key}.lock is required for kind=uv")
        want = device or str(spec.get("device", "auto"))
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


class GpuInfo(NamedTuple):
    name: str
    compute_capability: tuple[int, int] | None  # None: this nvidia-smi cannot say (drivers before 510)
    driver: str


def gpu_details() -> list[GpuInfo]:
    """The visible GPUs as ``nvidia-smi --query-gpu`` describes them (empty without nvidia-smi or GPUs)."""
    smi = shutil.which("nvidia-smi")
    return list(_queried_gpus(smi)) if smi and visible_gpus() else []


@functools.lru_cache(maxsize=8)
def _queried_gpus(smi: str) -> tuple[GpuInfo, ...]:
    fields = "name,compute_cap,driver_version"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for row in out.stdout.splitlines() if out.returncode == 0 else ():
        parts = [x.strip() for x in row.split(",")]
        if len(parts) != 3:
            continue
        major, _, minor = parts[1].partition(".")
        cc = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
        found.append(GpuInfo(parts[0], cc, parts[2]))
    return tuple(found)


# TensorFlow 2.15's wheel carries kernels for sm_50 … sm_75 and PTX for compute_80 only
# (tf.sysconfig.get_build_info()["cuda_compute_capabilities"]): on compute capability 8.0 and later the driver
# compiles the PTX at the first start (tensorflow#62320: up to 30 minutes), into its cache (~/.nv/ComputeCache),
# which must be large enough to keep them; process.ENGINE_DEFAULTS sets CUDA_CACHE_MAXSIZE.
JIT_FROM = (8, 0)


def first_start_note(env: EngineEnv, gpus: list[GpuInfo] | None = None) -> str | None:
    """What the console says before a training whose GPU makes TensorFlow compile its kernels first (None: no
    such GPU, or not the wheel's TensorFlow)."""
    gpus = gpu_details() if gpus is None else gpus
    late = [g for g in gpus if g.compute_capability is not None and g.compute_capability >= JIT_FROM]
    if not (env.cuda and late):
        return None
    from hsbcala.engines.process import engine_environ

    size = int(engine_environ().get("CUDA_CACHE_MAXSIZE", "0") or 0)
    cc = ".".join(map(str, late[0].compute_capability))
    return (
        f"note: {late[0].name} has compute capability {cc}, for which TensorFlow 2.15 ships no compiled kernels: "
        f"the first start on such a GPU compiles them (up to 30 minutes without output, tensorflow#62320); they "
        f"are cached for later starts (CUDA_CACHE_MAXSIZE={size / 2**30:.0f} GiB, ~/.nv/ComputeCache or "
        f"CUDA_CACHE_PATH)"
    )


def engine_gpus(env: EngineEnv, cluster_gpus: int) -> int:
    """How many GPUs the engine is given: ``cluster.gpus``, or one when it is 0 and the start line names a GPU
    (:func:`device`), since tfaip uses no GPU it is not told of unless CUDA_VISIBLE_DEVICES is set."""
    return cluster_gpus if cluster_gpus > 0 else int(device(env).gpu)


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity (a Slurm job's cgroup/cpuset), and no more than Slurm's
    ``SLURM_CPUS_PER_TASK`` where a site pins no affinity; the machine's count said ``2 cores`` inside a 1-CPU job."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(n, int(per_task)) if per_task.isdigit() and int(per_task) > 0 else n


class Device(NamedTuple):
    text: str  # as the start line says it
    gpu: bool  # the engine should train on a GPU (then TensorFlow's fallback to the CPU is worth a warning)


def device(env: EngineEnv, gpus: list[str] | None = None) -> Device:
    """What the engine will train on: the GPUs when it can use them, else the CPU, with the reason when a GPU is
    there but this environment has no CUDA libraries."""
    import os

    gpus = visible_gpus() if gpus is None else gpus
    usable, machine = usable_cpus(), os.cpu_count() or 1
    cpu = f"the CPU ({usable} of {machine} cores)" if usable < machine else f"the CPU ({machine} cores)"
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


def check(env: EngineEnv, log: Path) -> dict:
    """Run :data:`START_SCRIPT`'s probe in ``env`` (through the runner; its output in ``log``): its report."""
    from hsbcala.engines.process import EngineProcess

    with EngineProcess(
        env.wrap([env.program("python"), str(START_SCRIPT), "--probe"]), log, log_mode="w"
    ) as proc:
        found = [line for line in proc.lines() if line.startswith('{"tensorflow"')]
        code = proc.wait()
    if code != 0 or not found:
        raise EngineError(
            f"checking the {env.name} engine env failed (exit {code}, log: {log}): {proc.last_lines()}"
        )
    import json

    return json.loads(found[-1])


def describe(env: EngineEnv, report: dict, gpus: list[GpuInfo]) -> list[str]:
    """The check's report as lines for a person (``python -m hsbcala.engines.envs --check``)."""
    b = report["build"]
    caps = " ".join(b.get("cuda_compute_capabilities") or []) or "none"
    lines = [
        "  GPUs (nvidia-smi): "
        + (
            "; ".join(
                f"{g.name}, compute capability "
                f"{'.'.join(map(str, g.compute_capability)) if g.compute_capability else 'unknown'}"
                for g in gpus
            )
            or "none listed"
        ),
        f"  driver: {(gpus[0].driver if gpus else None) or report['driver'] or 'no driver'}",
        f"  TensorFlow {report['tensorflow']}: "
        + (
            f"built for CUDA {b.get('cuda_version')}, cuDNN {b.get('cudnn_version')}, compute capabilities {caps}"
            if b.get("is_cuda_build")
            else "a CPU build"
        ),
    ]
    lines += [f"  {name}: {where}" for name, where in report["libraries"].items()]
    seen = report["gpus"]
    lines.append(
        "  TensorFlow sees: "
        + (
            ", ".join(f"{g['name']} (compute capability {g['compute_capability']})" for g in seen)
            if seen
            else f"no GPU ({report['no_gpu_reason']})"
        )
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m hsbcala.engines.envs``: build (and check) the engine environments ahead of time."""
    import argparse
    import tempfile

    from hsbcala import engines

    parser = argparse.ArgumentParser(
        prog="python -m hsbcala.engines.envs",
        description="Build the engine environments ahead of time (e.g. on a login node, once), and with --check "
        "report what TensorFlow finds in them: the driver, the GPUs' compute capability, TensorFlow's build, and "
        "where libcudart/libcudnn are loaded from. Works without a GPU (--device gpu builds the CUDA variant).",
    )
    parser.add_argument(
        "args",
        nargs="*",
        metavar="VERSION|KEY=VALUE",
        help=f"versions ({', '.join(engines.NAMES)}; default: all) and Hydra overrides of the training config "
        "(e.g. cluster=zih_capella version.env.root=/scratch/envs)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        help="which lock variant to build (default: the config's version.env.device, auto: CUDA when nvidia-smi "
        "lists a GPU)",
    )
    parser.add_argument("--check", action="store_true", help="load TensorFlow in each environment and report")
    args = parser.parse_args(argv)
    versions = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    bad = [v for v in versions if v not in engines.NAMES]
    if bad:
        parser.error(
            f"unknown version {bad[0]!r} (one of: {', '.join(engines.NAMES)}; overrides are KEY=VALUE)"
        )

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hsbcala.config import schema

    schema.register()
    failed = False
    with initialize_config_dir(version_base="1.3", config_dir=str(project_root() / "conf")):
        for version in versions or engines.NAMES:
            try:
                cfg = compose("config", overrides=[*overrides, f"version={version}"])
            except (HydraException, OmegaConfBaseException) as exc:
                raise ConfigError(f"bad override: {str(exc).splitlines()[0]}") from None
            env = resolve(cfg, project_root(), args.device)
            env.ensure()
            print(
                f"{version}: {env.prefix or 'PATH'} ready{' (CUDA libraries)' if env.cuda else ''}",
                flush=True,
            )
            if not args.check:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                report = check(env, Path(tmp) / "check.log")
            gpus = gpu_details()
            for line in describe(env, report, gpus):
                print(line, flush=True)
            if gpus and (env.cuda or env.kind != "uv") and not report["gpus"]:
                print(
                    f"hsbcala: error: {version}: nvidia-smi lists {len(gpus)} GPU(s), TensorFlow in {env.prefix} "
                    f"sees none ({report['no_gpu_reason']})",
                    file=sys.stderr,
                    flush=True,
                )
                failed = True
    return EngineError.exit_code if failed else 0


if __name__ == "__main__":
    from hsbcala.core.errors import clean_exit

    with clean_exit():
        sys.exit(main())
