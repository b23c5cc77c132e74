"""The one way hsbcala starts, streams, signals and stops an engine process (training and evaluation).

- The engine runs in its own session (``start_new_session``): a terminal's Ctrl-C reaches hsbcala only, which
  then stops the engine itself (SIGTERM to the engine's process group, SIGKILL after ``GRACE_S``). Neither
  Calamari handles SIGTERM: the engine stops at once, perhaps mid-write. That costs at most the write: Calamari
  2's checkpoints are TensorFlow's (temporary names, renamed), Calamari 1's ``.h5`` files are whole or absent
  (``cala1_start.py``), and a checkpoint whose JSON is cut short is not one (``read_json_if_complete``).
- The engine ignores SIGUSR1/SIGUSR2: Slurm's walltime warning (``--signal``) reaches every process of the job;
  it is meant for submitit in the launcher, which stops the engine after the last checkpoint is on disk.
  TensorFlow would otherwise die of the signal's default action.
- A reader thread drains the engine's output as it comes (so the engine never blocks on a full pipe while the
  launcher is busy, e.g. opening the MLflow run), writes every line to the log file, optionally echoes it,
  keeps the last lines for error messages, and queues them for the caller's parser.
- SIGINT/SIGTERM in the launcher raise :class:`~hsbcala.core.errors.Interrupted` in the main thread
  (:func:`interruptible`); the ``with`` block of :class:`EngineProcess` then stops the engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Self

from hsbcala.core.console import say
from hsbcala.core.errors import EngineError, Interrupted
from hsbcala.engines.engine_start import MARK, NO_GPU_EXIT

GRACE_S = 30.0  # SIGTERM → SIGKILL: for what outlives the engine a moment (nsys writes its report then)
LINGER_S = 5.0  # after the engine exited: how long its leftover child processes may keep its output open
ENGINE_ENV = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
# Defaults a user's own setting overrides: the CUDA JIT cache at its maximum (4 GiB; CUDA's default, 256 MiB,
# cannot hold the kernels TensorFlow 2.15 compiles on compute capability >= 8.0, which would then be compiled
# again, for up to 30 minutes, at every start: envs.first_start_note)
ENGINE_DEFAULTS = {"CUDA_CACHE_MAXSIZE": str(4 * 2**30)}


def engine_environ() -> dict[str, str]:
    """The environment every engine process starts with."""
    return {**ENGINE_DEFAULTS, **os.environ, **ENGINE_ENV}


class _Interrupts:
    """What :func:`interruptible` knows: the first signal received, whether it was raised, deferral depth."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.received: str | None = None
        self.repeats = 0
        self.raised = False
        self.deferring = 0

    def raise_now(self) -> None:
        self.raised = True
        raise Interrupted(self.message.format(signal=self.received))


_active: _Interrupts | None = None


@contextlib.contextmanager
def interruptible(message: str) -> Iterator[_Interrupts]:
    """SIGINT/SIGTERM raise Interrupted(message with ``{signal}`` filled in) in the main thread while inside.

    Only the first signal raises, and never inside a :func:`deferred` block (opening the MLflow run, saving
    the state, the clean-up): there it is remembered and raised when the block ends. Later signals are
    counted and otherwise ignored, so a second Ctrl-C or a scancel right after a SIGTERM cannot break off
    the clean-up half-way (engine stopped, MLflow run ended KILLED, state saved, exit 130).
    """
    global _active
    state = _Interrupts(message)

    def handler(signum, _frame):
        if state.received is not None:
            state.repeats += 1
            return
        state.received = signal.Signals(signum).name
        if state.deferring == 0:
            state.raise_now()

    outer = _active
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _active = state
    try:
        yield state
    finally:
        _active = outer
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block no signal breaks into: a SIGINT/SIGTERM received inside is raised as Interrupted at its end."""
    state = _active
    if state is None:
        yield
        return
    state.deferring += 1
    try:
        yield
    finally:
        state.deferring -= 1
    if state.deferring == 0 and state.received is not None and not state.raised:
        state.raise_now()


def check_interrupted() -> None:
    """Raise a deferred interruption now (at a point where stopping is safe)."""
    state = _active
    if state is not None and state.received is not None and not state.raised and state.deferring == 0:
        state.raise_now()


_PR_SET_PDEATHSIG = 1  # prctl(2) option (Linux)
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # not Linux: the engine may outlive a killed launcher there
    _prctl = None


def _in_engine() -> None:
    """Runs in the engine's process before exec: ignore Slurm's USR signals (see the module docstring), and
    ask the kernel for SIGTERM when the launcher dies (SIGKILL, OOM killer, node trouble), so an engine never
    trains on as an orphan in a model directory whose lock its launcher no longer holds. The setting survives
    exec (also through ``bash -lc 'module load …; exec …'``)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _Reader(threading.Thread):
    def __init__(self, stream: IO[str], log: IO[str], echo: bool, tail: deque) -> None:
        super().__init__(name="hsbcala-engine-output", daemon=True)
        self.stream, self.log, self.echo, self.tail = stream, log, echo, tail
        self.lines: queue.Queue[str | None] = queue.Queue()

        self.dropped: dict[str, int] = {}  # where writing failed (disk full, closed pipe): lines not written

    def _write(self, where: str, f: IO[str], line: str) -> None:
        """Write one line; a failure drops it (counted, said once) and never stops the draining."""
        if where in self.dropped:
            self.dropped[where] += 1
            return
        try:
            f.write(line)
            f.flush()  # each line reaches the file as it is written (batch jobs, tail -f)
        except ValueError:  # closed: an interrupted run is ending
            self.dropped[where] = 1
        except OSError as exc:  # ENOSPC, EPIPE, EIO
            self.dropped[where] = 1
            say(
                f"warning: cannot write the engine's output to {where} ({exc.strerror}); its lines are dropped "
                f"there from now on, the engine goes on"
            )

    def run(self) -> None:
        try:
            for line in self.stream:
                if self.echo:
                    self._write("the console", sys.stdout, line)
                self._write(str(getattr(self.log, "name", "the log")), self.log, line)
                self.tail.append(line.rstrip())
                self.lines.put(line)
        finally:
            self.lines.put(None)


