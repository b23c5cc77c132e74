"""The entry points' error reporting: a bad command line is one ``hsbcala: error: …`` line and exit 2.

Hydra reports a failure while composing the config (an unknown key, a bad group option, a value of the wrong
type or outside an enumeration) in several lines, advises ``+key=…`` (which the schema then refuses) and
exits 1. :func:`install` replaces Hydra's reporter (``hydra._internal.utils.run_and_report``, private in
hydra-core 1.3; deliberately patched rather than re-implementing ``@hydra.main``) with one that turns those
failures into one line naming the key and the valid choices, exit 2, and leaves every other exception to
Hydra. Errors of the run itself are :func:`hsbcala.errors.clean_exit`'s.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

USAGE_EXIT = 2


def describe(exc: BaseException) -> str | None:
    """One line for a failure while composing the config, or None if ``exc`` is not one."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, MissingConfigException):
        text = str(exc)
        m = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
        options = sorted(exc.options or []) if getattr(exc, "options", None) else []
        if m:
            choice = f"; available: {', '.join(options)}" if options else ""
            return f"{m.group(1)}={m.group(2)}: no such option{choice}"
        return text.splitlines()[0]
    if isinstance(exc, OverrideParseException):
        return f"cannot read the override: {str(exc).splitlines()[0]}"
    if isinstance(exc, ConfigCompositionException):
        cause = exc.__cause__
        first = str(exc).splitlines()[0]
        m = re.search(r"Could not override '([^']+)'", first)
        if m:
            return f"{m.group(1)}: no such key (a typo?); `python train.py --help` lists the keys"
        if isinstance(cause, OmegaConfBaseException):
            key = getattr(cause, "full_key", None) or ""
            msg = str(cause).splitlines()[0]
            override = re.sub(r"^Error merging override ", "", first)
            return f"{key or override}: {msg}" if key else f"{override}: {msg}"
        return first
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0]
        return f"{key}: {msg}" if key else msg
    # OmegaConf's report re-raised as a plain exception: a dict override onto a null structured node
    m = re.search(r"^\s*full_key: (\S+)", str(exc), re.MULTILINE)
    if m and isinstance(exc, AttributeError) and "'NoneType' object" in str(exc):
        return (
            f"{m.group(1)}: cannot be set on the command line while it is null in the config ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}); set it in a config file (for cluster.env: a cluster config, see README "
            f'"Slurm clusters")'
        )
    return None


def _reporting(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run_and_report(func: Any) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except Exception as exc:
                line = describe(exc)
                if line is None:
                    raise
                print(f"hsbcala: error: {line}", file=sys.stderr, flush=True)
                sys.exit(USAGE_EXIT)

        return original(guarded)

    run_and_report.hsbcala = True  # type: ignore[attr-defined]
    return run_and_report


def install() -> None:
    """Route Hydra's error reporting through :func:`describe` (idempotent)."""
    import hydra._internal.utils as hydra_utils

    if not getattr(hydra_utils.run_and_report, "hsbcala", False):
        hydra_utils.run_and_report = _reporting(hydra_utils.run_and_report)
