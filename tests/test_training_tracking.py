"""What a training run tells MLflow besides its metrics (issue 12, item 5): the pure parts, without a store.

The real store is exercised by the tiny trainings in tests/test_train_integration.py (epoch steps for both
versions, the experiment's training view, the dataset inputs, the logged model, no step-0 best_val_cer)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hsbcala.config.sweeps import point_label, short_keys
from hsbcala.track import info as trackinfo
from tests.conftest import compose_cfg


def test_sweep_run_labels_are_short_and_keep_points_apart():
    assert short_keys(["train.batch_size", "train.seed"]) == {
        "train.batch_size": "batch_size",
        "train.seed": "seed",
    }
    # a key ending in a section's name keeps its section; two keys ending alike keep what tells them apart
    assert short_keys(["data.train", "train.learning_rate"])["data.train"] == "data.train"
    assert short_keys(["a.x.model", "b.y.model"]) == {"a.x.model": "x.model", "b.y.model": "y.model"}
    keys = ["data.train", "train.batch_size"]
    one = point_label(["train.batch_size=32", "data.train=[/gt/book-a/*.png]", "mlflow.run_name=x"], keys)
    two = point_label(["train.batch_size=32", "data.train=[/gt/book-b/*.png]"], keys)
    assert one.startswith("data.train=book-a-") and one.endswith(",batch_size=32") and "/" not in one
    assert one[:18] != two[:18]  # distinct early: the UI cuts long names at the end


def test_run_name_of_a_sweep_point_is_its_short_label(tmp_path):
    """A point of ``-m train.batch_size=16,32 train.seed=3``: the run is named after what the sweep varies."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, read_write

    cfg = compose_cfg(["train.batch_size=32", "train.seed=3", f"hydra.sweep.dir={tmp_path}"], hydra_node=True)
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["train.batch_size=16,32", "train.seed=3"]}}},
        tmp_path / "multirun.yaml",
    )
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        assert cfg.mlflow.run_name == "fraktur-cala2-batch_size=32"
        assert cfg.model_dir.endswith(".demo@train.batch_size=32")  # beside the model; keeps the whole key
    finally:
        HydraConfig.instance().cfg = None


def test_single_run_name_has_no_label():
    assert compose_cfg([]).mlflow.run_name == "fraktur-cala2"


def test_run_note_says_script_version_data_and_warm_start():
    cfg = compose_cfg(["version=cala1", "data.train=[/gt/hsb/*.png]", "data.val=null", "train.network=null"])
    totals = {"train": {"lines": 400}, "val": {"lines": 60}, "dropped": 2}
    note = trackinfo.run_note(
        cfg,
        totals=totals,
        content_sha256="abcdef0123456789",
        warmstart=Path("/p/pretrained/x/0.ckpt.json"),
        model_dir=Path("/m/hsbfraktur.cala1"),
    )
    assert "**fraktur**" in note and "cala1" in note and "calamari-ocr==1.0.7" in note
    assert (
        "400 training lines, 60 validation lines" in note and "abcdef012345" in note and "2 dropped" in note
    )
    assert "`/gt/hsb/*.png`" in note and "split by document" in note
    assert "warm start: `/p/pretrained/x/0.ckpt.json`" in note and "warm-start model's" in note
    scratch = trackinfo.run_note(cfg, totals=None, content_sha256=None, warmstart=None)
    assert "from scratch" in scratch and "Calamari's default" in scratch


def test_dataset_rows_and_digests_are_per_split():
    manifest = {
        "lines": [
            {"image": "/a/1.png", "text": "abc", "split": "train", "image_sha256": "1", "gt_sha256": "2"},
            {"image": "/a/2.png", "text": "de", "split": "train", "image_sha256": "3", "gt_sha256": "4"},
            {"image": "/a/3.png", "text": "f", "split": "val", "image_sha256": "5", "gt_sha256": "6"},
        ]
    }
    rows = trackinfo.dataset_rows(manifest, "train")
    assert [r["image"] for r in rows] == ["/a/1.png", "/a/2.png"] and rows[0]["chars"] == 3.0
    assert len(trackinfo.dataset_rows(manifest, "val")) == 1
    d = trackinfo.split_digest(manifest, "train")
    assert len(d) == 16 and d != trackinfo.split_digest(manifest, "val")
    moved = {"lines": [dict(r, image="/elsewhere" + r["image"]) for r in manifest["lines"]]}
    assert trackinfo.split_digest(moved, "train") == d  # where the lines lie does not change the data


