"""One data identity (issue 22, item 6): the console's data line names the same digests as the run's MLflow
datasets (the console said ``data 8c25927b6a6b``, MLflow ``cae07e436984aff2`` for the same lines)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from hsbcala.track.info import split_digest
from tests.conftest import ROOT


def test_the_console_names_the_mlflow_datasets_digests(tmp_path, fraktur_books):
    (a, _), (val,) = fraktur_books
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "data_check_only=true", f"paths.root={tmp_path}",
         f"data.train=[{a}/*.png]", f"data.val=[{val}/*.png]", f"model_dir={tmp_path}/m"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("hsbcala: data: ")]
    # what tracking logs as the digests of the training and validation datasets
    assert re.search(r"data train (\w+) \+ val (\w+)$", line).groups() == (
        split_digest(manifest, "train"),
        split_digest(manifest, "val"),
    ), line
