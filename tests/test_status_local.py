"""``python -m hsbcala.slurm.status`` without Slurm (issue 22, item 5): a local sweep folder, a folder of model
directories, the table a local ``-m`` ends with, and MLflow asked once per store, not once per row.

The store is a real SQLite MLflow store; the count of its questions is taken by wrapping the store's own methods
(they still answer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hsbcala.slurm import status
from tests.conftest import ROOT

N = 5


def _models_with_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    """N model directories, each with a state naming its run in one SQLite store (training, best CER so far)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("status")
    models, names = tmp_path / "models", []
    for i in range(N):
        run = client.create_run(exp, run_name=f"m{i}-20261207-1500")
        for step, cer in enumerate((0.9, 0.5 - i / 100, 0.6)):
            client.log_metric(run.info.run_id, "best_val_cer", min(0.9, 0.5 - i / 100), step=step)
            client.log_metric(run.info.run_id, "val_cer", cer, step=step)
        d = models / f"m@train.batch_size={i}"
        d.mkdir(parents=True)
        state = {"version": "cala2", "run_id": run.info.run_id, "tracking_uri": uri, "status": "training"}
        (d / "hsbcala-state.json").write_text(json.dumps(state))
        names.append(run.info.run_name)
    return models, names


def test_a_folder_of_model_dirs_asks_each_store_once(tmp_path, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    models, names = _models_with_runs(tmp_path)
    asked: list[str] = []
    for method in ("get_run", "get_metric_history", "search_runs", "search_experiments"):
        real = getattr(SqlAlchemyStore, method)

        def spy(self, *a, _real=real, _name=method, **kw):
            asked.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(SqlAlchemyStore, method, spy)
    rows = status.rows_for([str(d) for d in sorted(models.iterdir())])
    assert [r.run for r in rows] == names
    assert [r.best_val_cer for r in rows] == [0.5 - i / 100 for i in range(N)]
    assert all(r.run_seconds is not None and r.run_seconds >= 0 for r in rows)
    # one search for all rows (and one for the store's experiments), whatever the number of rows
    assert sorted(asked) == ["search_experiments", "search_runs"], asked


def _status(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable),
    }  # no Slurm commands: a machine without Slurm
    cmd = [sys.executable, "-m", "hsbcala.slurm.status", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False, env=env)


def test_status_takes_a_folder_of_model_dirs(tmp_path):
    models, names = _models_with_runs(tmp_path)
    proc = _status(str(models))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["point", "job"] and "run" in lines[0].split()
    assert len(lines) == 1 + N and all(n in line for n, line in zip(names, lines[1:])), proc.stdout
    assert _status(str(tmp_path / "nothing-here")).returncode == 2


def test_a_local_sweep_ends_with_its_status_table_and_status_reads_its_folder(tmp_path, fraktur_books):
    (a, b), (val,) = fraktur_books
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "data_check_only=true", f"paths.root={tmp_path}",
         f"data.train=[{a}/*.png],[{b}/*.png]", f"data.val=[{val}/*.png]"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    out = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("point "))
    points = [line.split()[0] for line in out[head + 1 : head + 3]]
    assert all(p.startswith("data.train=") and "/" not in p for p in points), out
    assert sorted(d.name.partition("@")[2] for d in (tmp_path / "models").iterdir()) == sorted(points)
    assert out[head + 3] == f"later: {sys.executable} -m hsbcala.slurm.status {sweep.resolve()}", out
    again = _status("--json", str(sweep))
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["point"] for r in json.loads(again.stdout)] == points


def _finished_models(tmp_path: Path) -> Path:
    """N finished model directories whose state says all the table shows (best CER, each launch's run name and
    wall time, as train/run.py writes them); their store does not even exist."""
    models = tmp_path / "models"
    for i in range(N):
        d = models / f"m@train.batch_size={i}"
        d.mkdir(parents=True)
        launches = [
            {"started": "2026-12-07T15:00:00", "run_name": f"m{i}-20261207-1500", "wall_time_s": 60.0},
            {"started": "2026-12-07T16:00:00", "run_name": f"m{i}-20261207-1500", "wall_time_s": 30.5},
        ]
        state = {"version": "cala2", "run_id": f"{i:032x}", "tracking_uri": f"sqlite:///{tmp_path / 'none.db'}",
                 "status": "finished", "best_val_cer": 0.1 + i / 100, "history": launches}  # fmt: skip
        (d / "hsbcala-state.json").write_text(json.dumps(state))
    return models


def test_status_does_not_import_mlflow_when_the_directories_answer(tmp_path):
    models = _finished_models(tmp_path)
    code = (
        "import sys, json; from hsbcala.slurm import status; rows = status.rows_for([sys.argv[1]]); "
        "print(json.dumps({'mlflow': 'mlflow' in sys.modules, 'rows': [[r.run, r.run_seconds, r.best_val_cer] "
        "for r in rows]}))"
    )
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    proc = subprocess.run([sys.executable, "-c", code, str(models)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert not out["mlflow"], "status imported mlflow although the model directories answered"
    assert out["rows"] == [[f"m{i}-20261207-1500", 90.5, 0.1 + i / 100] for i in range(N)], out
    assert not (tmp_path / "none.db").exists()  # nor created the store
