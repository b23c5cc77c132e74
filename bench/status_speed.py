"""Benchmark: ``python -m hsbcala.slurm.status`` over a folder of 20 model directories (issue 22, item 5). Prints:

    .venv/bin/python bench/status_speed.py [--dirs 20] [--repeat 5]

Builds a real SQLite MLflow store with one run per model directory (40 val_cer values each) and a state file
naming it, then times, median of ``--repeat``:
- the MLflow part as status does it now: one batched search per store (:func:`hsbcala.track.store.runs_by_id`);
- the MLflow part as it was: one ``get_metric_history`` per row (:func:`hsbcala.track.store.metric_history`);
- the whole command as a person types it (a new process: Python, MLflow's import, the store's set-up), before
  (``--before``: status.py as of that commit, which asked MLflow for every row) and now, side by side, for the
  points finished and training (the state answers: best CER so far, run name and wall time per launch; mlflow is
  not imported) and for states written by launchers before 2026-12-07 (no run name, no best CER while training:
  one batched search).
Issue 22's target: the command answers in <= 2 s. Against an MLflow server each question is a round trip, so the
per-row way grows with the rows there much more than on a local file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "1b72c66"  # the last commit before the model directories answered status (issue 22, item 5)
sys.path.insert(0, str(ROOT))


def build(root: Path, n: int) -> tuple[Path, str, list[str]]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench")
    models, ids = root / "models", []
    for i in range(n):
        run = client.create_run(exp, run_name=f"m{i}")
        now = int(time.time() * 1000)
        metrics = [Metric("val_cer", 1 / (s + 1), now, s) for s in range(40)]
        metrics += [Metric("best_val_cer", 1 / (s + 1), now, s) for s in range(40)]
        client.log_batch(run.info.run_id, metrics=metrics)
        d = models / f"m@train.batch_size={i}"
        d.mkdir(parents=True)
        # as a launcher before 2026-12-07 left it while training: neither the run's name nor the best so far
        state = {"version": "cala2", "run_id": run.info.run_id, "tracking_uri": uri, "status": "training"}
        (d / "hsbcala-state.json").write_text(json.dumps(state))
        launch = {"started": "2026-12-07T15:00:00", "run_name": f"m{i}"}
        # the same point as the launcher leaves it now, while it trains and once it has finished
        now = {**state, "best_val_cer": 0.05, "best_epoch": 39.0, "history": [launch]}
        ended = {**now, "status": "finished", "history": [{**launch, "wall_time_s": 600.0}]}
        for folder, st in (("training", now), ("finished", ended)):
            (root / folder / d.name).mkdir(parents=True)
            (root / folder / d.name / "hsbcala-state.json").write_text(json.dumps(st))
        ids.append(run.info.run_id)
    return models, uri, ids


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dirs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", default=BEFORE, help="the commit to compare with (default: %(default)s)")
    args = ap.parse_args()
    from hsbcala.track import store

    with tempfile.TemporaryDirectory() as tmp:
        models, uri, ids = build(Path(tmp), args.dirs)
        store.runs_by_id(uri, ids)  # the store's engine set up once, as in one status call
        batched = median_s(lambda: store.runs_by_id(uri, ids), args.repeat)
        per_row = median_s(lambda: [store.metric_history(uri, i, "val_cer") for i in ids], args.repeat)
        env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no Slurm: the local case
        old = (
            Path(tmp) / "before"
        )  # the package as of --before: `python -m` there imports it, not this tree's
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "hsbcala"], cwd=ROOT, check=True,
                                 capture_output=True).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(old, filter="data")

        def command(cwd: Path, folder: Path, *extra: str) -> float:
            cmd = [sys.executable, "-m", "hsbcala.slurm.status", *extra, str(folder)]
            return median_s(lambda: subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True),
                            args.repeat)  # fmt: skip

        figures = {
            what: (command(old, Path(tmp) / folder), command(ROOT, Path(tmp) / folder))
            for what, folder in (("finished points", "finished"), ("points training", "training"))
        }
        figures["older states (MLflow asked)"] = (command(old, models), command(ROOT, models))
        no = "--no-mlflow"
        figures["older states, --no-mlflow"] = (command(old, models, no), command(ROOT, models, no))
    print(f"status of {args.dirs} model directories, one SQLite store, median of {args.repeat}:")
    print(f"  MLflow, batched (2 questions)      {batched:6.3f} s")
    print(
        f"  MLflow, per row ({args.dirs} questions)     {per_row:6.3f} s   ({per_row / batched:.1f}x the batched)"
    )
    print(
        f"  whole command (target <= 2 s)      {'before':>8}  {'now':>8}  before/now  (before: {args.before})"
    )
    for what, (before, now) in figures.items():
        print(f"    {what:<30}   {before:6.3f} s  {now:6.3f} s  {before / now:9.1f}x")
    print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
