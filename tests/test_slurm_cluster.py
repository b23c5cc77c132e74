"""Real submitit jobs on the real local Slurm cluster (scripts/slurm-local.sh); no mocks.

What these prove for the launcher: a submitted function runs and returns its value, Slurm's own
refusal of a bad partition reaches the caller, and two 1-CPU jobs share the node. submitit's timeout
handling (USR2 before the time limit -> checkpoint() -> ``scontrol requeue``) is proved on hsbcala's own
training instead (tests/test_slurm_train.py, the walltime requeue test), which checks the same requeue
in one job id and adds the resume from hsbcala's checkpoint: a second requeue test of a toy counter cost
85 s of the suite and found nothing that one does not.

Note: this cluster has no accounting database, so submitit's status calls (``sacct``) fail and it
only logs "Bypassing sacct error"; a job is "done" when its result file appears. A job that dies
without one would never be done, hence the deadlines in ``_wait``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import submitit
from submitit.core.utils import FailedJobError

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]


def add(a: int, b: int) -> dict:
    """A plain function, run as a Slurm job."""
    return {
        "sum": a + b,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
    }


def nap(seconds: float) -> tuple[float, float]:
    """Sleep; return (start, end) wall-clock times."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def _executor(folder: Path, partition: str, max_num_timeout: int = 3, **params) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(
        folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=max_num_timeout
    )
    executor.update_parameters(
        slurm_partition=partition,
        cpus_per_task=1,
        mem_gb=0.25,
        timeout_min=params.pop("timeout_min", 2),
        # The job unpickles functions of this module: make `tests` importable whatever the job's cwd.
        slurm_setup=[f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        **params,
    )
    return executor


def _wait(job: submitit.Job, timeout_s: float) -> float:
    """Wait until the job's result file exists; cancel and fail after timeout_s. Returns seconds waited."""
    t0 = time.monotonic()
    while not job.done():
        if time.monotonic() - t0 > timeout_s:
            job.cancel(check=False)
            pytest.fail(
                f"job {job.job_id} not done after {timeout_s:.0f}s\n"
                f"--- stdout:\n{job.stdout()}\n--- stderr:\n{job.stderr()}"
            )
        time.sleep(1)
    return time.monotonic() - t0


def test_job_returns_value(slurm_cluster, tmp_path):
    executor = _executor(tmp_path, slurm_cluster.partition)
    job = executor.submit(add, 2, 3)
    _wait(job, timeout_s=120)
    out = job.result()
    assert out["sum"] == 5
    assert out["job_id"] == job.job_id
    assert out["partition"] == slurm_cluster.partition


def test_bad_partition_refused_with_slurms_message(slurm_cluster, tmp_path):
    executor = _executor(tmp_path, "no_such_partition")
    with pytest.raises(FailedJobError) as excinfo:
        executor.submit(add, 1, 1)
    message = str(excinfo.value)
    # Slurm 22.05 says (stderr of sbatch, as submitit passes it on):
    #   sbatch: error: invalid partition specified: no_such_partition
    #   sbatch: error: Batch job submission failed: Invalid partition name specified
    assert "invalid partition" in message.lower(), message
    assert "no_such_partition" in message, message


def test_two_one_cpu_jobs_run_side_by_side(slurm_cluster, tmp_path):
    """CR_Core_Memory + DefMemPerCPU: two 1-cpu jobs share the node instead of queueing."""
    executor = _executor(tmp_path, slurm_cluster.partition)
    jobs = [executor.submit(nap, 5) for _ in range(2)]
    for job in jobs:
        _wait(job, timeout_s=120)
    (start1, end1), (start2, end2) = (job.result() for job in jobs)
    assert max(start1, start2) < min(end1, end2), "the two jobs did not overlap"
