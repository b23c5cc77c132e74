"""Every way train.py and evaluate.py end, each one line and a documented exit code (docs/bad-input.md):
0 done (or nothing to do), 2 bad input (config, data, model directory, tracking store), 3 the engine or the file
system failed, 130 interrupted. The paths that need a real engine run are in the slow tests named below."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_inprocess

# (overrides, exit code, the one error line contains); {tmp} is the test's directory
TRAIN_PATHS = [
    (["dry_run=true"], 0, None),
    (["version=cala3"], 2, "version=cala3: no such option; available: cala1, cala2"),
    (["train.bach_size=8"], 2, "train.bach_size: no such key"),
    (["train.codec=merge"], 2, "train.codec: Invalid value 'merge'"),
    (["train.batch_size=many"], 2, "train.batch_size: Value 'many'"),
    (["+foo=1"], 2, "foo: Key 'foo' not in 'Config'"),
    (["cluster.env={{kind:venv,venv:/opt/v}}"], 2, "cluster.env: cannot be set on the command line while it"),
    (["train.epochs=0"], 2, "train.epochs must be >= 1"),
    (["train.early_stopping_patience=1"], 2, "early_stopping_patience=1 cannot work"),
    (["preset=full"], 2, "data.train: missing mandatory value"),
    (["data.train=[{tmp}/none/*.png]"], 2, "data.train: pattern"),
    (["model_dir={tmp}/afile"], 2, "is a file, not a directory"),
    (["warmstart.model={tmp}/nowhere/0.ckpt.json"], 2, "warmstart.model: no such model"),
    (["mlflow.tracking_uri=http://127.0.0.1:9"], 2, "the tracking server does not answer"),
    (["dry_run=true", "data_check_only=true"], 2, "choose one"),
]
# done elsewhere, with a real engine: 3 engine failure (test_bad_input.py::test_engine_failure_…), 3 full disk
# and 130 interrupted (test_nothing_lost.py), 0 finished / "not retraining" (test_train_integration.py)

EVALUATE_PATHS = [
    (["model_dir={tmp}/never-trained"], 2, "does not exist: no model to evaluate"),
    (["eval.normalization=nfd"], 2, "eval.normalization: Invalid value 'nfd'"),
    (["eval.batch_size=0"], 2, "eval.batch_size must be >= 1"),
]


def _check(entry: str, tmp_path: Path, overrides: list[str], code: int, needle: str | None) -> None:
    (tmp_path / "afile").write_text("not a directory")
    args = [
        f"paths.root={tmp_path}",
        "data.synthetic.n_train=20",
        "data.synthetic.n_val=5",
        *(o.format(tmp=tmp_path) for o in overrides),
    ]
    result = run_inprocess(entry, args, cwd=tmp_path)
    errors = [x for x in result.stderr.splitlines() if x.startswith("hsbcala: error:")]
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    if needle is None:
        assert not errors
    else:
        assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]


@pytest.mark.parametrize("overrides,code,needle", TRAIN_PATHS, ids=lambda v: str(v)[:40])
def test_train_paths(tmp_path, overrides, code, needle):
    _check("train", tmp_path, overrides, code, needle)


@pytest.mark.parametrize("overrides,code,needle", EVALUATE_PATHS, ids=lambda v: str(v)[:40])
def test_evaluate_paths(tmp_path, overrides, code, needle):
    _check("evaluate", tmp_path, overrides, code, needle)