class EngineProcess:
    """An engine command, its output appended to ``log_path`` (after a header line naming the command).

    Use as a context manager: leaving the block (normally, by an error or by Interrupted) stops the engine if
    it still runs. ``lines()`` yields its output as it comes; ``wait()`` returns its exit code.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        echo: bool = False,
        cwd: Path | None = None,
        log_mode: str = "a",
        tail: int = 200,  # enough for a TensorFlow traceback (restore errors are matched in it)
        timeout_s: float | None = None,  # then stopped and EngineError (for commands that must end soon)
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.echo = echo
        self.cwd = cwd
        self.log_mode = log_mode
        self.tail: deque[str] = deque(maxlen=tail)
        self.proc: subprocess.Popen | None = None
        self._log: IO[str] | None = None
        self._reader: _Reader | None = None
        self._drained = False
        self.timeout_s = timeout_s
        self._deadline: float | None = None

    def __enter__(self) -> Self:
        self._log = open(self.log_path, self.log_mode, encoding="utf-8")
        self._log.write(
            ("\n" if self.log_mode == "a" else "")
            + f"# hsbcala {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(self.argv)}\n"
        )
        self._log.flush()
        try:
            # Deferred: a signal arriving during the fork runs its handler inside an at-fork hook (logging
            # registers one), where Python prints "Exception ignored" and drops the Interrupted (seen: a
            # scancel during an evaluation that then finished with exit 0). Raised when the engine is started.
            with deferred():
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    bufsize=1,
                    env=engine_environ(),
                    cwd=self.cwd,
                    start_new_session=True,
                    # only signal(2) calls between fork and exec (no locks, no allocation)
                    preexec_fn=_in_engine,  # noqa: PLW1509
                )
                self._reader = _Reader(self.proc.stdout, self._log, self.echo, self.tail)
                self._reader.start()
        except BaseException:  # __exit__ does not run when __enter__ raises: stop the engine here
            self.__exit__()
            raise
        if self.timeout_s is not None:
            self._deadline = time.monotonic() + self.timeout_s
        return self

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._deadline = None
            self.stop()
            raise EngineError(
                f"{Path(self.argv[0]).name} did not end within {self.timeout_s:.0f} s and was stopped "
                f"(log: {self.log_path}): {self.last_lines()}"
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def lines(self) -> Iterator[str]:
        """The engine's output lines until it closes its output (a timeout keeps signals deliverable)."""
        assert self._reader is not None and self.proc is not None
        exited_at = None
        while not self._drained:
            try:
                line = self._reader.lines.get(timeout=0.5)
            except queue.Empty:
                check_interrupted()
                self._check_deadline()
                if self.proc.poll() is not None:
                    # The engine has exited, but its output stays open while a process it started lives on
                    # (seen: calamari-predict's worker processes): after a grace period, end the leftovers
                    # of its process group, which closes the pipe.
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > LINGER_S:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(self.proc.pid, signal.SIGKILL)
                continue
            if line is None:
                self._drained = True
                return
            self._check_deadline()
            yield line

    def wait(self) -> int:
        """The engine's exit code once its output is drained. An engine ended by SIGTERM/SIGINT raises
        Interrupted (the message of the enclosing :func:`interruptible`): it was stopped from outside (scancel
        signals every process of the job, and the engine may die before the launcher's own signal arrives),
        an interruption of the launch, not an engine failure."""
        assert self.proc is not None and self._reader is not None
        for _ in self.lines():  # drain (a caller that does not parse the output)
            pass
        code = self.proc.wait()
        self._reader.join()
        if code in (-signal.SIGTERM, -signal.SIGINT):
            message = _active.message if _active is not None else "interrupted by {signal}"
            raise Interrupted(message.format(signal=signal.Signals(-code).name))
        refusal = [x for x in self.tail if x.startswith(MARK)]
        if code == NO_GPU_EXIT and refusal:  # engine_start.py's GPU check: its one line is the message
            raise EngineError(refusal[-1][len(MARK) :].strip() + f" (log: {self.log_path})")
        return code

    def output_tail(self) -> str:
        """The last lines of output (up to ``tail``), joined with newlines."""
        return "\n".join(self.tail)

    def last_lines(self, n: int = 3) -> str:
        """The last non-empty output lines, joined for a one-line error message."""
        return " | ".join(x for x in list(self.tail)[-n:] if x.strip())

    def stop(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM to the engine's process group, SIGKILL after ``grace_s``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._log is not None:
                self._log.close()
