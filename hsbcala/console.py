"""hsbcala's own messages: one logger, ``hsbcala``, printed as ``hsbcala: …`` on stderr.

Every module says things through :func:`say` (or ``logging.getLogger("hsbcala")``), never ``print``, so that
Hydra's job log (``<run dir>/hsbcala.log``, configured in ``conf/config.yaml``) holds them too. Outside a
Hydra job (``python -m hsbcala.…``, tests) :func:`say` installs the same console format once.
"""

from __future__ import annotations

import logging
import sys

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


def warn(msg: str) -> None:
    say(f"warning: {msg}")
