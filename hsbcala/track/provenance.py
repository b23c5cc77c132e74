"""What a run ran with, logged as MLflow artifacts under ``environment/``:

- ``<version>-freeze.txt``: the engine environment's exact package list (``uv pip freeze`` of its Python;
  for ``kind=path`` engines, nothing can be said and nothing is logged);
- ``modules.txt``: ``module list`` on a system with Lmod/Environment Modules (only when the ``module`` command
  exists, i.e. ``$LMOD_CMD`` or ``$MODULESHOME`` is set);
- ``hsbcala-git.txt``: hsbcala's commit, whether the tree was dirty and ``git status --short`` (the commit is
  also the run tag ``hsbcala.git_commit``, ``<commit>-dirty`` for a dirty tree).

:func:`git_state` is the one place that decides what "dirty" means (the run tag, this file and the release
archive all ask it): any change git does not ignore, untracked files included, because an uncommitted new
module is imported as surely as an edited one.

Called while the engine imports TensorFlow, so its ~0.1-1 s cost no wall time; every step has a time-out and
a failure only leaves its file out.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.core.console import swallowed
from hsbcala.core.errors import HsbcalaError


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


@dataclass(frozen=True)
class GitState:
    """hsbcala's source as it ran: the commit (None outside a git checkout) and the uncommitted changes."""

    commit: str | None
    status: str  # ``git status --porcelain`` (untracked files included, ignored ones not)

    @property
    def dirty(self) -> bool:
        return bool(self.status.strip())

    def label(self) -> str:
        """``<commit>``, ``<commit>-dirty`` or ``unknown``: the run tag ``hsbcala.git_commit``."""
        if self.commit is None:
            return "unknown"
        return self.commit + ("-dirty" if self.dirty else "")


def git_state(project: Path) -> GitState:
    """The commit of ``project`` and whether its tree is dirty (see the module docstring for why untracked
    files count)."""
    commit = _run(["git", "-C", str(project), "rev-parse", "HEAD"], timeout=5)
    if commit is None:
        return GitState(None, "")
    status = _run(["git", "-C", str(project), "status", "--porcelain"], timeout=5) or ""
    return GitState(commit.strip(), status)


def capture(env: Any, project: Path) -> dict[str, str]:
    """artifact name -> text."""
    out: dict[str, str] = {}
    try:
        frozen = env.freeze()
    except (OSError, subprocess.SubprocessError, HsbcalaError) as exc:  # uv missing or not runnable
        swallowed(
            f"recording the packages of {env.name} (uv pip freeze)",
            exc,
            (OSError, subprocess.SubprocessError, HsbcalaError),
        )
        frozen = ""  # a record, never a reason to fail the run
    if frozen:
        out[f"{env.name}-freeze.txt"] = frozen
    modules = module_list()
    if modules is not None:
        out["modules.txt"] = modules
    git = git_state(project)
    if git.commit is not None:
        out["hsbcala-git.txt"] = f"commit {git.commit}\ndirty {str(git.dirty).lower()}\n\n{git.status}"
    return out


def log(tracker: Any, env: Any, project: Path) -> None:
    for name, text in capture(env, project).items():
        tracker.log_text(text, f"environment/{name}")
