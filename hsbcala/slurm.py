"""Slurm: what hsbcala adds to hydra-submitit-launcher and submitit. It never schedules anything itself.

Submission, job arrays and requeue on walltime are the plugin's and submitit's. ``hydra_plugins/hsbcala_launcher``
subclasses the plugin's ``SlurmLauncher`` and calls in here for what the plugin lacks:

- on the login node: the sbatch preview of a dry run (:func:`sbatch_preview`), sbatch's refusal as one line
  (:func:`submit`), waiting that notices a job that ended without a result (:func:`wait`; a site without
  accounting gives submitit no job state), and a report per failed job (:func:`report_failures`);
- in the job, around :func:`hsbcala.train.run` (:func:`job`): refuse a Slurm cluster without ``-m`` outside a Slurm
  job, stage the GT archive to the node's RAM disk, and at the end log the job's accounting to the MLflow run
  and remove the staged data.

Requeue and resume meet in the model directory: on the walltime signal submitit calls the launcher's
``checkpoint()`` (:func:`note_requeue`), runs ``scontrol requeue`` and raises ``SystemExit`` in the main thread;
:mod:`hsbcala.train` stops the engine and ends the MLflow run KILLED; the requeued job runs the same Hydra job
again, which resumes from the newest checkpoint and re-opens the MLflow run named in ``hsbcala-state.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import io
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.errors import ConfigError, DataError, HsbcalaError

STAGE_STAMP = ".hsbcala-stage.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Slurm job states after which no result will come (squeue -t all shows them until MinJobAge has passed).
TERMINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "REVOKED", "TIMEOUT", "GONE"}
SQUEUE_EVERY_S = 10.0  # how often the launcher asks squeue (result files are checked every second)
ENDED_GRACE_S = 10.0  # an ended job's result file may appear late on a shared filesystem


def say(msg: str) -> None:
    print(f"hsbcala: {msg}", file=sys.stderr, flush=True)


class SubmissionError(HsbcalaError):
    """sbatch (or submitit) refused the submission; carries Slurm's own message."""


class JobExit(Exception):
    """A job that ended with hsbcala's clean exit (its one-line error is in the job's stderr)."""

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code if isinstance(code, int) else 1

    def __str__(self) -> str:
        return f"exit code {self.code}"


# --- the requeue under way (in the job) -------------------------------------------------------------------------
_requeue = False


def note_requeue() -> None:
    """Called from the launcher's ``checkpoint()``: submitit is about to requeue this job."""
    global _requeue
    _requeue = True


def requeue_under_way() -> bool:
    return _requeue


def guard_last_timeout() -> None:
    """In the job: when the walltime comes and no requeue is left, stop as interrupted (run KILLED, resumable).

    submitit's handler of the walltime signal raises ``UncompletedJobError`` then, which would end the MLflow run
    FAILED; this wraps that handler (installed by submitit before the job function runs).
    """
    import signal

    from submitit import JobEnvironment
    from submitit.core.utils import UncompletedJobError

    from hsbcala.errors import Interrupted

    sig = JobEnvironment._usr_sig()
    submitits = signal.getsignal(sig)
    if not callable(submitits):
        return

    def handler(signum: int, frame: Any) -> None:
        global _requeue
        try:
            submitits(signum, frame)
        except UncompletedJobError as exc:  # checkpoint() was called, but submitit did not requeue
            _requeue = False
            raise Interrupted(f"walltime reached and not requeued ({exc}); the last checkpoint is kept: run the "
                              f"same command again to resume, with a larger hydra.launcher.max_num_timeout "
                              f"to let it go on by itself") from None
        # Anything else passes as it is. Note the requeue's own SIGTERM may arrive while submitit's handler still
        # runs and raise hsbcala's Interrupted from inside it: the job is requeued all the same (the flag stays).

    signal.signal(sig, handler)


