"""Parsing the engines' real console output (excerpts recorded from tiny trainings in tests/data/)."""

from __future__ import annotations

import io
import sys
import time
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


# tfaip's early-stopping verdicts and results lines as a real resumed training printed them (bench/reference.py,
# resumed from checkpoint_0016 whose best was 0.01668958 at epoch 16, with a state that had recorded no best)
VERDICT_RUN = [
    (
        "INFO 2026-12-07 21:51:29,376 tfaip.trainer.callbacks.earlys: No better value of val_CER = "
        "0.016880538314580917 found. Keeping best = 0.01668958179652691"
    ),
    (
        "INFO 2026-12-07 21:51:29,380 tfaip.trainer.callbacks.logger: Results of epoch   17 CER: 0.0071 - "
        "loss: 1.5 - val_CER: 0.0169 - val_loss: 4.3"
    ),
    (
        "INFO 2026-12-07 22:07:37,147 tfaip.trainer.callbacks.earlys: No better value of val_CER = "
        "0.016765963286161423 found. Keeping best = 0.01668958179652691"
    ),
    (
        "INFO 2026-12-07 22:07:37,150 tfaip.trainer.callbacks.logger: Results of epoch   19 CER: 0.0070 - "
        "loss: 1.5 - val_CER: 0.0168 - val_loss: 4.3"
    ),
]


def test_cala2_best_is_the_engines_verdict_not_a_rounded_comparison():
    """Epoch 19's 0.0168 (0.016766) is no improvement on 0.016690 for tfaip, which kept epoch 16's best.ckpt: the
    parser says so, though it started without a best (it compared rounded values and named epoch 19 before)."""
    parser = engines.get("cala2").Parser(per_stage=100, start=16)
    updates = feed_all(parser, VERDICT_RUN)
    assert [u.metrics["best_val_cer"] for u in updates] == [0.01668958179652691] * 2
    assert [u.metrics["val_cer"] for u in updates] == [0.016880538314580917, 0.016765963286161423]
    assert parser.best_val_cer == 0.01668958179652691 and parser.best_epoch is None  # epoch not printed
    # with the checkpoint's best and its epoch (run.py, from Engine.resume_best) the epoch is kept
    parser = engines.get("cala2").Parser(per_stage=100, start=16, best_val_cer=0.01668958179652691)
    parser.best_epoch = 16.0
    feed_all(parser, VERDICT_RUN)
    assert (parser.best_val_cer, parser.best_epoch) == (0.01668958179652691, 16.0)
    # an improvement: the unrounded value, at its epoch
    (u,) = feed_all(
        parser,
        [
            (
                "INFO tfaip.trainer.callbacks.earlys: Better value of val_CER found. Old = 0.01668958179652691, "
                "Best = 0.016683"
            ),
            "INFO tfaip.trainer.callbacks.logger: Results of epoch   20 CER: 0.007 - val_CER: 0.0167",
        ],
    )
    assert u.metrics["best_val_cer"] == u.metrics["val_cer"] == 0.016683 and parser.best_epoch == 20.0


def test_the_best_a_checkpoint_restores_is_read_from_it(tmp_path):
    """Engine.resume_best on checkpoint records shaped as the engines write them."""
    import json

    params = tmp_path / "checkpoint_0020" / "trainer_params.json"
    params.parent.mkdir()
    es = {"current": 0.01668958179652691, "n": 5, "n_to_go": 5, "frequency": 1, "mode": "min"}
    params.write_text(json.dumps({"current_epoch": 20, "early_stopping": es}))
    assert engines.get("cala2").resume_best(params) == (0.01668958179652691, 16)
    params.write_text(json.dumps({"current_epoch": 2, "early_stopping": {**es, "current": None}}))
    assert engines.get("cala2").resume_best(params) == (None, None)
    record = tmp_path / "model_00000040.ckpt.json"
    record.write_text(
        json.dumps({"iter": 39, "earlyStoppingBestAccuracy": 0.75, "earlyStoppingBestAtIter": 20})
    )
    cer, at = engines.get("cala1").resume_best(tmp_path / "model_00000040.ckpt")
    parser = engines.get("cala1").Parser(per_stage=1000, check_every=10, start=40)
    assert (cer, at, parser.epoch_at(at)) == (0.25, 20, 2.0)


