"""Real trainings through ``python train.py``: tiny Calamari models on the shared Fraktur lines, a real MLflow
store, real resume after a real SIGTERM, a real warm start with a codec change. Slow (tens of seconds each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TINY_NET = "cnn=8:3x3,pool=2x2,lstm=16"


def tiny(tmp: Path, train_books, val_books, version: str, **extra: str) -> list[str]:
    """Overrides for a tiny, fast real training isolated in ``tmp``."""
    overrides = {
        "version": version,
        "paths.root": str(tmp),
        "model_dir": str(tmp / f"model-{version}"),
        "mlflow.tracking_uri": f"sqlite:///{tmp / 'mlruns.db'}",
        "mlflow.system_metrics_interval_s": "2",
        "data.train": "[" + ",".join(f"{b}/*.png" for b in train_books) + "]",
        "data.val": "[" + ",".join(f"{b}/*.png" for b in val_books) + "]",
        "train.epochs": "2",
        "train.samples_per_epoch": "32",
        "train.batch_size": "8",
        "train.workers": "1",
        "train.augmentations": "0",
        "train.network": f"'{TINY_NET}'",  # quoted: Hydra's override grammar reserves '='
    }
    overrides.update(extra)
    return [f"{k}={v}" for k, v in overrides.items()]


def launch(overrides: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        **kw,
    )


def client(tmp: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns.db'}")


def state_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "hsbcala-state.json").read_text())


@pytest.mark.parametrize("version", ["cala2", "cala1"])
def test_tiny_training_is_tracked(tmp_path, fraktur_books, version):
    train_books, val_books = fraktur_books
    proc = launch(tiny(tmp_path, train_books, val_books, version, **{"mlflow.register": "true"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = tmp_path / f"model-{version}"
    state = state_of(model_dir)
    assert state["status"] == "finished" and state["version"] == version
    run = client(tmp_path).get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["version"] == version and run.data.tags["script"] == "fraktur"
    assert run.data.params["train.batch_size"] == "8"
    assert "best_val_cer" in run.data.metrics and 0 <= run.data.metrics["best_val_cer"] <= 2
    assert run.data.metrics["lines_per_second"] > 0 and run.data.metrics["wall_time_s"] > 0
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), run.data.metrics.keys()
    history = client(tmp_path).get_metric_history(run.info.run_id, "train_cer")
    assert history, "no per-epoch/per-check training metrics were logged"
    arts = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id, "model")}
    assert "model/best.ckpt.json" in arts
    logs = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id, "logs")}
    assert logs == {"logs/engine.log", "logs/hsbcala.log"}  # the engine's log and hsbcala's own, separate
    own = Path(
        client(tmp_path).download_artifacts(run.info.run_id, "logs/hsbcala.log", str(tmp_path / "art"))
    )
    assert "finished" in own.read_text(encoding="utf-8") and "Epoch" not in own.read_text(encoding="utf-8")
    _compares_what_matters(client(tmp_path), run, model_dir, version)
    # a finished model is not retrained
    again = launch(tiny(tmp_path, train_books, val_books, version))
    assert again.returncode == 0 and "not retraining" in again.stderr
    # ... but asked to train on other lines, it says so and fails (exit 2), it does not pretend to have trained
    other = launch(tiny(tmp_path, val_books, train_books, version))
    assert other.returncode == 2, other.stderr[-2000:]
    assert "has finished training on other data" in other.stderr and "model_dir" in other.stderr
    assert state_of(model_dir)["status"] == "finished" and state_of(model_dir)["run_id"] == run.info.run_id


def _compares_what_matters(c, run, model_dir: Path, version: str) -> None:
    """Issue 12, item 5: what the MLflow UI needs to compare the two versions (2 epochs of 32 lines, batch 8:
    Calamari 1 checks every 4 iterations)."""
    run_id = run.info.run_id
    # one x-axis: epochs for both versions (Calamari 1's iterations converted, and kept as a metric)
    val = c.get_metric_history(run_id, "val_cer")
    assert val and {m.step for m in val} <= {1, 2}, [(m.step, m.value) for m in val]
    assert {m.step for m in c.get_metric_history(run_id, "train_cer")} == {1, 2}
    if version == "cala1":
        iterations = {m.step: m.value for m in c.get_metric_history(run_id, "iteration")}
        assert iterations == {1: 4, 2: 8}, iterations
    # no step-0 point: the final best is the curve's last epoch, not a point before the first
    best = c.get_metric_history(run_id, "best_val_cer")
    assert best and min(m.step for m in best) >= 1, [(m.step, m.value) for m in best]
    assert max(best, key=lambda m: (m.step, m.timestamp)).value == run.data.metrics["best_val_cer"]
    assert all(
        m.step >= 1 for k in ("lines_per_second", "wall_time_s") for m in c.get_metric_history(run_id, k)
    )
    # the experiment opens in the model-training view
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development", exp.tags
    # the run's description and its data as dataset inputs (digest: the lines' hash; rows: the lines)
    note = run.data.tags["mlflow.note.content"]
    assert version in note and "training lines" in note and "from scratch" in note, note
    totals = json.loads((model_dir / "manifest.json").read_text())["totals"]
    inputs = {
        {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation"}, inputs
    for context, split in (("training", "train"), ("validation", "val")):
        ds = inputs[context]
        assert ds.name == f"hsbfraktur-{split}" and len(ds.digest) == 16
        assert json.loads(ds.profile)["num_rows"] == totals[split]["lines"]
    # the best model is a logged model with its files and CER, and (mlflow.register=true) a registry version
    (model,) = c.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run_id and str(model.status) in ("READY", "LoggedModelStatus.READY")
    files = {a.path for a in c.list_logged_model_artifacts(model.model_id)}
    assert "best.ckpt.json" in files, files
    assert [m.value for m in model.metrics if m.key == "best_val_cer"] == [run.data.metrics["best_val_cer"]]
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    mv = c.get_model_version("hsbfraktur", "1")
    assert mv.source == f"models:/{model.model_id}" and mv.run_id == run_id and mv.tags["version"] == version
    assert float(mv.tags["val_cer"]) == pytest.approx(run.data.metrics["best_val_cer"], abs=1e-4)
    # the job's own resources beside MLflow's machine-wide ones
    assert run.data.metrics["system/job/memory_rss_megabytes"] > 100  # the engine's TensorFlow
    assert c.get_metric_history(run_id, "system/job/cpu_cores_used"), "no job CPU samples"


def test_console_is_hsbcalas_one_line_per_epoch_and_reaches_a_file_as_written(tmp_path, fraktur_books):
    """Batch use (``python train.py … > out.log 2>&1``): hsbcala's epoch lines reach the file while the run goes
    on, and none of the engine's output does (it is in engine.log)."""
    train_books, val_books = fraktur_books
    out = tmp_path / "out.log"
    with open(out, "w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *tiny(tmp_path, train_books, val_books, "cala2", **{"train.epochs": "2"}),
            ],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": ""},
        )
        seen_while_running = False
        while proc.poll() is None:
            if "epoch 1/2" in out.read_text():
                seen_while_running = proc.poll() is None
                break
            time.sleep(0.2)
        proc.wait(timeout=900)
    text = out.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert seen_while_running, "the first epoch line reached the file only at the end"
    epochs = [x for x in text.splitlines() if x.startswith("hsbcala: stage 1/1 epoch")]
    assert [x.split()[4] for x in epochs] == ["1/2", "2/2"], epochs
    assert all(" | CER " in x and "best" in x and len(x) <= 100 for x in epochs), epochs
    assert all("left" in x for x in epochs[:-1]) and "last epoch done" in epochs[-1], epochs
    for noise in ("Results of epoch", "tensorflow", "cuDNN", "tfaip", "INFO mlflow"):
        assert noise not in text, noise
    assert "Results of epoch" in (tmp_path / "model-cala2" / "engine.log").read_text()
