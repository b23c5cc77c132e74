"""Slurm, on the login node: what the launcher (``hydra_plugins/hsbcala_launcher``) does around submitit.

- the sbatch script of a dry run, rendered by submitit itself (:func:`sbatch_preview`);
- a new sqlite MLflow store created before a job array is submitted (:func:`prepare_store`);
- sbatch's refusal as one line with Slurm's own message (:func:`submit`, :class:`SubmissionError`);
- waiting that notices a job that ended without a result (:func:`wait`; a site without accounting gives
  submitit no job state, so squeue is asked too);
- a report per failed job: its id, what went wrong, its stdout/stderr and their last lines (:func:`outcome`,
  :func:`report_failures`);
- the record of what was submitted, ``<sweep dir>/hsbcala-submitted.json`` (:func:`write_record`), which
  ``python -m hsbcala.slurm.status`` reads, and the message of a launch that does not wait (:func:`returned_message`).

What runs inside the job is :mod:`hsbcala.slurm.job`; the MLflow calls are :func:`hsbcala.track.store.prepare_store`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.core.console import say
from hsbcala.core.errors import HsbcalaError
from hsbcala.slurm.jobexit import JobExit

# Slurm job states after which no result will come (squeue -t all shows them until MinJobAge has passed).
TERMINAL = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "TIMEOUT",
    "GONE",
}
RECORD = "hsbcala-submitted.json"  # in the sweep directory: what was submitted (write_record)
SQUEUE_EVERY_S = 10.0  # how often the launcher asks squeue (result files are checked every second)
ENDED_GRACE_S = 10.0  # an ended job's result file may appear late on a shared filesystem


class SubmissionError(HsbcalaError):
    """sbatch (or submitit) refused the submission; carries Slurm's own message."""


# --- before submitting: the preview of a dry run, the MLflow store ----------------------------------------------
def sbatch_params(launcher: dict) -> dict:
    """The launcher's settings (hydra.launcher.*) as the sbatch parameters submitit makes of them."""
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem

    names = SlurmExecutor._equivalence_dict()
    out = {}
    for key, value in launcher.items():
        if key in ("_target_", "submitit_folder", "max_num_timeout", "wait", "python") or value is None:
            continue
        key = names.get(key, key)
        out[key] = _convert_mem(value) if key == "mem" else value
    return out


def job_name(run_names: Sequence[str]) -> str:
    """The Slurm job's name: the run's MLflow name for one job; for a job array (one name for all its tasks) the
    names' common beginning up to a ``-``, then ``sweep``: ``fraktur-cala2-sweep`` for the points
    ``fraktur-cala2-batch_size=8`` …, ``fraktur-sweep`` for a sweep over versions, whatever ``mlflow.run_name``'s
    template. Which task is which point: ``<sweep dir>/hsbcala-submitted.json`` and ``python -m hsbcala.slurm.status``."""
    names = list(dict.fromkeys(run_names))
    if len(names) == 1:
        return names[0]
    common = os.path.commonprefix(names)
    return f"{common[: common.rfind('-') + 1]}sweep"


def sbatch_preview(launcher: dict, n_jobs: int, note: str | None = None) -> str:
    """The sbatch script submitit would submit (rendered by submitit itself) and what happens on walltime."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = str(launcher["submitit_folder"])
    python = launcher.get("python") or sys.executable  # cluster.python: the node's interpreter
    command = " ".join([shlex.quote(str(python)), "-u -m submitit.core._submit", shlex.quote(folder)])
    text = _make_sbatch_string(
        command=command, folder=folder, map_count=n_jobs if n_jobs > 1 else None, **sbatch_params(launcher)
    )
    what = f"{n_jobs} jobs as one job array" if n_jobs > 1 else "1 job"
    requeue = int(launcher.get("max_num_timeout") or 0)
    head = [f"# dry run: nothing submitted. sbatch script of {what} (as submitit writes it):"]
    if note:
        head.append(f"# {note}")
    tail = [
        f"# on walltime: requeued up to {requeue} times, resuming from the newest checkpoint"
        if requeue
        else "# on walltime: not requeued (hydra.launcher.max_num_timeout=0)"
    ]
    return "\n".join([*head, text.rstrip(), *tail])


def prepare_store(cfg: Any) -> None:
    """Create a new sqlite MLflow store here, before submitting a job array: its jobs start together and would
    race to create the store's tables (MLflow's migration fails in all but one of them). Servers need nothing."""
    from hsbcala.track import info as trackinfo
    from hsbcala.track import store

    uri = trackinfo.tracking_uri(cfg)
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).exists():
        return
    say(f"creating the MLflow store {uri}")
    store.prepare_store(uri)


# --- submission ----------------------------------------------------------------------------------------------------
def submit(executor: Any, fn: Any, job_params: list) -> list:
    """Submit one job per point (a job array for several) through submitit; a refusal becomes one clear line."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(
            captured
        ):  # submitit echoes sbatch's stderr; it goes into the message
            return executor.map_array(fn, *zip(*job_params))
    except (FailedJobError, FailedSubmissionError, subprocess.SubprocessError, OSError) as exc:
        lines = [x.strip() for x in f"{captured.getvalue()}\n{exc}".splitlines() if x.strip()]
        slurm_says = list(dict.fromkeys(x for x in lines if x.startswith("sbatch:"))) or lines[-1:]
        raise SubmissionError("sbatch refused the job: " + " | ".join(slurm_says)) from None


