"""MLflow tracking of one training: the run, its params/tags, live metrics, system metrics and artifacts.

- Store: ``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded default
  ``sqlite:///<project>/mlruns.db`` with artifacts under ``<project>/mlartifacts`` (no server needed; MLflow 3
  refuses new plain-directory stores). View with ``mlflow ui --backend-store-uri sqlite:///mlruns.db``.
- One experiment per script (``hsbcala-fraktur``, ``hsbcala-antiqua``); the run name says script, version and
  sweep point, so the UI's run table compares versions and sweep points directly.
- A resumed training re-opens the run whose id the model directory keeps, so curves continue.
- The experiment opens in MLflow's model-training view (tag ``mlflow.experimentKind``), not the GenAI one.
- Steps are epochs for both versions (Calamari 1's iterations converted by its progress parser); figures known
  only at the end go to the last epoch, never to a step 0 of their own.
- Each run has a description (``mlflow.note.content``), its training and validation lines as MLflow dataset
  inputs (digest: the lines' content hash; rows: the lines) and, when it finished, its best model as an MLflow
  logged model with its files and CER (a Model Registry version too with ``mlflow.register=true``).
- Resource metrics come from MLflow's own system-metrics monitor (CPU, RAM, disk, network; GPU utilisation and
  memory through pynvml when there is a GPU), sampled in the launcher process for the whole machine, and from
  hsbcala's ``system/job/*`` metrics: CPU and RSS of the launcher and the engine's process tree, at the same interval.
- Every run ends FINISHED, FAILED or KILLED: :meth:`Tracker.end` is called from the runner's ``finally``.

Every MLflow call of hsbcala is in this module: training runs (:class:`Tracker`), evaluation runs
(:class:`EvalTracker`), multirun comparisons (:func:`log_comparison`), Slurm job accounting and store set-up.
mlflow is imported lazily (here only), so ``dry_run`` and ``--help`` stay fast.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf

from hsbcala.core.console import log, say
from hsbcala.core.errors import ConfigError
from hsbcala.engines.envs import project_root
from hsbcala.track.info import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    JobUsage,
    bound_http,
    dataset_rows,
    default_artifact_root,
    flatten,
    for_mlflow,
    git_commit,
    masked,
    run_note,
    split_digest,
    tracking_uri,
    training_run_name,
    ui_url,
)

bound_http()  # before any mlflow import: bounded HTTP retries, MLflow's own logger at WARNING


class Evaluated(Protocol):
    """What an evaluation's MLflow run records of the evaluation (``hsbcala.evaluate.predict.Plan`` has it):
    a protocol, so that tracking, a wing below evaluation, never imports it."""

    label: str
    version: str
    checkpoint: Path  # the model's .ckpt.json
    model_dir: Path | None  # None: eval.model outside a model directory


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else repr(exc)


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a store that cannot be used raises: MLflow's own error (the REST client wraps every failed
    request in it), SQLAlchemy's (a sqlite file that is not a database), an OSError (permissions). Anything
    else is a bug in hsbcala and keeps its traceback."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError  # mlflow's own dependency, loaded with it

    return (MlflowException, SQLAlchemyError, OSError)


def _bad_value(exc: BaseException) -> bool:
    """The store works and refused a value hsbcala sent (MLflow's INVALID_PARAMETER_VALUE): a bug in hsbcala,
    not an outage; replaying the spool would be refused again."""
    return getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"


# What MLflow 3 refuses in a logged model's name (its message: "cannot contain the following characters"); the
# run's name is the model directory's, and the demo's (hsbfraktur.<version>.demo) has dots. (MLflow's own check,
# mlflow.utils.validation, is private: this mirrors it.)
_NOT_IN_MODEL_NAMES = str.maketrans({c: "-" for c in "/:.%\"'"})


def logged_model_name(run_name: str) -> str:
    """The run's name as a name MLflow takes for a logged model (``hsbfraktur.<version>.demo-…`` →
    ``hsbfraktur-<version>-demo-…``)."""
    return run_name.translate(_NOT_IN_MODEL_NAMES)


def _create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Create the experiment, or take the one a concurrent job (an array task) created a moment earlier."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # RESOURCE_ALREADY_EXISTS, or the sqlite store's unique-constraint error
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _training_view(client: Any, exp_id: str, tags: dict[str, str]) -> None:
    """Let MLflow's UI open the experiment in its model-training view (runs, charts, models) instead of the
    GenAI one it guesses without the tag; a view someone chose in the UI is kept."""
    if EXPERIMENT_KIND_TAG not in tags:
        try:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        except _store_errors() as exc:  # a view is a convenience: never a reason to stop
            log.warning("MLflow: the experiment's model-training view was not set: %s", _first_line(exc))


# ---- reading a run back on resume: "gone" vs "not answering" (issue 19: a 503 must not split a training)

# MLflow's error codes of a store that cannot answer now (MLflow's own table maps them to 503, 429, 504);
# the sqlite store raises TEMPORARILY_UNAVAILABLE for a locked database (mlflow/store/db/utils.py)
_TRANSIENT_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"})
RESUME_ATTEMPTS = 4  # hsbcala's own attempts, each with MLflow's own HTTP retries inside


def _transient(exc: BaseException) -> bool:
    """True for a failure that may pass: a refused or reset connection, a timeout, a server that kept
    answering 5xx/429 through MLflow's own retries (``mlflow.utils.rest_utils.http_request`` raises a plain
    MlflowException for all of these, the ``requests`` error, an OSError, as its context), or one of
    :data:`_TRANSIENT_CODES`. A malformed URI (InvalidUrlException) or any answer the server gave on purpose
    (404 ``RESOURCE_DOES_NOT_EXIST``, 403, 400) is not."""
    from mlflow.exceptions import InvalidUrlException, MlflowException

    if not isinstance(exc, MlflowException) or isinstance(exc, InvalidUrlException):
        return False
    if exc.error_code in _TRANSIENT_CODES:
        return True
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError):  # requests.RequestException is an OSError (IOError)
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _patiently(what: str, uri: str, call: Callable[[], Any]) -> Any:
    """``call()``, asked again while the store fails transiently (:func:`_transient`), each retry said on the
    console; the last failure is raised. A non-transient failure is raised at once.

    MLflow's own HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``_BACKOFF_FACTOR``) work inside each
    attempt, but :func:`hsbcala.track.info.bound_http` keeps them short for the whole process, so that a
    best-effort call during training (a metric, which is spooled and sent later) costs seconds. A run read
    back on resume is the one call whose failure cannot be redone later (the launch would have to choose
    between a new run and none), so it gets more patience of its own, without raising MLflow's setting for
    every call; the waits scale with the user's ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``. MLflow retries
    HTTP only: the sqlite store's locked database is retried here too."""
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR") or 1)
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            return call()
        except _store_errors() as exc:
            if not _transient(exc) or attempt == RESUME_ATTEMPTS:
                raise
            wait = factor * 2**attempt
            say(
                f"MLflow ({uri}) did not answer {what} ({_first_line(exc)[:400]}); asking again in "
                f"{wait:.1f} s (attempt {attempt + 1} of {RESUME_ATTEMPTS})"
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def _refused(what: str, uri: str, run_id: str, exc: BaseException) -> ConfigError:
    said = (
        f"did not answer {what} after {RESUME_ATTEMPTS} attempts"
        if _transient(exc)
        else f"refused to answer {what}"
    )
    return ConfigError(
        f"mlflow.tracking_uri={uri}: the tracking store {said} ({_first_line(exc)[:400]}); training was not "
        f"continued and the model directory still names run {run_id}: launch again when the store answers, "
        f"and training resumes in that run"
    )


def _resumable(mlflow: Any, run_id: str, uri: str) -> bool:
    """Whether the run the model directory names can be re-opened. False only when the store says for sure
    that it is not there (``RESOURCE_DOES_NOT_EXIST``: the directory was trained against another store) or
    it was deleted: then a new run is started, and the console says so. A store that does not answer is
    asked again (:func:`_patiently`) and then refused (:class:`ConfigError`): never a silent new run, which
    would split one training's curves over two runs and rewrite the run id in the state."""
    try:
        run = _patiently(f"for the run {run_id}", uri, lambda: mlflow.get_run(run_id))
    except _store_errors() as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            say(
                f"the MLflow run {run_id} named in this model directory is not in {uri} (trained against "
                f"another tracking store?): a new run is started, its curves start at this launch"
            )
            return False
        raise _refused(f"for the run {run_id}", uri, run_id, exc) from exc
    if run.info.lifecycle_stage == "deleted":
        say(
            f"the MLflow run {run_id} named in this model directory was deleted from {uri}: a new run is started"
        )
        return False
    return True


class _JobSampler:
    """The job's own CPU and RSS (:class:`hsbcala.track.info.JobUsage`) as ``system/job/*`` metrics, every
    ``interval`` seconds like MLflow's system metrics, numbered like them (0, 1, …; a resumed run goes on)."""

    KEY = "system/job/memory_rss_megabytes"

    def __init__(self, tracker: Tracker, interval: float) -> None:
        self.tracker, self.interval = tracker, max(0.5, float(interval))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hsbcala-job-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            usage = JobUsage()
        except psutil.Error as exc:  # a container that hides /proc: MLflow's system metrics remain
            say(
                f"warning: no system/job/* metrics (the job's CPU and memory): psutil cannot read this process: {exc}"
            )
            return
        try:  # a resumed run goes on numbering where the last launch stopped
            hist = self.tracker._mlflow.MlflowClient().get_metric_history(self.tracker.run_id, self.KEY)
        except _store_errors() as exc:
            say(
                f"warning: MLflow ({self.tracker.uri}): no system/job/* metrics in this launch (the job's CPU and "
                f"memory): their last sample number could not be read: {_first_line(exc)}"
            )
            return
        step = max((m.step for m in hist), default=-1) + 1
        usage.sample()  # CPU is measured from here
        while not self._stop.wait(self.interval):
            metrics = usage.sample()
            if metrics:
                self.tracker.log(step, metrics, curve=False)
                self.tracker.flush()
                step += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _spool(spool: Path | None, run_id: str, metrics: list[Any]) -> None:
    """Append metrics that could not be sent (one JSON line each); a full disk loses them (said), no crash."""
    if spool is None:
        return
    try:
        spool.parent.mkdir(parents=True, exist_ok=True)
        with open(spool, "a", encoding="utf-8") as f:
            f.writelines(
                json.dumps(
                    {
                        "run_id": run_id,
                        "key": m.key,
                        "value": m.value,
                        "timestamp": m.timestamp,
                        "step": m.step,
                    }
                )
                + "\n"
                for m in metrics
            )
    except OSError as exc:  # a full disk: the training matters more than these values
        say(
            f"warning: {len(metrics)} metric values could not be kept for later either ({spool}: {exc}); they are lost"
        )


def replay(spool: Path, run_id: str | None = None) -> int:
    """Send the spooled metrics to their run (``run_id`` overrides it); remove the spool when all went."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    rows = [json.loads(x) for x in spool.read_text(encoding="utf-8").splitlines() if x.strip()]
    client = MlflowClient()
    by_run: dict[str, list[Any]] = {}
    for r in rows:
        by_run.setdefault(run_id or r["run_id"], []).append(
            Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"]))
        )
    for rid, metrics in by_run.items():
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(rid, metrics=metrics[i : i + 1000])
    spool.unlink()
    return len(rows)


class Tracker:
    """One MLflow run for one model directory (created on the first launch, re-opened on resume).

    Opening the run must succeed (the store was checked before the engine started, :func:`check_store`);
    afterwards tracking is best-effort: a failing call is one warning, metrics that could not be sent are
    spooled to ``<model_dir>/.hsbcala/pending-metrics.jsonl`` and sent on the next launch (or by
    ``python -m hsbcala.track.tracking replay MODEL_DIR``), and a finished training is never turned into a crash
    by a tracking outage. ``previous`` is the owner record of a launch that died in this model directory:
    its run is marked KILLED (and tagged) before it is re-opened.
    """

    def __init__(
        self,
        cfg: Any,
        run_id: str | None,
        tags: dict[str, str],
        params: dict[str, str],
        spool: Path | None = None,
        previous: dict | None = None,
    ) -> None:
        import mlflow  # lazy: ~3 s, and only needed once training really starts

        self._mlflow = mlflow
        uri = tracking_uri(cfg)
        mlflow.set_tracking_uri(uri)
        try:
            exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
            if exp is None:
                exp_id = _create_experiment(
                    mlflow.MlflowClient(), cfg.mlflow.experiment, default_artifact_root(cfg, uri)
                )
            else:
                exp_id = exp.experiment_id
            _training_view(mlflow.MlflowClient(), exp_id, dict(exp.tags) if exp else {})
        except _store_errors() as exc:
            raise ConfigError(
                f"mlflow.tracking_uri={masked(uri)}: cannot use the tracking store: {_first_line(exc)}"
            ) from exc
        if cfg.mlflow.system_metrics:
            mlflow.set_system_metrics_sampling_interval(cfg.mlflow.system_metrics_interval_s)
            mlflow.set_system_metrics_samples_before_logging(1)
        resumed = run_id is not None and _resumable(mlflow, run_id, masked(uri))
        if not resumed:
            run_id = None
        if resumed and previous:
            client = mlflow.MlflowClient()
            try:
                client.set_terminated(run_id, "KILLED")
                client.set_tag(run_id, "hsbcala.crashed_launch", json.dumps(previous)[:5000])
            except _store_errors() as exc:  # the run is re-opened below all the same
                say(
                    f"warning: MLflow ({masked(uri)}): the crashed launch's run {run_id} was not marked KILLED: "
                    f"{_first_line(exc)}"
                )
        try:
            if resumed:  # re-opening is idempotent (the run set RUNNING): it may be asked again
                self.run = _patiently(
                    f"when re-opening the run {run_id}",
                    masked(uri),
                    lambda: mlflow.start_run(
                        run_id=run_id, log_system_metrics=bool(cfg.mlflow.system_metrics)
                    ),
                )
            else:  # creating is not: a retry could create a second run
                self.run = mlflow.start_run(
                    experiment_id=exp_id,
                    run_name=training_run_name(cfg, datetime.datetime.now()),
                    log_system_metrics=bool(cfg.mlflow.system_metrics),
                )
        except _store_errors() as exc:
            if resumed:
                raise _refused(f"when re-opening the run {run_id}", masked(uri), run_id, exc) from exc
            raise ConfigError(
                f"mlflow.tracking_uri={masked(uri)}: cannot start a run in the tracking store: {_first_line(exc)}"
            ) from exc
        self.run_id = self.run.info.run_id
        self.uri = masked(uri)
        self.resumed = resumed
        self._pending: list[Any] = []
        self._lock = threading.RLock()  # the job-metrics thread logs too
        self._last: dict[str, float] = {}  # each curve's last value logged by this launch
        self._step: int | None = None  # the last epoch logged by this launch
        self._datasets: dict[str, tuple[str, str]] = {}  # split -> (dataset name, digest)
        self._last_flush = time.monotonic()
        self._ended = False
        self._sampler: _JobSampler | None = None
        self.spool = spool
        self.degraded = False
        self._said: set[str] = set()  # the best-effort calls whose failure was said (once each)
        # the run is open: from here on tracking is best-effort (the runner ends the run however it goes)
        self.set_tags(tags)
        if not resumed:
            try:
                mlflow.log_params(params)
            except Exception as exc:  # noqa: BLE001 - said by _failed (a bug with its traceback)
                self._failed("logging the params", exc)
        if spool is not None and spool.is_file():
            try:
                n = replay(spool, self.run_id)
            except Exception as exc:  # noqa: BLE001 - said by _failed; the spool stays for the next launch
                self._failed(f"sending the metrics kept in {spool}", exc)
            else:
                if n:
                    say(f"sent {n} metric values spooled while the tracking store was unreachable")
        if cfg.mlflow.system_metrics:
            self._sampler = _JobSampler(self, cfg.mlflow.system_metrics_interval_s)

    def shown(self) -> str:
        """The run for the console: its name and id, and on a tracking server the UI's link to it in the
        model-training view (:func:`hsbcala.track.info.ui_url`; a sqlite store has no address to link)."""
        text = f"{self.run.info.run_name} ({self.run_id})"
        if self.uri.startswith(("http://", "https://")):
            text += f": {ui_url(self.uri, self.run.info.experiment_id, self.run_id)}"
        return text

    def _failed(self, what: str, exc: Exception, *, degrade: bool = True) -> None:
        """A best-effort call failed: said once per kind of call (not at every flush of a long outage). An
        error that is not the store's is a bug in hsbcala: said as one, with its traceback (console and log).
        ``degrade``: tracking is incomplete (the end of the training says so, with the spool to replay)."""
        if what not in self._said:
            self._said.add(what)
            if not isinstance(exc, _store_errors()) or _bad_value(exc):
                log.warning(
                    "warning: MLflow (%s): %s failed with an unexpected error, a bug in hsbcala; training goes on",
                    self.uri,
                    what,
                    exc_info=exc,
                )
            else:
                later = (
                    "" if self.degraded else "; tracking goes on as far as it can, metrics not sent are kept"
                )
                say(f"warning: MLflow ({self.uri}): {what} failed: {_first_line(exc)}{later}")
        self.degraded = self.degraded or (degrade and not _bad_value(exc))

    def log(self, step: int, metrics: dict[str, float], *, curve: bool = True) -> None:
        """Metrics at ``step`` (an epoch; ``curve=False``: a sample number, e.g. the job's resources)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        if curve:  # an engine's epoch metrics: stage from 1, val_cer_log10 beside val_cer
            metrics = for_mlflow(metrics)
        with self._lock:
            self._pending += [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
            if curve:
                self._last.update((k, float(v)) for k, v in metrics.items())
                self._step = int(step) if self._step is None else max(self._step, int(step))
        if time.monotonic() - self._last_flush > 5:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                if self.degraded and self.spool is not None and self.spool.is_file():
                    replay(self.spool, self.run_id)  # the store is back: older values first
                self._mlflow.MlflowClient().log_batch(self.run_id, metrics=batch)
            except Exception as exc:  # noqa: BLE001 - tracking is best-effort once the run is open
                self._failed("logging metrics", exc)
                _spool(self.spool, self.run_id, batch)

    def _final_step(self) -> int:
        """The last epoch of the run: this launch's, else (a resumed launch that logged none) the run's."""
        if self._step is not None:
            return self._step
        try:
            hist = self._mlflow.MlflowClient().get_metric_history(self.run_id, "stage")  # logged every epoch
        except _store_errors() as exc:
            self._failed("reading the run's last epoch (the final figures go to epoch 0)", exc)
            return 0
        return max((m.step for m in hist), default=0)

    def log_final(self, metrics: dict[str, float]) -> None:
        """The end-of-training figures, at the last epoch (a step 0 would add a point at the start of a curve
        such as ``best_val_cer``); a curve that already ends with the same value gets no second point."""
        from mlflow.entities import Metric

        ts, step = int(time.time() * 1000), self._final_step()
        with self._lock:
            self._pending += [
                Metric(k, float(v), ts, step)
                for k, v in metrics.items()
                if v is not None and self._last.get(k) != float(v)
            ]
        self.flush()

    def describe(self, cfg: Any, plan: Any) -> None:
        """The run's description (``mlflow.note.content``: script, version, data, warm start) and its data as
        MLflow dataset inputs: the training and the validation lines of the manifest, each named
        ``<model>-train``/``-val`` with the lines' content hash as digest, one row per line (the dataset's
        profile counts them), the manifest as source. Best-effort, like every call after the run opened."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        manifest = getattr(plan.data, "manifest", None)
        note = run_note(
            cfg,
            totals=manifest.get("totals") if manifest else None,
            content_sha256=manifest.get("content_sha256") if manifest else None,
            warmstart=plan.warmstart_source,
            resumed_from=plan.resume_from,
            model_dir=plan.model_dir.path,
        )
        self.set_tags({MLFLOW_RUN_NOTE: note})
        if not manifest:
            return
        try:
            import warnings

            import pandas as pd

            source = str(
                getattr(plan.data, "written", {}).get("manifest") or plan.model_dir.path / "manifest.json"
            )
            for split, context in (("train", "training"), ("val", "validation")):
                rows = dataset_rows(manifest, split)
                if not rows:
                    continue
                name, digest = f"{cfg.script.model_name}-{split}", split_digest(manifest, split)
                with warnings.catch_warnings():  # a local path is two kinds of source to MLflow; it says so
                    warnings.simplefilter("ignore")
                    ds = self._mlflow.data.from_pandas(
                        pd.DataFrame(rows), source=source, name=name, digest=digest
                    )
                self._mlflow.log_input(ds, context=context, tags={"lines": str(len(rows))})
                self._datasets[split] = (name, digest)
        except Exception as exc:  # noqa: BLE001 - best-effort; said by _failed (a bug with its traceback)
            self._failed("logging the dataset inputs", exc)

    def log_model(self, files: list[Path], cfg: Any, best_val_cer: float | None) -> str | None:
        """The best model as the run's MLflow logged model (MLflow 3 lists it in the run and the experiment's
        Models tab): its files as they are (Calamari's own format; TensorFlow lives in the engine's
        environment and is not imported here), its ``best_val_cer`` as the model's metric (on the validation
        dataset). With ``mlflow.register=true`` also a new version of the registered model
        ``<script.model_name>`` (hsbfraktur, hsblatin) tagged with that CER. Returns the model id."""
        from mlflow.entities import LoggedModelOutput, Metric

        if not files:
            return None
        try:
            client = self._mlflow.MlflowClient()
            exp_id = client.get_run(self.run_id).info.experiment_id
            tags = {
                "script": cfg.script.name,
                "version": cfg.version.name,
                "calamari": cfg.version.package,
                "hsbcala.git_commit": git_commit(project_root()),
            }
            params = {"network": str(cfg.train.network), "warmstart": str(cfg.warmstart.model)}
            model = client.create_logged_model(
                exp_id,
                name=logged_model_name(
                    self.run.info.run_name or f"{cfg.script.model_name}-{cfg.version.name}"
                ),
                source_run_id=self.run_id,
                tags=tags,
                params=params,
                model_type="calamari-ocr",
            )
            with tempfile.TemporaryDirectory(prefix="hsbcala-model-") as tmp:
                for f in files:
                    (shutil.copytree if f.is_dir() else shutil.copy2)(f, Path(tmp) / f.name)
                client.log_model_artifacts(model.model_id, tmp)
            step = self._final_step()
            if best_val_cer is not None:
                name, digest = self._datasets.get("val", (None, None))
                metric = Metric(
                    "best_val_cer",
                    float(best_val_cer),
                    int(time.time() * 1000),
                    step,
                    model_id=model.model_id,
                    dataset_name=name,
                    dataset_digest=digest,
                )
                client.log_batch(self.run_id, metrics=[metric])
            client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])
            client.finalize_logged_model(model.model_id, "READY")
            self.set_tags({"hsbcala.logged_model": model.model_id})
        except Exception as exc:  # noqa: BLE001 - best-effort; said by _failed (a bug with its traceback)
            self._failed("logging the model", exc)
            return None
        if cfg.mlflow.get("register"):
            self._register(client, model.model_id, cfg, best_val_cer)
        return model.model_id

    def _register(self, client: Any, model_id: str, cfg: Any, cer: float | None) -> None:
        name = cfg.script.model_name
        shown = "n/a" if cer is None else f"{cer:.4f}"
        try:
            if not client.search_registered_models(filter_string=f"name = '{name}'"):
                client.create_registered_model(
                    name, description=f"hsbcala's Upper Sorbian {cfg.script.name} models (Calamari)"
                )
            mv = client.create_model_version(
                name,
                source=f"models:/{model_id}",
                run_id=self.run_id,
                tags={"val_cer": shown, "version": cfg.version.name, "calamari": cfg.version.package},
                description=f"{cfg.version.name}, best validation CER {shown} (the engine's own, while training)",
                model_id=model_id,
            )
            say(f"registered as {name} version {mv.version} (validation CER {shown})")
        except Exception as exc:  # noqa: BLE001 - the training and its run are complete; said by _failed
            self._failed(f"registering the model as {name}", exc, degrade=False)  # the run itself is whole

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        try:
            if path.is_dir():
                self._mlflow.log_artifacts(
                    str(path), artifact_path=f"{artifact_path}/{path.name}" if artifact_path else path.name
                )
            elif path.is_file():
                self._mlflow.log_artifact(str(path), artifact_path=artifact_path)
        except Exception as exc:  # noqa: BLE001 - best-effort; said by _failed (a bug with its traceback)
            self._failed(f"logging {path.name}", exc)

    def log_text(self, text: str, name: str) -> None:
        try:
            self._mlflow.log_text(text, name)
        except Exception as exc:  # noqa: BLE001 - best-effort; said by _failed (a bug with its traceback)
            self._failed(f"logging {name}", exc)

    def set_tags(self, tags: dict[str, str]) -> None:
        try:
            self._mlflow.set_tags(tags)
        except Exception as exc:  # noqa: BLE001 - best-effort; said by _failed (a bug with its traceback)
            self._failed("setting tags", exc)

    def end(self, status: str) -> None:
        """End the run as FINISHED, FAILED or KILLED (idempotent; never leaves it RUNNING)."""
        if self._ended:
            return
        self._ended = True
        if self._sampler is not None:
            self._sampler.stop()
        try:
            self.flush()
        finally:
            try:
                self._mlflow.end_run(status=status)
            except Exception as exc:  # noqa: BLE001 - the store went away; the run stays as the store has it
                self._failed(f"ending the run as {status}", exc)


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """A run's values of ``key`` in step order; [] when the store cannot be read (for status displays)."""
    from mlflow.tracking import MlflowClient

    try:
        hist = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    except _store_errors() as exc:  # a status display must not fail on an unreachable store
        log.warning(
            "warning: MLflow (%s): %s of run %s not read: %s", masked(uri), key, run_id, _first_line(exc)
        )
        return []
    return [m.value for m in sorted(hist, key=lambda m: (m.step, m.timestamp))]


def runs_by_id(uri: str, run_ids: list[str]) -> dict[str, Any]:
    """{run id: Run} of one store, in one ``search_runs`` over its experiments (after one
    ``search_experiments``): a status of 20 model directories asks each store twice, not 20 times (a remote
    store answers each question in ~0.1-0.5 s); {} when the store cannot be read (for status displays)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    ids = sorted(set(run_ids))
    if not ids:
        return {}
    try:
        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        quoted = ", ".join(f"'{i}'" for i in ids if i.isalnum())  # run ids are hex: nothing to escape
        runs = client.search_runs(
            experiments,
            filter_string=f"attributes.run_id IN ({quoted})",
            run_view_type=ViewType.ALL,
            max_results=max(len(ids), 1),
        ) if experiments and quoted else []  # fmt: skip
    except _store_errors() as exc:  # a status display must not fail on an unreachable store
        log.warning("warning: MLflow (%s): %d runs not read: %s", masked(uri), len(ids), _first_line(exc))
        return {}
    return {r.info.run_id: r for r in runs}


# ---- Slurm: accounting and store preparation (called by hsbcala/slurm/)
def log_accounting(
    uri: str | None, run_id: str, metrics: dict[str, float], tags: dict[str, str], step: int = 0
) -> None:
    """Log a finished job's figures (metrics at ``step``, e.g. the job's restart count) and tags to a run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    ts = int(time.time() * 1000)
    MlflowClient(tracking_uri=uri).log_batch(
        run_id,
        metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def prepare_store(uri: str) -> None:
    """Create the store at ``uri`` (its tables) now, e.g. before the jobs of an array race to create it."""
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except _store_errors() as exc:
        raise ConfigError(
            f"mlflow.tracking_uri={masked(uri)}: cannot create the tracking store: {_first_line(exc)}"
        ) from exc


# ---- Evaluation: the metrics of evaluate.py on the training run (or their own run), multirun comparisons


class EvalTracker:
    """Where the evaluation is logged: the model's training run (found through its model directory's state
    file), or a separate evaluation run in the script's experiment that names the training run it belongs to.
    Uses MlflowClient only: the training run's status is never changed."""

    def __init__(self, cfg: Any, p: Evaluated) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        training = self._training_run(p)
        self.training_run_id = training.info.run_id if training else None
        self.separate = cfg.eval.mlflow_run == "separate" or self.training_run_id is None
        self.training_params: dict[str, str] = dict(training.data.params) if training else {}
        if not self.separate:
            self.run_id = self.training_run_id
            return
        try:
            exp = self.client.get_experiment_by_name(cfg.mlflow.experiment)
            exp_id = (
                exp.experiment_id
                if exp
                else self.client.create_experiment(
                    cfg.mlflow.experiment, artifact_location=default_artifact_root(cfg, self.uri)
                )
            )
            _training_view(self.client, exp_id, dict(exp.tags) if exp else {})
        except _store_errors() as exc:
            raise ConfigError(
                f"mlflow.tracking_uri={masked(self.uri)}: cannot use the tracking store: {_first_line(exc)}"
            ) from exc
        tags = {
            "hsbcala.kind": "evaluation",
            "script": cfg.script.name,
            "version": p.version,
            "model": str(p.checkpoint),
            "model_dir": str(p.model_dir or ""),
            "hsbcala.git_commit": git_commit(project_root()),
        }
        if self.training_run_id:
            tags["hsbcala.training_run_id"] = self.training_run_id
        run = self.client.create_run(exp_id, run_name=f"eval-{p.label}", tags=tags)
        self.run_id = run.info.run_id
        params = flatten({"eval": OmegaConf.to_container(cfg.eval, resolve=True)})
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def _training_run(self, p: Evaluated) -> Any | None:
        """The training run the model directory names, if this store has it (else None, said); a store that
        does not answer is asked again and then refused, as on resume (:func:`_resumable`): an outage must
        not send the figures to a separate run."""
        if p.model_dir is None:
            return None
        from hsbcala import modeldir

        state = modeldir.load_state(p.model_dir)
        if state is None or not state.run_id:
            return None
        uri = masked(self.uri)
        what = f"for the training run {state.run_id}"
        try:
            run = _patiently(what, uri, lambda: self.client.get_run(state.run_id))
        except _store_errors() as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                said = "did not answer" if _transient(exc) else "refused to answer"
                raise ConfigError(
                    f"mlflow.tracking_uri={uri}: the tracking store {said} {what} of {p.model_dir} "
                    f"({_first_line(exc)[:300]}); launch the evaluation again when the store answers"
                ) from exc
            say(
                f"the training run {state.run_id} of {p.model_dir} is not in {uri}; "
                f"logging to a separate evaluation run"
            )
            return None
        if run.info.lifecycle_stage != "active":
            say(
                f"the training run {state.run_id} of {p.model_dir} was deleted from {uri}; "
                f"logging to a separate evaluation run"
            )
            return None
        return run

    def log(self, metrics: dict[str, float], tags: dict[str, str], files: list[tuple[Path, str]]) -> None:
        from mlflow.entities import Metric, RunTag

        ts = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        for path, artifact_path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_curve(self, points: list[tuple[str, float, int]]) -> None:
        """Metric values at steps (``eval.checkpoints=all``: one point per checkpoint, step = its position)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, int(step)) for k, v, step in points]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_text(self, text: str, name: str) -> None:
        """A text artifact of the evaluation's run (the release's model card: ``release/README.md``)."""
        self.client.log_text(self.run_id, text, name)

    def end(self, status: str) -> None:
        if self.separate:
            self.client.set_terminated(self.run_id, status)


# ---- The registry's champion (mlflow.register=true in evaluate.py): hsbcala.evaluate.champion decides, this records

CHAMPION_ALIAS = "champion"
CHAMPION_TABLE = (
    "lines.tsv"  # the per-line table kept with a version's evaluation run, under registry/<digest>/
)


def registered_version(client: Any, cfg: Any, p: Evaluated, tracker: EvalTracker) -> str:
    """The evaluated model's registered version: the one its training registered, else a new one (from its
    training's logged model, else from the model files logged to this evaluation's run)."""
    name = cfg.script.model_name
    if tracker.training_run_id:
        mine = client.search_model_versions(f"name = '{name}' and run_id = '{tracker.training_run_id}'")
        if mine:
            return str(max(int(mv.version) for mv in mine))
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(
            name, description=f"hsbcala's Upper Sorbian {cfg.script.name} models (Calamari)"
        )
    logged = None
    if tracker.training_run_id:
        logged = client.get_run(tracker.training_run_id).data.tags.get("hsbcala.logged_model")
    if logged:
        # MLflow resolves a models:/ source through its fluent API, i.e. the process-wide tracking URI, not this
        # client's: unset, it would look in (and create) ./mlflow.db and not find the training's logged model
        import mlflow

        mlflow.set_tracking_uri(tracker.uri)
        source, model_id = f"models:/{logged}", logged
    else:  # no logged model (mlflow.log_model=false, or no training run): the files, as this run's artifacts
        from hsbcala import engines

        for f in [p.checkpoint, *engines.weights_of(p.checkpoint)]:
            if f.is_dir():
                client.log_artifacts(tracker.run_id, str(f), artifact_path=f"model/{f.name}")
            else:
                client.log_artifact(tracker.run_id, str(f), artifact_path="model")
        source, model_id = client.get_run(tracker.run_id).info.artifact_uri.rstrip("/") + "/model", None
    mv = client.create_model_version(
        name,
        source=source,
        run_id=tracker.training_run_id or tracker.run_id,
        tags={"version": cfg.version.name, "calamari": cfg.version.package},
        description=f"{cfg.version.name}, registered by its evaluation",
        model_id=model_id,
    )
    return str(mv.version)


def record_and_decide(
    client: Any,
    name: str,
    version: str,
    run_id: str,
    table: Any,
    decide: Callable[[str | None, str | None], Any],
) -> dict:
    """Keep ``table`` (:class:`hsbcala.evaluate.champion.LineTable`) as ``registry/<digest>/lines.tsv`` of ``run_id``,
    name it on the version (tag ``hsbcala.eval.<digest[:16]>``), and move the alias ``champion`` to
    ``version`` only when ``decide(champion's table text or None, champion's version or None)`` says so
    (:func:`hsbcala.evaluate.champion.decider`: evaluation decides, tracking records); the decision is the
    version's tag ``hsbcala.champion_decision``."""
    from mlflow.exceptions import MlflowException

    digest = table.digest
    path = f"registry/{digest}/{CHAMPION_TABLE}"
    client.log_text(run_id, table.dumps(), path)
    tag = f"hsbcala.eval.{digest[:16]}"
    client.set_model_version_tag(
        name,
        version,
        tag,
        json.dumps({"run_id": run_id, "path": path, "cer": table.cer, "lines": len(table.keys)}),
    )
    try:
        current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:  # no champion yet (the store says the alias is not found)
        if (
            "not found" not in str(exc).lower()
            and getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST"
        ):
            raise
        current = None
    theirs = None
    if current is not None and str(current.version) != version and tag in current.tags:
        where = json.loads(current.tags[tag])
        with tempfile.TemporaryDirectory(prefix="hsbcala-champion-") as tmp:
            local = client.download_artifacts(where["run_id"], where["path"], tmp)
            theirs = Path(local).read_text(encoding="utf-8")
    decision = decide(theirs, None if current is None else str(current.version))
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "hsbcala.champion_decision", decision.message)
    return {
        "registered_model": name,
        "version": version,
        "decision": decision.message,
        "promoted": decision.promote,
        "difference": decision.difference,
        "lines_digest": digest,
    }


