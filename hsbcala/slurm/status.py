"""How a sweep or a training is doing: ``python -m hsbcala.slurm.status [--json] [--no-mlflow] SWEEP_DIR | MODEL_DIR …``.

One row per point (a Slurm sweep directory: per job in its ``hsbcala-submitted.json``, written by the Slurm launcher
whether it waits or not; a local sweep directory ``multirun/<date>/<time>``: per job folder's
``hsbcala-point.json``, written by :class:`SweepSummary` as each point starts; a model directory: its one training;
a folder of model directories such as ``models/``: each of them), from what is there without asking anyone:

- the Slurm state: ``squeue`` (which shows an ended job for MinJobAge), else ``sacct`` where the site keeps
  accounting, else ``ended`` with submitit's result file (``finished``, ``failed`` or ``no result``);
- requeues so far: the launches of the newest Slurm job in ``hsbcala-state.json``'s history, minus one;
- the newest checkpoint's stage and epoch (Calamari 2) or iteration (Calamari 1), and its age;
- the best validation CER, the MLflow run's name and how long the training ran: ``hsbcala-state.json`` (its best
  CER so far, written at each improvement; per launch the run's name and wall time). MLflow is asked only for
  the rows whose state was written before launches kept these (2026-12-07): one batched search per store for
  them (:func:`hsbcala.track.store.runs_by_id`), not one question per row; mlflow is not even imported when
  the directories answer (its import and a store's set-up cost ~3 s, ``bench/status_speed.py``);
  ``--no-mlflow`` never asks;
- the owner record (``.hsbcala-owner.json``, :mod:`hsbcala.modeldir`): a live launch, or one that died and left it;
- for a failed job: its stderr's path and last line (its ``hsbcala: error:`` line where there is one).

It works while the jobs run, after they end, and without Slurm at all (model directories). Plain text, or JSON
with ``--json``. Exit 0; 2 when an argument is none of these. A local ``-m`` ends with this table of its points.
"""

from __future__ import annotations

import argparse
import json
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from hsbcala import engines, modeldir
from hsbcala.core import fsutil
from hsbcala.core.console import warn
from hsbcala.core.errors import ConfigError, clean_exit
from hsbcala.core.fsutil import atomic_write_json
from hsbcala.slurm import launch

POINT_FILE = "hsbcala-point.json"  # in a local sweep's job folder: the point's model directory (SweepSummary)


@dataclass
class Row:
    point: str
    model_dir: str
    job_id: str | None = None
    slurm: str = "-"  # Slurm's state, "ended" (no Slurm record left) or "-" (no job)
    outcome: str | None = None  # finished | failed | no result (submitit's result file), None: not ended
    requeues: int | None = None
    training: str | None = None  # hsbcala-state.json's status: training | finished
    stage: int | None = None
    position: int | None = None
    unit: str | None = None  # epoch | iteration
    checkpoint_age_s: float | None = None
    best_val_cer: float | None = None
    run: str | None = None  # the MLflow run's name
    run_id: str | None = None
    run_seconds: float | None = None  # how long the run ran (so far)
    owner: str = "-"  # alive | stale | - (no record)
    owner_detail: str | None = None
    log: str | None = None  # a failed job's stderr
    last_line: str | None = None
    overrides: list[str] = field(default_factory=list)


# --- Slurm ---------------------------------------------------------------------------------------------------------
def sacct_states(ids: list[str]) -> dict[str, str]:
    """{job id: state} from Slurm's accounting; {} where the site keeps none (the local test cluster)."""
    if not ids:
        return {}
    try:
        proc = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted(set(ids)))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 2 and parts[0]:
            out[parts[0]] = parts[1].split()[0]  # "CANCELLED by 0" → CANCELLED
    return out


def result_outcome(result_file: Path) -> str | None:
    """submitit's result of a job: finished | failed, or None while there is none."""
    from hydra.core.utils import JobStatus

    try:
        with open(result_file, "rb") as f:
            kind, value = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - unpickling runs the pickled classes' code: any error is possible
        # unreadable (cut short, or of another version of hydra/submitit/hsbcala): shown as failed, and why
        warn(
            f"submitit's result {result_file} cannot be read ({type(exc).__name__}: {exc}); the job is shown as failed"
        )
        return "failed"
    if kind != "success":
        return "failed"
    ret = value[0] if isinstance(value, list) and value else value
    return "failed" if getattr(ret, "status", None) == JobStatus.FAILED else "finished"