def test_job_usage_counts_the_children_cpu_and_memory():
    """A busy child process: its CPU and memory show in system/job/*, which sums this process and its descendants."""
    child = subprocess.Popen([sys.executable, "-c", "x = bytearray(80 * 2**20)\nwhile True: pass"])
    try:
        usage = trackinfo.JobUsage(os.getpid())
        first = usage.sample()
        assert "system/job/cpu_cores_used" not in first  # CPU needs two samples
        time.sleep(1.5)
        second = usage.sample()
        assert second["system/job/processes"] >= 2
        assert second["system/job/memory_rss_megabytes"] > 80
        assert second["system/job/cpu_cores_used"] > 0.3, second
        assert 0 < second["system/job/cpu_utilization_percentage"] <= 100
    finally:
        child.kill()
        child.wait()


def test_tracker_puts_final_figures_at_the_last_epoch_and_opens_the_training_view(tmp_path):
    """A real sqlite store, no engine: a curve that ends with the final best gets no second point, none at step
    0; the experiment carries MLflow's training-view tag; the job's own resources are sampled."""
    import mlflow

    from hsbcala.track import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = compose_cfg(
        [f"paths.root={tmp_path}", f"mlflow.tracking_uri={uri}", "mlflow.system_metrics_interval_s=0.5"]
    )
    t = tracking.Tracker(cfg, None, tags={"script": "fraktur"}, params={})
    t.log(1, {"val_cer": 0.5, "best_val_cer": 0.5, "stage": 0.0})
    t.log(2, {"val_cer": 0.6, "best_val_cer": 0.5, "stage": 0.0})
    time.sleep(1.5)  # a few job samples
    t.log_final({"best_val_cer": 0.5, "wall_time_s": 12.0, "best_val_cer_stage1": None})
    t.end("FINISHED")
    c = mlflow.MlflowClient(tracking_uri=uri)
    best = [(m.step, m.value) for m in c.get_metric_history(t.run_id, "best_val_cer")]
    assert best == [(1, 0.5), (2, 0.5)]
    assert [(m.step, m.value) for m in c.get_metric_history(t.run_id, "wall_time_s")] == [(2, 12.0)]
    run = c.get_run(t.run_id)
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.metrics["system/job/memory_rss_megabytes"] > 10
    assert c.get_metric_history(t.run_id, "system/job/cpu_cores_used"), "the job's CPU was not sampled"


def test_the_demos_model_is_logged_although_its_run_name_has_dots(tmp_path, capsys):
    """The demo's model directory is ``hsbfraktur.cala2.demo`` and the run is named after it; MLflow 3 refuses
    dots in a logged model's name. The model is logged under the name with dashes, and tracking stays whole."""
    import mlflow

    from hsbcala.track import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    cfg = compose_cfg(
        [
            f"paths.root={tmp_path}",
            f"mlflow.tracking_uri={uri}",
            f"model_dir={tmp_path / 'hsbfraktur.cala2.demo'}",
            "mlflow.system_metrics=false",
        ]
    )
    best = tmp_path / "best.ckpt.json"
    best.write_text("{}")
    t = tracking.Tracker(cfg, None, tags={"script": "fraktur"}, params={})
    assert t.run.info.run_name.startswith("hsbfraktur.cala2.demo-")
    t.log(1, {"val_cer": 0.5, "best_val_cer": 0.5})
    model_id = t.log_model([best], cfg, 0.5)
    t.end("FINISHED")
    assert model_id and not t.degraded, capsys.readouterr().err
    model = mlflow.MlflowClient(tracking_uri=uri).get_logged_model(model_id)
    assert model.name == tracking.logged_model_name(t.run.info.run_name)
    assert model.name.startswith("hsbfraktur-cala2-demo-") and "." not in model.name
