"""Tracking that holds for job arrays: a 2-point array against a real ``mlflow server`` on the loopback interface.

The tasks of an array start together and both create the experiment and their runs at once; with a tracking
server (what a cluster should use: sqlite on a network file system is not safe for concurrent writers) the
second ``create_experiment`` gets "already exists" and takes the first's (:func:`hsbcala.track.store.create_experiment`).
Both runs must end FINISHED and complete: metrics, the best model and the engine log as artifacts, uploaded through
the server (``--artifacts-destination``), in the one experiment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import MlflowServer
from tests.test_slurm_train import gt, launch, state_of, submitted_ids, tiny  # noqa: F401 - gt: fixture

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 with a sqlite backend and proxied artifacts in tmp; yields its URI."""
    server = MlflowServer(tmp_path / "server").start()
    try:
        yield server.uri
    finally:
        server.stop()


def test_job_array_tracks_both_points_to_a_server(slurm_cluster, tmp_path, gt, mlflow_server):  # noqa: F811
    import mlflow

    overrides = tiny(
        tmp_path,
        gt,
        "cala2",
        **{
            "model_dir": None,
            "mlflow.tracking_uri": mlflow_server,
            "train.epochs": "1",
            "train.seed": "1,2",
        },
    )
    proc = launch(tmp_path, overrides)
    print(f"\nsubmit -> finish (2 points side by side): {proc.seconds:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = submitted_ids(proc.stderr)
    assert len(ids) == 2 and all("_" in i for i in ids), ids
    assert not (tmp_path / "mlruns.db").exists(), "a local sqlite store was used"

    c = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiments = [e for e in c.search_experiments() if e.name != "Default"]
    assert [e.name for e in experiments] == ["hsbcala-fraktur"], experiments
    runs = c.search_runs([experiments[0].experiment_id])
    model_dirs = sorted(p.parent for p in (tmp_path / "models").rglob("hsbcala-state.json"))
    assert len(model_dirs) == 2 and len(runs) == 2, (model_dirs, runs)
    assert {state_of(d)["run_id"] for d in model_dirs} == {r.info.run_id for r in runs}
    for run in runs:
        assert run.info.status == "FINISHED", run.info
        assert {"best_val_cer", "wall_time_s"} <= set(run.data.metrics), run.data.metrics
        assert 0 <= run.data.metrics["best_val_cer"] <= 2 and run.data.metrics["wall_time_s"] > 0
        assert run.data.tags.get("slurm.array") in ids
        model = c.list_artifacts(run.info.run_id, "model")
        assert model, f"no model/ artifacts in run {run.info.run_id}"
        logs = {a.path for a in c.list_artifacts(run.info.run_id, "logs")}
        assert "logs/engine.log" in logs, logs
        engine_log = Path(
            c.download_artifacts(run.info.run_id, "logs/engine.log", str(tmp_path / run.info.run_id))
        )
        assert engine_log.stat().st_size > 0
    # the artifacts went through the server into its --artifacts-destination
    assert len(list((tmp_path / "server" / "art").rglob("engine.log"))) == 2