# --- the model directory ------------------------------------------------------------------------------------------
def owner_liveness(path: Path) -> tuple[str, str | None]:
    """("alive" | "stale" | "-", detail) of the owner record a launch keeps in ``path`` while it trains."""
    rec = fsutil.read_json(Path(path) / modeldir.OWNER_FILE)
    if not rec:
        return "-", None
    age = time.time() - float(rec.get("heartbeat") or 0)
    job = f", Slurm job {rec['slurm_job_id']}" if rec.get("slurm_job_id") else ""
    detail = f"pid {rec.get('pid')} on {rec.get('host')}{job}, heartbeat {age:.0f} s ago"
    if rec.get("host") == socket.gethostname():
        alive = modeldir.process_alive(rec.get("pid")) or modeldir.process_alive(rec.get("engine_pid"))
    else:
        alive = age < modeldir.STALE_S
    return ("alive" if alive else "stale"), detail


def fill_from_model_dir(row: Row, version: str | None) -> None:
    """What the model directory says: hsbcala's state, the newest checkpoint, the owner record, MLflow."""
    path = Path(row.model_dir)
    if not path.is_dir():
        return
    state = modeldir.load_state(path)
    version = (state.version if state else None) or version or modeldir.detect_version(path)
    if state is not None:
        row.training = state.status
        row.best_val_cer = state.best_val_cer
        jobs = [h.get("slurm_job_id") for h in state.history]
        if row.job_id is None and jobs and jobs[-1]:
            row.job_id = jobs[-1]
        if jobs and jobs[-1]:  # a requeue starts the same job again: another launch with the same id
            same = 0
            for j in reversed(jobs):
                if j != jobs[-1]:
                    break
                same += 1
            row.requeues = same - 1
    if version in engines.NAMES:
        engine = engines.get(version)
        ckpt = engine.latest_checkpoint(path)
        if ckpt is not None:
            row.stage, row.position = engine.checkpoint_key(ckpt)
            row.unit = engine.position
            try:
                row.checkpoint_age_s = time.time() - engine.record(ckpt).stat().st_mtime
            except OSError:
                pass
    row.owner, row.owner_detail = owner_liveness(path)
    if state is not None and state.run_id:
        row.run_id = state.run_id
        row._uri = state.tracking_uri  # not a field: JSON output never shows a URI's credentials
        names = [h["run_name"] for h in state.history if h.get("run_name")]
        row.run = names[-1] if names else None  # None: a state from before launches kept it (MLflow knows)
        row.run_seconds = _trained_seconds(state.history, row.owner == "alive")


def _trained_seconds(history: list[dict], running: bool) -> float | None:
    """The launches' wall time (the state's ``wall_time_s`` of each ended launch), plus the running one's time so
    far; None when no launch recorded any."""
    total, known = 0.0, False
    for i, launch_ in enumerate(history):
        if launch_.get("wall_time_s") is not None:
            total, known = total + float(launch_["wall_time_s"]), True
        elif running and i == len(history) - 1 and launch_.get("started"):
            try:  # written with time.strftime: local time, like time.mktime reads it
                started = time.mktime(time.strptime(launch_["started"], "%Y-%m-%dT%H:%M:%S"))
            except (TypeError, ValueError):
                continue
            total, known = total + max(0.0, time.time() - started), True
    return total if known else None


def _needs_mlflow(row: Row) -> bool:
    """Whether the model directory leaves the row to MLflow: a state written before launches recorded their run's
    name and their best CER at each improvement (2026-12-07); a later state is the whole answer (no best CER in it
    yet: none in the run either)."""
    return bool(row.run_id and getattr(row, "_uri", None)) and row.run is None


