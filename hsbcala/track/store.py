"""The MLflow store itself: what every run of hsbcala shares (which failures are the store's, which may pass,
asking again), the experiment and its view, and the one-call queries of status displays and Slurm jobs.

Training runs are :mod:`hsbcala.track.tracking`'s, evaluation runs and the registry's champion
:mod:`hsbcala.track.evaluation`'s. mlflow is imported lazily (inside the functions), so ``dry_run`` and
``--help`` stay fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from hsbcala.core.console import log, say
from hsbcala.core.errors import ConfigError
from hsbcala.track.info import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, bound_http, masked

bound_http()  # before any mlflow import: bounded HTTP retries, MLflow's own logger at WARNING


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else repr(exc)


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that cannot be used raises: MLflow's own error (the REST client wraps every failed
    request in it), SQLAlchemy's (a sqlite file that is not a database), an OSError (permissions). Anything
    else is a bug in hsbcala and keeps its traceback."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError  # mlflow's own dependency, loaded with it

    return (MlflowException, SQLAlchemyError, OSError)


def bad_value(exc: BaseException) -> bool:
    """The store works and refused a value hsbcala sent (MLflow's INVALID_PARAMETER_VALUE): a bug in hsbcala,
    not an outage; replaying the spool would be refused again."""
    return getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"


def create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Create the experiment, or take the one a concurrent job (an array task) created a moment earlier."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # RESOURCE_ALREADY_EXISTS, or the sqlite store's unique-constraint error
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def training_view(client: Any, exp_id: str, tags: dict[str, str]) -> None:
    """Let MLflow's UI open the experiment in its model-training view (runs, charts, models) instead of the
    GenAI one it guesses without the tag; a view someone chose in the UI is kept."""
    if EXPERIMENT_KIND_TAG not in tags:
        try:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        except store_errors() as exc:  # a view is a convenience: never a reason to stop
            log.warning("MLflow: the experiment's model-training view was not set: %s", first_line(exc))


# ---- reading a run back on resume: "gone" vs "not answering" (issue 19: a 503 must not split a training)

# MLflow's error codes of a store that cannot answer now (MLflow's own table maps them to 503, 429, 504);
# the sqlite store raises TEMPORARILY_UNAVAILABLE for a locked database (mlflow/store/db/utils.py)
TRANSIENT_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"})
RESUME_ATTEMPTS = 4  # hsbcala's own attempts, each with MLflow's own HTTP retries inside


def transient(exc: BaseException) -> bool:
    """True for a failure that may pass: a refused or reset connection, a timeout, a server that kept
    answering 5xx/429 through MLflow's own retries (``mlflow.utils.rest_utils.http_request`` raises a plain
    MlflowException for all of these, the ``requests`` error, an OSError, as its context), or one of
    :data:`TRANSIENT_CODES`. A malformed URI (InvalidUrlException) or any answer the server gave on purpose
    (404 ``RESOURCE_DOES_NOT_EXIST``, 403, 400) is not."""
    from mlflow.exceptions import InvalidUrlException, MlflowException

    if not isinstance(exc, MlflowException) or isinstance(exc, InvalidUrlException):
        return False
    if exc.error_code in TRANSIENT_CODES:
        return True
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError):  # requests.RequestException is an OSError (IOError)
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def patiently(what: str, uri: str, call: Callable[[], Any]) -> Any:
    """``call()``, asked again while the store fails transiently (:func:`transient`), each retry said on the
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
        except store_errors() as exc:
            if not transient(exc) or attempt == RESUME_ATTEMPTS:
                raise
            wait = factor * 2**attempt
            say(
                f"MLflow ({uri}) did not answer {what} ({first_line(exc)[:400]}); asking again in "
                f"{wait:.1f} s (attempt {attempt + 1} of {RESUME_ATTEMPTS})"
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """A run's values of ``key`` in step order; [] when the store cannot be read (for status displays)."""
    from mlflow.tracking import MlflowClient

    try:
        hist = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    except store_errors() as exc:  # a status display must not fail on an unreachable store
        log.warning(
            "warning: MLflow (%s): %s of run %s not read: %s", masked(uri), key, run_id, first_line(exc)
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
    except store_errors() as exc:  # a status display must not fail on an unreachable store
        log.warning("warning: MLflow (%s): %d runs not read: %s", masked(uri), len(ids), first_line(exc))
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
    except store_errors() as exc:
        raise ConfigError(
            f"mlflow.tracking_uri={masked(uri)}: cannot create the tracking store: {first_line(exc)}"
        ) from exc