def in_slurm_job() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def job_id() -> str | None:
    """This job's id as squeue shows it (``<array job>_<task>`` for a job array's task)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


# --- the hook around hsbcala.train.run ---------------------------------------------------------------------------
@contextlib.contextmanager
def job(cfg: Any) -> Iterator[None]:
    """Around one run: refuse a Slurm cluster without -m, stage the data; at the end accounting and clean-up."""
    check_submission(cfg)
    if cfg.dry_run:
        if cfg.cluster.stage.archive and not _unpacked(cfg):
            say(f"dry run: the job would unpack {cfg.cluster.stage.archive} to {cfg.cluster.stage.dir}")
        yield
        return
    staged = stage(cfg)
    launches = _launches(cfg)
    try:
        yield
    finally:
        try:
            if in_slurm_job():
                log_accounting(cfg, launches)
        finally:
            if staged is not None:
                staged.release()


def check_submission(cfg: Any) -> None:
    """A Slurm cluster without -m would train here, on the login node: refuse, unless inside a Slurm job.

    Hydra runs its launcher (which submits) only in multirun mode. A dry run prints the sbatch script instead.
    """
    if not cfg.cluster.slurm or in_slurm_job():
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    from omegaconf import OmegaConf

    if cfg.dry_run:
        print(sbatch_preview(OmegaConf.to_container(HydraConfig.get().launcher, resolve=True), n_jobs=1,
                             note="add -m to submit it: Hydra runs its launcher only in multirun mode"), flush=True)
        return
    name = cfg.cluster.name
    raise ConfigError(f"cluster={name} submits through Slurm, which Hydra does only with -m (multirun): run "
                      f"'python train.py -m cluster={name} …'; without -m it would train here, on this node "
                      f"(inside a Slurm allocation, where SLURM_JOB_ID is set, it runs in place)")


# --- data staging --------------------------------------------------------------------------------------------------
@dataclass
class Staged:
    dir: Path
    cleanup: bool

    def release(self) -> None:
        """This job is done with the data: remove it unless another job on this node still uses it."""
        with _locked(self.dir):
            stamp = _read_json(self.dir / STAGE_STAMP)
            users = [p for p in stamp.get("users", []) if p != os.getpid() and _alive(p)]
            if users or not self.cleanup:
                if stamp:
                    stamp["users"] = users
                    _write_json(self.dir / STAGE_STAMP, stamp)
                return
            shutil.rmtree(self.dir, ignore_errors=True)
        say(f"removed the staged data {self.dir}")


def _archive(cfg: Any) -> Path:
    path = Path(os.path.expanduser(str(cfg.cluster.stage.archive)))
    path = path if path.is_absolute() else Path(cfg.paths.root) / path
    if not path.is_file():
        raise DataError(f"cluster.stage.archive: no such file {path}")
    return path.resolve()


def _identity(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": str(archive), "size": st.st_size, "mtime": st.st_mtime}


def _unpacked(cfg: Any) -> bool:
    stamp = _read_json(Path(cfg.cluster.stage.dir) / STAGE_STAMP)
    try:
        return bool(stamp) and all(stamp.get(k) == v for k, v in _identity(_archive(cfg)).items())
    except DataError:
        return False


def stage(cfg: Any) -> Staged | None:
    """Unpack ``cluster.stage.archive`` to ``cluster.stage.dir`` (skipped when already unpacked there).

    Jobs on one node share the unpacked data: each registers its pid in the stamp file; the last one removes it.
    """
    s = cfg.cluster.stage
    if not s.archive:
        return None
    archive, target = _archive(cfg), Path(s.dir)
    ident = _identity(archive)
    with _locked(target):
        stamp = _read_json(target / STAGE_STAMP)
        users = [p for p in stamp.get("users", []) if _alive(p)]
        if stamp and all(stamp.get(k) == v for k, v in ident.items()):
            say(f"{archive.name} is already unpacked in {target}")
        else:
            if users:
                raise DataError(f"cluster.stage.dir {target} holds {stamp.get('archive')}, in use by process(es) "
                                f"{users} on this node; set cluster.stage.dir to another directory")
            t0 = time.monotonic()
            _unpack(archive, target)
            say(f"unpacked {archive} to {target} in {time.monotonic() - t0:.1f} s")
            users = []
        _write_json(target / STAGE_STAMP, {**ident, "users": [*users, os.getpid()]})
    return Staged(target, bool(s.cleanup))


def _unpack(archive: Path, target: Path) -> None:
    tmp = target.parent / f".{target.name}.unpacking-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive) as tar:  # gzip, bzip2, xz or plain, detected
                tar.extractall(tmp, filter="data")  # no absolute paths, no '..', no device files
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cluster.stage.archive {archive}: cannot unpack it to {target.parent}: {exc}") from None
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def dry_run_count(cfg: Any) -> int | None:
    """For a dry run: training lines the staged archive will give (the data is not unpacked on this node).

    None when nothing is staged or the data is already unpacked here (then the files themselves are counted).
    """
    if not cfg.cluster.stage.archive or _unpacked(cfg):
        return None
    archive, target = _archive(cfg), Path(cfg.cluster.stage.dir)
    patterns = [str(p) for p in cfg.data.train]
    with tarfile.open(archive) as tar:
        names = [str(target / m.name) for m in tar if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)]
    count = sum(1 for n in names if any(fnmatch.fnmatch(n, p.replace("**/", "*")) for p in patterns))
    if not count:
        raise DataError(f"data.train: no image in {archive} would match {patterns} once unpacked to {target}")
    return count


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


# --- accounting at the end of each job ------------------------------------------------------------------------------
def _launches(cfg: Any) -> int:
    from hsbcala import checkpoints

    state = checkpoints.load_state(Path(cfg.model_dir).resolve())
    return len(state.history) if state else 0


def job_figures(now: float | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) of this job: elapsed time, CPU efficiency and max RSS, job id, node, restarts.

    Elapsed time is counted from the start of this process (the job's python, a second after the job began).
    CPU time and max RSS come from the kernel's accounting of this process and its waited-for children (the
    engine and its workers): the figures Slurm's accounting (sacct's TotalCPU, seff) reports for the job step,
    available whether or not the site runs an accounting database. CPU efficiency = CPU time / (elapsed time x
    CPUs allocated on the node).
    """
    import psutil

    now = time.time() if now is None else now
    # This process starts a second after the job (Slurm's own StartTime is not usable: a requeue resets it).
    elapsed = max(now - psutil.Process().create_time(), 1e-3)
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    cpus = int(os.environ.get("SLURM_CPUS_ON_NODE") or os.environ.get("SLURM_CPUS_PER_TASK") or 1)
    metrics = {
        "slurm/elapsed_s": elapsed,
        "slurm/cpu_time_s": cpu_s,
        "slurm/cpu_efficiency": cpu_s / (elapsed * cpus),
        "slurm/max_rss_mb": max(own.ru_maxrss, kids.ru_maxrss) / 1024,  # ru_maxrss is in KiB on Linux
    }
    tags = {
        "slurm.job_id": os.environ.get("SLURM_JOB_ID", ""),  # as hsbcala.tracking tags it (array task: slurm.array)
        "slurm.node": os.environ.get("SLURMD_NODENAME", ""),
        "slurm.cpus": str(cpus),
        "slurm.restarts": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }
    return metrics, tags


