"""What tracking needs to know, without importing MLflow (seconds): where the store is, whether it can be
used, what a run is told (flattened params with credentials masked, tags, the git commit).

:mod:`hsbcala.track.tracking` (every MLflow call) builds on these; they are separate so that a dry run, the data
step and the store check before the engine starts stay fast.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

from hsbcala.core.errors import ConfigError


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


def param_value(text: str | None) -> Any:
    """A value :func:`flatten` logged as an MLflow param, read back (params are strings: the config's null
    became "None", booleans "True"/"False", lists JSON)."""
    if text is None or text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        return text


def masked(text: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:***@host`` (see :mod:`hsbcala.core.masking`)."""
    from hsbcala.core.masking import mask

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
    """``<commit>``, ``<commit>-dirty`` or ``unknown``: :func:`hsbcala.track.provenance.git_state` decides."""
    from hsbcala.track import provenance

    return provenance.git_state(path).label()


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
        tags["slurm.job_name"] = os.environ.get("SLURM_JOB_NAME", "")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            tags["slurm.array"] = (
                f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
            )
    return tags


# ---- what a training run is told besides params and tags (no MLflow here: unit-tested on their own)

# MLflow 3's UI opens an experiment in the view its tag ``mlflow.experimentKind`` names (the UI's enum
# ExperimentKind, mlflow/server/js …/constants: genai_development, custom_model_development, …); without it the
# UI guesses and shows the GenAI view (traces, prompts). mlflow 3.17 has no Python constant for either.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # the UI's "machine learning" view: runs, charts, models


def _short(text: str, n: int = 12) -> str:
    return text[:n] if text else "?"


def run_note(
    cfg: Any,
    *,
    totals: dict[str, Any] | None,
    content_sha256: str | None,
    warmstart: Path | None,
    resumed_from: Path | None = None,
    model_dir: Path | None = None,
) -> str:
    """The run's description (MLflow's ``mlflow.note.content``, Markdown): what was trained on which data,
    from which model. ``totals`` is the manifest's (lines per split)."""
    v = cfg.version
    lines = [
        f"**{cfg.script.name}** (`{cfg.script.model_name}`), `{v.name}` (`{v.package}`), preset `{cfg.preset}`"
    ]
    if totals:
        tr, va = totals.get("train", {}), totals.get("val", {})
        lines.append(
            f"- data: {tr.get('lines', '?')} training lines, {va.get('lines', '?')} validation lines "
            f"(content sha256 `{_short(content_sha256 or '')}`; {totals.get('dropped', 0)} dropped by the checks)"
        )
    train_globs = list(cfg.data.train or [])
    if train_globs:
        shown = ", ".join(f"`{g}`" for g in train_globs[:3]) + (" …" if len(train_globs) > 3 else "")
        val = "split by document" if not cfg.data.val else f"{len(cfg.data.val)} glob(s)"
        lines.append(f"- from: {shown}; validation: {val}")
    lines.append(f"- warm start: `{warmstart}`" if warmstart else "- warm start: none (from scratch)")
    t = cfg.train
    network = t.network or ("the warm-start model's" if warmstart else "Calamari's default")
    lines.append(
        f"- network: `{network}`; "
        f"batch {t.batch_size}, {t.epochs} epochs, {t.augmentations} augmentations, "
        f"patience {t.early_stopping_patience}"
    )
    if model_dir is not None:
        lines.append(f"- model directory: `{model_dir}`")
    if resumed_from is not None:
        lines.append(f"- resumed from `{resumed_from}`")
    return "\n".join(lines) + "\n"


