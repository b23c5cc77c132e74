"""MLflow of an evaluation (``evaluate.py``): its metrics on the model's training run (or a run of its own), the
registry's champion (``mlflow.register=true``: :mod:`hsbcala.evaluate.champion` decides, this records), and a
multirun's comparison run. The store's shared parts are :mod:`hsbcala.track.store`'s.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf

from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError
from hsbcala.engines.envs import project_root
from hsbcala.track.info import default_artifact_root, flatten, git_commit, masked, tracking_uri
from hsbcala.track.store import first_line, patiently, store_errors, training_view, transient


class Evaluated(Protocol):
    """What an evaluation's MLflow run records of the evaluation (``hsbcala.evaluate.predict.Plan`` has it):
    a protocol, so that tracking, a wing below evaluation, never imports it."""

    label: str
    version: str
    checkpoint: Path  # the model's .ckpt.json
    model_dir: Path | None  # None: eval.model outside a model directory


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
            training_view(self.client, exp_id, dict(exp.tags) if exp else {})
        except store_errors() as exc:
            raise ConfigError(
                f"mlflow.tracking_uri={masked(self.uri)}: cannot use the tracking store: {first_line(exc)}"
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
            run = patiently(what, uri, lambda: self.client.get_run(state.run_id))
        except store_errors() as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                said = "did not answer" if transient(exc) else "refused to answer"
                raise ConfigError(
                    f"mlflow.tracking_uri={uri}: the tracking store {said} {what} of {p.model_dir} "
                    f"({first_line(exc)[:300]}); launch the evaluation again when the store answers"
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
    training_view(client, exp_id, dict(exp.tags) if exp else {})  # a table of runs, not GenAI traces
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
