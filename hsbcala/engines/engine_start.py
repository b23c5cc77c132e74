"""The first thing that runs in an engine environment that may use a GPU: library order, GPU check, probe.

Run by the engine environment's own Python (hsbcala is not installed there: this file imports only the standard
library, and TensorFlow when it checks); the launcher puts it in front of the engine's command
(:meth:`hsbcala.engines.envs.EngineEnv.wrap`)::

    python engine_start.py [--expect-gpus N] -- PROGRAM ARGS...    # then exec PROGRAM
    python engine_start.py --probe                                   # one JSON line (envs --check)

Why it exists:

- **Library order.** TensorFlow finds the CUDA libraries of its ``tensorflow[and-cuda]`` wheels through the
  RUNPATH of its own shared objects, which the dynamic loader searches only *after* ``LD_LIBRARY_PATH``: a
  ``libcudart.so.12`` of a user's or a loaded module's ``LD_LIBRARY_PATH`` wins over the wheel's and may not
  match TensorFlow's build. So the environment's own ``site-packages/nvidia/*/lib`` are put first. The loader
  reads ``LD_LIBRARY_PATH`` once, at process start, so this takes effect in the program exec'd afterwards (and
  in this script after re-executing itself, before it imports TensorFlow).
- **GPU check.** tfaip uses no GPU unless told which, and TensorFlow falls back to the CPU with a warning among
  hundreds of lines: a training that the launcher announced on a GPU is refused here in seconds, with one line
  (marked :data:`MARK`, exit :data:`NO_GPU_EXIT`), instead of training for days on the CPU.
"""

import ctypes
import glob
import json
import os
import sys
import sysconfig
import tempfile

MARK = "hsbcala-engine-start:"  # the launcher's runner (process.py) recognises the refusal by it
NO_GPU_EXIT = 86  # with MARK in the output: a GPU was expected and TensorFlow sees none (or too few)
# TensorFlow's C++ lines that say why it sees no GPU (cuda_diagnostics / cudart_stub / gpu_device in 2.15)
_REASONS = ("Could not find cuda drivers", "CUDA_ERROR", "cuInit", "Cannot dlopen", "failed call to")


def own_library_dirs():
    """The environment's own NVIDIA library directories (``nvidia/*/lib`` of the wheels), sorted."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted(
        {d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) if os.path.isdir(d)}
    )


def order_libraries():
    """Put the own library directories first in ``LD_LIBRARY_PATH``; True if it changed."""
    own = own_library_dirs()
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if not own or current[: len(own)] == own:
        return False
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(own + [p for p in current if p not in own])
    return True


def _import_tensorflow():
    """(tensorflow, the GPUs it sees, its C++ log lines): its log is captured, not mixed into the one line."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the reason it sees no GPU is an INFO/WARNING line
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if level is None:
                os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
            else:
                os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
        log.seek(0)
        lines = log.read().decode("utf-8", "replace").splitlines()
    return tf, gpus, lines


def _reason(lines):
    found = [x.split("] ", 1)[-1].strip() for x in lines if any(r in x for r in _REASONS)]
    if found:
        return found[0]
    # TensorFlow 2.15 says nothing when the driver library itself is missing
    return "no CUDA driver: libcuda.so.1 cannot be loaded" if _driver() is None else "TensorFlow lists no GPU"


def check_gpus(expected):
    """Refuse (one line, exit NO_GPU_EXIT) when TensorFlow sees fewer than ``expected`` GPUs."""
    tf, gpus, lines = _import_tensorflow()
    if len(gpus) >= expected:
        return
    print(
        f"{MARK} {expected} GPU(s) expected, but TensorFlow {tf.__version__} in {sys.prefix} sees "
        f"{len(gpus) or 'none'} ({_reason(lines)}); check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or "
        f"train on the CPU with version.env.device=cpu",
        flush=True,
    )
    sys.exit(NO_GPU_EXIT)


def _loaded(name):
    """Where a library whose file name starts with ``name`` is mapped into this process (None: not loaded)."""
    with open("/proc/self/maps", encoding="utf-8") as f:
        paths = {line.split()[-1] for line in f if "/" + name in line}
    return min(paths) if paths else None


def _driver():
    """The CUDA driver's version (``cuDriverGetVersion``), or None without a driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int()
    if cuda.cuDriverGetVersion(ctypes.byref(v)) != 0:
        return None
    return f"{v.value // 1000}.{v.value % 1000 // 10}"


def probe():
    """One JSON line: TensorFlow's build, the GPUs it sees, the driver, and where the CUDA libraries came from.
    The libraries are loaded by the names TensorFlow asks for, so this works without a GPU or driver."""
    tf, gpus, lines = _import_tensorflow()
    build = {k: v for k, v in tf.sysconfig.get_build_info().items() if isinstance(v, (str, bool, int, list))}
    libs = {}
    for key, major in (
        ("libcudart", build.get("cuda_version", "")),
        ("libcudnn", build.get("cudnn_version", "")),
    ):
        soname = f"{key}.so.{str(major).split('.')[0]}"
        if _loaded(key) is None and major:
            try:
                ctypes.CDLL(soname)
            except OSError as exc:
                libs[key] = f"not loadable: {exc}"
                continue
        libs[key] = _loaded(key) or "not loaded (a CPU build of TensorFlow)"
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    print(
        json.dumps(
            {
                "tensorflow": tf.__version__,
                "build": build,
                "gpus": [
                    {"name": d.get("device_name"), "compute_capability": d.get("compute_capability")}
                    for d in details
                ],
                "driver": _driver(),
                "libraries": libs,
                "own_library_dirs": own_library_dirs(),
                "no_gpu_reason": None if gpus else _reason(lines),
            }
        ),
        flush=True,
    )


def main(argv):
    if argv[:1] == ["--probe"]:
        if order_libraries():
            os.execv(sys.executable, [sys.executable, __file__, *argv])
        probe()
        return
    expected = 0
    if argv[:1] == ["--expect-gpus"]:
        expected, argv = int(argv[1]), argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        sys.exit("usage: engine_start.py [--expect-gpus N] -- PROGRAM ARGS... | --probe")
    program = argv[1:]
    if order_libraries() and expected:
        os.execv(sys.executable, [sys.executable, __file__, *sys.argv[1:]])  # TensorFlow must see the order
    if expected:
        check_gpus(expected)
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "2":
            # TensorFlow's warnings (a fallback to the CPU later on among them) reach the log and the launcher
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
