"""One model directory per sweep point (issue 9): named after what the point varies, never a path verbatim,
and a sweep whose points would share a directory is refused before anything starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from hsbcala.config.sweeps import point_name, swept_keys, value_name
from tests.conftest import ROOT


def test_value_names_are_readable_distinct_and_never_paths():
    assert value_name("32") == "32"
    a, b = value_name("[/gt/book-a/*.png]"), value_name("[/gt/book-b/*.png]")
    assert a.startswith("book-a-") and b.startswith("book-b-") and a != b
    assert "/" not in value_name("/scratch/ws/pretrained") and value_name("/x") != value_name("/y")


def test_only_swept_model_keys_name_a_point():
    keys = swept_keys(
        ["train.batch_size=16,32", "data.train=[/a/*.png]", "mlflow.run_name=x,y", "paths.root=/p"]
    )
    assert keys == ["train.batch_size"]
    assert point_name(["train.batch_size=32", "data.train=[/a/*.png]", "mlflow.run_name=x"], keys) == (
        "train.batch_size=32"
    )


def _dry_multirun(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "dry_run=true", f"paths.root={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


def test_a_sweep_over_data_gets_one_directory_per_point_without_paths(tmp_path, fraktur_books):
    (a, b), (val,) = fraktur_books
    proc = _dry_multirun(
        tmp_path,
        f"data.train=[{a}/*.png],[{b}/*.png]",
        f"data.val=[{val}/*.png]",
        f"warmstart.pretrained_dir={tmp_path}/elsewhere",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dirs = re.findall(r"--trainer\.output_dir (\S+)", proc.stdout)
    assert len(dirs) == 2 and len(set(dirs)) == 2, proc.stdout
    for d in dirs:
        # beside the non-sweep model directory, not inside it (issue 22, item 5): models/ lists them all
        assert Path(d).parent == tmp_path / "models", d
        name = d.split("hsbfraktur.cala2.demo@", 1)[1]
        assert name.startswith("data.train=") and "/" not in name and "elsewhere" not in name, d
    assert a.name[:24] in dirs[0] and b.name[:24] in dirs[1]


def test_a_single_point_keeps_the_stable_directory(tmp_path):
    proc = _dry_multirun(tmp_path, "train.batch_size=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.findall(r"--trainer\.output_dir (\S+)", proc.stdout) == [
        f"{tmp_path}/models/hsbfraktur.cala2.demo"
    ]


def test_points_that_would_share_a_directory_are_refused_before_anything_runs(tmp_path):
    proc = _dry_multirun(tmp_path, "mlflow.run_name=a,b")
    errors = [x for x in proc.stderr.splitlines() if x.startswith("hsbcala: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "would train in one model directory" in errors[0]
    assert "--trainer.output_dir" not in proc.stdout


def test_a_job_arrays_slurm_name_is_its_runs_common_beginning():
    from hsbcala.slurm.launch import job_name

    assert job_name(["fraktur-cala2"]) == job_name(["fraktur-cala2", "fraktur-cala2"]) == "fraktur-cala2"
    assert job_name(["fraktur-cala1-batch_size=8", "fraktur-cala1-batch_size=16"]) == "fraktur-cala1-sweep"
    assert job_name(["fraktur-cala1-seed=1", "fraktur-cala1-seed=2"]) == "fraktur-cala1-sweep"
    assert job_name(["fraktur-cala1", "fraktur-cala2"]) == "fraktur-sweep"  # a sweep over versions
    assert job_name(["my-big-study-lr=0.1", "my-big-study-lr=0.2"]) == "my-big-study-sweep"  # any template
    assert job_name(["a", "b"]) == "sweep"
