"""The entry points' error reporting: a bad command line is one ``hsbcala: error: …`` line and exit 2.

Hydra reports a failure while composing the config (an unknown key, a bad group option, a value of the wrong
type or outside an enumeration) in several lines, advises ``+key=…`` (which the schema then refuses) and
exits 1. :func:`install` replaces Hydra's reporter (``hydra._internal.utils.run_and_report``, private in
hydra-core 1.3; deliberately patched rather than re-implementing ``@hydra.main``) with one that turns those
failures into one line naming the key and the valid choices, exit 2, and leaves every other exception to
Hydra.

Only failures before the task function runs are the command line's. Errors of the run itself are
:func:`hsbcala.core.errors.clean_exit`'s (the entry points wrap the task in it, with :func:`user_paths`): it ends
every exception of the run, so an OmegaConf error raised by hsbcala's own code never reaches this reporter to
pass for a bad command line; it is reported as the bug it is.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
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
            f"{str(exc).splitlines()[0]}); set it in a config file (for cluster.env: a cluster config, see "
            "docs/clusters.md)"
        )
    return None


# The config keys that name the user's files and directories (globs: the directory before the first wildcard).
# An OSError on one of them (missing, no permission) is the user's to fix: one line (hsbcala.core.errors.clean_exit).
USER_PATH_KEYS = (
    "model_dir",
    "data.train",
    "data.val",
    "data.whitelist_file",
    "data.synthetic.text_file",
    "data.cache_dir",
    "warmstart.model",
    "warmstart.pretrained_dir",
    "cluster.stage.archive",
    "cluster.stage.dir",
    "cluster.ramdisk",
    "version.env.root",
    "version.env.venv",
    "eval.data",
    "eval.extra",
    "eval.model",
    "eval.export_dir",
    "mlflow.tracking_uri",
)


def _glob_root(text: str) -> Path:
    cut = min((i for i, c in enumerate(text) if c in "*?["), default=None)
    if cut is None:
        return Path(text)
    head = text[:cut]
    return Path(head) if head.endswith("/") else Path(head).parent


def user_paths(cfg: Any) -> list[Path]:
    """The files and directories ``cfg`` names (absolute; a glob's fixed directory; a sqlite store's file).

    Never raises: it serves the error report, and a key that does not resolve is simply not one of them."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    found: list[Path] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and value:
            if "://" in value:  # a tracking URI: only a local sqlite store is a path
                if not value.startswith("sqlite:///"):
                    return
                value = value[len("sqlite:///") :]
            found.append(_glob_root(value).absolute())
        elif isinstance(value, (list, tuple)):
            for v in value:
                add(v)
        elif isinstance(value, dict):
            for v in value.values():
                add(v)

    for key in USER_PATH_KEYS:
        try:
            node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            add(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)
        except (OmegaConfBaseException, ValueError, TypeError):
            continue
    return found


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
