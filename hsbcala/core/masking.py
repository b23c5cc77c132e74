"""Credentials in URIs never reach a file hsbcala writes: ``http://user:secret@host`` → ``http://user:***@host``.

Used for MLflow params and the config artifact (:mod:`hsbcala.track.tracking`), the state file, and Hydra's own
record of the run (:class:`MaskSecrets`, a Hydra callback in ``conf/config.yaml``, rewrites ``.hydra/*.yaml``
and a sweep's ``multirun.yaml`` right after Hydra saved them). Secrets belong in environment variables
(``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), which hsbcala never writes anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<secret>[^@/\s'\"]+)@"
)


def mask(text: str) -> str:
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def _mask_files(directory: Path, pattern: str) -> None:
    for f in directory.glob(pattern):
        text = f.read_text(encoding="utf-8")
        if _CREDENTIALS.search(text):
            from hsbcala.core import fsutil

            fsutil.atomic_write_text(f, mask(text))


class MaskSecrets(Callback):
    """Hydra callback: mask credentials in the config files Hydra saves for each run and sweep."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        out = Path(str(config.hydra.runtime.output_dir)) / str(config.hydra.output_subdir or ".hydra")
        if out.is_dir():
            _mask_files(out, "*.yaml")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if sweep.is_dir():
            _mask_files(sweep, "multirun.yaml")