def dataset_rows(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """One row per line of ``split`` in the manifest, for an MLflow dataset (its schema and profile)."""
    return [
        {
            "image": r["image"],
            "text": r.get("text", ""),
            "chars": float(len(r.get("text") or "")),
            "width": float(r.get("width") or 0),
            "height": float(r.get("height") or 0),
            "document": str(r.get("document") or ""),
        }
        for r in manifest.get("lines", [])
        if r.get("split") == split
    ]


def split_digest(manifest: dict[str, Any], split: str) -> str:
    """A short, path-independent hash of one split's lines: :func:`hsbcala.data.manifest.split_digest`, the one
    the console names."""
    from hsbcala.data import manifest as manifests

    return manifests.split_digest(manifest, split)


class JobUsage:
    """CPU and memory of this process and all its descendants (the engine and its data workers): the job's
    own share, beside MLflow's machine-wide ``system/*`` metrics. ``sample()`` returns ``system/job/*`` metrics;
    CPU is measured between two samples (the first sample has none)."""

    def __init__(self, root: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(root or os.getpid())
        self._procs: dict[int, Any] = {}
        from hsbcala.engines import envs

        self.cpus = envs.usable_cpus()  # what this job may use (Slurm's allocation), not the node
        self._started = False

    def sample(self) -> dict[str, float]:
        ps = self._psutil
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except ps.Error:
            return {}
        cpu = rss = 0.0
        alive = {}
        for p in tree:
            p = self._procs.get(p.pid, p)
            try:
                with p.oneshot():
                    c = p.cpu_percent(None)  # since this object's previous call (0.0 at its first)
                    rss += p.memory_info().rss
            except ps.Error:  # ended between listing and reading
                continue
            cpu += c
            alive[p.pid] = p
        self._procs = alive
        # under ``system/``: MLflow 3.17's run page puts every key that starts with ``system/`` on its "System
        # metrics" tab and shows the rest on "Model metrics" with prefix sections (``job/``) sorted BEFORE the
        # unprefixed section (main.js getBaseChartAndSectionConfigs), so ``job/*`` pushed val_cer below the fold
        out = {"system/job/memory_rss_megabytes": rss / 2**20, "system/job/processes": float(len(alive))}
        if self._started:
            out["system/job/cpu_cores_used"] = cpu / 100.0
            out["system/job/cpu_utilization_percentage"] = cpu / self.cpus
        self._started = True
        return out


# ---- how the MLflow UI is reached and what its charts show (issue 22, item 1)

# MLflow 3.17's UI ignores ``mlflow.experimentKind`` for the view it opens: its feature flag
# ``shouldEnableWorkflowBasedNavigation`` is on in OSS (server/js … main.js: ``Z0 = () => !0``), and then the
# experiment's kind is derived from one global "workflow type" (the sidebar's "GenAI / Model training"
# switch), read from the URL's ``?workflowType=`` first, else the browser's localStorage
# ``mlflow.workflowType``, else ``genai``. There is no server option for it. So a link that opens the training
# view must carry ``workflowType=machine_learning``; the UI keeps the parameter while one navigates (it is
# one of its preserved search parameters, with ``workspace``), and a click on "Model training" in the sidebar
# remembers the choice in that browser. The tag stays: older UIs and the experiments list read it.
UI_VIEW_QUERY = "workflowType=machine_learning"


def ui_url(server: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's address of an experiment (its runs table) or of one run, in the model-training view."""
    base = f"{server.rstrip('/')}/#/experiments/{experiment_id}"
    return f"{base}/runs/{run_id}?{UI_VIEW_QUERY}" if run_id else f"{base}/runs?{UI_VIEW_QUERY}"


# A CER falls from ~1 to ~0.01 in a short training: on a linear axis everything after the first epochs is a
# flat line near 0. val_cer_log10 makes a halving the same height wherever it happens (a per cent scale would
# not: same shape as the CER). A CER of 0 (a tiny validation set read without error) is shown at 1e-4
# (0.01 %): below what any validation set here can resolve, and finite, which MLflow requires.
CER_LOG_FLOOR = 1e-4


def for_mlflow(metrics: dict[str, float]) -> dict[str, float]:
    """An engine's epoch metrics as the run shows them: ``stage`` counted from 1 like the console's
    ``stage 1/2`` (the engines' progress parsers count from 0), and ``val_cer_log10`` beside ``val_cer``."""
    out = dict(metrics)
    if "stage" in out:
        out["stage"] = float(out["stage"]) + 1
    if out.get("val_cer") is not None:
        out["val_cer_log10"] = math.log10(max(float(out["val_cer"]), CER_LOG_FLOOR))
    return out


def training_run_name(cfg: Any, started: datetime.datetime) -> str:
    """A new training run's MLflow name: ``<model_dir's name>-<yyyymmdd-HHMM>`` (which directory, and when),
    so that two trainings of the same config are two rows one can tell apart; a name given with
    ``mlflow.run_name=`` is kept as given. The default is recognised by its unresolved template."""
    from omegaconf import OmegaConf

    from hsbcala.config.schema import MlflowConf

    raw = OmegaConf.to_container(cfg.mlflow, resolve=False).get("run_name")
    if raw != MlflowConf.run_name:
        return str(cfg.mlflow.run_name)
    return f"{Path(str(cfg.model_dir)).name}-{started:%Y%m%d-%H%M}"