def fill_from_mlflow(rows: list[Row]) -> None:
    """For the rows whose model directory does not answer (:func:`_needs_mlflow`): the run's name, its duration and
    (while a launch runs) the best val_cer so far, in one batched search per store; MLflow is imported only then."""
    stores: dict[str, list[Row]] = {}
    for r in rows:
        if _needs_mlflow(r):
            stores.setdefault(r._uri, []).append(r)
    if not stores:
        return
    from hsbcala.track import store  # (imports mlflow: seconds)

    now = time.time() * 1000
    for uri, some in stores.items():
        runs = store.runs_by_id(uri, [r.run_id for r in some])
        for r in some:
            run = runs.get(r.run_id)
            if run is None:
                continue
            r.run = r.run or run.info.run_name
            if r.run_seconds is None:  # the state's launch times, where it has them: the time spent training
                r.run_seconds = ((run.info.end_time or now) - run.info.start_time) / 1000
            best = run.data.metrics.get("best_val_cer")  # its latest value is the best so far
            if r.best_val_cer is None and best is not None and r.training != "finished":
                r.best_val_cer = best  # while the launch runs (the state has it once a launch ends)


# --- rows -----------------------------------------------------------------------------------------------------------
def _point_names(jobs: list[dict]) -> list[str]:
    """Each point by the overrides that differ between the points; a single point by its model directory's name."""
    if len(jobs) < 2:
        return [Path(j.get("model_dir", "")).name or "-" for j in jobs]
    sets = [set(j.get("overrides", [])) for j in jobs]
    common = set.intersection(*sets)
    return [" ".join(o for o in j.get("overrides", []) if o not in common) or "-" for j in jobs]


def sweep_rows(sweep_dir: Path) -> list[Row]:
    record = fsutil.read_json(Path(sweep_dir) / launch.RECORD)
    jobs = record.get("jobs") or []
    ids = [j["job_id"] for j in jobs]
    queue = launch.squeue(ids) or {}
    accounted = sacct_states([i for i in ids if i not in queue])
    rows = []
    for job, name in zip(jobs, _point_names(jobs)):
        row = Row(point=name, model_dir=job.get("model_dir", ""), job_id=job["job_id"])
        row.overrides = list(job.get("overrides", []))
        outcome = result_outcome(Path(job["result"])) if job.get("result") else None
        if job["job_id"] in queue:
            row.slurm = queue[job["job_id"]][0]
        elif job["job_id"] in accounted:
            row.slurm = accounted[job["job_id"]]
        else:
            row.slurm = "ended"  # neither squeue nor accounting knows it any more
        ended = row.slurm == "ended" or row.slurm in launch.TERMINAL
        if outcome is not None:
            row.outcome = outcome
        elif ended:
            row.outcome = "no result"
        fill_from_model_dir(row, job.get("version"))
        row.job_id = job["job_id"]  # the array task's id as submitted (the state records the task's own id)
        if row.outcome in ("failed", "no result") or row.slurm in launch.TERMINAL - {"COMPLETED"}:
            row.log = job.get("stderr")
            row.last_line = last_line(Path(row.log)) if row.log else None
        rows.append(row)
    return rows


def local_sweep_rows(sweep_dir: Path) -> list[Row]:
    """A local multirun's points, in job order, from the ``hsbcala-point.json`` each job folder holds."""
    files = sorted(Path(sweep_dir).glob(f"*/{POINT_FILE}"), key=lambda f: (len(f.parent.name), f.parent.name))
    jobs = [fsutil.read_json(f) for f in files]
    rows = []
    for job, name in zip(jobs, _point_names(jobs)):
        # the sweep's own name of the point (models/<model>@<name>, hsbcala.config.sweeps): no paths verbatim
        name = Path(job.get("model_dir", "")).name.partition("@")[2] or name
        row = Row(point=name, model_dir=job.get("model_dir", ""), overrides=list(job.get("overrides", [])))
        fill_from_model_dir(row, job.get("version"))
        rows.append(row)
    return rows


def model_dir_row(path: Path) -> Row:
    row = Row(point=path.name, model_dir=str(path.resolve()))
    fill_from_model_dir(row, None)
    if row.job_id:
        queue = launch.squeue([row.job_id]) or {}
        state = queue.get(row.job_id, (None, None))[0] or sacct_states([row.job_id]).get(row.job_id)
        row.slurm = state or "ended"
    return row


