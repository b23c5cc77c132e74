"""What a run ran with, logged as MLflow artifacts under ``environment/``:

- ``<version>-freeze.txt``: the engine environment's exact package list (``uv pip freeze`` of its Python;
  for ``kind=path`` engines, nothing can be said and nothing is logged);
- ``modules.txt``: ``module list`` on a system with Lmod/Environment Modules (only when the ``module`` command
  exists, i.e. ``$LMOD_CMD`` or ``$MODULESHOME`` is set);
- ``hsbcala-git.txt``: hsbcala's commit and ``git status --short`` (the commit is also the run tag
  ``hsbcala.git_commit``).

Called while the engine imports TensorFlow, so its ~0.1-1 s cost no wall time; every step has a time-out and
a failure only leaves its file out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 30) -> str | None:
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout + proc.stderr) if proc.returncode == 0 else None


def has_modules() -> bool:
    return bool(os.environ.get("LMOD_CMD") or os.environ.get("MODULESHOME"))


def module_list() -> str | None:
    """``module list`` (Lmod writes it to stderr) in a login shell, or None without a module system."""
    if not has_modules():
        return None
    return _run(["bash", "-lc", "module list 2>&1"])


def capture(env: Any, project: Path) -> dict[str, str]:
    """artifact name -> text."""
    out: dict[str, str] = {}
    try:
        frozen = env.freeze()
    except Exception:  # noqa: BLE001 - a record, never a reason to fail the run
        frozen = ""
    if frozen:
        out[f"{env.name}-freeze.txt"] = frozen
    modules = module_list()
    if modules is not None:
        out["modules.txt"] = modules
    commit = _run(["git", "-C", str(project), "rev-parse", "HEAD"], timeout=5)
    if commit is not None:
        status = _run(["git", "-C", str(project), "status", "--short"], timeout=5) or ""
        out["hsbcala-git.txt"] = f"commit {commit.strip()}\n\n{status}"
    return out


def log(tracker: Any, env: Any, project: Path) -> None:
    for name, text in capture(env, project).items():
        tracker.log_text(text, f"environment/{name}")