def submitted_message(
    jobs: Sequence[Any], executor: Any, *, wait: bool = True, sweep_dir: Path | None = None
) -> str:
    ids = ", ".join(j.job_id for j in jobs) if len(jobs) <= 4 else f"{jobs[0].job_id} … {jobs[-1].job_id}"
    what = f"Slurm job {ids}" if len(jobs) == 1 else f"{len(jobs)} Slurm jobs as a job array ({ids})"
    if not wait:
        return f"submitted {what}; not waiting (hydra.launcher.wait=false)"
    look = (
        f"; python -m hsbcala.slurm.status {Path(sweep_dir).resolve()} shows how they do" if sweep_dir else ""
    )
    return (
        f"submitted {what}; logs in {Path(str(executor.folder)).parent}. Waiting for the end (Ctrl-C stops "
        f"waiting; the jobs go on{look})"
    )


def write_record(
    sweep_dir: Path, jobs: Sequence[Any], overrides: Sequence[list[str]], points: Sequence[dict]
) -> dict:
    """Record what was submitted in ``<sweep dir>/hsbcala-submitted.json`` (atomically) and return it: per job its
    id, the point's overrides, model directory and version (as the launcher's preflight composed them) and
    submitit's log and result files. ``python -m hsbcala.slurm.status`` reads it."""
    from hydra.core.utils import filter_overrides

    from hsbcala.core.fsutil import atomic_write_json

    sweep_dir = Path(sweep_dir).resolve()
    record = {
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "sweep_dir": str(sweep_dir),
        "jobs": [
            {
                "job_id": job.job_id,
                "overrides": list(filter_overrides(ov)),
                **point,
                "stdout": str(Path(job.paths.stdout).resolve()),
                "stderr": str(Path(job.paths.stderr).resolve()),
                "result": str(Path(job.paths.result_pickle).resolve()),
            }
            for job, ov, point in zip(jobs, overrides, points)
        ],
    }
    atomic_write_json(sweep_dir / RECORD, record)
    return record


def returned_message(jobs: Sequence[Any], sweep_dir: Path, record: dict) -> str:
    """What a launch that does not wait prints (stdout): the job ids, the sweep directory, how to look later."""
    sweep_dir = Path(sweep_dir).resolve()
    lines = [f"job {j['job_id']}: {j['model_dir']}" for j in record["jobs"]]
    return "\n".join(
        [
            *lines,
            f"sweep directory: {sweep_dir} (what was submitted: {sweep_dir / RECORD})",
            f"to see how it goes: {shlex.quote(sys.executable)} -m hsbcala.slurm.status {shlex.quote(str(sweep_dir))}",
        ]
    )