def test_cala1_display_checks_and_stages():
    # the excerpt: 20 iterations per check (batch 8, 160 lines), 60 per stage, a display every 5 iterations
    parser = engines.get("cala1").Parser(per_stage=60, check_every=20, batch_size=8, lines_per_epoch=160)
    updates = feed_all(parser, (DATA / "cala1-train-excerpt.log").read_text().splitlines())
    train = [u for u in updates if "train_cer" in u.metrics]
    assert train[0].metrics["iteration"] == 5 and train[0].metrics["train_loss"] == 1594.35683594
    assert train[0].metrics["train_cer"] == 1.0549618
    # steps are epochs: iteration 20 is one pass over the 160 lines, 60 (the end of stage 0) three
    assert [(u.metrics["iteration"], u.step) for u in train[:4]] == [(5, 0), (10, 1), (15, 1), (20, 1)]
    assert any(u.step == 3 and u.metrics["iteration"] == 60 for u in train)
    # stage 1 restarts the engine's iterations; its steps continue after stage 0's three epochs
    stage1 = [u for u in train if u.metrics["stage"] == 1.0]
    assert (stage1[0].metrics["iteration"], stage1[0].step) == (5, 3)
    assert [(u.metrics["iteration"], u.step) for u in stage1 if u.metrics["iteration"] == 40] == [(40, 5)]
    steps = [u.step for u in updates]
    assert steps == sorted(steps), "epoch steps go back"
    # accuracy 0 means "no valid model yet": no best CER is invented from it
    assert parser.best_val_cer is None


def test_cala1_better_model_gives_val_cer_at_its_check():
    parser = engines.get("cala1").Parser(per_stage=1000, check_every=20, batch_size=5, lines_per_epoch=100)
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
    assert [(u.step, round(u.metrics["best_val_cer"], 6)) for u in checks] == [(1, 0.125), (2, 0.125)]
    assert [u.metrics["iteration"] for u in checks] == [20, 40]
    assert round(checks[0].metrics["val_cer"], 6) == 0.125 and "val_cer" not in checks[1].metrics
    assert [parser.epoch_of(u.step) for u in checks] == [1.0, 2.0]


def test_cala1_epochs_are_iterations_times_batch_over_lines():
    """100 lines, batch 16: a check every ceil(100/16) = 7 iterations, which is 1.12 passes over the lines.
    The step is the passes (rounded), as Calamari 2 counts epochs; the console still counts checks."""
    parser = engines.get("cala1").Parser(per_stage=70, check_every=7, batch_size=16, lines_per_epoch=100)
    updates = feed_all(parser, ["Found better model with accuracy of 50%"] * 10)
    assert [u.metrics["iteration"] for u in updates] == [7 * k for k in range(1, 11)]
    assert [u.step for u in updates] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]  # 1.12, 2.24, …, 5.6, …, 11.2
    assert [parser.epoch_of(u.step) for u in updates] == [float(k) for k in range(1, 11)]
    assert parser.epochs(70) == 11.2


def test_cala1_engine_parser_counts_lines_per_epoch_as_calamari2_does():
    from types import SimpleNamespace

    train = SimpleNamespace(samples_per_epoch=32, batch_size=8, iterations=None, epochs=2)
    parser = engines.get("cala1").progress_parser(train, 500)
    assert (parser.batch_size, parser.lines_per_epoch, parser.check_every) == (8, 32, 4)
    (u,) = parser.feed("Found better model with accuracy of 90%")
    assert (u.step, u.metrics["iteration"]) == (1, 4)


def test_cala1_resume_counts_checks_from_the_checkpoint():
    parser = engines.get("cala1").Parser(
        per_stage=1000, check_every=20, start=40, batch_size=10, lines_per_epoch=200
    )
    (u,) = parser.feed("Found better model with accuracy of 90%")
    assert u.step == 3 and u.metrics["iteration"] == 60


