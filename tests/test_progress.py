"""Parsing the engines' real console output (excerpts recorded from tiny trainings in tests/data/)."""

from __future__ import annotations

from pathlib import Path

from hsbcala import engines
from hsbcala.engines.base import ProgressParser

DATA = Path(__file__).parent / "data"


def feed_all(parser: ProgressParser, lines) -> list:
    return [u for line in lines for u in parser.feed(line)]


def test_cala2_epochs_and_stages():
    parser = engines.get("cala2").Parser(per_stage=3)
    updates = feed_all(parser, (DATA / "cala2-train-excerpt.log").read_text().splitlines())
    epochs = [u for u in updates if "val_cer" in u.metrics]
    assert [u.step for u in epochs] == [1, 2, 3, 4, 5, 6]  # stage 1 continues after stage 0's 3 epochs
    first = epochs[0].metrics
    assert first == {
        "train_cer": 1.0101,
        "train_loss": 1501.5724,
        "val_cer": 1.2282,
        "val_loss": 1241.7773,
        "best_val_cer": 1.2282,
        "stage": 0.0,
    }
    assert epochs[3].metrics["stage"] == 1.0
    assert parser.best_val_cer == 0.9785 and parser.epochs_seen == 6


def test_cala2_resumed_in_stage_one_keeps_steps():
    parser = engines.get("cala2").Parser(per_stage=500, stage=1, start=7, best_val_cer=0.2)
    (u,) = parser.feed(
        "INFO  tfaip.trainer.callbacks.logger: Results of epoch    8 CER: 0.1 - loss: 3.5 - val_CER: 0.15"
    )
    assert u.step == 508 and u.metrics["best_val_cer"] == 0.15


def test_cala1_display_checks_and_stages():
    parser = engines.get("cala1").Parser(per_stage=60, check_every=20)
    updates = feed_all(parser, (DATA / "cala1-train-excerpt.log").read_text().splitlines())
    train = [u for u in updates if "train_cer" in u.metrics]
    assert train[0].step == 5 and train[0].metrics["train_loss"] == 1594.35683594
    assert train[0].metrics["train_cer"] == 1.0549618
    assert any(u.step == 65 and u.metrics["stage"] == 1.0 for u in train)  # stage 1 iteration 5
    # accuracy 0 means "no valid model yet": no best CER is invented from it
    assert parser.best_val_cer is None


def test_cala1_better_model_gives_val_cer_at_its_check():
    parser = engines.get("cala1").Parser(per_stage=1000, check_every=20)
    lines = [
        "#00000019: loss=10.0 ler=0.5 dt=0.1s",
        "Checking early stopping model",
        "Found better model with accuracy of 87.500000%",
        "#00000039: loss=9.0 ler=0.4 dt=0.1s",
        "Checking early stopping model",
        "No better model found. Currently accuracy of 87.500000% at iter 20 (remaining nbest = 9)",
    ]
    updates = feed_all(parser, lines)
    checks = [u for u in updates if "best_val_cer" in u.metrics]
    assert [(u.step, round(u.metrics["best_val_cer"], 6)) for u in checks] == [(20, 0.125), (40, 0.125)]
    assert round(checks[0].metrics["val_cer"], 6) == 0.125 and "val_cer" not in checks[1].metrics


def test_cala1_resume_counts_checks_from_the_checkpoint():
    parser = engines.get("cala1").Parser(per_stage=1000, check_every=20, start=40)
    (u,) = parser.feed("Found better model with accuracy of 90%")
    assert u.step == 60


def test_best_is_per_stage_because_the_engines_export_the_last_stages_best():
    """A stage-2 line worse than stage 1's best: best_val_cer describes the exported (stage-2) model; the
    first stage's best is kept apart (logged at the switch)."""
    parser = engines.get("cala2").Parser(per_stage=3)
    lines = (DATA / "cala2-train-excerpt.log").read_text().splitlines()
    lines[4] = lines[4].replace("val_CER: 0.9872", "val_CER: 1.1000")  # stage 2, epoch 1
    lines[5] = lines[5].replace("val_CER: 0.9785", "val_CER: 1.0500")  # stage 2, epoch 2: > stage 1's 1.0251
    lines[6] = lines[6].replace("val_CER: 0.9908", "val_CER: 1.0700")
    updates = feed_all(parser, lines)
    switch = next(u for u in updates if "best_val_cer_stage1" in u.metrics)
    assert switch.metrics == {"stage": 1.0, "best_val_cer_stage1": 1.0251}
    assert parser.best_val_cer_stage1 == 1.0251 and parser.best_val_cer == 1.05
    assert [u.metrics["best_val_cer"] for u in updates if "val_cer" in u.metrics] == [
        1.2282,
        1.2282,
        1.0251,
        1.1,
        1.05,
        1.05,
    ]


def test_calamari1_without_any_better_model_says_its_best_is_untrained():
    e = engines.get("cala1")
    parser = e.Parser(per_stage=1000, check_every=20)
    feed_all(
        parser, ["No better model found. Currently accuracy of 0.000000% at iter 0 (remaining nbest = 4)"]
    )
    assert parser.best_val_cer is None and "not a trained one" in e.no_best_model(parser)
    feed_all(parser, ["Found better model with accuracy of 12.5%"])
    assert parser.best_val_cer == 0.875 and e.no_best_model(parser) is None
