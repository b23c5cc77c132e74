"""How a job ended, as both sides of a Slurm submission see it: a module of its own, so that the job side
(:mod:`hsbcala.slurm.job`, which makes it) and the login-node side (:mod:`hsbcala.slurm.launch`, which reads it)
never import each other."""

from __future__ import annotations

from typing import Any


class JobExit(Exception):
    """A job that ended with hsbcala's clean exit (its one-line error is in the job's stderr).

    Made in the job (the launcher's ``__call__`` returns it in a failed JobReturn), read on the login node
    (:func:`hsbcala.slurm.launch.outcome`).
    """

    def __init__(self, code: Any) -> None:
        super().__init__(code)
        self.code = code if isinstance(code, int) else 1

    def __str__(self) -> str:
        return f"exit code {self.code}"