def last_line(log: Path) -> str | None:
    """A failed job's last word: its ``hsbcala: error:`` line if it wrote one, else its last line."""
    tail = launch._tail(log, 200)
    errors = [x for x in tail if x.startswith("hsbcala: error: ")]
    return (errors or tail or [None])[-1]


def rows_for(paths: list[str], *, use_mlflow: bool = True) -> list[Row]:
    rows: list[Row] = []
    for arg in paths:
        p = Path(arg)
        if (p / launch.RECORD).is_file():
            rows += sweep_rows(p)
        elif (p / modeldir.STATE_FILE).is_file():
            rows.append(model_dir_row(p))
        elif any(p.glob(f"*/{POINT_FILE}")):
            rows += local_sweep_rows(p)
        elif models := sorted(d for d in p.glob(f"*/{modeldir.STATE_FILE}")):
            rows += [model_dir_row(m.parent) for m in models]  # a folder of model directories (models/)
        else:
            raise ConfigError(
                f"{arg}: neither a sweep directory (no {launch.RECORD}, no */{POINT_FILE}), a model directory (no "
                f"{modeldir.STATE_FILE} yet) nor a folder of model directories"
            )
    if use_mlflow:
        fill_from_mlflow(rows)
    return rows


# --- output ---------------------------------------------------------------------------------------------------------
def _age(s: float | None) -> str:
    if s is None:
        return "-"
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(max(0.0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def table(rows: list[Row]) -> str:
    head = ["point", "job", "slurm", "requeues", "training", "checkpoint", "age", "best CER", "time", "run",
            "owner"]  # fmt: skip
    body = []
    for r in rows:
        slurm = r.slurm + (f" ({r.outcome})" if r.outcome else "")
        ckpt = f"stage {r.stage + 1} {r.unit} {r.position}" if r.stage is not None else "-"
        body.append(
            [
                r.point,
                r.job_id or "-",
                slurm,
                "-" if r.requeues is None else str(r.requeues),
                r.training or "-",
                ckpt,
                _age(r.checkpoint_age_s),
                "-" if r.best_val_cer is None else f"{r.best_val_cer:.4f}",
                _duration(r.run_seconds),
                r.run or "-",
                r.owner,
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body]]
    for r in rows:
        if r.log:
            lines.append(f"job {r.job_id} failed: {r.last_line or '(its log is empty)'}")
            lines.append(f"  log: {r.log}")
        if r.owner == "stale":
            lines.append(
                f"{r.model_dir}: owner record of a launch that died ({r.owner_detail}); the next launch resumes"
            )
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: each multirun job records its point (model directory, version, overrides) in its job folder
    as it starts, so ``status`` reads a local sweep folder; a local ``-m`` (its jobs ran in this process) ends with
    the status table of its points. Jobs run by the Slurm launcher record theirs on the node and print nothing
    here: ``hsbcala-submitted.json`` already lists them."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN or config.get("dry_run"):
            return
        self.sweep_dir = Path(str(hc.sweep.dir)).resolve()
        point = {
            "model_dir": str(Path(str(config.model_dir)).resolve()),
            "version": str(config.version.name),
            "overrides": list(hc.overrides.task),
        }
        atomic_write_json(Path(str(hc.runtime.output_dir)) / POINT_FILE, point)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self.sweep_dir is None or (self.sweep_dir / launch.RECORD).exists():
            return
        rows = local_sweep_rows(self.sweep_dir)
        fill_from_mlflow(rows)
        print(table(rows), flush=True)
        print(f"later: {sys.executable} -m hsbcala.slurm.status {self.sweep_dir}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hsbcala.slurm.status",
        description="How the points of a sweep (its directory) or trainings (their model directories) are doing.",
    )
    ap.add_argument("paths", nargs="+", metavar="SWEEP_DIR|MODEL_DIR")
    ap.add_argument("--json", action="store_true", help="one JSON list of rows, for machines")
    ap.add_argument("--no-mlflow", action="store_true", help="do not read the MLflow runs (faster)")
    args = ap.parse_args(argv)  # a bad command line: argparse's usage and exit 2
    with clean_exit():
        rows = rows_for(args.paths, use_mlflow=not args.no_mlflow)
        if args.json:
            print(json.dumps([asdict(r) for r in rows], indent=2))
        else:
            print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
