"""What a launch checks, in which order, and how it ends when something unexpected happens (issue 19, items 3-5
and 9): a bug in hsbcala keeps its traceback and its own exit code, the tracking store is checked before the
engine environment is built and before sbatch, the plan is checked again under the model directory's lock, and
a failed repair at the end of a launch is said.

The faults are real: the real ``train.py`` (Hydra's job logging, its ``hsbcala.log``), a port nobody listens on
as the tracking server, an empty engine-environment root, a second real training that ends between the first
launch's plan and its lock, a file-system state the Calamari 1 repair cannot put back. Where a fault needs code
that hsbcala does not have (a bug, a hook between plan and lock), a small driver replaces one function in the
launcher's process before ``train.py``'s ``main`` runs (:data:`DRIVER`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hsbcala.core import errors
from tests.conftest import ROOT, compose_cfg, run_inprocess
from tests.test_slurm_train import TINY_NET, gt, launch, tiny  # noqa: F401 - gt: the module-scoped fixture

BAD_URI = "http://127.0.0.1:9"  # the discard port: nothing answers, the connection is refused at once

# Runs train.py's main as `python train.py ARGS` would, after `PATCH` (Python source, given `ROOT`) has replaced
# one function: how a bug, or a second launch at a chosen moment, is put inside a real launch.
DRIVER = textwrap.dedent(
    """
    import os, runpy, sys
    ROOT = {root!r}
    sys.path.insert(0, ROOT)
    exec(os.environ["HSBCALA_TEST_PATCH"])
    sys.argv = [ROOT + "/train.py", *sys.argv[1:]]
    runpy.run_path(ROOT + "/train.py", run_name="__main__")
    """
)


def drive(tmp: Path, patch: str, overrides: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER.format(root=str(ROOT)), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp,
        env={**os.environ, "HSBCALA_TEST_PATCH": textwrap.dedent(patch)},
        timeout=timeout,
        check=False,
    )


def demo(tmp: Path) -> list[str]:
    """The embedded demo, small, everything in ``tmp``."""
    return [
        f"paths.root={tmp}",
        "data.synthetic.n_train=20",
        "data.synthetic.n_val=5",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
    ]


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("hsbcala: error:")]


# --- item 3: a bug is not a user error ------------------------------------------------------------------------------
BUGS = {
    # hsbcala's own code reads a key the schema does not have: an OmegaConf error raised inside the run, which
    # Hydra's reporter used to print as "a bad command line", exit 2, no traceback
    "omegaconf": """
        import hsbcala.train.run as T
        real = T.plan
        def plan(cfg):
            cfg.train.epochs_typo
            return real(cfg)
        T.plan = plan
    """,
    # an ENOENT on a path hsbcala made up itself: used to be one line "No such file or directory", exit 3
    "enoent": """
        import hsbcala.train.run as T
        def plan(cfg):
            open("/nonexistent-hsbcala-internal/state.tmp").read()
        T.plan = plan
    """,
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_bug_inside_the_run_keeps_its_traceback_and_exits_70(tmp_path, bug):
    proc = drive(tmp_path, BUGS[bug], demo(tmp_path), timeout=120)
    assert proc.returncode == errors.BUG_EXIT == 70, proc.stderr[-3000:]
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hsbcala: error: this is a bug in hsbcala") and "report it to" in last, last
    assert "hsbcala.log" in last, last  # where the traceback is kept
    logs = list((tmp_path / "outputs").rglob("hsbcala.log"))
    assert len(logs) == 1 and "Traceback (most recent call last)" in logs[0].read_text(), logs


def test_an_oserror_on_a_path_the_user_gave_stays_one_line(tmp_path):
    """The counterpart: a file the config names that cannot be read is the user's (one line, exit 3)."""
    patch = """
        import hsbcala.train.run as T
        def plan(cfg):
            open(os.path.join(str(cfg.model_dir), "hsbcala-state.json")).read()
        T.plan = plan
    """
    proc = drive(tmp_path, patch, [*demo(tmp_path), f"model_dir={tmp_path / 'gone'}"], timeout=120)
    assert proc.returncode == errors.FILE_SYSTEM_EXIT, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == [
        f"hsbcala: error: No such file or directory: {tmp_path / 'gone' / 'hsbcala-state.json'}"
    ]