def test_cala1_resume_does_not_log_the_checkpoints_iteration_again():
    """Calamari 1.0.7 displays the resumed checkpoint's iteration once more (it saves the iteration one short):
    the run holds that step already (the first launch logged it), so the resumed launch's first point is the
    next display. A fresh start logs its first display."""
    lines = ["#00000004: loss=9.0 ler=0.96 dt=0.1s", "#00000008: loss=8.0 ler=0.9 dt=0.1s"]
    fresh = engines.get("cala1").Parser(per_stage=1000, check_every=4, batch_size=8, lines_per_epoch=32)
    assert [u.step for line in lines for u in fresh.feed(line)] == [1, 2]
    resumed = engines.get("cala1").Parser(
        per_stage=1000, check_every=4, start=4, batch_size=8, lines_per_epoch=32
    )
    updates = [u for line in lines for u in resumed.feed(line)]
    assert [(u.step, u.metrics["iteration"]) for u in updates] == [(2, 8)]
    assert resumed.iterations_seen == 4


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


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_within_the_epoch_and_lines_never_run_into_it(monkeypatch):
    from hsbcala.core import console

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    progress = console.Progress(epochs=3, stages=1, patience=2, lines_per_epoch=100)
    with progress.bar(interval=0.05) as bar:
        assert bar is not None
        time.sleep(0.3)
        assert "no estimate before the first epoch ends" in term.getvalue()
        bar.epoch_started -= 10  # the first epoch took 10 s
        progress.update(0, 1, {"train_cer": 0.5, "val_cer": 0.4, "best_val_cer": 0.4})
        time.sleep(0.3)
    out = term.getvalue()
    assert "epoch 2/3 [" in out and "~" in out  # estimated from the first epoch's time
    before = out.split("hsbcala: stage 1/1 epoch 1/3")[0]
    assert before.endswith("\r\x1b[K"), repr(before[-60:])
    assert out.endswith("\r\x1b[K")  # and the bar is gone when training ends


def test_a_file_or_pipe_gets_plain_lines_only(monkeypatch):
    from hsbcala.core import console

    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    progress = console.Progress(epochs=3, stages=1, patience=2, lines_per_epoch=100)
    with progress.bar(interval=0.05) as bar:
        assert bar is None
        time.sleep(0.2)
        progress.update(0, 1, {"val_cer": 0.4, "best_val_cer": 0.4})
    assert "\r" not in plain.getvalue() and plain.getvalue().count("\n") == 1


def console_lines(parser: ProgressParser, progress, lines, capsys) -> list[str]:
    """The console lines a training prints for the engine's ``lines`` (train.py's loop)."""
    capsys.readouterr()
    for line in lines:
        for u in parser.feed(line):
            progress.follow(parser, u)
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("hsbcala: stage")]


def test_cala1_every_check_gets_its_line_also_at_accuracy_zero(capsys):
    """Issue 19, item 16: the recorded excerpt's six checks all report accuracy 0 % (no valid model yet); each
    gets its console line, with no invented best."""
    from hsbcala.core import console

    parser = engines.get("cala1").Parser(per_stage=60, check_every=20, batch_size=8, lines_per_epoch=160)
    progress = console.Progress(epochs=3, stages=2, patience=10, lines_per_epoch=160)
    out = console_lines(parser, progress, (DATA / "cala1-train-excerpt.log").read_text().splitlines(), capsys)
    assert [x.split(" | ")[0] for x in out] == [
        f"hsbcala: stage {s}/2 epoch {e}/3" for s in (1, 2) for e in (1, 2, 3)
    ], out
    assert all("no best yet" in x for x in out), out
    assert parser.best_val_cer is None


def test_cala1_line_after_a_resume_names_the_epoch_of_the_best(capsys):
    """Resumed at check 2 with the best (CER 0.9382) reached at check 1: the engine's "No better model" lines
    repeat that best, and the console says where it was reached, not the current epoch."""
    from hsbcala.core import console

    parser = engines.get("cala1").Parser(
        per_stage=100, check_every=20, start=40, batch_size=8, lines_per_epoch=160, best_val_cer=0.9382
    )
    parser.best_epoch = 1.0  # from hsbcala-state.json (train.py)
    progress = console.Progress(
        epochs=5, stages=1, patience=10, lines_per_epoch=160, best=(0.9382, 0, parser.best_epoch)
    )
    lines = [  # (Calamari 1 prints a check before the display line of the same iteration)
        "Checking early stopping model",
        "No better model found. Currently accuracy of 6.180000% at iter 20 (remaining nbest = 8)",
        "#00000060: loss=200.0 ler=0.95 dt=0.1s",
        "Checking early stopping model",
        "Found better model with accuracy of 7.000000%",
    ]
    out = console_lines(parser, progress, lines, capsys)
    assert [x.split(" | ")[0] for x in out] == [
        "hsbcala: stage 1/1 epoch 3/5",
        "hsbcala: stage 1/1 epoch 4/5",
    ]
    assert "best 0.9382 @1" in out[0] and "(patience 8)" in out[0], out[0]
    assert "best 0.9300 @4" in out[1] and "(patience 10)" in out[1], out[1]
    assert parser.best_epoch == 4.0


