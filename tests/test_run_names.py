"""Issue 22, items 1 and 2 without a store: the run's MLflow name says which model directory and when; the
metrics as the run shows them (stage from 1, val_cer_log10); the UI links open the model-training view."""

from __future__ import annotations

import datetime
import math

from hsbcala.track.info import for_mlflow, training_run_name, ui_url
from tests.conftest import compose_cfg


def test_two_runs_of_one_config_are_named_apart_by_model_dir_and_time():
    t1, t2 = datetime.datetime(2025, 3, 1, 9, 5), datetime.datetime(2025, 3, 1, 14, 30)
    a = compose_cfg(["model_dir=/m/hsbfraktur.cala2.demo"])
    b = compose_cfg(["model_dir=/m/hsbfraktur.cala2.demo-again"])
    assert training_run_name(a, t1) == "hsbfraktur.cala2.demo-20250301-0905"
    assert training_run_name(a, t2) == "hsbfraktur.cala2.demo-20250301-1430"
    assert training_run_name(b, t1) == "hsbfraktur.cala2.demo-again-20250301-0905"
    # a name given on the command line is kept as given
    assert training_run_name(compose_cfg(["mlflow.run_name=mine"]), t1) == "mine"


def test_metrics_count_stages_from_one_and_carry_the_cer_on_a_log_scale():
    shown = for_mlflow({"stage": 0.0, "val_cer": 0.01, "train_cer": 0.2})
    assert shown["stage"] == 1.0 and shown["train_cer"] == 0.2
    assert math.isclose(shown["val_cer_log10"], -2.0)
    assert for_mlflow({"val_cer": 0.0})["val_cer_log10"] == -4.0  # finite: MLflow refuses -inf
    assert "val_cer_log10" not in for_mlflow({"train_cer": 0.3})


def test_ui_links_ask_for_the_model_training_view():
    assert ui_url("http://h:5000/", "3") == "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert ui_url("http://h:5000", "3", "ab") == (
        "http://h:5000/#/experiments/3/runs/ab?workflowType=machine_learning"
    )