def test_a_bad_command_line_is_still_one_line_exit_2(tmp_path):
    """Composition (before the task runs) stays the user's: the same reporter as before."""
    proc = drive(tmp_path, "pass", [*demo(tmp_path), "train.bach_size=8"], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(error_lines(proc.stderr)) == 1 and "train.bach_size: no such key" in proc.stderr


# --- item 4: the tracking store before anything slow ---------------------------------------------------------------
def test_bad_tracking_uri_is_refused_before_the_engine_env_is_built(tmp_path):
    envs = tmp_path / "envs"  # version.env.root (default $HSBCALA_ENV_ROOT): empty, so the env would be built
    envs.mkdir()
    t0 = time.monotonic()
    result = run_inprocess(
        "train", [*demo(tmp_path), f"version.env.root={envs}", f"mlflow.tracking_uri={BAD_URI}"], cwd=tmp_path
    )
    seconds = time.monotonic() - t0
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "the tracking server does not answer" in lines[0], result.stderr[-3000:]
    assert list(envs.iterdir()) == [], "something was built or downloaded before the store was checked"
    assert seconds < 5, f"refused after {seconds:.1f} s"


def test_bad_tracking_uri_is_refused_on_the_login_node_before_sbatch(tmp_path, gt):  # noqa: F811
    """A Slurm sweep checks the store where it is launched: nothing is submitted (no Slurm needed, none is
    reached)."""
    proc = launch(tmp_path, tiny(tmp_path, gt, "cala2", **{"mlflow.tracking_uri": BAD_URI}), timeout=120)
    lines = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert f"mlflow.tracking_uri={BAD_URI}: the tracking server does not answer" in lines[0]
    assert "submitted" not in proc.stderr and not (tmp_path / "multirun" / ".submitit").exists()


# --- item 5: plan, lock, and plan again if the directory changed ---------------------------------------------------
def local_tiny(tmp: Path, gt: Path) -> list[str]:  # noqa: F811
    """A tiny real Calamari 2 training on this machine."""
    return [
        o
        for o in tiny(tmp, gt, "cala2", **{"train.epochs": "1", "hydra.sweep.dir": None})
        if not o.startswith("cluster=")
    ]


def test_a_launch_that_ends_between_plan_and_lock_is_noticed(tmp_path, gt):  # noqa: F811
    """Launch A plans a fresh training; before it takes the lock (while it makes sure of the engine env),
    launch B trains the same model to the end. A must not train it a second time (a new MLflow run, the
    finished state overwritten): it sees the change under the lock, plans again, and finds it finished."""
    overrides = local_tiny(tmp_path, gt)
    patch = f"""
        import subprocess
        from hsbcala.engines import envs
        real = envs.EngineEnv.ensure
        def ensure(self):
            b = subprocess.run([sys.executable, ROOT + "/train.py", *{overrides!r}], capture_output=True, text=True)
            print("launch B exit", b.returncode, file=sys.stderr)
            sys.stderr.write(b.stderr[-2000:])
            envs.EngineEnv.ensure = real  # once: the second plan of A goes the ordinary way
            return real(self)
        envs.EngineEnv.ensure = ensure
    """
    proc = drive(tmp_path, patch, overrides)
    assert "launch B exit 0" in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "changed while this launch prepared" in proc.stderr and "planning again" in proc.stderr
    assert "has finished training" in proc.stderr, proc.stderr[-3000:]
    state = json.loads((tmp_path / "model-cala2" / "hsbcala-state.json").read_text())
    assert state["status"] == "finished" and len(state["history"]) == 1, state
    with sqlite3.connect(tmp_path / "mlruns.db") as con:
        assert con.execute("select status from runs").fetchall() == [("FINISHED",)]


# --- item 9: a failed repair at the end of a launch is said ---------------------------------------------------------
def test_a_failed_repair_after_the_launch_is_said(tmp_path, capsys):
    """Calamari 1's restore of the best model kept before a resume, at the end of a launch that did not finish,
    fails (the place it restores to is a directory now): the launch still ends, and says what was not repaired."""
    from hsbcala import engines
    from hsbcala.modeldir import ModelDir, State
    from hsbcala.train import run as train

    engine = engines.get("cala1")
    md = ModelDir(tmp_path / "model", engine)
    kept = md.path / engine.KEPT
    kept.mkdir(parents=True)
    (kept / "best.ckpt.json").write_text('{"currentStage": 0, "earlyStoppingBestAccuracy": 0.5}')
    (kept / "best.ckpt.h5").write_bytes(b"weights")
    (md.path / "best.ckpt.h5" / "in-the-way").mkdir(parents=True)  # the restore cannot replace a directory
    cfg = compose_cfg(["version=cala1"])
    parser = engine.progress_parser(cfg.train, 16)
    train._end(md, engine, State(version="cala1"), parser, None, "KILLED", fresh=False, held=True, t0=0.0)
    err = capsys.readouterr().err
    assert f"warning: the engine's repair of {md.path} after this launch failed" in err, err
    assert "best.ckpt.h5" in err and "tries again" in err, err
    assert (kept / "best.ckpt.json").is_file(), "the kept best model must stay for the next try"
