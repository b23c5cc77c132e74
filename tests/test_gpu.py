"""The GPU a start line names is the GPU the engine gets, or the launch is refused (issue 19, item 12).

A fake ``nvidia-smi`` on PATH (printing what the real one prints for ``-L`` and ``--query-gpu``) stands in for
the workstation's GPU: this machine has none. Fast: the Calamari 2 command of ``cluster=local`` (``gpus: 0``)
hands the GPU to tfaip (``--device.gpus 0``) behind the GPU check, in the CUDA environment, with the JIT cache
enlarged; the CLI of ``python -m hsbcala.engines.envs``. Slow: the real CUDA environment (built once by that CLI,
~2.6 GB) loads the wheel's CUDA libraries without a driver, also with a planted ``libcudart.so.12`` first on
LD_LIBRARY_PATH, and a launch that expects the GPU is refused with one line instead of training on the CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hsbcala.engines import envs, process
from tests.conftest import ROOT, compose_cfg, run_inprocess
from tests.test_bad_input import base, copy_lines

A100 = "NVIDIA A100-SXM4-40GB"


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch) -> Path:
    """``nvidia-smi`` answering as on a workstation with one A100 (driver 535, compute capability 8.0)."""
    smi = tmp_path / "fakebin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  "-L") echo "GPU 0: {A100} (UUID: GPU-5f9e3f3a-8c1b-11ee-b9d1-0242ac120002)";;\n'
        f'  "--query-gpu=name,compute_cap,driver_version --format=csv,noheader") echo "{A100}, 8.0, 535.104.05";;\n'
        '  *) echo "Invalid combination of input arguments." >&2; exit 2;;\n'
        "esac\n",
        encoding="utf-8",
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envs._listed_gpus.cache_clear()
    envs._queried_gpus.cache_clear()
    yield smi
    envs._listed_gpus.cache_clear()
    envs._queried_gpus.cache_clear()


@pytest.fixture
def lines(tmp_path, fraktur_books):
    train_books, val_books = fraktur_books
    return copy_lines(train_books[0], tmp_path / "train"), copy_lines(val_books[0], tmp_path / "val")


def test_cluster_local_hands_the_listed_gpu_to_calamari2(tmp_path, lines, fake_gpu):
    proc = run_inprocess(
        "train", [*base(tmp_path), "version=cala2", "cluster=local", "dry_run=true"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.split()
    cuda_env = envs.resolve(compose_cfg(["version=cala2", "version.env.device=gpu"]), ROOT).prefix
    # the CUDA environment's Python runs the check (one GPU expected) and then the engine, which is told the GPU
    assert argv[:5] == [str(cuda_env / "bin" / "python"), str(envs.START_SCRIPT), "--expect-gpus", "1", "--"]
    assert argv[5] == str(cuda_env / "bin" / "calamari-train")
    assert argv[argv.index("--device.gpus") + 1] == "0"
    # the engine's environment: a JIT cache large enough for TensorFlow 2.15's kernels on compute capability 8.0
    assert process.engine_environ()["CUDA_CACHE_MAXSIZE"] == str(4 * 2**30)
    env = envs.resolve(compose_cfg(["version=cala2"]), ROOT)
    assert envs.device(env).gpu and env.cuda
    note = envs.first_start_note(env)
    assert note and A100 in note and "compute capability 8.0" in note and "30 minutes" in note


def test_the_cpu_choice_gives_no_gpu_and_no_check(tmp_path, lines, fake_gpu):
    proc = run_inprocess(
        "train", [*base(tmp_path), "version=cala2", "version.env.device=cpu", "dry_run=true"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "--device.gpus" not in proc.stdout and "engine_start.py" not in proc.stdout
    assert envs.first_start_note(envs.resolve(compose_cfg(["version.env.device=cpu"]), ROOT)) is None


def test_a_users_cache_size_is_kept(monkeypatch):
    monkeypatch.setenv("CUDA_CACHE_MAXSIZE", "1000")
    assert process.engine_environ()["CUDA_CACHE_MAXSIZE"] == "1000"


def _envs_cli(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hsbcala.engines.envs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def test_envs_cli_has_help_and_refuses_an_unknown_version_in_one_line():
    proc = _envs_cli("--help", timeout=60)
    assert proc.returncode == 0 and "--check" in proc.stdout and "--device" in proc.stdout, proc.stderr
    proc = _envs_cli("cala3", timeout=60)
    assert proc.returncode == 2 and "unknown version 'cala3'" in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------- the real CUDA env


@pytest.fixture(scope="module")
def cuda_env() -> envs.EngineEnv:
    env = envs.resolve(compose_cfg(["version=cala2", "version.env.device=gpu"]), ROOT)
    if (
        not env.ready
    ):  # built by the same CLI a user runs (2.6 GB once; uv's cache makes a rebuild take seconds)
        proc = _envs_cli("cala2", "--device", "gpu", timeout=1800)
        assert proc.returncode == 0, proc.stderr
    return env


@pytest.mark.slow
def test_cuda_env_loads_its_own_libraries_without_a_driver(tmp_path, cuda_env):
    own = next(
        (cuda_env.prefix / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12")
    )
    planted = tmp_path / "planted"
    planted.mkdir()
    shutil.copy(own, planted / "libcudart.so.12")  # a loadable libcudart that is not the wheel's
    proc = _envs_cli(
        "cala2", "--device", "gpu", "--check", env={**os.environ, "LD_LIBRARY_PATH": str(planted)}
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "driver: no driver" in out
    assert "TensorFlow 2.15.1: built for CUDA 12" in out and "compute_80" in out
    libs = dict(line.strip().split(": ", 1) for line in out.splitlines() if line.strip().startswith("libcud"))
    assert libs["libcudart"] == str(own)  # the environment's own, not the planted one
    assert (
        libs["libcudnn"].startswith(str(cuda_env.prefix))
        and "/nvidia/cudnn/lib/libcudnn.so.8" in libs["libcudnn"]
    )


@pytest.mark.slow
def test_a_launch_that_expects_the_gpu_is_refused_in_one_line(tmp_path, lines, fake_gpu, cuda_env):
    proc = run_inprocess("train", [*base(tmp_path), "version=cala2", "cluster=local"], cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    error = [x for x in proc.stderr.splitlines() if x.startswith("hsbcala: error:")]
    assert len(error) == 1, proc.stderr
    assert "1 GPU(s) expected, but TensorFlow 2.15.1" in error[0] and "sees none" in error[0]
    assert "libcuda.so.1" in error[0] and "version.env.device=cpu" in error[0]
    assert "Traceback" not in proc.stderr
    assert "compute capability 8.0" in proc.stderr  # the JIT note was said before the engine started
