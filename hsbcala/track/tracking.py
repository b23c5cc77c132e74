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

MLflow's calls live in the ``track`` wing only: training runs here, evaluation runs, the registry's champion and
multirun comparisons in :mod:`hsbcala.track.evaluation`, the store's shared parts (errors, retries, the
experiment, status and Slurm queries) in :mod:`hsbcala.track.store`. mlflow is imported lazily, so ``dry_run``
and ``--help`` stay fast.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hsbcala.core.console import log, say
from hsbcala.core.errors import ConfigError
from hsbcala.engines.envs import project_root
from hsbcala.track.info import (
    JobUsage,
    dataset_rows,
    default_artifact_root,
    for_mlflow,
    git_commit,
    masked,
    run_note,
    split_digest,
    tracking_uri,
    training_run_name,
    ui_url,
)
from hsbcala.track.store import (
    RESUME_ATTEMPTS,
    bad_value,
    create_experiment,
    first_line,
    patiently,
    store_errors,
    training_view,
    transient,
)

# What MLflow 3 refuses in a logged model's name (its message: "cannot contain the following characters"); the
# run's name is the model directory's, and the demo's (hsbfraktur.<version>.demo) has dots. (MLflow's own check,
# mlflow.utils.validation, is private: this mirrors it.)
_NOT_IN_MODEL_NAMES = str.maketrans({c: "-" for c in "/:.%\"'"})


def logged_model_name(run_name: str) -> str:
    """The run's name as a name MLflow takes for a logged model (``hsbfraktur.<version>.demo-…`` →
    ``hsbfraktur-<version>-demo-…``)."""
    return run_name.translate(_NOT_IN_MODEL_NAMES)


def _refused(what: str, uri: str, run_id: str, exc: BaseException) -> ConfigError:
    said = (
        f"did not answer {what} after {RESUME_ATTEMPTS} attempts"
        if transient(exc)
        else f"refused to answer {what}"
    )
    return ConfigError(
        f"mlflow.tracking_uri={uri}: the tracking store {said} ({first_line(exc)[:400]}); training was not "
        f"continued and the model directory still names run {run_id}: launch again when the store answers, "
        f"and training resumes in that run"
    )


def _resumable(mlflow: Any, run_id: str, uri: str) -> bool:
    """Whether the run the model directory names can be re-opened. False only when the store says for sure
    that it is not there (``RESOURCE_DOES_NOT_EXIST``: the directory was trained against another store) or
    it was deleted: then a new run is started, and the console says so. A store that does not answer is
    asked again (:func:`patiently`) and then refused (:class:`ConfigError`): never a silent new run, which
    would split one training's curves over two runs and rewrite the run id in the state."""
    try:
        run = patiently(f"for the run {run_id}", uri, lambda: mlflow.get_run(run_id))
    except store_errors() as exc:
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
        except store_errors() as exc:
            say(
                f"warning: MLflow ({self.tracker.uri}): no system/job/* metrics in this launch (the job's CPU and "
                f"memory): their last sample number could not be read: {first_line(exc)}"
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
                exp_id = create_experiment(
                    mlflow.MlflowClient(), cfg.mlflow.experiment, default_artifact_root(cfg, uri)
                )
            else:
                exp_id = exp.experiment_id
            training_view(mlflow.MlflowClient(), exp_id, dict(exp.tags) if exp else {})
        except store_errors() as exc:
            raise ConfigError(
                f"mlflow.tracking_uri={masked(uri)}: cannot use the tracking store: {first_line(exc)}"
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
            except store_errors() as exc:  # the run is re-opened below all the same
                say(
                    f"warning: MLflow ({masked(uri)}): the crashed launch's run {run_id} was not marked KILLED: "
                    f"{first_line(exc)}"
                )
        try:
            if resumed:  # re-opening is idempotent (the run set RUNNING): it may be asked again
                self.run = patiently(
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
        except store_errors() as exc:
            if resumed:
                raise _refused(f"when re-opening the run {run_id}", masked(uri), run_id, exc) from exc
            raise ConfigError(
                f"mlflow.tracking_uri={masked(uri)}: cannot start a run in the tracking store: {first_line(exc)}"
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
            if not isinstance(exc, store_errors()) or bad_value(exc):
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
                say(f"warning: MLflow ({self.uri}): {what} failed: {first_line(exc)}{later}")
        self.degraded = self.degraded or (degrade and not bad_value(exc))

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
        except store_errors() as exc:
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
