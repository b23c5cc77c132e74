"""Engine environments: the CPU and CUDA lock variants, which one a machine gets, and what the start line says.

The CUDA environment itself (2.5 GB of NVIDIA wheels) is not built here: this machine has no GPU. What is
checked is the choice, the locks' agreement, and the words TensorFlow uses when it falls back to the CPU."""

from __future__ import annotations

import os
import re

import pytest

from hsbcala.engines import envs
from tests.conftest import ROOT, compose_cfg, path_without

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", re.MULTILINE)


def _pins(path) -> dict[str, str]:
    return dict(PIN.findall(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("version", ["cala1", "cala2"])
def test_cuda_lock_is_the_cpu_lock_plus_nvidias_libraries(version):
    """The two variants train with the same packages: the CUDA lock (uv pip compile -c <cpu lock>) adds only
    TensorFlow's nvidia-* libraries, so a GPU run and a CPU run of one version are comparable."""
    cpu = _pins(ROOT / "envs" / f"{version}.lock.txt")
    cuda = _pins(ROOT / "envs" / f"{version}-cuda.lock.txt")
    added = {k for k in cuda if k not in cpu}
    assert added and all(k.startswith("nvidia-") for k in added), added
    assert {k: cuda[k] for k in cpu} == cpu


@pytest.mark.parametrize(
    "device,visible,smi,cuda",
    [
        ("auto", "", "V100", False),  # CUDA_VISIBLE_DEVICES="" hides the GPU nvidia-smi lists
        ("gpu", "", None, True),  # asked for: the CUDA variant, whatever the machine
        ("cpu", "0", "V100", False),  # asked for: the CPU variant, whatever the machine
        ("auto", "0", "V100", True),  # a GPU that nvidia-smi lists and the process may use
        ("auto", "0", "none", False),  # nvidia-smi installed, but it lists no GPU
        ("auto", "0", None, False),  # no nvidia-smi at all
    ],
)
def test_the_lock_variant_follows_the_setting_and_the_machine(
    tmp_path, monkeypatch, device, visible, smi, cuda
):
    """The machine is made here (a stand-in nvidia-smi, or none on PATH), so the expectation is written down
    for each case rather than asked of the code under test."""
    path = path_without("nvidia-smi")
    if smi is not None:
        fake = tmp_path / "bin" / "nvidia-smi"  # its own path: nvidia-smi's answer is cached per executable
        fake.parent.mkdir()
        listed = "echo 'GPU 0: Tesla V100-SXM2-32GB (UUID: GPU-1234)'" if smi == "V100" else "true"
        fake.write_text(f"#!/bin/sh\n{listed}\n", encoding="utf-8")
        fake.chmod(0o755)
        path = f"{fake.parent}{os.pathsep}{path}"
    monkeypatch.setenv("PATH", path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    cfg = compose_cfg(["version=cala2", f"version.env.device={device}"])
    env = envs.resolve(cfg, ROOT)
    assert env.cuda is cuda
    assert env.lock == ROOT / "envs" / ("cala2-cuda.lock.txt" if cuda else "cala2.lock.txt")
    assert ("-cuda-" in env.prefix.name) is cuda  # a separate directory: switching never rebuilds the other


def test_the_start_line_names_the_device_and_why_not_the_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu_env = envs.resolve(compose_cfg(["version=cala2", "version.env.device=cpu"]), ROOT)
    cuda_env = envs.resolve(compose_cfg(["version=cala2", "version.env.device=gpu"]), ROOT)
    assert envs.visible_gpus() == []  # CUDA_VISIBLE_DEVICES="" hides every GPU
    assert re.fullmatch(r"the CPU \(\d+ cores\)", envs.device(cpu_env).text)
    v100 = ["Tesla V100-SXM2-32GB"]
    assert envs.device(cuda_env, v100) == ("1 GPU(s) (Tesla V100-SXM2-32GB)", True)
    assert not envs.device(cpu_env, v100).gpu  # no CUDA libraries: no GPU expected, no fallback warning
    said = envs.device(cpu_env, v100).text
    assert said.startswith("the CPU") and "no CUDA libraries" in said and "version.env.device" in said


@pytest.mark.parametrize("how", ["affinity", "slurm"])
def test_the_start_line_counts_the_cpus_a_job_may_use(how):
    """Inside a 1-CPU Slurm job the start line said ``the CPU (2 cores)`` (issue 22, item 6): a real affinity
    (taskset, as a Slurm cpuset restricts it) and SLURM_CPUS_PER_TASK where a site pins none."""
    import os
    import shutil
    import subprocess
    import sys

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: nothing to restrict")
    code = "from hsbcala.engines import envs; print(envs.device(None, []).text)"
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    if how == "slurm":
        cmd, env["SLURM_CPUS_PER_TASK"] = [sys.executable, "-c", code], "1"
    else:
        cmd = [shutil.which("taskset") or pytest.skip("no taskset"), "-c", "0", sys.executable, "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=True).stdout.strip()
    assert out == f"the CPU (1 of {os.cpu_count()} cores)", out


def test_tensorflows_fallback_to_the_cpu_is_recognised():
    # TensorFlow 2.15's lines (gpu_device.cc, cudart_stub.cc) as a GPU machine without CUDA libraries prints them
    assert envs.gpu_fallback(
        "W tensorflow/core/common_runtime/gpu/gpu_device.cc:2256] Cannot dlopen some GPU libraries. Please make "
        "sure the missing libraries mentioned above are installed properly"
    )
    assert envs.gpu_fallback(
        "I external/local_tsl/tsl/cuda/cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used."
    )
    assert not envs.gpu_fallback("Epoch 1/10")


def test_nvidia_smi_is_asked_once_per_process(tmp_path, monkeypatch):
    """A launch asks for the GPUs when choosing the env (device=auto) and again for its start line."""
    calls = tmp_path / "calls"
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        f"#!/bin/sh\necho called >> {calls}\necho 'GPU 0: Tesla V100-SXM2-32GB (UUID: GPU-1234)'\n",
        encoding="utf-8",
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert envs.visible_gpus() == envs.visible_gpus() == ["Tesla V100-SXM2-32GB"]
    env = envs.EngineEnv("cala2", "path", None, None, "python3")
    assert envs.device(env) == envs.Device("1 GPU(s) (Tesla V100-SXM2-32GB)", True)
    assert calls.read_text().splitlines() == ["called"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert envs.visible_gpus() == [] and not envs.device(env).gpu
