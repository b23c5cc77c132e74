"""The time left in a training stage, estimated from the epochs this launch has seen (issues 20 and 22).

The first epoch of a launch carries the engine's start-up (TensorFlow import, data loading, graph building) that
later epochs do not: an average over all epochs overestimated the rest 1.5-1.7x on the demo. So the estimate is
the median duration of the recent epochs *after* the launch's first; after only the first epoch, that epoch's
time is an upper bound and said so. With early stopping the stage may end long before its epoch budget: the
line then says both — the time to the budget and the least time early stopping could still take.
(Hand-written: a few lines of statistics over a list; no progress library models start-up or early stopping.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

WINDOW = 5  # recent epoch durations the median is taken over (later epochs may get slower as lines grow)


class Eta:
    """Epoch ends of one stage in one launch; ``start_epoch`` is where it resumed (0 on a fresh start)."""

    def __init__(
        self,
        epochs: int,
        patience: int = 0,
        start_epoch: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.epochs, self.patience, self.clock = epochs, patience, clock
        self.t0 = clock()
        self.marks: list[tuple[float, float]] = [(self.t0, float(start_epoch))]  # (time, epoch) per epoch end
        self._warm = False  # a later stage of the same launch: its first epoch has no start-up to exclude

    def restart(self, start_epoch: int = 0) -> None:
        """A new stage: its epochs are counted afresh; the engine's stage switch is no start-up."""
        now = self.clock()
        self.marks = [(now, float(start_epoch))]
        self._warm = True

    def epoch_done(self, epoch: float) -> None:
        self.marks.append((self.clock(), float(epoch)))

    def per_epoch(self) -> tuple[float, bool] | None:
        """(seconds per epoch, measured): measured without the launch's first epoch; else (first epoch, False)."""
        spans = [
            (t1 - t0) / (e1 - e0)
            for (t0, e0), (t1, e1) in zip(self.marks, self.marks[1:], strict=False)
            if e1 > e0
        ]
        if not spans:
            return None
        later = spans if self._warm else spans[1:]
        if not later:
            return spans[0], False  # start-up included: an upper bound
        return statistics.median(later[-WINDOW:]), True

    def text(self, epoch: float, since_best: int) -> str:
        """The epoch line's time left, short (the line fits 100 columns, issue 22): ``~12m05s left`` to the
        budget; ``at most ~…`` while only the first epoch (with the start-up) is known; with early stopping able to
        end the stage first, the range ``~1m00s-1h05m left``, from the least time early stopping could take to
        the budget; then ``(patience N)``: epochs left without a better CER before early stopping."""
        est = self.per_epoch()
        if est is None:
            return "no estimate yet"
        per, measured = est
        remaining = max(0, self.epochs - round(epoch))
        if not remaining:
            return "last epoch done (export follows)"
        stop_in = max(0, self.patience - since_best) if self.patience else None
        left = clock(per * remaining)
        if not measured:  # the start-up inflates the first epoch: its estimate bounds both ends from above
            text = f"at most ~{left} left"
        elif stop_in is not None and stop_in < remaining:
            text = f"~{clock(per * stop_in)}-{left} left"
        else:
            text = f"~{left} left"
        return text if stop_in is None else f"{text} (patience {stop_in})"


def clock(seconds: float) -> str:
    """``2h05m``, ``16m``, ``4m05s``: seconds only where an estimate is short enough for them to matter."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m" if s >= 600 else f"{s // 60}m{s % 60:02d}s"
