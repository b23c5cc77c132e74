"""No silent fallbacks (issue 19, item 9): where hsbcala goes on after a failure, it says what failed, and an error
that is not one of the expected kinds (a bug) keeps its traceback instead of passing for a store's or a user's
failure. Real stores and files; the failures are real (an artifact directory that is a file: root ignores
permissions, not that), except one injected bug."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hsbcala import engines
from hsbcala.core.errors import ConfigError
from hsbcala.modeldir import ModelDir, State
from tests.conftest import ROOT, compose_cfg


def _compose_eval(overrides: list[str]):
    """conf/evaluate.yaml as evaluate.py composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("evaluate", overrides=overrides)


def _store(tmp_path: Path) -> list[str]:
    """A sqlite store whose artifact root (``<paths.root>/mlartifacts``) is a file: every artifact upload fails."""
    (tmp_path / "mlartifacts").write_text("not a directory\n")
    return [f"paths.root={tmp_path}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns.db'}"]


@pytest.mark.parametrize("bug", [False, True], ids=["store-refuses", "bug"])
def test_a_failed_log_of_the_evaluation_is_named_and_a_bug_is_not_a_store_failure(tmp_path, bug):
    """Evaluation results that MLflow refuses: one line naming the store and the failure (exit 2); a result
    hsbcala itself got wrong (a set without its groups) is a bug and keeps its own type and traceback."""
    from hsbcala.evaluate import run as evalrun
    from hsbcala.track import evaluation

    cfg = _compose_eval([*_store(tmp_path), "version=cala2"])
    p = SimpleNamespace(
        label="m", version="cala2", checkpoint=tmp_path / "best.ckpt.json", model_dir=None, sets=[]
    )
    tracker = evaluation.EvalTracker(cfg, p)
    out = tmp_path / "out"
    out.mkdir()
    (out / evalrun.RESULT_FILE).write_text("{}\n")
    overall = {"cer": 0.1, "lines": 1, "chars": 10, "errors": 1}
    result = {"normalization": "nfc", "sets": [{"name": "val", "overall": overall, "groups": {}}]}
    if bug:
        del result["sets"][0]["groups"]
        with pytest.raises(KeyError, match="groups"):
            evalrun._log(tracker, p, result, out, {}, [])
        return
    with pytest.raises(
        ConfigError, match=r"could not log the evaluation to run .*(Not a directory|File exists)"
    ):
        evalrun._log(tracker, p, result, out, {}, [])


def _cala1_dir(tmp_path: Path, current_stage: object) -> tuple[ModelDir, object]:
    """A Calamari 1 model directory after a resumed launch: the best model kept before it and one the launch wrote."""
    engine = engines.get("cala1")
    md = ModelDir(tmp_path / "model", engine)
    kept = md.path / engine.KEPT
    kept.mkdir(parents=True)
    (kept / "best.ckpt.json").write_text(json.dumps({"currentStage": current_stage}))
    (md.path / "best.ckpt.json").write_text(json.dumps({"currentStage": 1}))
    (md.path / "best.ckpt.h5").write_bytes(b"weights")
    md.engine_log.write_text("engine output\n")
    return md, engine


@pytest.mark.parametrize("bug", [False, True], ids=["repair-fails", "bug"])
def test_the_end_of_an_interrupted_launch_says_what_it_could_not_do(tmp_path, capsys, bug):
    """The end of a killed launch: the engine's repair (Calamari 1's restore of the best model) and the logs'
    upload fail for real (the kept weights are gone; the artifact root is a file). Each is one warning naming
    the failure; a repair that fails with an error no file system gives (a bug) shows its traceback."""
    from hsbcala.track import tracking
    from hsbcala.train import run as trainrun

    (tmp_path / "store").mkdir()
    cfg = compose_cfg([*_store(tmp_path / "store"), "version=cala1"])
    # repair-fails: the launch found no better model, so the kept one is restored, but its weights are gone;
    # bug: a kept record whose stage is no number (the restore's ranking was never meant to see one)
    md, engine = _cala1_dir(tmp_path, "x" if bug else 0)
    if not bug:
        (md.path / "best.ckpt.h5").unlink()
    tracker = tracking.Tracker(cfg, None, tags={"script": "fraktur"}, params={})
    state = State(version="cala1", run_id=tracker.run_id)
    parser = engine.progress_parser(cfg.train, 10)
    trainrun._end(md, engine, state, parser, tracker, "KILLED", fresh=False, held=True, t0=time.monotonic())
    err = capsys.readouterr().err
    assert "logging engine.log failed" in err and ("Not a directory" in err or "File exists" in err), err
    repair = [x for x in err.splitlines() if "the engine's repair of" in x]
    assert repair, err
    if bug:
        assert "unexpected error (ValueError" in repair[0] and "a bug in hsbcala" in repair[0], err
        assert "Traceback (most recent call last)" in err and "int(d.get(" in err, err
    else:
        assert "failed (FileNotFoundError" in repair[0] and "Traceback" not in err, err


def test_checkpoints_of_a_model_without_its_manifest_say_where_their_steps_come_from(tmp_path, capsys):
    """eval.checkpoints=all on an old or foreign model directory: the curve's steps fall back to the checkpoints'
    positions, and the console says so (no manifest; a damaged one, by name)."""
    from hsbcala.evaluate import checkpoints

    cfg = compose_cfg(["version=cala2"])
    engine = engines.get("cala2")
    p = SimpleNamespace(model_dir=tmp_path)
    steps = checkpoints._steps(cfg, p, engine, {})
    assert steps(0, 7) == 7
    assert "has no manifest.json: the curve's steps are the checkpoints' positions" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text('{"totals": ')  # cut short
    steps = checkpoints._steps(cfg, p, engine, {})
    assert steps(0, 7) == 7
    err = capsys.readouterr().err
    assert "placing the checkpoints on the training's curve" in err and "manifest.json" in err, err
