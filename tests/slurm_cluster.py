"""pytest plugin: a real single-node Slurm cluster on this machine (scripts/slurm-local.sh).

Listed in tests/conftest.py's ``pytest_plugins``. Tests ask for the session fixture ``slurm_cluster``
and are marked ``@pytest.mark.slurm`` (a test that uses the fixture gets the mark automatically, so
``-m "not slurm"`` deselects it).

The fixture runs ``slurm-local.sh install`` and ``up``, and at the end of the session ``down``, but
only if it was the one that started the cluster: a cluster that was already up is left running.
Without root (and no cluster already up), or when Slurm cannot be installed or started, the tests
are skipped with the reason; with ``CI=true`` they fail instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"


@dataclass(frozen=True)
class SlurmCluster:
    partition: str  # the only partition, default for jobs
    state_dir: Path  # logs under state_dir / "log"
    hostname: str  # the one node's name (`hostname -s`)
    started_here: bool  # True if this session started it (and will stop it)


def _unavailable(reason: str) -> None:
    from tests.conftest import missing  # imported here: this plugin is loaded by tests/conftest.py itself

    missing(f"local Slurm cluster unavailable: {reason}")


def _script(cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=timeout, check=False
    )


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local cluster, up for the whole session; yields a SlurmCluster."""
    state_dir = Path(os.environ.get("HSBCALA_SLURM_DIR", "/var/tmp/hsbcala-slurm")).absolute()
    if not SCRIPT.is_file():
        _unavailable(f"{SCRIPT} is missing")
    started_here = False
    if _script("status", timeout=60).returncode != 0:
        # Not up: we need root to install packages and start the daemons.
        if os.geteuid() != 0:
            _unavailable("not root: cannot install or start Slurm (run 'scripts/slurm-local.sh up' as root)")
        install = _script("install", timeout=900)
        if install.returncode != 0:
            _unavailable(f"cannot install slurm-wlm/munge: {_last_line(install)}")
        up = _script("up", timeout=180)
        if up.returncode != 0:
            _unavailable(f"'slurm-local.sh up' failed: {_last_line(up)}")
        started_here = True
    yield SlurmCluster(
        partition="debug",
        state_dir=state_dir,
        hostname=socket.gethostname().split(".")[0],
        started_here=started_here,
    )
    if started_here:
        down = _script("down", timeout=120)
        if down.returncode != 0:
            # Teardown errors are reported by pytest as an error of the last test using the fixture.
            raise RuntimeError(f"'slurm-local.sh down' failed: {_last_line(down)}")


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses ``slurm_cluster`` as ``slurm``."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slurm") is None:
            item.add_marker(pytest.mark.slurm)
