"""Shared fixtures: config composition, in-process runs of the entry points, the shared data."""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from hsbcala.config import schema
from hsbcala.core import cli

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"  # the one spelling of "in CI" (tests use missing/need)

pytest_plugins = [
    "tests.models_fixtures",
    *(["tests.slurm_cluster"] if (ROOT / "tests" / "slurm_cluster.py").exists() else []),
]

schema.register()
cli.install()  # as train.py and evaluate.py: a bad command line is one line, exit 2


def compose_cfg(overrides: list[str] | None = None, *, hydra_node: bool = False):
    """Compose conf/config.yaml like train.py does (Hydra's compose API), with overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=list(overrides or []), return_hydra_config=hydra_node)


@dataclass(frozen=True)
class Result:
    """What a run of an entry point gave: like subprocess.CompletedProcess's returncode, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


ENTRY_CONFIGS = {"train": "config", "evaluate": "evaluate"}  # train.py, evaluate.py: their @hydra.main config


def _reset_hydra() -> None:
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def _exit_code(code: object, stderr: io.StringIO) -> int:
    """SystemExit's code as the interpreter turns it into an exit status (a message goes to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


def _hydra_job(entry: str, overrides: list[str]) -> object:
    """What ``@hydra.main`` does for one run (hydra/_internal/hydra.py: run, hydra/core/utils.py: run_job),
    up to calling the entry point's function: compose, hydra.mode=RUN, HydraConfig (for ``${hydra:…}`` and
    hsbcala.config.schema's sweep suffix), runtime.output_dir (created), the task config without its hydra node.
    Not done: Hydra's job logging (hsbcala.core.console installs the same ``hsbcala: …`` console format itself;
    no <run dir>/hsbcala.log) and the .hydra/*.yaml copies."""
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from hsbcala.core.errors import clean_exit

    run = importlib.import_module(f"hsbcala.{entry}.run").run
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf"), job_name=entry):
        cfg = compose(ENTRY_CONFIGS[entry], overrides=overrides, return_hydra_config=True)
        with read_write(cfg.hydra):
            if cfg.hydra.mode is None:
                cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
        output_dir = os.path.abspath(str(cfg.hydra.run.dir))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(cfg)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        # as train.py / evaluate.py: HsbcalaError -> "hsbcala: error: …", sys.exit(code); a bug -> traceback, 70
        with clean_exit(cli.user_paths(task_cfg)):
            return run(task_cfg)


def run_inprocess(entry: str, overrides: Sequence[str], cwd: Path) -> Result:
    """``python <entry>.py *overrides`` (entry: train or evaluate) run in cwd, but in this process.

    Saves the 1.5-2 s of a new interpreter and Hydra's start-up per run. Exit code, stdout and stderr are
    those of the real entry point: hsbcala's clean exit (``hsbcala: error: …``, the error's code), and a
    failure while composing (bad key, option or value) or any other exception goes through the reporting
    @hydra.main uses, Hydra's ``run_and_report`` as ``hsbcala.core.cli.install()`` replaced it (called by train.py,
    evaluate.py and this module): one ``hsbcala: error: …`` line and exit 2 for a bad command line, a
    traceback and exit 1 for anything else. (test_config's and test_bad_input's kept subprocess tests check
    that both give the same.) Hydra's global state is cleared before and after. Tests of the entry point
    itself, of signals, of -m (multirun and launchers) and of Slurm keep starting the real process.
    """
    # looked up at each call, so that it is the reporter hsbcala.core.cli.install() put in place (private API)
    from hydra._internal.utils import run_and_report

    out, err = io.StringIO(), io.StringIO()
    code = 0
    _reset_hydra()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_and_report(lambda: _hydra_job(entry, list(overrides)))
            except SystemExit as exc:
                code = _exit_code(exc.code, err)
    finally:
        _reset_hydra()
    return Result(code, out.getvalue(), err.getvalue())


def missing(reason: str) -> NoReturn:
    """A test's prerequisite (shared data, a font, Lmod, a mountable disk, Slurm …) is missing: skip on a user's
    machine, where the rest of the suite is still worth running; fail in CI (``CI=true``), so that CI can never
    pass by skipping what the README promises is tested."""
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need(path: Path, what: str = "shared data") -> Path:
    """``path`` if it exists, else :func:`missing` (skip here, fail in CI)."""
    if not path.exists():
        missing(f"{what} not found at {path} (clone the project beside shared/)")
    return path


def path_without(*programs: str) -> str:
    """``$PATH`` without the directories that hold any of ``programs``: a machine on which they are not
    installed, whether or not this one has them (what hsbcala does without nsys, without nvidia-smi …)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(
        d for d in dirs if d and not any(os.path.exists(os.path.join(d, p)) for p in programs)
    )


@pytest.fixture
def shared() -> Path:
    """../shared (read-only). Missing: skip on a user's machine, fail in CI."""
    need(SHARED / "data")
    return SHARED


@pytest.fixture
def fraktur_books(shared: Path):
    """Two disjoint sets of real Fraktur books: (train books, val books) as directories."""
    books = sorted((shared / "data" / "fraktur19-lines" / "ref_AS").iterdir())
    return books[:2], books[2:3]


# Fixtures that train, render or start something once per session (per pytest-xdist worker).
_SESSION_WORK = {"tiny_models", "tiny_model", "multirun", "prepared", "variant_lines", "slurm_cluster"}


# tryfirst: pytest-xdist's own hook (xdist.remote) turns the group markers into node ids; after it, a marker
# added here would be ignored and each worker would train the session's models (seen). Tests of the Slurm
# cluster are found by their fixture, as tests/slurm_cluster.py's later hook marks them `slurm`.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Share the session's work, spread the rest (pyproject.toml: ``-n 2 --dist loadgroup``). Every test of a
    session fixture that trains or starts something (the tiny models, the Slurm cluster) is in the xdist group
    ``shared``, which one worker runs in order: the models are trained once, the cluster has one client and is
    stopped by the worker that started it. Every other test, slow ones that train their own model included,
    goes to whichever worker is free, so two engines run side by side and fill each other's single-threaded
    stretches (start-up, imports, MLflow, Slurm's walltime waits)."""
    for item in items:
        if item.get_closest_marker("slurm") or _SESSION_WORK & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("shared"))


def pytest_configure(config):
    """Refuse a pytest that pytest-xdist's ``--dist loadgroup`` silently does not group with (pytest 9.2 with
    xdist up to 3.8: pytest-xdist issue 1386): each worker would train the session's models and two workers
    would drive the one Slurm cluster at once. pyproject.toml pins a pytest it works with."""
    from importlib.metadata import version

    from packaging.version import Version  # pytest's own dependency

    if os.environ.get("PYTEST_XDIST_WORKER") or config.getoption("dist", "no") != "loadgroup":
        return
    if Version(version("pytest")) >= Version("9.2") and Version(version("pytest-xdist")) < Version("3.9"):
        raise pytest.UsageError(
            f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')}: --dist loadgroup does not "
            "group (pytest-xdist issue 1386); run bash setup.sh --test (uv.lock pins a pytest that works)"
        )
