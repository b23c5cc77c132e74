"""Evaluating the embedded demo shows what evaluation is for (issue 22, item 4).

The demo trains from scratch on synthetic lines (hsbcala/data/synth) and ``python evaluate.py`` on the same
defaults scores its recorded validation lines. Those lines are pages of a synthetic book (a folder a page, as a
book's folder in real GT), so the intervals resample documents and are real; the variant groups, which name the
real GT's files, match none of them and are left out without a warning; a model trained from scratch has no
baseline, said in one quiet line; the console ends naming the results folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsbcala.data import synth
from tests.conftest import run_inprocess

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_demos_evaluation_prints_intervals_and_no_warning(tiny_models, tmp_path):
    """The session's tiny cala2 model (trained from scratch through train.py, like the demo) scored on the demo's
    default validation lines: ``eval.data`` is the demo's own ``data.val``, rendered in ``tmp_path`` by the
    evaluation itself (30 lines = 3 pages). (The whole demo path, train.py then evaluate.py on the defaults,
    gives the same console; it costs a training more.)"""
    run_dir = tmp_path / "eval-run"
    proc = run_inprocess(
        "evaluate",
        [
            "version=cala2",
            f"paths.root={tmp_path}",
            f"mlflow.tracking_uri=sqlite:///{tiny_models / 'mlruns.db'}",
            f"model_dir={tiny_models / 'model-cala2'}",
            "data.synthetic.n_train=40",
            "data.synthetic.n_val=30",
            "eval.data=${data.val}",
            f"hydra.run.dir={run_dir}",
            "eval.baseline=true",
            "eval.batch_size=8",
            "eval.intervals.resamples=200",
        ],
        ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "warning" not in console.lower(), console[-3000:]

    result = json.loads((run_dir / "eval-result.json").read_text(encoding="utf-8"))
    main = result["sets"][0]
    assert main["overall"]["lines"] == 30
    assert all(synth.is_synthetic(Path(x["image"])) for x in main["worst_lines"])
    iv = main["overall"]["interval"]
    # 30 validation lines = 3 pages: the intervals resample documents, and exist
    assert iv["unit"] == "documents" and iv["n_units"] == 3, iv
    assert iv["low"] is not None and iv["low"] <= main["overall"]["cer"] <= iv["high"], iv
    assert main["wer"]["interval"]["low"] is not None
    assert "3 documents" in main["interval_unit"]

    # no line is named as a variant (the groups name the team's GT files): none printed, one quiet line says so
    assert result["groups"] == {} and main["groups"] == {}
    table = (run_dir / "cer-table.md").read_text(encoding="utf-8")
    assert "binarized" not in table and "raw" not in table.split("\n")[0]
    assert console.count("eval.groups binarized, raw: no line is named as a variant") == 1

    # trained from scratch: no baseline row, one quiet line
    assert "baseline" not in table and result.get("baseline") is None
    assert console.count("trained from scratch, so there is no baseline to compare with") == 1

    # the results folder is named last
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"hsbcala: results in {run_dir}"), proc.stderr[-500:]
