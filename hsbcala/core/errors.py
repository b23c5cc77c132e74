"""The project's error type and the one place that turns a failure into a clean exit.

Every expected failure (bad config key, missing file, broken data, engine failure) is raised as
:class:`HsbcalaError` with a message of one line that names the bad key or file. Entry points wrap their
work in :func:`clean_exit`, which prints ``hsbcala: error: <message>`` to stderr and exits with the error's
code: never a traceback wall for bad input. Anything else that escapes is a bug in hsbcala, and a bug must
not pass for the user's mistake: its traceback is kept (stderr and Hydra's ``hsbcala.log``), the last line
says it is a bug and where to report it, and the exit code is its own.

Exit codes (docs/bad-input.md):

====  ==========================================================================================
0     done, or nothing to do
2     the user's input: config key or value, data, model directory, tracking store (one line)
3     the engine failed, or the file system under a run (full disk, I/O error, read-only), or a
      path the user named cannot be read or written (one line)
70    a bug in hsbcala (``EX_SOFTWARE`` of sysexits.h): the traceback, then one line saying so
130   interrupted (SIGINT, SIGTERM, walltime); the same command resumes
====  ==========================================================================================
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


class HsbcalaError(Exception):
    """An expected failure, reported as one line and a non-zero exit code."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(HsbcalaError):
    """A config key or value is wrong (names the key)."""


class DataError(HsbcalaError):
    """Training or evaluation data is missing or broken (names the file or glob)."""


class EngineError(HsbcalaError):
    """The Calamari engine (or its environment) failed; carries the tail of its log."""

    exit_code = 3


class RestoreFailed(EngineError):
    """The engine could not read back the checkpoint it was to resume from (the runner sets it aside)."""

    def __init__(self, message: str, checkpoint: object) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class Interrupted(HsbcalaError):
    """Training was interrupted by a signal (SIGINT, SIGTERM, walltime); resumable from the last checkpoint."""

    exit_code = 130


FILE_SYSTEM_EXIT = (
    3  # the file system failed under a run (disk full, I/O error, read-only): like an engine failure
)
BUG_EXIT = 70  # sysexits.h EX_SOFTWARE: distinct from every user error, so scripts and Slurm reports can tell
REPORT_TO = "the hsbcala maintainers (the project's issue tracker)"

# The file system failing under a run, whatever the path: the user's (or the site's) to fix, never a bug.
FILE_SYSTEM_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ESTALE, errno.ENOMEM}
)


def _under(filename: object, roots: tuple[Path, ...]) -> bool:
    """``filename`` (an OSError's) is one of ``roots`` or lies below one (either taken as given or resolved)."""
    if not isinstance(filename, (str, Path)) or not str(filename):
        return False
    path = Path(filename).absolute()
    candidates = {path}
    with contextlib.suppress(OSError, RuntimeError):
        candidates.add(path.resolve())
    return any(c == r or c.is_relative_to(r) for c in candidates for r in roots)


def is_users(exc: OSError, user_paths: Iterable[Path] = ()) -> bool:
    """An OSError that is the user's to fix: the file system failed (full, read-only, I/O), or the file it
    names is a path the user gave (a missing file named in the config, no permission on a user directory).
    Any other (an ENOENT on a path hsbcala made up itself) is a bug."""
    if exc.errno in FILE_SYSTEM_ERRNOS:
        return True
    roots = tuple(Path(p).absolute() for p in user_paths)
    roots += tuple(r.resolve() for r in roots)
    return _under(exc.filename, roots) or _under(exc.filename2, roots)


def _user_config_error(exc: BaseException) -> str | None:
    """One line for an OmegaConf error that comes from the config's own text (an interpolation that does not
    resolve, a mandatory ``???`` value left unset) when the run reads it before :func:`hsbcala.config.schema.check`
    has; any other OmegaConf error inside the run (a key the code misspelt, a read-only node) is a bug."""
    try:
        from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
    except ImportError:  # the CLIs without OmegaConf (python -m hsbcala.pretrained)
        return None
    if isinstance(exc, (InterpolationResolutionError, MissingMandatoryValue)):
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0]
        return f"{key}: {msg}" if key else msg
    return None


def _composing(exc: BaseException) -> bool:
    """Hydra failed to compose a config (a bad override of a sweep point): reported by hsbcala.core.cli as one line."""
    try:
        from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    except ImportError:
        return False
    return isinstance(exc, (ConfigCompositionException, MissingConfigException, OverrideParseException))


def report_bug(exc: BaseException) -> None:
    """The traceback and one line saying this is a bug in hsbcala, through hsbcala's logger (so also into
    Hydra's ``<run dir>/hsbcala.log``), the last line on stderr."""
    from hsbcala.core import console

    console._ensure_handler()
    console.log.error("internal error; the traceback:", exc_info=(type(exc), exc, exc.__traceback__))
    where = console.log_file()
    log_note = f" and {where}" if where is not None else ""
    console.log.error(
        f"error: this is a bug in hsbcala, not a mistake in your command or data ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); please report it to {REPORT_TO} with the "
        f"traceback above{log_note}"
    )
    for handler in console.log.handlers:
        handler.flush()


@contextlib.contextmanager
def clean_exit(user_paths: Iterable[Path] = ()) -> Iterator[None]:
    """The clean end of an entry point's work:

    - :class:`HsbcalaError`: ``hsbcala: error: …`` on stderr and ``sys.exit(code)``;
    - an OSError of the file system (a full disk, a file system gone read-only) or on one of ``user_paths``
      (the files and directories the user's config names): one line naming the file, exit 3;
    - anything else: a bug (:func:`report_bug`), exit :data:`BUG_EXIT`.
    """
    try:
        yield
    except HsbcalaError as exc:
        if isinstance(exc, Interrupted):  # stopping already: a second Ctrl-C/SIGTERM must not kill the exit
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)
        print(f"hsbcala: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if not is_users(exc, user_paths):
            report_bug(exc)
            sys.exit(BUG_EXIT)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hsbcala: error: {exc.strerror or exc}{where}", file=sys.stderr, flush=True)
        sys.exit(FILE_SYSTEM_EXIT)
    except Exception as exc:
        if _composing(
            exc
        ):  # a sweep point composed inside the launcher: the command line's, for Hydra's reporter
            raise
        line = _user_config_error(exc)
        if line is not None:
            print(f"hsbcala: error: {line}", file=sys.stderr, flush=True)
            sys.exit(ConfigError.exit_code)
        report_bug(exc)
        sys.exit(BUG_EXIT)
