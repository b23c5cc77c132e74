"""Evaluation scores what it says it scores (issue 19, items 13 and 14).

- The validation lines a model's ``manifest.json`` records are checked by content, not only by name: a line
  whose image or ``.gt.txt`` changed since training (a synthetic set rendered again with other settings, a
  corrected GT) is refused in one line naming how many changed, an example and what to do.
- Synthetic sets of different sizes or seeds lie in different folders (the default ``data.synthetic.root``
  carries size and seed), so one never re-renders the other's lines in place.
- The best model's CER on its own validation lines agrees with the engine's best validation CER of the same
  training (``hsbcala-state.json``), within :data:`hsbcala.evaluate.scoring.ENGINE_CER_TOLERANCE`; when not, one line
  with both figures says so.

The real tiny models of ``tests/test_evaluate.py`` (one per version, trained through train.py) are reused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hsbcala.evaluate import scoring
from tests.conftest import compose_cfg
from tests.test_evaluate import VERSIONS, run_evaluate


def _own_copy(model: Path, tmp: Path) -> tuple[Path, list[Path]]:
    """The model directory copied, its validation lines copied beside it and the manifest pointed at the
    copies (the shared books are read-only; the hashes stay the recorded ones)."""
    md = tmp / "model"
    shutil.copytree(model, md)
    lines = tmp / "val"
    lines.mkdir()
    m = json.loads((md / "manifest.json").read_text(encoding="utf-8"))
    copies = []
    for x in m["lines"]:
        if x["split"] != "val":
            continue
        image = Path(x["image"])
        shutil.copy(image, lines / image.name)
        shutil.copy(x["gt"], lines / Path(x["gt"]).name)
        x["image"], x["gt"] = str(lines / image.name), str(lines / Path(x["gt"]).name)
        copies.append(lines / image.name)
    (md / "manifest.json").write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")
    return md, copies


def _evaluate(tmp: Path, version: str, md: Path, *extra: str):
    return run_evaluate(
        f"version={version}",
        f"paths.root={tmp}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        f"model_dir={md}",
        f"hydra.run.dir={tmp / 'run'}",
        "eval.batch_size=8",
        "eval.intervals.resamples=10",
        *extra,
    )


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_changed_validation_lines_are_refused_and_the_engine_cer_is_matched(request, tmp_path, version):
    models = request.getfixturevalue("tiny_models")  # test_evaluate.py's session fixture, imported above
    md, val = _own_copy(models / f"model-{version}", tmp_path)

    # unaltered: evaluated, and the figure agrees with the engine's own best validation CER
    proc = _evaluate(tmp_path, version, md)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "eval-result.json").read_text(encoding="utf-8"))
    check = result["engine_check"]
    state = json.loads((md / "hsbcala-state.json").read_text(encoding="utf-8"))
    assert check["engine"] == state["best_val_cer"] is not None
    if check["statistic"] == "summed":  # Calamari 2; Calamari 1 averages per-line rates (engines/cala1.py)
        assert check["evaluation"] == result["sets"][0]["overall"]["cer"]
    assert check["agree"], check["note"]
    assert (
        abs(check["evaluation"] - check["engine"])
        <= check["tolerance"]
        == scoring.engine_tolerance(check["engine"])
    )
    assert "agrees with training: evaluation" in proc.stderr and f"{state['best_val_cer']:.4f}" in proc.stderr

    # one GT changed under the same name, one image replaced by another line's: refused before predicting
    gt = val[1].with_name(val[1].name.split(".", 1)[0] + ".gt.txt")
    gt.write_text("Ptački spěwaja", encoding="utf-8")
    shutil.copy(val[3], val[2])
    proc = _evaluate(tmp_path, version, md)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("hsbcala: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert (
        f"2 of {len(val)} validation lines recorded in {md / 'manifest.json'} changed since the model"
        in (errors[0])
    )
    assert f"e.g. {gt} now reads 'Ptački spěwaja', recorded '" in errors[0]
    assert "eval.data=[GLOBS]" in errors[0]
    assert "evaluating on the" not in proc.stderr and "calamari-predict log" not in proc.stderr  # nothing run


def test_the_engine_check_names_both_figures_when_they_differ():
    agree, line = scoring.engine_agreement(0.9973, 0.8936, 0, "summed")
    assert not agree and "evaluation CER 0.9973 vs the engine's best validation CER 0.8936" in line
    assert "\n" not in line
    agree, line = scoring.engine_agreement(0.0005, 0.0005, 0, "line_mean")
    assert agree and "agrees" in line and "mean line CER (the engine's statistic) 0.0005" in line
    assert scoring.engine_agreement(0.2, 0.8, 3, "summed")[1].count("3 lines got no prediction") == 1
    # a near-random model: the engine counts the spaces calamari-predict strips (2 % of its figure)
    assert scoring.engine_agreement(0.9163, 0.9219, 0, "line_mean")[0]
    assert not scoring.engine_agreement(0.90, 0.9219, 0, "line_mean")[0]


def test_synthetic_sets_of_other_sizes_or_seeds_get_their_own_folder():
    default = compose_cfg([])
    other = {
        o: compose_cfg([o]).data.train[0]
        for o in ("data.synthetic.n_train=100", "data.synthetic.n_val=20", "data.synthetic.seed=7")
    }
    folders = {default.data.train[0], *other.values()}
    assert len(folders) == 4, folders
    assert default.data.val[0] == default.data.train[0].replace("/train/", "/val/")
    assert "/1000+60-seed50-pages/fraktur/train/" in default.data.train[0]


def _archive_of_lines(tmp: Path) -> Path:
    import tarfile

    from PIL import Image

    src = tmp / "src" / "book"
    src.mkdir(parents=True)
    for i in range(3):
        Image.new("L", (120, 48), 255).save(src / f"l{i}.png")
        (src / f"l{i}.gt.txt").write_text(f"Hač na puć {i}", encoding="utf-8")
    archive = tmp / "lines.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="book")
    return archive


def test_data_val_in_an_archive_is_compared_where_the_training_unpacked_it(tmp_path):
    """data.val naming the recorded lines inside a GT archive is no 'other lines' (before, the comparison
    unpacked the archive under the default cache, not data.cache_dir, and warned falsely); data.val that
    cannot be resolved here says why."""
    from hsbcala.data import resolve as data
    from hsbcala.evaluate import sets as evalsets

    archive = _archive_of_lines(tmp_path)
    cfg = compose_cfg([f"data.val=[{archive}]", f"data.cache_dir={tmp_path / 'cache'}"])
    val = list(data.resolve([str(archive)], key="data.val", base=tmp_path, archive_root=tmp_path / "cache"))
    rec = evalsets.Recorded(tmp_path / "manifest.json", [], val)
    assert evalsets.config_differs(rec, cfg.data, tmp_path) is None

    gone = compose_cfg([f"data.val=[{tmp_path}/nowhere/*.png]"])
    note = evalsets.config_differs(rec, gone.data, tmp_path)
    assert note is not None and "is not what the model was validated on (data.val: pattern" in note
    assert "matches no file" in note
