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
        """``~12m05s left`` (to the budget), qualified when only the first epoch is known or when early stopping
        may end the stage sooner."""
        est = self.per_epoch()
        if est is None:
            return "no estimate yet"
        per, measured = est
        remaining = max(0, self.epochs - round(epoch))
        left = per * remaining
        if not remaining:
            return "last epoch done (export follows)"
        head = f"~{clock(left)} left" if measured else f"at most ~{clock(left)} left"
        stop_in = self.patience - since_best if self.patience else None
        if stop_in is None or stop_in >= remaining:
            return (
                head if measured else f"{head} (epoch 1 has the start-up)"
            )  # (no room beside early stopping)
        return (
            f"{head} to epoch {self.epochs} (early stopping: {since_best}/{self.patience} epochs without a better "
            f"CER, at least ~{clock(per * max(stop_in, 0))})"
        )


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
