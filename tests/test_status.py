"""Submit and return (``hydra.launcher.wait=false``) and ``python -m hsbcala.slurm.status``.

Against the real local Slurm cluster (the ``slurm_cluster`` fixture; tests/test_slurm_train.py explains it): a
1-point tiny training submitted without waiting, then the status of its sweep directory polled until the job
ends, and the status of the finished model directory. The quick tests at the end need no cluster: the dry run
with ``wait=false``, and the status of a failed job and of a model directory a dead launch left behind.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hsbcala.slurm import launch as slurm_launch
from tests.conftest import ROOT
from tests.test_slurm_train import gt, launch, tiny  # noqa: F401 - gt is a fixture

NOT_ENDED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


def status(*args: str, timeout: float = 180, slurm: bool = True) -> subprocess.CompletedProcess:
    """``python -m hsbcala.slurm.status``; ``slurm=False``: without Slurm's commands on PATH (a machine without
    Slurm; also spares the quick tier squeue's 18 s of retries when no controller runs)."""
    env = None if slurm else {**os.environ, "PATH": os.path.dirname(sys.executable)}
    return subprocess.run(
        [sys.executable, "-m", "hsbcala.slurm.status", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
        env=env,
    )


def status_json(*args: str, slurm: bool = True) -> list[dict]:
    proc = status("--json", *args, slurm=slurm)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def returned(slurm_cluster, tmp_path_factory, gt):  # noqa: F811
    """A 1-point tiny training launched with wait=false; the status rows seen while polling until it ended."""
    tmp = tmp_path_factory.mktemp("returned")
    proc = launch(tmp, tiny(tmp, gt, "cala2", **{"hydra.launcher.wait": "false"}))
    sweep_dir = tmp / "multirun"
    seen: list[dict] = []
    if proc.returncode == 0:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            (row,) = status_json("--no-mlflow", str(sweep_dir))
            seen.append(row)
            if (
                row["outcome"] is not None and row["slurm"] not in NOT_ENDED
            ):  # the result comes before the end
                break
            time.sleep(2)
    return tmp, proc, sweep_dir, seen


@pytest.mark.slow
@pytest.mark.slurm
def test_submit_and_return_then_status_until_the_end(returned):
    tmp, proc, sweep_dir, seen = returned
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((sweep_dir / slurm_launch.RECORD).read_text())
    (job,) = record["jobs"]
    job_id = job["job_id"]
    assert job["model_dir"] == str((tmp / "model-cala2").resolve()) and job["version"] == "cala2"
    assert "version=cala2" in job["overrides"] and Path(job["stderr"]).name == f"{job_id}_0_log.err"
    # the launcher returned at once, saying what it submitted and how to look
    assert "not waiting" in proc.stderr and f"job {job_id}: {job['model_dir']}" in proc.stdout
    assert f"-m hsbcala.slurm.status {sweep_dir}" in proc.stdout
    print(f"\nsubmit and return: {proc.seconds:.0f} s; states seen: {[r['slurm'] for r in seen]}")
    assert seen, "status never answered"
    assert all(r["job_id"] == job_id for r in seen)
    assert seen[0]["slurm"] in NOT_ENDED and seen[0]["outcome"] is None, seen[0]
    last = seen[-1]
    assert last["outcome"] == "finished", last
    assert last["slurm"] in ("COMPLETED", "ended") and last["training"] == "finished", last
    assert last["best_val_cer"] is not None and 0 <= last["best_val_cer"] <= 2, last
    assert last["requeues"] == 0 and last["owner"] == "-" and last["log"] is None, last
    assert last["unit"] == "epoch" and last["position"] >= 1, last
    # the plain table, with the MLflow run's name (one batched search per store)
    text = status(str(sweep_dir))
    assert text.returncode == 0, text.stderr[-3000:]
    header, row = text.stdout.splitlines()[:2]
    assert header.split()[:3] == ["point", "job", "slurm"]
    assert job_id in row and "finished" in row and f"{last['best_val_cer']:.4f}" in row, row
    assert row.split()[-2].startswith("model-cala2-"), row  # the run column, before the owner


@pytest.mark.slow
@pytest.mark.slurm
def test_status_of_a_finished_model_dir(returned):
    tmp, proc, _, seen = returned
    assert proc.returncode == 0 and seen and seen[-1]["outcome"] == "finished", proc.stderr[-3000:]
    (row,) = status_json(str(tmp / "model-cala2"))
    assert row["training"] == "finished" and row["job_id"] == seen[-1]["job_id"], row
    assert row["best_val_cer"] == seen[-1]["best_val_cer"] and row["run"], row
    assert row["run_seconds"] > 0, row
    assert row["stage"] is not None and row["checkpoint_age_s"] >= 0 and row["owner"] == "-", row


# --- no cluster needed ---------------------------------------------------------------------------------------------
def test_dry_run_with_wait_false_passes_nothing_to_sbatch(tmp_path, gt):  # noqa: F811
    proc = launch(
        tmp_path,
        tiny(
            tmp_path, gt, "cala2", dry_run="true", **{"hydra.launcher.wait": "false", "hydra.sweep.dir": None}
        ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sbatch = [line for line in proc.stdout.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --partition=debug" in sbatch and not any(
        line.startswith("#SBATCH --wait") for line in sbatch
    ), sbatch
    assert not any(tmp_path.iterdir())


def test_status_shows_a_failed_job_and_a_dead_launchs_owner_record(tmp_path):
    """A sweep record whose job Slurm no longer knows, with a failed result and its log; the model directory
    holds an owner record of a launch that died (a pid that no longer exists)."""
    from hydra.core.utils import JobReturn, JobStatus

    from hsbcala.slurm.jobexit import JobExit

    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "hsbcala-state.json").write_text(
        json.dumps({"version": "cala2", "history": [{"slurm_job_id": "999990"}, {"slurm_job_id": "999990"}]})
    )
    dead = subprocess.Popen(["true"])
    dead.wait()
    (model_dir / ".hsbcala-owner.json").write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time() - 30})
    )
    logs = tmp_path / "sweep" / ".submitit" / "999990"
    logs.mkdir(parents=True)
    (logs / "999990_0_log.err").write_text("noise\nhsbcala: error: model_dir m is in use\nmore noise\n")
    ret = JobReturn(overrides=["train.seed=1"], status=JobStatus.FAILED, _return_value=JobExit(2))
    with open(logs / "999990_0_result.pkl", "wb") as f:
        pickle.dump(("success", ret), f)
    job = {
        "job_id": "999990",
        "overrides": ["train.seed=1"],
        "model_dir": str(model_dir),
        "version": "cala2",
        "stdout": str(logs / "999990_0_log.out"),
        "stderr": str(logs / "999990_0_log.err"),
        "result": str(logs / "999990_0_result.pkl"),
    }
    (tmp_path / "sweep" / slurm_launch.RECORD).write_text(json.dumps({"jobs": [job]}))
    (row,) = status_json(str(tmp_path / "sweep"), slurm=False)
    assert row["slurm"] == "ended" and row["outcome"] == "failed" and row["requeues"] == 1, row
    assert row["log"] == job["stderr"] and row["last_line"] == "hsbcala: error: model_dir m is in use", row
    assert row["owner"] == "stale" and row["stage"] is None, row
    text = status(str(tmp_path / "sweep"), slurm=False)
    assert "job 999990 failed: hsbcala: error: model_dir m is in use" in text.stdout, text.stdout
    assert f"log: {job['stderr']}" in text.stdout and "a launch that died" in text.stdout
    bad = status(str(tmp_path), slurm=False)
    assert bad.returncode == 2 and "neither a sweep directory" in bad.stderr