# --- waiting -------------------------------------------------------------------------------------------------------
def squeue(ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, node or reason)} of the given jobs (array tasks one per line); None if squeue fails."""
    base = sorted({i.split("_")[0] for i in ids})
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%R", "-j", ",".join(base)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return {} if "invalid job id" in proc.stderr.lower() else None  # every job is gone from squeue
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def wait(jobs: Sequence[Any], sweep_dir: Path | None = None) -> dict[str, str | None]:
    """Wait until every job has written its result or has ended without one.

    Returns {job id: None (the result is there) | the Slurm state it ended in}. Prints each job's state changes
    (running, requeued). submitit alone would wait forever for a job that died without a result where sacct
    gives no state (no accounting database), so squeue, which every site has, is asked too.
    """
    out: dict[str, str | None] = {}
    seen: dict[str, str] = {}
    ended: dict[str, float] = {}
    next_squeue = 0.0
    try:
        while len(out) < len(jobs):
            now = time.monotonic()
            states = None
            if now >= next_squeue:
                states = squeue([j.job_id for j in jobs if j.job_id not in out])
                next_squeue = now + SQUEUE_EVERY_S
            for j in jobs:
                if j.job_id in out:
                    continue
                if j.paths.result_pickle.exists():
                    out[j.job_id] = None
                    continue
                if states is None:
                    continue
                state, where = states.get(j.job_id, ("GONE", ""))
                where = where.strip("()")
                label = f"{state} ({where})" if where and where != "None" else state
                if seen.get(j.job_id) != label and state != "GONE":
                    say(f"job {j.job_id}: {label}")
                    seen[j.job_id] = label
                if state in TERMINAL:
                    if now - ended.setdefault(j.job_id, now) >= ENDED_GRACE_S:
                        out[j.job_id] = state
                else:
                    ended.pop(j.job_id, None)
            if len(out) < len(jobs):
                time.sleep(1.0)
    except KeyboardInterrupt:
        pending = " ".join(j.job_id for j in jobs if j.job_id not in out)
        look = f"python -m hsbcala.slurm.status {Path(sweep_dir).resolve()}; " if sweep_dir else ""
        raise HsbcalaError(
            f"stopped waiting; the jobs go on ({look}squeue -j {pending.replace(' ', ',')}; "
            f"scancel {pending} to stop them)",
            exit_code=130,
        ) from None
    return out


# --- outcomes and reports ------------------------------------------------------------------------------------------
@dataclass
class Failure:
    job_id: str
    point: str
    headline: str
    stdout: Path
    stderr: Path
    exit_code: int = 1


def _tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [x.rstrip() for x in lines if x.strip()][-n:]


def outcome(job: Any, ended_in: str | None, overrides: list[str]) -> tuple[Any, Failure | None]:
    """(JobReturn, None) for a job that succeeded, (None, Failure) for one that did not."""
    from hydra.core.utils import JobStatus, filter_overrides

    point = " ".join(filter_overrides(overrides))

    def failure(headline: str, code: int = 1) -> tuple[None, Failure]:
        errors = [x for x in _tail(job.paths.stderr, 200) if x.startswith("hsbcala: error: ")]
        if errors:  # the job's own one-line error says it best
            headline = errors[-1].removeprefix("hsbcala: error: ")
        return None, Failure(job.job_id, point, headline, job.paths.stdout, job.paths.stderr, code)

    if ended_in is not None:
        return failure(f"the job ended ({ended_in}) without a result")
    try:
        ret = job.results()[0]
    except Exception as exc:  # noqa: BLE001 - an error outside the Hydra job (unpickling, composing the config)
        last = [x for x in str(exc).splitlines() if x.strip() and not x.startswith(("---", "You can check"))]
        return failure(last[-1] if last else type(exc).__name__)
    if ret.status == JobStatus.FAILED:
        value = ret._return_value
        if isinstance(value, JobExit):
            return failure(str(value), value.code)
        return failure(f"{type(value).__name__}: {str(value).splitlines()[0] if str(value) else ''}")
    return ret, None


def report_failures(failures: Sequence[Failure], total: int) -> None:
    """Per failed job: its id, what went wrong, the paths of its stdout/stderr and their last lines."""
    lines = []
    for f in failures:
        lines.append(f"hsbcala: error: Slurm job {f.job_id} failed: {f.headline}")
        if f.point and total > 1:
            lines.append(f"  point:  {f.point}")
        lines += [f"  stdout: {f.stdout}", f"  stderr: {f.stderr}"]
        for name, path in (("stdout", f.stdout), ("stderr", f.stderr)):
            tail = _tail(path, 6)
            if tail:
                lines.append(f"  last lines of {name}:")
                lines += [f"    {x}" for x in tail]
    if total > 1:
        lines.append(f"hsbcala: {len(failures)} of {total} jobs failed")
    print("\n".join(lines), file=sys.stderr, flush=True)
