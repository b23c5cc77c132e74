"""The epoch lines' time left (hsbcala.core.eta through console.Progress), fed recorded (time, epoch, CER) sequences.

The sequences are shaped after issue 22's demo: the first epoch of a launch carries the engine's start-up, later
epochs take about the same time each.
"""

from __future__ import annotations

import io
import re
import sys

from hsbcala.core import console


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def left_s(line: str) -> float:
    """The seconds of ``~4m05s left``, ``~16m left`` or ``~2h05m left`` (the upper end of a range)."""
    m = re.search(r"~(?:\S+-)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)? left", line)
    assert m, line
    h, mins, secs = (int(x or 0) for x in m.groups())
    return h * 3600 + mins * 60 + secs


def feed(progress: console.Progress, clock: Clock, events, capsys) -> list[str]:
    capsys.readouterr()
    for t, epoch, cer in events:
        clock.now = t
        progress.update(0, epoch, {"val_cer": cer, "best_val_cer": cer})
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("hsbcala: stage")]


def test_first_epoch_start_up_is_not_taken_for_every_epoch(capsys):
    """Start-up 60 s, then 40 s per epoch for 10 epochs: from epoch 2 on the estimate is within +-20 % of the real
    rest (an average over all epochs said 900 s after epoch 1 and +30 % after epoch 5), and after epoch 1 alone
    it says it is an upper bound."""
    clock = Clock()
    progress = console.Progress(epochs=10, stages=1, patience=0, lines_per_epoch=100, clock=clock)
    ends = [100.0 + 40 * k + (1 if k % 2 else -1) for k in range(10)]  # a little jitter
    events = [(t, k + 1, 0.9 - 0.05 * k) for k, t in enumerate(ends)]
    lines = feed(progress, clock, events, capsys)
    assert "at most ~" in lines[0], lines[0]  # (the first epoch's time includes the start-up)
    for (t, epoch, _), line in zip(events[1:-1], lines[1:-1], strict=True):
        real = ends[-1] - t
        assert abs(left_s(line) - real) <= 0.2 * real, (epoch, line, real)
    assert "last epoch done" in lines[-1], lines[-1]


def test_after_a_resume_the_bar_and_the_lines_count_the_same_epoch(capsys, monkeypatch):
    """Resumed from epoch 2 of 6: the bar starts at epoch 3 (it said 1/6 while the line said 3/6), and the resumed
    launch's first epoch (start-up again) is not the estimate."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    clock = Clock()
    progress = console.Progress(
        epochs=6, stages=1, patience=0, lines_per_epoch=100, start_epoch=2, clock=clock
    )
    with progress.bar(interval=10) as bar:
        assert bar is not None and bar.text().startswith("epoch 3/6 "), bar.text()
        for t, epoch in ((90.0, 3), (120.0, 4), (150.0, 5)):
            clock.now = t
            progress.update(0, epoch, {"val_cer": 0.5, "best_val_cer": 0.5})
        assert bar.text().startswith("epoch 6/6 "), bar.text()
        assert bar.last_epoch_s == 30.0  # the bar's epoch is the estimate's, not the start-up one
    out = [x for x in term.getvalue().splitlines() if "epoch 5/6" in x]
    assert out and left_s(out[0]) == 30, out


def test_with_early_stopping_the_line_says_what_the_estimate_is_based_on(capsys):
    """train.epochs=200, patience 5: the stage ends long before epoch 200 (issue 20: `~15h-23h left`); the line
    names the budget and the least time early stopping could still take."""
    clock = Clock()
    progress = console.Progress(epochs=200, stages=1, patience=5, lines_per_epoch=100, clock=clock)
    cers = [0.9, 0.5, 0.3, 0.31, 0.32]  # the best at epoch 3, then two epochs without a better CER
    events = [(60.0 + 20 * k, k + 1, c) for k, c in enumerate(cers)]
    lines = feed(progress, clock, events, capsys)
    # from the least time early stopping could take (3 epochs without a better CER) to the budget
    eta = lines[-1].split(" | ")[-1]
    assert eta == "~1m00s-1h05m left (patience 3)", eta
    first = lines[0].split(" | ")[-1]  # after epoch 1 alone: an upper bound
    assert first == "at most ~3h19m left (patience 5)", first