def log_accounting(cfg: Any, launches_before: int) -> None:
    """Log this job's figures to the run it trained (one point per job of a requeued chain); never raises."""
    try:
        from hsbcala import checkpoints

        state = checkpoints.load_state(Path(cfg.model_dir).resolve())
        if state is None or not state.run_id or len(state.history) <= launches_before:
            return  # this job trained nothing (refused, or the model had finished)
        metrics, tags = job_figures()
        from mlflow import MlflowClient
        from mlflow.entities import Metric, RunTag

        step = int(tags["slurm.restarts"] or 0)
        ts = int(time.time() * 1000)
        MlflowClient(tracking_uri=state.tracking_uri).log_batch(
            state.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()])
        say(f"Slurm job {job_id()} on {tags['slurm.node']}: {metrics['slurm/elapsed_s']:.0f} s, CPU "
            f"efficiency {metrics['slurm/cpu_efficiency']:.0%}, max RSS {metrics['slurm/max_rss_mb']:.0f} MB")
    except Exception as exc:  # accounting must never hide how the training ended
        say(f"warning: could not log the Slurm job's accounting: {str(exc).splitlines()[0] if str(exc) else exc!r}")


# --- on the login node: preview, submission, waiting, reports -----------------------------------------------------
def sbatch_params(launcher: dict) -> dict:
    """The launcher's settings (hydra.launcher.*) as the sbatch parameters submitit makes of them."""
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem

    names = SlurmExecutor._equivalence_dict()
    out = {}
    for key, value in launcher.items():
        if key in ("_target_", "submitit_folder", "max_num_timeout") or value is None:
            continue
        key = names.get(key, key)
        out[key] = _convert_mem(value) if key == "mem" else value
    return out


