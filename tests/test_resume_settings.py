"""A resume with other settings than its checkpoint's, and train.extend_epochs (issue 19, item 6).

Both engines resume with the checkpoint's epochs, batch size and learning rate, whatever the relaunching command
says; a relaunch with other values was shown "5 epochs per stage", "epoch 3/2", while MLflow's params and the
run description disagreed. Real tiny models (tests/test_evaluate.py's ``tiny_models``: 2 epochs of 32 lines),
copied, resumed and extended by the real engine, into a copy of their real MLflow store. Slow.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_inprocess
from tests.test_train_integration import client, launch, state_of, tiny

# the session's tiny models of tests/test_evaluate.py (trained once through train.py, never changed: copied here)

pytestmark = pytest.mark.slow


def _copy(models: Path, tmp: Path, version: str) -> Path:
    """The finished tiny model of ``version`` and its store, where tiny(tmp, …) expects them."""
    shutil.copytree(models / f"model-{version}", tmp / f"model-{version}", symlinks=True)
    shutil.copy2(models / "mlruns.db", tmp / "mlruns.db")
    return tmp / f"model-{version}"


def _interrupted_after_epoch_1(model_dir: Path) -> None:
    """What a SIGTERM after the first of two epochs leaves: checkpoint_0001 newest, the state "training" (and,
    as an older hsbcala or a launch killed before it recorded one left it, no best in the state)."""
    shutil.rmtree(model_dir / "checkpoint" / "checkpoint_0002")
    state = state_of(model_dir)
    state["status"] = "training"
    state["best_val_cer"] = state["best_epoch"] = None
    # the checkpoint's best (what tfaip's early stopping restores) set below what the tiny model reaches, so
    # that the relaunched epoch 2 is no improvement: the best named must be the checkpoint's, at its epoch
    params = model_dir / "checkpoint" / "checkpoint_0001" / "trainer_params.json"
    record = json.loads(params.read_text())
    record["early_stopping"].update(current=0.01, n=1)
    params.write_text(json.dumps(record))
    (model_dir / "hsbcala-state.json").write_text(json.dumps(state))


def quick(overrides: list[str]):
    """A launch that trains nothing (a dry run, a finished model, a refusal): in this process, which saves the
    new interpreter's start-up; the launches that train start the real ``python train.py``."""
    return run_inprocess("train", overrides, ROOT)


def _epoch_lines(stderr: str) -> list[str]:
    return [x.split(" | ")[0].split()[-1] for x in stderr.splitlines() if x.startswith("hsbcala: stage ")]


def test_calamari2_relaunch_with_more_or_fewer_epochs_is_told_and_agrees(tmp_path, tiny_models, shared_books):
    books = (shared_books[:2], shared_books[2:3])
    model_dir = _copy(tiny_models, tmp_path, "cala2")
    run_id = state_of(model_dir)["run_id"]

    # a finished model: not retrained; the message and the dry run say how to extend, no command is printed
    for extra in ({}, {"dry_run": "true"}):
        proc = quick(tiny(tmp_path, *books, "cala2", **{"train.epochs": "5", **extra}))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "has finished training" in proc.stderr and "train.extend_epochs=N" in proc.stderr
        assert proc.stdout.strip() == "", proc.stdout

    # interrupted after epoch 1 of 2, relaunched with fewer (1) or more (5) epochs: the engine keeps its 2,
    # and says so in one line
    _interrupted_after_epoch_1(model_dir)
    for epochs in ("1", "5"):
        dry = quick(tiny(tmp_path, *books, "cala2", **{"train.epochs": epochs, "dry_run": "true"}))
        assert dry.returncode == 0, dry.stderr[-2000:]
        (told,) = [x for x in dry.stderr.splitlines() if x.startswith("hsbcala: resume:")]
        assert "2 epochs per stage (the checkpoint's)" in told and f"train.epochs={epochs} not used" in told
        assert "train.extend_epochs=N" in told and "--trainer.epochs" not in dry.stdout
    proc = launch(tiny(tmp_path, *books, "cala2", **{"train.epochs": "5"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 epochs per stage" in proc.stderr and "5 epochs per stage" not in proc.stderr
    assert _epoch_lines(proc.stderr) == ["2/2"], proc.stderr[-3000:]
    # the best recorded is the engine's own (its last early-stopping verdict), judged against the best the
    # checkpoint restored, not a comparison started afresh at the resume
    verdicts = re.findall(r"(?:Best|Keeping best) = ([0-9.e-]+)", (model_dir / "engine.log").read_text())
    assert float(verdicts[-1]) == 0.01 and state_of(model_dir)["best_val_cer"] == 0.01, verdicts
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("hsbcala: stage 1/1 epoch 2/2")]
    assert "best 0.0100 @1 " in line, line
    run = client(tmp_path).get_run(run_id)
    assert run.data.params["train.epochs"] == "2"
    assert "2 epochs" in run.data.tags["mlflow.note.content"], run.data.tags["mlflow.note.content"]

    # extended by one epoch: the engine trains epoch 3 of 3, and console, description and state agree
    proc = launch(tiny(tmp_path, *books, "cala2", **{"train.extend_epochs": "1"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 epochs per stage (extended by 1 from 2)" in proc.stderr
    assert _epoch_lines(proc.stderr) == ["3/3"], proc.stderr[-3000:]
    state = state_of(model_dir)
    assert state["status"] == "finished" and state["run_id"] == run_id
    assert state["history"][-1]["extended_to"] == 3
    params = json.loads((model_dir / "checkpoint" / "checkpoint_0003" / "trainer_params.json").read_text())
    assert (params["epochs"], params["current_epoch"]) == (3, 3)
    run = client(tmp_path).get_run(run_id)
    assert "3 epochs" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["hsbcala.epochs_extended_to"] == "3"
    assert max(m.step for m in client(tmp_path).get_metric_history(run_id, "val_cer")) == 3


def test_calamari1_cannot_extend_and_says_what_instead(tmp_path, tiny_models, shared_books):
    books = (shared_books[:2], shared_books[2:3])
    _copy(tiny_models, tmp_path, "cala1")
    proc = quick(tiny(tmp_path, *books, "cala1", **{"train.extend_epochs": "1"}))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train.extend_epochs=1: Calamari 1.0.7's calamari-resume-training takes no settings" in proc.stderr
    dry = quick(tiny(tmp_path, *books, "cala1", dry_run="true"))
    assert dry.returncode == 0 and dry.stdout.strip() == "", dry.stdout
    assert "has finished training" in dry.stderr and "train.extend_epochs is not possible" in dry.stderr


def test_dry_run_names_the_warm_start_model_it_copies(tmp_path, tiny_models, shared_books):
    """Issue 19, item 17: the command reads the copy in <model_dir>/warmstart/; the dry run names the model
    copied and where from (here the tiny Calamari 2 model as the warm start)."""
    source = tiny_models / "model-cala2"
    overrides = tiny(tmp_path, shared_books[:2], shared_books[2:3], "cala2", dry_run="true")
    dry = quick([*overrides, f"warmstart.model={source / 'best.ckpt.json'}"])
    assert dry.returncode == 0, dry.stderr[-2000:]
    (said,) = [x for x in dry.stderr.splitlines() if x.startswith("hsbcala: warm start: copies")]
    assert f"best.ckpt/, best.ckpt.json from {source} into {tmp_path / 'model-cala2' / 'warmstart'}/" in said
    assert f"--warmstart.model {tmp_path / 'model-cala2' / 'warmstart' / 'best.ckpt.json'}" in dry.stdout
    assert not (tmp_path / "model-cala2").exists()  # a dry run creates nothing
