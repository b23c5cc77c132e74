"""Slurm, inside the job: what runs where the training runs (the Slurm job on a compute node).

- :func:`job`, the hook around :func:`hsbcala.train.run.run`: refuse a Slurm cluster without ``-m`` outside a Slurm
  job (:func:`check_submission`), stage the GT archive to the node's RAM disk (:func:`stage`), and at the end log
  the job's accounting (:func:`job_figures`) to the MLflow run it trained and remove the staged data;
- :func:`dry_run_count`: for a dry run, the training lines the staged archive will give;
- the requeue: on the walltime signal submitit calls the launcher's ``checkpoint()`` (:func:`note_requeue`), runs
  ``scontrol requeue`` and raises ``SystemExit`` in the main thread; :mod:`hsbcala.train.run` stops the engine and
  ends the MLflow run KILLED; the requeued job runs the same Hydra job again, which resumes from the newest
  checkpoint and re-opens the MLflow run named in ``hsbcala-state.json``. With no requeue left,
  :func:`guard_last_timeout` makes the walltime an interruption (run KILLED, resumable), not a failure.

The login node's side (preview, submission, waiting, reports) is :mod:`hsbcala.slurm.launch`; the MLflow calls
are :func:`hsbcala.track.store.log_accounting`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import resource
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, DataError
from hsbcala.core.fsutil import atomic_write_json, locked, read_json
from hsbcala.data.archives import Limits, extract
from hsbcala.modeldir import process_alive

STAGE_STAMP = ".hsbcala-stage.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# --- the requeue under way -----------------------------------------------------------------------------------------
_requeue = False


def note_requeue() -> None:
    """Called from the launcher's ``checkpoint()``: submitit is about to requeue this job."""
    global _requeue
    _requeue = True


def requeue_under_way() -> bool:
    return _requeue


def guard_last_timeout() -> None:
    """When the walltime comes and no requeue is left, stop as interrupted (run KILLED, resumable).

    submitit's handler of the walltime signal raises ``UncompletedJobError`` then, which would end the MLflow run
    FAILED; this wraps that handler (installed by submitit before the job function runs).
    """
    import signal

    from submitit import JobEnvironment
    from submitit.core.utils import UncompletedJobError

    from hsbcala.core.errors import Interrupted

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
            raise Interrupted(
                f"walltime reached and not requeued ({exc}); the last checkpoint is kept: run the "
                f"same command again to resume, with a larger hydra.launcher.max_num_timeout "
                f"to let it go on by itself"
            ) from None
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


# --- the hook around hsbcala.train.run.run ---------------------------------------------------------------------------
@contextlib.contextmanager
def job(cfg: Any) -> Iterator[None]:
    """Around one run: refuse a Slurm cluster without -m, stage the data; at the end accounting and clean-up."""
    check_submission(cfg)
    if cfg.dry_run:
        if cfg.cluster.stage.archive and not _unpacked(cfg):
            say(f"dry run: the job would unpack {cfg.cluster.stage.archive} to {cfg.cluster.stage.dir}")
        yield
        return
    launches = _launches(cfg)  # first: a damaged state file is refused before any data is staged
    staged = stage(cfg)
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
        from hsbcala.slurm.launch import sbatch_preview

        print(
            sbatch_preview(
                OmegaConf.to_container(HydraConfig.get().launcher, resolve=True),
                n_jobs=1,
                note="add -m to submit it: Hydra runs its launcher only in multirun mode",
            ),
            flush=True,
        )
        return
    name = cfg.cluster.name
    raise ConfigError(
        f"cluster={name} submits through Slurm, which Hydra does only with -m (multirun): run "
        f"'python train.py -m cluster={name} …'; without -m it would train here, on this node "
        f"(inside a Slurm allocation, where SLURM_JOB_ID is set, it runs in place)"
    )


# --- data staging --------------------------------------------------------------------------------------------------
def _lock(target: Path) -> Path:
    """The lock file of a staging directory (beside it: the directory itself is replaced when unpacking)."""
    return target.parent / f".{target.name}.lock"