def sbatch_preview(launcher: dict, n_jobs: int, note: str | None = None) -> str:
    """The sbatch script submitit would submit (rendered by submitit itself) and what happens on walltime."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = str(launcher["submitit_folder"])
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)])
    text = _make_sbatch_string(command=command, folder=folder, map_count=n_jobs if n_jobs > 1 else None,
                               **sbatch_params(launcher))
    what = f"{n_jobs} jobs as one job array" if n_jobs > 1 else "1 job"
    requeue = int(launcher.get("max_num_timeout") or 0)
    head = [f"# dry run: nothing submitted. sbatch script of {what} (as submitit writes it):"]
    if note:
        head.append(f"# {note}")
    tail = [f"# on walltime: requeued up to {requeue} times, resuming from the newest checkpoint" if requeue
            else "# on walltime: not requeued (hydra.launcher.max_num_timeout=0)"]
    return "\n".join([*head, text.rstrip(), *tail])


def prepare_store(cfg: Any) -> None:
    """Create a new sqlite MLflow store here, before submitting a job array: its jobs start together and would
    race to create the store's tables (MLflow's migration fails in all but one of them). Servers need nothing."""
    from hsbcala import tracking

    uri = tracking.tracking_uri(cfg)
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists():
        return
    say(f"creating the MLflow store {uri}")
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types (sqlalchemy, permission)
        raise ConfigError(f"mlflow.tracking_uri={uri}: cannot create the tracking store: "
                          f"{str(exc).splitlines()[0]}") from None


def submit(executor: Any, fn: Any, job_params: list) -> list:
    """Submit one job per point (a job array for several) through submitit; a refusal becomes one clear line."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):  # submitit echoes sbatch's stderr; it goes into the message
            return executor.map_array(fn, *zip(*job_params))
    except (FailedJobError, FailedSubmissionError, subprocess.SubprocessError, OSError) as exc:
        lines = [x.strip() for x in f"{captured.getvalue()}\n{exc}".splitlines() if x.strip()]
        slurm_says = list(dict.fromkeys(x for x in lines if x.startswith("sbatch:"))) or lines[-1:]
        raise SubmissionError("sbatch refused the job: " + " | ".join(slurm_says)) from None


def submitted_message(jobs: Sequence[Any], executor: Any) -> str:
    ids = ", ".join(j.job_id for j in jobs) if len(jobs) <= 4 else f"{jobs[0].job_id} … {jobs[-1].job_id}"
    what = f"Slurm job {ids}" if len(jobs) == 1 else f"{len(jobs)} Slurm jobs as a job array ({ids})"
    return (f"submitted {what}; logs in {Path(str(executor.folder)).parent}. Waiting for the end (Ctrl-C stops "
            f"waiting; the jobs go on)")


def _squeue(ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, node or reason)} of the given jobs (array tasks one per line); None if squeue fails."""
    base = sorted({i.split("_")[0] for i in ids})
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%R", "-j", ",".join(base)],
                              capture_output=True, text=True, timeout=60, check=False)
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


def wait(jobs: Sequence[Any]) -> dict[str, str | None]:
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
                states = _squeue([j.job_id for j in jobs if j.job_id not in out])
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
        raise HsbcalaError(f"stopped waiting; the jobs go on (squeue -j {pending.replace(' ', ',')}; "
                           f"scancel {pending} to stop them)", exit_code=130) from None
    return out


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
    except Exception as exc:  # an error outside the Hydra job (unpickling, composing the config)
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
