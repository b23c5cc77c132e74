"""``module load`` executed for real: a Slurm job whose engine environment is a site venv plus modules.

The engine environment is ``cluster.env: {kind: venv, venv: …, modules: [hsbtest/1.0]}`` in a site's cluster
config (``cluster=modsite`` on a Hydra search path), the venv being the uv-built Calamari 2 environment standing
for a site's venv. The modules are loaded by Debian's Lmod (package
``lmod``, installed by ``setup.sh --test``; its ``/etc/profile.d/lmod.sh`` defines ``module`` in the login shell
``bash -lc`` that :meth:`hsbcala.engines.envs.EngineEnv.wrap` starts the engine in), from a Lua modulefile the test
writes, on a MODULEPATH exported by the job's sbatch script (``hydra.launcher.setup``), as a site's
``module use`` line would. No stub of ``module``: the proof is the module's variable in the environment of the
running engine process (``/proc/<pid>/environ``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hsbcala.engines import envs
from tests.conftest import ROOT, compose_cfg, missing
from tests.test_slurm_train import client, gt, state_of, submitted_ids, tiny  # noqa: F401 - gt: fixture

LMOD_INIT = Path("/etc/profile.d/lmod.sh")
PROBE = "HSBCALA_MODULE_PROBE"

pytestmark = pytest.mark.slow


def _environ(pid: int) -> tuple[list[str], dict[str, str]]:
    """A process's argv and environment, or ([], {}) when it is gone or not readable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return [], {}
    env = dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)
    return [a.decode(errors="replace") for a in argv if a], env


def _engines(model_dir: Path) -> list[int]:
    """Running calamari-train processes of this model directory (not the bash wrapper before its exec)."""
    found = subprocess.run(
        ["pgrep", "-f", f"calamari-train.*{model_dir}"], capture_output=True, text=True, check=False
    ).stdout.split()
    pids = []
    for pid in map(int, found):
        argv, _ = _environ(pid)
        if argv and Path(argv[0]).name != "bash" and any(a.endswith("/calamari-train") for a in argv[:2]):
            pids.append(pid)
    return pids


def test_engine_runs_with_the_modules_lmod_loaded_in_the_job(slurm_cluster, tmp_path, gt):  # noqa: F811
    if not LMOD_INIT.is_file():
        msg = (
            f"Lmod not installed ({LMOD_INIT} missing): apt-get install lmod, or bash setup.sh --test as root"
        )
        missing(msg)
    modulepath = tmp_path / "modulefiles"
    (modulepath / "hsbtest").mkdir(parents=True)
    (modulepath / "hsbtest" / "1.0.lua").write_text(f'setenv("{PROBE}","loaded")\n')
    site_venv = envs.resolve(compose_cfg(["version=cala2"]), ROOT)  # stands for a venv the site built
    site_venv.ensure()
    model_dir = tmp_path / "model-cala2"
    # A site's cluster config, as docs/clusters.md says to add one (slurm_local with the site's env):
    # `cluster.env={kind: venv, …}` on the command line does not compose while the cluster's env is null.
    site = tmp_path / "conf" / "cluster"
    site.mkdir(parents=True)
    (site / "modsite.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - slurm_local\n  - _self_\n"
        "cluster:\n  name: modsite\n"
        f"  env: {{kind: venv, venv: '{site_venv.prefix}', modules: [hsbtest/1.0]}}\n"
    )
    overrides = tiny(
        tmp_path,
        gt,
        "cala2",
        **{
            "cluster": "modsite",
            "hydra.searchpath": f"[file://{tmp_path / 'conf'}]",
            "train.epochs": "1",
            "hydra.launcher.setup": f"['export MODULEPATH={modulepath}']",  # a site's `module use` line
        },
    )
    t0 = time.monotonic()
    log = tmp_path / "launcher.err"  # a file, not a pipe: nobody reads it while the test watches the engine
    with open(log, "w") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "-m", *overrides],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    seen: dict[int, tuple[list[str], dict[str, str]]] = {}
    try:
        while launcher.poll() is None and time.monotonic() - t0 < 600:
            for pid in _engines(model_dir):
                argv, env = _environ(pid)
                if argv:
                    seen[pid] = (argv, env)
            time.sleep(0.5)
        launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    print(f"\nsubmit -> finish: {time.monotonic() - t0:.0f} s")
    err = log.read_text(errors="replace")
    assert launcher.returncode == 0, err[-3000:]
    (job,) = submitted_ids(err)
    assert seen, "no calamari-train process of this training was seen running"
    for argv, env in seen.values():
        assert argv[1 if Path(argv[0]).name.startswith("python") else 0].startswith(str(site_venv.prefix)), (
            argv
        )
        assert env.get(PROBE) == "loaded", f"the module's variable is not in the engine's environment: {argv}"
        assert "hsbtest/1.0" in env.get("LOADEDMODULES", "").split(":"), env.get("LOADEDMODULES")
        assert str(modulepath) in env.get("MODULEPATH", "").split(":")
    state = state_of(model_dir)
    assert state["status"] == "finished" and state["history"][0]["slurm_job_id"] == job
    run = client(tmp_path).get_run(state["run_id"])
    assert run.info.status == "FINISHED" and "best_val_cer" in run.data.metrics
    recorded = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id, "environment")}
    assert "environment/cala2-freeze.txt" in recorded, recorded  # the site venv's packages, recorded