def log_comparison(
    results: list[dict],
    paths: dict[str, Path],
    sweep_dir: Path,
    experiment: str,
    uri: str,
    metrics: dict[str, float] | None = None,
) -> str | None:
    """A run holding a multirun's comparison table in the experiment ``eval.comparison_experiment``, with the
    ``metrics`` given (names already acceptable to MLflow: :func:`hsbcala.evaluate.comparison.comparison_metrics`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    _training_view(client, exp_id, dict(exp.tags) if exp else {})  # a table of runs, not GenAI traces
    runs = {r["model"]: (r.get("mlflow") or {}).get("run_id") or "" for r in results}
    run = client.create_run(
        exp_id,
        run_name=f"comparison-{sweep_dir.parent.name}-{sweep_dir.name}",
        tags={
            "hsbcala.kind": "comparison",
            "sweep_dir": str(sweep_dir),
            "models": ", ".join(runs),
            "runs": json.dumps(runs)[:5000],
        },
    )
    try:
        for path in paths.values():
            client.log_artifact(run.info.run_id, str(path))
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items()]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(run.info.run_id, metrics=batch[i : i + 1000])
        client.set_terminated(run.info.run_id, "FINISHED")
    except BaseException:  # not swallowed: the run ends FAILED (never RUNNING) and the error goes on
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


if __name__ == "__main__":  # python -m hsbcala.track.tracking replay MODEL_DIR [--tracking-uri URI]
    import argparse

    from hsbcala import modeldir

    ap = argparse.ArgumentParser(prog="python -m hsbcala.track.tracking")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replay", help="send metrics spooled while the tracking store was unreachable")
    rp.add_argument("model_dir", type=Path)
    rp.add_argument("--tracking-uri", help="default: the one recorded in the model directory's state")
    args = ap.parse_args()
    spool = args.model_dir / modeldir.SPOOL
    state = modeldir.load_state(args.model_dir)
    if not spool.is_file():
        print(f"nothing to replay in {args.model_dir}")
        raise SystemExit(0)
    import mlflow

    uri = (
        args.tracking_uri or (state.tracking_uri if state else None) or os.environ.get("MLFLOW_TRACKING_URI")
    )
    if not uri or "***" in uri:
        raise SystemExit(f"hsbcala: error: give --tracking-uri (the recorded one is {uri!r})")
    mlflow.set_tracking_uri(uri)
    print(f"sent {replay(spool, state.run_id if state else None)} metric values to {masked(uri)}")
    if state and state.run_id and state.status == "finished":  # the outage also kept the run from ending
        client = mlflow.MlflowClient()
        if client.get_run(state.run_id).info.status == "RUNNING":
            client.set_terminated(state.run_id, "FINISHED")
            print(f"run {state.run_id} ended FINISHED (the training had finished)")
