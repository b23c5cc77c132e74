"""Real submitit jobs on the real local Slurm cluster (scripts/slurm-local.sh); no mocks.

What these prove for the launcher: a submitted function runs and returns its value, Slurm's own
refusal of a bad partition reaches the caller, and submitit's timeout handling (USR2 before the time
limit -> checkpoint() -> ``scontrol requeue``) works here, continuing from saved progress.

Note: this cluster has no accounting database, so submitit's status calls (``sacct``) fail and it
only logs "Bypassing sacct error"; a job is "done" when its result file appears. A job that dies
without one would never be done, hence the deadlines in ``_wait``.
"""

from __future__ import annotations

import itertools
import json
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


class SlowCounter(submitit.helpers.Checkpointable):
    """Counts to ``total``, one step a second, saving progress to a JSON file after every step.

    Checkpointable's checkpoint() resubmits this same object; on the next run ``__call__`` reads the
    file and goes on from the saved step. Every run appends a record (first step, Slurm restart count)
    so that the test can check the requeue really happened and really continued.
    """

    def __init__(self, progress_file: str, total: int) -> None:
        self.progress_file = progress_file
        self.total = total

    def _save(self, state: dict) -> None:
        tmp = self.progress_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.progress_file)  # atomic: a signal mid-write cannot corrupt the file

    def __call__(self) -> dict:
        path = Path(self.progress_file)
        state = json.loads(path.read_text()) if path.exists() else {"done": 0, "runs": []}
        state["runs"].append(
            {
                "first_step": state["done"],
                "job_id": os.environ.get("SLURM_JOB_ID"),
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                "start": time.time(),
            }
        )
        self._save(state)
        while state["done"] < self.total:
            time.sleep(1)
            state["done"] += 1
            state["runs"][-1]["last_step"] = state["done"]
            state["runs"][-1]["last"] = time.time()
            self._save(state)
        return state


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


def test_checkpointable_job_requeued_on_walltime_and_continues(slurm_cluster, tmp_path):
    """timeout_min=1 and 70 s of work: the job cannot finish in one run, so it must be requeued.

    Timing on Slurm 22.05: slurmctld looks at time limits only every 30 s and sends the --signal
    warning at the first look where (end - now) <= delay + 30 s. With delay 1 s and a 60 s limit,
    each run gets USR2 between 29 s and 59 s after it started (never at the very start, as it
    would with submitit's default delay of 90 s > the limit), the next look then enforces the
    limit. So one run does at most ~58 steps (< 70: a requeue is certain) and three runs (the first
    plus max_num_timeout=2 requeues) at least ~80 (> 70: it finishes). A requeued job waits
    cred_expire (10 s, slurm.conf) before it may start again.
    """
    total = 70
    progress = tmp_path / "progress.json"
    executor = _executor(
        tmp_path,
        slurm_cluster.partition,
        timeout_min=1,
        max_num_timeout=2,
        slurm_signal_delay_s=1,
    )
    t0 = time.time()
    job = executor.submit(SlowCounter(str(progress), total))
    _wait(job, timeout_s=300)
    state = job.result()
    elapsed = time.time() - t0

    runs = state["runs"]
    timeline = ", ".join(
        f"run {i}: steps {r['first_step']}->{r.get('last_step')} "
        f"from t+{r['start'] - t0:.0f}s to t+{r.get('last', r['start']) - t0:.0f}s (restart {r['restart_count']})"
        for i, r in enumerate(runs)
    )
    print(f"\nrequeue test: job {job.job_id} done in {elapsed:.0f}s; {timeline}")

    assert state["done"] == total
    assert len(runs) >= 2, f"never requeued: {timeline}"
    assert {r["job_id"] for r in runs} == {job.job_id}  # requeued, not resubmitted
    for before, after in itertools.pairwise(runs):
        # Continued from the saved file (at most the step in flight when the signal came is redone).
        assert after["first_step"] > 0
        assert after["first_step"] == before.get("last_step", before["first_step"])
        assert after["restart_count"] == before["restart_count"] + 1
    # submitit's own log says why it requeued.
    assert "Caught signal SIGUSR2" in job.stderr() and "this job is timed-out" in job.stderr()