def test_cala2_line_after_a_resume_names_the_epoch_of_the_best(capsys):
    from hsbcala.core import console

    parser = engines.get("cala2").Parser(per_stage=5, start=3, best_val_cer=0.8936)
    parser.best_epoch = 1.0
    progress = console.Progress(epochs=5, stages=1, patience=5, lines_per_epoch=32, best=(0.8936, 0, 1.0))
    line = "INFO  tfaip.trainer.callbacks.logger: Results of epoch    4 CER: 0.91 - loss: 3.5 - val_CER: 0.95"
    (out,) = console_lines(parser, progress, [line], capsys)
    assert "epoch 4/5" in out and "best 0.8936 @1" in out and "(patience 2)" in out, out


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_epoch_lines_fit_100_columns(capsys):
    """Issue 22, item 6: epoch lines were 131-239 columns and wrapped. The longest usual case of both versions, fed
    through their real parsers: a second stage, three-digit epochs, hours left with early stopping able to end the
    stage sooner (a range and the patience), a resumed launch whose best was reached before it, an epoch without
    validation, and a long sweep point's model directory (named on the start line only; the epoch lines leave it
    out, so the point's name cannot push them over)."""
    from types import SimpleNamespace

    from hsbcala.core import console

    clock = _Clock()
    lines: list[str] = []
    for version, epochs, start, best in (("cala2", 500, 0, None), ("cala2", 500, 117, (0.0123, 1, None)),
                                         ("cala1", 500, 0, None), ("cala1", 500, 140, (0.0456, 1, 120.0))):  # fmt: skip
        clock.now = 0.0
        # the second stage: both engines train twice with augmentation
        progress = console.Progress(epochs=epochs, stages=2, patience=5 * 2, lines_per_epoch=12345, best=best,
                                    start_epoch=start, clock=clock)  # fmt: skip
        capsys.readouterr()
        model_dir = (
            "models/hsbfraktur.cala2.full@train.batch_size=64,train.augmentations=5,train.network=deep3"
        )
        progress.start(
            model_dir, version, "the CPU", 123456, 12345, SimpleNamespace(batch_size=64, workers=8)
        )
        if version == "cala2":
            parser = engines.get("cala2").Parser(per_stage=epochs, stage=1, start=start)
            engine_lines = [
                f"INFO  tfaip.trainer.callbacks.logger: Results of epoch {start + k:4d} CER: 0.0234567 - "
                f"loss: 3.5 - val_CER: {0.0345678 - k / 10000}"
                + ("" if k % 2 else " ")  # (the same line, so the run ends on an epoch with validation)
                for k in range(1, 14)
            ]
            engine_lines.insert(
                3,
                f"INFO  tfaip.trainer.callbacks.logger: Results of epoch {start + 3:4d} CER: "
                "0.0234567 - loss: 3.5",
            )  # fmt: skip  (an epoch without validation)
        else:
            parser = engines.get("cala1").Parser(per_stage=epochs * 20, check_every=20, stage=1, start=start * 20,
                                                 batch_size=8, lines_per_epoch=160)  # fmt: skip
            engine_lines = []
            for k in range(1, 14):
                engine_lines += [f"#{(start + k) * 20 - 1:08d}: loss=200.0 ler=0.0234567 dt=0.1s",
                                 "Checking early stopping model"]  # fmt: skip
                engine_lines.append(
                    "Found better model with accuracy of 97.123456%" if k < 3 else
                    "No better model found. Currently accuracy of 97.123456% at iter 20 (remaining nbest = 8)"
                )  # fmt: skip
        for line in engine_lines:
            clock.now += 300.0 if clock.now == 0 else 98.7  # the first epoch with its start-up, then ~1.6 min
            for u in parser.feed(line):
                progress.follow(parser, u)  # as train/run.py feeds it
        out = [x for x in capsys.readouterr().err.splitlines() if x.startswith("hsbcala: stage")]
        assert len(out) >= 13, (version, out)
        lines += out
    too_long = [x for x in lines if len(x) > 100]
    assert not too_long, "\n".join(f"{len(x)}: {x}" for x in too_long)
    # and the cases above were there: hours left as a range with early stopping, an epoch without validation
    etas = [x.split(" | ")[-1] for x in lines]
    assert any("h" in x and "-" in x and x.endswith("(patience 10)") for x in etas), lines
    assert any(" | train CER " in x for x in lines), lines
