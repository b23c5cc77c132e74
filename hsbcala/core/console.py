"""hsbcala's own messages: one logger, ``hsbcala``, printed as ``hsbcala: …`` on stderr.

Every module says things through :func:`say` (or ``logging.getLogger("hsbcala")``), never ``print``, so that
Hydra's job log (``<run dir>/hsbcala.log``, configured in ``conf/config.yaml``) holds them too. Outside a
Hydra job (``python -m hsbcala.…``, tests) :func:`say` installs the same console format once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("hsbcala")
PREFIX = "hsbcala: "


class _Console(logging.StreamHandler):
    """stderr at the time of each message (pytest's capsys swaps sys.stderr), flushed per line."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(PREFIX + "%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _ensure_handler() -> None:
    """A console handler unless Hydra (conf/config.yaml: hydra.job_logging) configured our logger."""
    if log.handlers:
        return
    log.addHandler(_Console())
    log.setLevel(logging.INFO)
    log.propagate = False


def say(msg: str) -> None:
    """One line for the user: ``hsbcala: <msg>`` on the console (and in Hydra's job log)."""
    _ensure_handler()
    log.info(msg)


def log_file() -> Path | None:
    """hsbcala's own log of this run (Hydra's job log, ``<run dir>/hsbcala.log``), flushed; None without one."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.flush()
            return Path(handler.baseFilename)
    return None


def warn(msg: str) -> None:
    say(f"warning: {msg}")


def swallowed(
    what: str, exc: BaseException, expected: tuple[type[BaseException], ...], after: str = ""
) -> None:
    """A best-effort step failed and the work goes on without it, never silently: an ``expected`` failure
    (what the called code raises when a store, file or tool cannot be used) is one warning naming it; anything
    else is a bug in hsbcala, said as one with its traceback (console and log) and still not raised, because
    the caller's work is whole without the step. ``after``: what that means for the user (appended)."""
    first = str(exc).splitlines()[0] if str(exc).strip() else ""
    named = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    tail = f"; {after}" if after else ""
    if isinstance(exc, expected):
        warn(f"{what} failed ({named}){tail}")
        return
    _ensure_handler()
    log.warning(
        "warning: %s failed with an unexpected error (%s), a bug in hsbcala%s; the traceback:",
        what,
        named,
        tail,
        exc_info=(type(exc), exc, exc.__traceback__),
    )


class Progress:
    """hsbcala's own console while an engine trains: a start line, then one line per epoch (Calamari 1: per
    check, a pass over the lines), within 100 columns: stage, epoch k/N, the validation CER (``train CER`` on
    an epoch without validation), the best so far and the epoch it was reached at, the estimated time left and
    the early-stopping patience left. The engine's own output goes to
    ``<model_dir>/engine.log`` (``verbose=true`` streams it too)."""

    def __init__(
        self,
        *,
        epochs: int,
        stages: int,
        patience: int,
        lines_per_epoch: int,
        best: tuple[float, int, float | None] | None = None,
        start_epoch: int = 0,
        clock: Any = time.monotonic,
    ) -> None:
        """``best``: a resumed training's best so far (CER, stage, epoch within the stage or None if unknown),
        so that the first line after a resume names the epoch the best was reached at, not the current one.
        ``start_epoch``: the epoch (within its stage) resumed from, where the bar starts counting."""
        from hsbcala.core.eta import Eta

        self.epochs, self.stages, self.patience = epochs, stages, patience
        self.lines_per_epoch = lines_per_epoch
        self.clock = clock
        self.t0 = clock()
        self.start_epoch = start_epoch
        self.eta = Eta(epochs, patience, start_epoch, clock)
        self.best: tuple[float, int, float | None] | None = best  # (CER, stage, epoch)
        self.since_best = 0
        self.done = 0
        self._stage = best[1] if best is not None else -1
        self._bar: LiveBar | None = None

    def start(self, model_dir: Any, engine: str, device: str, n_train: int, n_val: int, train: Any) -> None:
        say(
            f"training {model_dir} with {engine} on {device}: {n_train:,} training + {n_val:,} validation lines, "
            f"{self.epochs} epochs per stage{' x 2 stages (augmented, then original lines)' if self.stages == 2 else ''}, "
            f"batch {train.batch_size}, {train.workers} worker(s); engine output: {model_dir}/engine.log"
        )

    def follow(self, parser: Any, update: Any) -> None:
        """:meth:`update` from an engine parser's update (``hsbcala.engines.base.ProgressParser.feed``): the
        parser knows the stage, the epoch of the update's step and where its best was reached."""
        self.update(
            parser.stage,
            parser.epoch_of(update.step),
            update.metrics,
            check=update.check,
            best_epoch=parser.best_epoch,
        )

    def update(
        self,
        stage: int,
        epoch: float,
        metrics: dict[str, float],
        *,
        check: bool | None = None,
        best_epoch: float | None = None,
    ) -> None:
        """One line per validation check (``check``; None: an update with a best CER is one). ``best_epoch``:
        where the engine's best so far was reached (the parser knows; without it, the epoch it improved)."""
        if stage != self._stage:
            if self._stage != -1:
                self.best, self.since_best = None, 0  # the engines start "best" afresh in a new stage
                self.eta.restart()
            self._stage = stage
        if check is None:
            check = "best_val_cer" in metrics
        if not check:
            return
        ep = round(epoch)
        best = metrics.get("best_val_cer")
        if best is not None:
            if self.best is None or best < self.best[0]:
                self.best = (best, stage, best_epoch if best_epoch is not None else ep)
            elif best_epoch is not None and best == self.best[0]:
                self.best = (best, stage, best_epoch)
        # patience counts checks since the best (known after a resume too); without its epoch, checks seen
        if self.best is not None and self.best[2] is not None:
            self.since_best = max(0, ep - round(self.best[2]))
        elif best is not None:
            self.since_best += 1
        self.done += 1
        self.eta.epoch_done(ep)
        val, train = metrics.get("val_cer"), metrics.get("train_cer")
        # <= 100 columns with the "hsbcala: " prefix (issue 22): the bar shows the epoch's own progress and
        # MLflow the rest (train CER per epoch; lines/s and wall time at the end), so the line keeps CER, epoch
        # and time left
        if self.best is None:
            best_text = "no best yet"  # (Calamari 1 says nothing better than 100 % CER yet)
        elif self.best[2] is None:
            best_text = f"best {self.best[0]:.4f}"  # a resumed launch's, reached at an epoch not recorded
        else:
            best_text = f"best {self.best[0]:.4f} @{round(self.best[2])}"  # and the epoch it was reached at
        if val is not None:
            cer = f"CER {val:.4f}, {best_text}"  # the validation CER: the one that judges a model
        elif train is not None:  # an epoch without validation (train.val_every > 1)
            cer = f"train CER {train:.4f}, {best_text}"
        else:
            cer = best_text
        parts = [
            f"stage {stage + 1}/{max(self.stages, stage + 1)} epoch {ep}/{self.epochs}",
            cer,
            self.eta.text(ep, self.since_best),
        ]
        say(" | ".join(x for x in parts if x))
        if self._bar is not None:
            per = self.eta.per_epoch()
            self._bar.next_epoch(ep + 1, self.epochs, per[0] if per else None)

    @contextlib.contextmanager
    def bar(self, stream: Any = None, interval: float = 0.5) -> Iterator[LiveBar | None]:
        """While the engine trains: on a terminal, a bar redrawn in place between the epoch lines; in a file or
        pipe nothing (plain lines only)."""
        stream = stream if stream is not None else sys.stderr
        if not _isatty(stream):
            yield None
            return
        self._bar = LiveBar(stream, interval, self.epochs, self.start_epoch + 1)
        self._bar.start()
        try:
            yield self._bar
        finally:
            self._bar.stop()
            self._bar = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LiveBar(logging.Filter):
    """A progress bar within the current epoch, redrawn in place (``\r``) on a terminal.

    The engines say nothing between epochs (Calamari 2 runs with ``progress_bar_mode 2``, one line per epoch, because
    its redrawn bar fills a log file with thousands of lines; Calamari 1 prints only its display lines), so the
    fraction is estimated from the epoch lines' time per epoch (hsbcala.core.eta), and marked ``~``. Before the first epoch ends
    there is no estimate: the bar shows the elapsed time only. It is also a logging filter on hsbcala's logger:
    any message first clears the bar's line, so lines never run into it."""

    def __init__(self, stream: Any, interval: float, epochs: int, epoch: int = 1) -> None:
        super().__init__()
        import threading

        self.stream, self.interval, self.epochs = stream, interval, epochs
        self.epoch = epoch  # after a resume: the epoch after the checkpoint's, as the epoch lines count
        self.epoch_started = time.monotonic()
        self.last_epoch_s: float | None = None
        self._drawn = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hsbcala-bar", daemon=True)

    def start(self) -> None:
        log.addFilter(self)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        log.removeFilter(self)
        self.clear()

    def next_epoch(self, epoch: int, epochs: int, per_epoch: float | None = None) -> None:
        """``per_epoch``: the estimate of the epoch lines (hsbcala.core.eta, start-up excluded); else the last one's."""
        now = time.monotonic()
        self.last_epoch_s = per_epoch or now - self.epoch_started
        self.epoch, self.epochs, self.epoch_started = epoch, epochs, now

    def text(self, width: int = 24) -> str:
        elapsed = time.monotonic() - self.epoch_started
        if self.epoch > self.epochs:
            return f"the last epoch is done; the engine finishes (export, next stage) {_clock(elapsed)}"
        head = f"epoch {self.epoch}/{self.epochs} "
        if not self.last_epoch_s:
            return f"{head}[{'?' * width}] {_clock(elapsed)} (no estimate before the first epoch ends)"
        frac = elapsed / self.last_epoch_s
        if frac >= 1:  # longer than estimated: say so rather than sit at ~99 %
            return (
                f"{head}[{'=' * width}] {_clock(elapsed)}, longer than the usual ~{_clock(self.last_epoch_s)}"
            )
        done = int(frac * width)
        return f"{head}[{'=' * done}>{' ' * (width - done - 1)}] ~{frac:.0%} {_clock(elapsed)}"

    def clear(self) -> None:
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False

    def filter(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self.stream.write("\r\x1b[K" + self.text())
                self.stream.flush()
                self._drawn = True


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
