"""Bad input: one clear error line naming the file or key, a non-zero exit, nothing left behind.

Each case runs ``train.py`` (no training starts: everything is checked first): in this process
(tests/conftest.py: run_inprocess, the same exit code and output), except where the real process matters."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Result, path_without, run_inprocess


def copy_lines(src_book: Path, dst: Path, n: int = 6) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for png in sorted(src_book.glob("*.png"))[:n]:
        shutil.copy(png, dst / png.name)
        shutil.copy(png.with_suffix("").with_suffix(".gt.txt"), dst / png.with_suffix(".gt.txt").name)
        out.append(dst / png.name)
    return out


@pytest.fixture
def lines(tmp_path, fraktur_books):
    train_books, val_books = fraktur_books
    return copy_lines(train_books[0], tmp_path / "train"), copy_lines(val_books[0], tmp_path / "val")


def base(tmp: Path) -> list[str]:
    return [
        f"paths.root={tmp}",
        f"model_dir={tmp / 'model'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        f"data.train=[{tmp}/train/*.png]",
        f"data.val=[{tmp}/val/*.png]",
        "train.skip_invalid=false",
    ]


def run_train(tmp: Path, *overrides: str) -> Result:
    """``python train.py …`` in tmp, run in this process."""
    return run_inprocess("train", [*base(tmp), *overrides], cwd=tmp)


def run_train_py(
    tmp: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The real ``python train.py …`` in tmp, for the tests where the process itself matters."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *base(tmp), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=300,
    )


def assert_clean_failure(proc: Result | subprocess.CompletedProcess, tmp: Path, *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert any(all(n in line for n in needles) for line in err.splitlines()), err
    assert not (tmp / "model").exists(), "a model directory was left behind"
    db = tmp / "mlruns.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            assert con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] == 0


def test_glob_matching_nothing(tmp_path, lines):
    proc = run_train(tmp_path, f"data.train=[{tmp_path}/nowhere/*.png]")
    assert_clean_failure(proc, tmp_path, "data.train", f"{tmp_path}/nowhere/*.png")


def test_image_without_gt(tmp_path, lines):
    train, _ = lines
    train[2].with_suffix(".gt.txt").unlink()
    assert_clean_failure(run_train(tmp_path), tmp_path, str(train[2]))


def test_empty_gt(tmp_path, lines):
    train, _ = lines
    train[1].with_suffix(".gt.txt").write_text("")
    assert_clean_failure(run_train(tmp_path), tmp_path, str(train[1]))


def test_undecodable_gt(tmp_path, lines):
    _, val = lines
    val[0].with_suffix(".gt.txt").write_bytes(b"\xff\xfe broken \xc3")
    assert_clean_failure(run_train(tmp_path), tmp_path, str(val[0]))


def test_unreadable_image(tmp_path, lines):
    train, _ = lines
    train[3].write_bytes(train[3].read_bytes()[:100])
    assert_clean_failure(run_train(tmp_path), tmp_path, str(train[3]))


def test_skip_invalid_counts_instead(tmp_path, lines):
    """With skip_invalid the blank line is dropped and counted (the data step reads every line: a data check,
    not a dry run, which reads none); with skip_invalid=false the same line stops the run."""
    import json

    train, _ = lines
    train[1].with_suffix(".gt.txt").write_text("   ")
    proc = run_train(tmp_path, "train.skip_invalid=true", "data_check_only=true")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["checks"]["empty_gt"]["count"] == 1 and manifest["totals"]["dropped"] == 1
    assert [d["image"] for d in manifest["dropped"]] == [str(train[1])]
    assert str(train[1]) not in {x["image"] for x in manifest["lines"]}
    strict = run_train(
        tmp_path, "train.skip_invalid=false", "data_check_only=true", f"model_dir={tmp_path / 'm2'}"
    )
    assert strict.returncode == 2 and "empty_gt" in strict.stderr and str(train[1]) in strict.stderr


def test_missing_warmstart_model_says_where_to_put_it(tmp_path, lines):
    proc = run_train(tmp_path, "preset=full")
    expected = tmp_path / "pretrained" / "deep3_fraktur19" / "0.ckpt.json"
    assert_clean_failure(proc, tmp_path, "warmstart.model", str(expected), "deep3_fraktur19")


def test_unknown_config_option(tmp_path, lines):
    proc = run_train(tmp_path, "train.learning_rat=0.1")
    assert_clean_failure(proc, tmp_path, "train.learning_rat")


def test_model_dir_of_the_other_version(tmp_path, lines):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_00000100.ckpt.json").write_text("{}")
    (model / "model_00000100.ckpt.h5").write_bytes(b"")
    proc = run_train(tmp_path, "version=cala2")
    assert proc.returncode != 0 and "holds a cala1 model" in proc.stderr.splitlines()[-1]
    assert sorted(p.name for p in model.iterdir()) == ["model_00000100.ckpt.h5", "model_00000100.ckpt.json"]


def test_dry_run_prints_one_line_and_creates_nothing(tmp_path, lines):
    # A subprocess: train.py itself, end to end (@hydra.main, its run dir, its logging), as a user starts it.
    proc = run_train_py(tmp_path, "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) == 1 and "calamari-train" in out[0] and f"{tmp_path}/train/*.png" in out[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "val"]
    # the in-process runs of the other tests give what train.py gives
    inproc = run_train(tmp_path, "dry_run=true")
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    "engine",
    [
        # quick: a stand-in calamari-train on PATH (version.env.kind=path) that refuses the option at once
        "stand-in",
        # the real calamari-train refuses it only after importing TensorFlow (10-20 s here): a real engine run,
        # so slow (pyproject.toml's markers); hsbcala's side of the failure is the same in both
        pytest.param("real", marks=pytest.mark.slow),
    ],
)
def test_engine_failure_ends_the_run_failed_and_cleans_up(tmp_path, lines, engine):
    # A subprocess: the run starts an engine under SIGINT/SIGTERM handlers and opens a real MLflow run,
    # process-wide state not to share with pytest's process.
    env = None
    if engine == "stand-in":
        fake = tmp_path / "bin" / "calamari-train"
        fake.parent.mkdir()
        fake.write_text(
            "#!/bin/sh\necho 'calamari-train: error: unrecognized arguments: --trainer.no_such_option 1' >&2\n"
            "exit 2\n"
        )
        fake.chmod(0o755)
        env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = run_train_py(
        tmp_path,
        "train.extra_args=[--trainer.no_such_option,1]",
        "train.network='cnn=8:3x3,lstm=8'",
        *(["version.env.kind=path"] if engine == "stand-in" else []),
        env=env,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "calamari-train exited with code" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "model").exists()
    with sqlite3.connect(tmp_path / "mlruns.db") as con:
        assert con.execute("select status from runs").fetchall() == [("FAILED",)]


@pytest.fixture
def no_nsys(monkeypatch):
    """A machine without Nsight Systems, whether or not this one has it: no directory on PATH holds nsys."""
    monkeypatch.setenv("PATH", path_without("nsys"))
    assert shutil.which("nsys") is None


def test_missing_nsys_stops_before_anything_starts(tmp_path, lines, no_nsys):
    assert_clean_failure(run_train(tmp_path, "profiler=nsys"), tmp_path, "profiler=nsys", "nsys")


def test_missing_nsys_with_warn_runs_unprofiled(tmp_path, lines, no_nsys):
    proc = run_train(tmp_path, "profiler=nsys", "profiler.if_missing=warn", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    assert "running without profiling" in proc.stderr
    assert not proc.stdout.startswith("nsys") and "calamari-train" in proc.stdout.split()[0]