@dataclass
class Staged:
    dir: Path
    cleanup: bool

    def release(self) -> None:
        """This job is done with the data: remove it unless another job on this node still uses it."""
        with locked(_lock(self.dir)):
            stamp = read_json(self.dir / STAGE_STAMP)
            users = [p for p in stamp.get("users", []) if p != os.getpid() and process_alive(p)]
            if users or not self.cleanup:
                if stamp:
                    stamp["users"] = users
                    atomic_write_json(self.dir / STAGE_STAMP, stamp)
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
    stamp = read_json(Path(cfg.cluster.stage.dir) / STAGE_STAMP)
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
    with locked(_lock(target)):
        stamp = read_json(target / STAGE_STAMP)
        users = [p for p in stamp.get("users", []) if process_alive(p)]
        if stamp and all(stamp.get(k) == v for k, v in ident.items()):
            say(f"{archive.name} is already unpacked in {target}")
        else:
            if users:
                raise DataError(
                    f"cluster.stage.dir {target} holds {stamp.get('archive')}, in use by process(es) "
                    f"{users} on this node; set cluster.stage.dir to another directory"
                )
            t0 = time.monotonic()
            _unpack(archive, target, Limits.of(cfg.data))
            say(f"unpacked {archive} to {target} in {time.monotonic() - t0:.1f} s")
            users = []
        atomic_write_json(target / STAGE_STAMP, {**ident, "users": [*users, os.getpid()]})
    return Staged(target, bool(s.cleanup))


def _unpack(archive: Path, target: Path, caps: Limits) -> None:
    """Unpack into a temporary sibling, then rename: as the data step unpacks GT archives (safe members only, and
    the data.archive_max_bytes/_ratio caps checked on the headers before anything is written to the RAM disk)."""
    tmp = target.parent / f".{target.name}.unpacking-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        extract(archive, tmp, "cluster.stage.archive", caps)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def staged_elsewhere(cfg: Any) -> bool:
    """Whether the job stages an archive that is not unpacked on this node (its data.* point there)."""
    return bool(cfg.cluster.stage.archive) and not _unpacked(cfg)


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


# --- accounting at the end of each job ------------------------------------------------------------------------------
def _launches(cfg: Any) -> int:
    from hsbcala import modeldir

    state = modeldir.load_state(Path(cfg.model_dir).resolve())
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
        "slurm.job_id": os.environ.get(
            "SLURM_JOB_ID", ""
        ),  # as hsbcala.track.tracking tags it (array task: slurm.array)
        "slurm.node": os.environ.get("SLURMD_NODENAME", ""),
        "slurm.cpus": str(cpus),
        "slurm.restarts": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }
    return metrics, tags


def log_accounting(cfg: Any, launches_before: int) -> None:
    """Log this job's figures to the run it trained (one point per job of a requeued chain); never raises."""
    try:
        from hsbcala import modeldir
        from hsbcala.track import info as trackinfo
        from hsbcala.track import store

        state = modeldir.load_state(Path(cfg.model_dir).resolve())
        if state is None or not state.run_id or len(state.history) <= launches_before:
            return  # this job trained nothing (refused, or the model had finished)
        metrics, tags = job_figures()
        store.log_accounting(
            trackinfo.tracking_uri(cfg), state.run_id, metrics, tags, step=int(tags["slurm.restarts"] or 0)
        )
        say(
            f"Slurm job {job_id()} on {tags['slurm.node']}: {metrics['slurm/elapsed_s']:.0f} s, CPU "
            f"efficiency {metrics['slurm/cpu_efficiency']:.0%}, max RSS {metrics['slurm/max_rss_mb']:.0f} MB"
        )
    except Exception as exc:  # noqa: BLE001 - accounting must never hide how the training ended; said
        from hsbcala.core.console import swallowed
        from hsbcala.core.errors import HsbcalaError

        expected: tuple[type[BaseException], ...] = (OSError, HsbcalaError)  # /proc, a damaged state file
        with contextlib.suppress(ImportError):  # the store's own errors (mlflow may be what failed to import)
            from hsbcala.track import store

            expected += store.store_errors()
        swallowed("logging the Slurm job's accounting to MLflow", exc, expected)
