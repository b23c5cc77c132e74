"""What tracking needs to know, without importing MLflow (seconds): where the store is, whether it can be
used, what a run is told (flattened params with credentials masked, tags, the git commit).

:mod:`hsbcala.tracking` (every MLflow call) builds on these; they are separate so that a dry run, the data
step and the store check before the engine starts stay fast.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from hsbcala.errors import ConfigError


def tracking_uri(cfg: Any) -> str:
    if cfg.mlflow.tracking_uri:
        return str(cfg.mlflow.tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(cfg.paths.root).resolve() / 'mlruns.db'}"


def default_artifact_root(cfg: Any, uri: str) -> str | None:
    """Artifacts of the embedded sqlite store go beside it (not to ./mlruns of whatever the cwd is)."""
    if (
        uri.startswith("sqlite:///")
        and not cfg.mlflow.tracking_uri
        and "MLFLOW_TRACKING_URI" not in os.environ
    ):
        return (Path(cfg.paths.root).resolve() / "mlartifacts").as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        text = json.dumps(d, ensure_ascii=False) if isinstance(d, list) else str(d)
        out[prefix[:-1]] = text[:6000]  # MLflow's limit for a param value
    return out


def masked(text: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:***@host`` (see :mod:`hsbcala.masking`)."""
    from hsbcala.masking import mask

    return mask(text)


def bound_http() -> None:
    """Bound MLflow's HTTP retries (default: minutes of back-off per call), so an unreachable server costs
    seconds, not the end of a finished training. The user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow configures its own logger at import (INFO: database set-up, system metrics start/stop), which
    # would undo conf/config.yaml's level; its warnings still show
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def check_store(cfg: Any) -> None:
    """Before the engine starts: the tracking store can be reached and written (ConfigError otherwise).

    Without importing mlflow (seconds): an HTTP server must answer ``/health``; a sqlite file must be
    writable, or its directory must be, to create it. Other schemes are left to MLflow."""
    import urllib.error
    import urllib.request

    uri = tracking_uri(cfg)
    key = (
        "mlflow.tracking_uri"
        if cfg.mlflow.tracking_uri
        else "MLFLOW_TRACKING_URI"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else "the default tracking store"
    )
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as r:
                ok = r.status == 200
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"{key}={masked(uri)}: the tracking server does not answer ({reason}); start it, or set "
                f"mlflow.tracking_uri to another store"
            ) from None
        if not ok:
            raise ConfigError(f"{key}={masked(uri)}: the tracking server answered /health with an error")
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        target = db if db.exists() else db.parent
        if not target.exists():
            raise ConfigError(f"{key}={uri}: the directory {db.parent} does not exist")
        if not os.access(target, os.W_OK):
            raise ConfigError(f"{key}={uri}: {target} is not writable; choose another mlflow.tracking_uri")


def git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(cfg: Any, project: Path, model_dir: Path) -> dict[str, str]:
    tags = {
        "script": cfg.script.name,
        "version": cfg.version.name,
        "calamari": cfg.version.package,
        "cluster": cfg.cluster.name,
        "preset": cfg.preset,
        "profiler": cfg.profiler.name,
        "model_dir": str(model_dir),
        "hsbcala.git_commit": git_commit(project),
        "host": socket.gethostname(),
    }
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm.job_id"] = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            tags["slurm.array"] = (
                f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
            )
    return tags
