"""Evaluate a trained model: CER overall and per preprocessing variant group, logged to MLflow, tabled.

Flow of :func:`run` (called by ``evaluate.py`` once per Hydra job; ``-m`` evaluates several models):

1. check the ``eval`` node (:func:`check`); find the model: ``eval.model`` or the best model of ``model_dir``
   (:func:`find_model`), refusing a directory without one or one of the other Calamari version;
2. the evaluation sets: ``eval.data`` (default ``data.val``) and the named ``eval.extra`` sets, each resolved
   and checked with :mod:`hsbcala.data` (lines without valid GT are left out and counted, or stop the run with
   ``eval.skip_invalid=false``); every line is put into the variant groups whose file-name patterns
   (``eval.groups``, fnmatch on the image's name) it matches; a group no line matches is reported and shown as
   n/a, never as a number;
3. ONE prediction pass over all lines of all sets with the version's own ``calamari-predict`` in its engine
   environment. The lines are staged as symlinks ``<job dir>/predict/lines/000001.png …`` and predicted into
   ``<job dir>/predict/pred/``, so predictions are never written into the user's GT directories and two lines
   with the same file name (or sharing a ``.gt.txt``) never overwrite each other's ``.pred.txt``. A line the
   engine skips gets no prediction and counts as an empty one (as calamari-eval does); it is reported.
   While the engine runs, the MLflow run is opened (mlflow's import costs seconds);
4. CER (:mod:`hsbcala.cer`: summed edit distances / summed GT characters, after calamari-eval's normalisation
   of the model's version, or ``eval.normalization``) per set, per group; the confusions from the alignment;
5. write ``eval-result.json``, per set ``lines.tsv`` (every line: groups, GT, prediction, errors, CER) and
   ``confusions.tsv`` (the ``eval.confusions`` most frequent), and the one-row table into the Hydra job dir;
   log metrics ``eval/<set>/cer``, ``eval/<set>/cer_<group>`` and those files to the model's training run
   (or a separate evaluation run); with ``eval.export=true`` pack the release archive (:func:`export_release`).

After a multirun, :class:`ComparisonTable` (a Hydra callback) collects every job's ``eval-result.json`` into the
comparison table (Markdown, CSV, PNG) in the sweep dir and logs it to MLflow. A model whose evaluation failed is
a row marked missing: in a multirun, each job catches its own :class:`~hsbcala.errors.HsbcalaError`, says it in
one line, records it in its result and lets the other jobs run; the multirun exits 2 at the end.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hsbcala import cer, checkpoints, envs, report, schema
from hsbcala.errors import ConfigError, DataError, EngineError, HsbcalaError, Interrupted

RESULT_FILE = "eval-result.json"
NORMALIZATIONS = ("engine", "calamari1", "calamari2")
MLFLOW_RUNS = ("training", "separate")
MAJOR = {"cala1": 1, "cala2": 2}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _say(msg: str) -> None:
    print(f"hsbcala: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ plan


@dataclass
class EvalSet:
    """One evaluation set: its checked lines, their GT, and which variant groups each line belongs to."""

    name: str
    key: str  # config key for messages
    patterns: list[str]
    images: tuple[Path, ...]
    gt: dict[Path, str]  # raw GT text per image
    skipped: tuple[tuple[Path, str], ...]
    members: dict[str, tuple[Path, ...]]  # group -> images (in order)
    ungrouped: int


@dataclass
class Plan:
    label: str
    version: str
    checkpoint: Path  # the model's .ckpt.json
    model_dir: Path | None  # None: eval.model outside a model directory
    env: envs.EngineEnv
    groups: dict[str, list[str]]
    sets: list[EvalSet]
    rules: str
    warnings: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[Path]:
        """Every line of every set, once (one prediction pass)."""
        seen: dict[Path, None] = {}
        for s in self.sets:
            seen.update(dict.fromkeys(s.images))
        return list(seen)


def check(cfg: Any) -> None:
    """The schema's checks, and the eval node's enumerations and names (ConfigError naming the key)."""
    if cfg.get("eval") is None:
        raise ConfigError("eval: no evaluation settings; run evaluate.py (config conf/evaluate.yaml)")
    probe = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    # evaluation needs no training lines; its lines are eval.data or data.val
    if OmegaConf.is_missing(probe.data, "train"):
        probe.data.train = []
    if OmegaConf.is_missing(probe.data, "val"):
        if cfg.eval.data is None:
            raise ConfigError("eval.data: no evaluation lines: set eval.data=[GLOBS] (or data.val=[GLOBS])")
        probe.data.val = []
    with contextlib.suppress(KeyError):
        del probe["hydra"]
    schema.check(probe)
    ev = cfg.eval
    if ev.normalization not in NORMALIZATIONS:
        raise ConfigError(f"eval.normalization={ev.normalization!r} is not one of: {', '.join(NORMALIZATIONS)}")
    if ev.mlflow_run not in MLFLOW_RUNS:
        raise ConfigError(f"eval.mlflow_run={ev.mlflow_run!r} is not one of: {', '.join(MLFLOW_RUNS)}")
    if ev.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {ev.batch_size}")
    if ev.confusions < 0:
        raise ConfigError(f"eval.confusions must be >= 0, got {ev.confusions}")
    for kind in ("groups", "extra"):
        for name, patterns in ev[kind].items():
            if not _NAME.match(name):
                raise ConfigError(f"eval.{kind}.{name}: a name may hold only letters, digits, '_', '-', '.'")
            if not patterns:
                raise ConfigError(f"eval.{kind}.{name}: no patterns given")
    if ev.name is not None and not _NAME.match(ev.name):
        raise ConfigError(f"eval.name={ev.name!r}: a name may hold only letters, digits, '_', '-', '.'")
    if main_set_name(cfg) in ev.extra:
        raise ConfigError(f"eval.extra.{main_set_name(cfg)}: the name of the main evaluation set; choose another")


def main_set_name(cfg: Any) -> str:
    return cfg.eval.name or ("val" if cfg.eval.data is None else "eval")


def find_model(cfg: Any) -> tuple[Path, Path | None]:
    """(the model's .ckpt.json, its model directory or None) for ``eval.model`` or the best model of model_dir."""
    from hsbcala.engines import modeljson

    version = cfg.version.name
    if cfg.eval.model:
        path = Path(cfg.eval.model).expanduser().resolve()
        if not path.name.endswith(".json"):
            path = path.with_name(path.name + ".json")
        if not path.is_file():
            raise DataError(f"eval.model: no such model {path} (give a <name>.ckpt.json)")
        model_dir = path.parent if checkpoints.detect_version(path.parent) else None
    else:
        model_dir = Path(cfg.model_dir).resolve()
        if not model_dir.is_dir():
            raise DataError(f"model_dir {model_dir} does not exist: no model to evaluate; train it first "
                            f"(python train.py with the same script/version/overrides) or set model_dir=DIR")
        checkpoints.check_version(model_dir, version)
        best = checkpoints.best_model(model_dir, version)
        if not best:
            weights = "best.ckpt/" if version == "cala2" else "best.ckpt.h5"
            raise DataError(f"model_dir {model_dir} holds no trained model (best.ckpt.json + {weights} missing); "
                            f"train it first, or set model_dir=DIR or eval.model=FILE.ckpt.json")
        path = best[0]
    info = modeljson.read_model(path)
    if info.version != MAJOR[version]:
        found = {1: "cala1", 2: "cala2"}.get(info.version, f"Calamari {info.version}")
        raise ConfigError(f"{path} is a {found} model, but version={version}; choose version={found}")
    if cfg.eval.model:
        weights = path.with_name(path.name[: -len(".json")])
        if not (weights.is_dir() or Path(f"{weights}.h5").is_file()):
            raise DataError(f"eval.model {path} has no weights beside it ({weights.name}/ or {weights.name}.h5)")
    return path, model_dir


def _ensure_synthetic(cfg: Any, patterns: list[str]) -> None:
    """Render the synthetic demo lines (idempotent) if the evaluation globs point at them."""
    root = Path(cfg.data.synthetic.root).resolve()
    if not any(Path(p).is_absolute() and Path(p).resolve().is_relative_to(root) for p in patterns):
        return
    from hsbcala import synth

    syn = cfg.data.synthetic
    synth.ensure_synthetic(root, cfg.script.face, n_train=syn.n_train, n_val=syn.n_val, seed=syn.seed,
                           text_file=Path(syn.text_file) if syn.text_file else None)


def load_set(name: str, key: str, patterns: list[str], groups: dict[str, list[str]], *, base: Path,
             skip_invalid: bool) -> EvalSet:
    """Resolve and check one set's lines (:mod:`hsbcala.data`), read their GT, sort them into groups."""
    from hsbcala import data

    images = data.resolve(patterns, key=key, base=base)
    lines = data.check_lines(images, key=key, skip_invalid=skip_invalid)
    gt = {img: data.gt_path(img).read_text(encoding="utf-8") for img in lines.images}
    members = {g: tuple(img for img in lines.images if any(fnmatch.fnmatchcase(img.name, p) for p in pats))
               for g, pats in groups.items()}
    grouped = set().union(*members.values()) if members else set()
    return EvalSet(name, key, list(patterns), lines.images, gt, lines.skipped, members,
                   ungrouped=len(lines.images) - len(grouped))


def plan(cfg: Any) -> Plan:
    """Steps 1-2 of :func:`run`: decide everything, create nothing (but the synthetic demo lines if needed)."""
    check(cfg)
    version = cfg.version.name
    checkpoint, model_dir = find_model(cfg)
    env = envs.resolve(cfg, envs.project_root())
    base = Path(cfg.paths.root)
    groups = {g: list(p) for g, p in cfg.eval.groups.items()}
    main = main_set_name(cfg)
    if cfg.eval.data is not None:
        main_patterns, main_key = list(cfg.eval.data), "eval.data"
    elif cfg.data.val:
        main_patterns, main_key = list(cfg.data.val), "data.val (eval.data=null)"
    else:  # trained on a split (data.val null): its saved validation lines
        from hsbcala import split

        saved = split.saved_val(model_dir)
        if not saved:
            raise ConfigError("eval.data: no evaluation lines: data.val is null and the model directory has no "
                              "saved split; set eval.data=[GLOBS]")
        main_patterns, main_key = [str(p) for p in saved], "the saved split's validation lines (split.json)"
    specs = [(main, main_key, main_patterns)]
    specs += [(name, f"eval.extra.{name}", list(pats)) for name, pats in cfg.eval.extra.items()]
    sets, warnings = [], []
    for name, key, patterns in specs:
        _ensure_synthetic(cfg, patterns)
        s = load_set(name, key, patterns, groups, base=base, skip_invalid=cfg.eval.skip_invalid)
        sets.append(s)
        where = "" if len(specs) == 1 else f" of set '{name}'"
        if s.skipped:
            first, reason = s.skipped[0]
            warnings.append(f"{key}: {len(s.skipped)} lines without valid GT are left out (eval.skip_invalid=true);"
                            f" first: {first}: {reason}")
        for g, imgs in s.members.items():
            if not imgs:
                warnings.append(f"eval.groups.{g}: no line{where} matches {', '.join(groups[g])}; "
                                f"its CER is n/a (the other groups are evaluated)")
        if groups and s.ungrouped:
            warnings.append(f"{key}: {s.ungrouped} of {len(s.images)} lines{where} match no variant group "
                            f"(counted in the overall CER only)")
        multi = sum(1 for img in s.images if sum(img in m for m in s.members.values()) > 1) if groups else 0
        if multi:
            warnings.append(f"eval.groups: {multi} lines{where} match more than one group (counted in each)")
    warnings += _training_overlap(cfg, sets, base)
    rules = cer.ENGINE_RULES[version] if cfg.eval.normalization == "engine" else cfg.eval.normalization
    return Plan(str(cfg.mlflow.run_name), version, checkpoint, model_dir, env, groups, sets, rules, warnings)


def _training_overlap(cfg: Any, sets: list[EvalSet], base: Path) -> list[str]:
    """A warning when evaluation lines are also training lines (their CER would flatter the model)."""
    from hsbcala import data

    try:
        train = data.resolve(list(cfg.data.train), key="data.train", base=base)
    except Exception:  # noqa: BLE001 - the training data may not exist here; nothing to compare
        return []
    train_gts = {data.gt_path(p).resolve() for p in train}
    out = []
    for s in sets:
        n = sum(1 for img in s.images if data.gt_path(img).resolve() in train_gts)
        if n:
            out.append(f"{s.key}: {n} of {len(s.images)} evaluation lines are also training lines (data.train); "
                       f"their CER flatters the model")
    return out


# ------------------------------------------------------------------------------------------------ predict


def predict_argv(version: str, program: str, checkpoint: Path, lines_dir: Path, out_dir: Path, batch_size: int,
                 extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The calamari-predict command of a version: every image in ``lines_dir`` into ``out_dir/<stem>.pred.txt``.

    The glob is expanded by Calamari itself (no argument-length limit for large sets)."""
    files = os.path.join(glob.escape(str(lines_dir)), "*")
    if version == "cala2":
        argv = [program, "--checkpoint", str(checkpoint), "--data.images", files, "--output_dir", str(out_dir),
                "--pipeline.batch_size", str(batch_size), "--verbose", "False", "--predictor.progress_bar", "False"]
    else:
        argv = [program, "--checkpoint", str(checkpoint), "--files", files, "--output_dir", str(out_dir),
                "--batch_size", str(batch_size), "--no_progress_bars"]
    return argv + list(extra)


def stage(images: list[Path], lines_dir: Path) -> list[Path]:
    """Symlink the images as ``000001<suffix>`` …: unique names, so predictions never collide."""
    lines_dir.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(images))))
    out = []
    for i, img in enumerate(images, 1):
        link = lines_dir / f"{i:0{width}d}{img.suffix.lower()}"
        os.symlink(img, link)
        out.append(link)
    return out


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    def handler(signum, _frame):
        raise Interrupted(f"evaluation interrupted by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(log: Path, n: int = 3) -> str:
    try:
        lines = deque((x.rstrip() for x in log.read_text(encoding="utf-8", errors="replace").splitlines()
                       if x.strip()), maxlen=n)
    except OSError:
        return ""
    return " | ".join(lines)


# ------------------------------------------------------------------------------------------------ MLflow


class EvalTracker:
    """Where the evaluation is logged: the model's training run (found through its model directory's state
    file), or a separate evaluation run in the script's experiment that names the training run it belongs to.
    Uses MlflowClient only: the training run's status is never changed."""

    def __init__(self, cfg: Any, p: Plan) -> None:
        from mlflow.tracking import MlflowClient

        from hsbcala import tracking

        self.uri = tracking.tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.training_run_id = self._training_run(p)
        self.separate = cfg.eval.mlflow_run == "separate" or self.training_run_id is None
        self.training_params: dict[str, str] = {}
        if self.training_run_id:
            self.training_params = dict(self.client.get_run(self.training_run_id).data.params)
        if not self.separate:
            self.run_id = self.training_run_id
            return
        try:
            exp = self.client.get_experiment_by_name(cfg.mlflow.experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                cfg.mlflow.experiment, artifact_location=tracking.default_artifact_root(cfg, self.uri))
        except Exception as exc:  # MLflow raises many types (connection, sqlalchemy, permission)
            raise ConfigError(f"mlflow.tracking_uri={self.uri}: cannot use the tracking store: "
                              f"{str(exc).splitlines()[0]}") from exc
        tags = {"hsbcala.kind": "evaluation", "script": cfg.script.name, "version": p.version,
                "model": str(p.checkpoint), "model_dir": str(p.model_dir or ""),
                "hsbcala.git_commit": tracking.git_commit(envs.project_root())}
        if self.training_run_id:
            tags["hsbcala.training_run_id"] = self.training_run_id
        run = self.client.create_run(exp_id, run_name=f"eval-{p.label}", tags=tags)
        self.run_id = run.info.run_id
        params = tracking.flatten({"eval": OmegaConf.to_container(cfg.eval, resolve=True)})
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def _training_run(self, p: Plan) -> str | None:
        if p.model_dir is None:
            return None
        state = checkpoints.load_state(p.model_dir)
        if state is None or not state.run_id:
            return None
        try:
            run = self.client.get_run(state.run_id)
        except Exception:  # noqa: BLE001 - not in this store (another tracking URI) or deleted
            _say(f"the training run {state.run_id} of {p.model_dir} is not in {self.uri}; "
                 f"logging to a separate evaluation run")
            return None
        return state.run_id if run.info.lifecycle_stage == "active" else None

    def log(self, metrics: dict[str, float], tags: dict[str, str], files: list[tuple[Path, str]]) -> None:
        from mlflow.entities import Metric, RunTag

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        for path, artifact_path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def end(self, status: str) -> None:
        if self.separate:
            self.client.set_terminated(self.run_id, status)


# ------------------------------------------------------------------------------------------------ run


def _job_dir(cfg: Any) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(tempfile.mkdtemp(prefix="hsbcala-eval-"))


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _base_result(cfg: Any) -> dict:
    """What is known about a job before anything can fail (so a failed model still gets its row)."""
    groups = {}
    with contextlib.suppress(Exception):
        groups = {g: list(p) for g, p in cfg.eval.groups.items()}
    label = f"{cfg.script.name}-{cfg.version.name}"
    with contextlib.suppress(Exception):
        label = str(cfg.mlflow.run_name)
    model_dir = None
    with contextlib.suppress(Exception):
        model_dir = str(cfg.model_dir)
    return {"model": label, "script": cfg.script.name, "version": cfg.version.name, "model_dir": model_dir,
            "groups": groups, "sets": [], "error": None}


def run(cfg: DictConfig) -> float | None:
    """Evaluate the model of ``cfg``; return its overall CER on the main set (None: dry run or, in a multirun,
    a failed evaluation, which is recorded in the job's result instead of stopping the other jobs)."""
    out_dir = _job_dir(cfg)
    result = _base_result(cfg)
    try:
        p = plan(cfg)
        for w in p.warnings:
            _say(f"warning: {w}")
        if cfg.dry_run:
            _print_plan(cfg, p)
            return None
        result = evaluate(cfg, p, out_dir, result)
    except HsbcalaError as exc:
        result["error"] = str(exc)
        if not cfg.dry_run:
            _write_json(out_dir / RESULT_FILE, result)
        if not _is_multirun() or isinstance(exc, Interrupted):
            raise
        _say(f"error: {result['model']}: {exc}")
        return None
    overall = result["sets"][0]["overall"]["cer"]
    if not _is_multirun():
        print(report.markdown([result]), flush=True)
    return overall


def _print_plan(cfg: Any, p: Plan) -> None:
    print(f"model: {p.checkpoint} ({p.version}); normalisation: {cer.DESCRIPTION[p.rules]}")
    for s in p.sets:
        groups = ", ".join(f"{g}: {len(m)}" for g, m in s.members.items())
        print(f"set {s.name}: {len(s.images)} lines ({groups or 'no groups'}; {s.ungrouped} in no group)")
    argv = predict_argv(p.version, p.env.program("calamari-predict"), p.checkpoint, Path("<job dir>/predict/lines"),
                        Path("<job dir>/predict/pred"), cfg.eval.batch_size, list(cfg.eval.predict_args))
    print(shlex.join(p.env.wrap(argv)), flush=True)


def evaluate(cfg: Any, p: Plan, out_dir: Path, result: dict) -> dict:
    """Steps 3-5 of :func:`run`: one prediction pass, the CER per set and group, files, MLflow, export."""
    t0 = time.monotonic()
    p.env.ensure(log=_say)
    work = out_dir / "predict"
    if work.exists():
        shutil.rmtree(work)
    images = p.images
    links = stage(images, work / "lines")
    pred_dir = work / "pred"
    pred_dir.mkdir(parents=True)
    argv = p.env.wrap(predict_argv(p.version, p.env.program("calamari-predict"), p.checkpoint, work / "lines",
                                   pred_dir, cfg.eval.batch_size, list(cfg.eval.predict_args)))
    log_path = out_dir / "predict.log"
    _say(f"evaluating {p.checkpoint} ({p.version}) on {len(images)} lines; calamari-predict log: {log_path}")
    tracker = None
    status = "FAILED"
    proc = None
    try:
        with _signals_raise(), open(log_path, "w", encoding="utf-8") as log:
            log.write(f"# hsbcala {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n")
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
            t_pred = time.monotonic()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    cwd=out_dir)
            tracker = EvalTracker(cfg, p)  # while the engine imports TensorFlow
            report.preload()  # matplotlib too (~1 s), for the chart afterwards
            code = proc.wait()
            predict_s = time.monotonic() - t_pred
        if code != 0:
            raise EngineError(f"calamari-predict exited with code {code} (log: {log_path}): {_tail(log_path)}")

        stems = {link: link.name.split(".", 1)[0] for link in links}
        predictions: dict[Path, str | None] = {}
        for img, link in zip(images, links, strict=True):
            f = pred_dir / f"{stems[link]}.pred.txt"
            predictions[img] = f.read_text(encoding="utf-8") if f.is_file() else None
        if not any(v is not None for v in predictions.values()):
            raise EngineError(f"calamari-predict wrote no prediction into {pred_dir} (log: {log_path}): "
                              f"{_tail(log_path)}")
        result.update(_score(cfg, p, predictions, out_dir))
        result["predict"] = {"argv": argv, "seconds": round(predict_s, 3), "lines": len(images)}
        result["checkpoint"] = str(p.checkpoint)
        result["model_dir"] = str(p.model_dir) if p.model_dir else result.get("model_dir")
        result["mlflow"] = {"tracking_uri": tracker.uri, "run_id": tracker.run_id,
                            "training_run_id": tracker.training_run_id, "separate_run": tracker.separate}
        shutil.rmtree(work, ignore_errors=True)  # the predictions are kept in lines.tsv
        if cfg.eval.export:
            result["export"] = str(export_release(cfg, p, result, tracker.training_params))
        result["seconds"] = round(time.monotonic() - t0, 3)
        _write_json(out_dir / RESULT_FILE, result)
        table = report.write([result], out_dir, stem="cer-table")
        _log(tracker, p, result, out_dir, table)
        status = "FINISHED"
        _say(_summary(result) + f"; MLflow run {tracker.run_id}" + (f"; release {result['export']}"
                                                                      if result.get("export") else ""))
        return result
    except (Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        if proc is not None:
            _stop(proc)
        if tracker is not None:
            with contextlib.suppress(Exception):
                tracker.end(status)


def _score(cfg: Any, p: Plan, predictions: dict[Path, str | None], out_dir: Path) -> dict:
    """CER per set and group; per set ``lines.tsv`` and ``confusions.tsv`` in ``out_dir/<set>/``."""
    sets = []
    for s in p.sets:
        overall = cer.Score()
        by_group = {g: cer.Score() for g in p.groups}
        member_sets = {g: set(m) for g, m in s.members.items()}
        rows = []
        missing = 0
        for img in s.images:
            raw = predictions.get(img)
            missing += raw is None
            gt, pred = cer.normalize(s.gt[img], p.rules), cer.normalize(raw or "", p.rules)
            al = cer.align(gt, pred)
            overall.add(gt, al)
            gs = [g for g in p.groups if img in member_sets[g]]
            for g in gs:
                by_group[g].add(gt, al)
            rows.append((img, gs, gt, pred, al))
        set_dir = out_dir / s.name
        set_dir.mkdir(parents=True, exist_ok=True)
        with open(set_dir / "lines.tsv", "w", encoding="utf-8") as f:
            f.write("image\tgroups\tchars\terrors\tcer\tgt\tprediction\n")
            for img, gs, gt, pred, al in rows:
                line_cer = f"{al.errors / len(gt):.4f}" if gt else ""
                f.write(f"{img}\t{','.join(gs)}\t{len(gt)}\t{al.errors}\t{line_cer}\t{gt}\t{pred}\n")
        with open(set_dir / "confusions.tsv", "w", encoding="utf-8") as f:
            f.write("count\tgt\tprediction\n")
            for (g, pr), n in overall.confusions.most_common(cfg.eval.confusions):
                f.write(f"{n}\t{json.dumps(g, ensure_ascii=False)}\t{json.dumps(pr, ensure_ascii=False)}\n")
        sets.append({
            "name": s.name, "key": s.key, "patterns": s.patterns, "skipped": len(s.skipped),
            "missing_predictions": missing, "ungrouped": s.ungrouped if p.groups else 0,
            "overall": overall.summary(),
            "groups": {g: (by_group[g].summary() if s.members[g] else None) for g in p.groups},
            "top_confusions": [[g, pr, n] for (g, pr), n in overall.confusions.most_common(10)],
        })
        if missing:
            _say(f"warning: {s.key}: {missing} lines got no prediction from calamari-predict (skipped by the "
                 f"engine, see predict.log); counted as empty predictions, as calamari-eval does")
    return {"normalization": p.rules, "normalization_description": cer.DESCRIPTION[p.rules], "sets": sets}


def _summary(result: dict) -> str:
    s = result["sets"][0]
    groups = ", ".join(f"{g} {report.percent(v['cer'] if v else None)}" for g, v in s["groups"].items())
    return (f"{result['model']}: CER {report.percent(s['overall']['cer'])} on {s['overall']['lines']} lines of "
            f"{s['name']}" + (f" ({groups})" if groups else ""))


def metrics_of(result: dict) -> dict[str, float]:
    """MLflow metrics: ``eval/<set>/cer``, ``eval/<set>/cer_<group>`` (only where there is a number), counts."""
    out: dict[str, float] = {}
    for s in result["sets"]:
        o = s["overall"]
        if o["cer"] is not None:
            out[f"eval/{s['name']}/cer"] = o["cer"]
        out[f"eval/{s['name']}/lines"] = o["lines"]
        out[f"eval/{s['name']}/chars"] = o["chars"]
        out[f"eval/{s['name']}/errors"] = o["errors"]
        for g, v in s["groups"].items():
            if v is not None and v["cer"] is not None:
                out[f"eval/{s['name']}/cer_{g}"] = v["cer"]
    return out


def _log(tracker: EvalTracker, p: Plan, result: dict, out_dir: Path, table: dict[str, Path]) -> None:
    files = [(out_dir / RESULT_FILE, "eval")]
    for s in p.sets:
        files += [(out_dir / s.name / "lines.tsv", f"eval/{s.name}"),
                  (out_dir / s.name / "confusions.tsv", f"eval/{s.name}")]
    files += [(table["md"], "eval"), (table["csv"], "eval"), (table["png"], "eval")]
    tags = {"hsbcala.eval.time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "hsbcala.eval.normalization": result["normalization"],
            "hsbcala.eval.data": json.dumps({s.name: s.patterns for s in p.sets}, ensure_ascii=False)[:5000]}
    try:
        tracker.log(metrics_of(result), tags, files)
    except Exception as exc:  # MLflow raises many types; the results are on disk already
        raise ConfigError(f"mlflow.tracking_uri={tracker.uri}: could not log the evaluation to run "
                          f"{tracker.run_id}: {str(exc).splitlines()[0]} (results: {out_dir})") from exc


# ------------------------------------------------------------------------------------------------ export


def export_release(cfg: Any, p: Plan, result: dict, training_params: dict[str, str]) -> Path:
    """``<eval.export_dir>/<model name>.<version>-<YYYYmmdd-HHMMSS>.tar.gz``: the model files and
    ``hsbcala-release.json`` (script, version, training data, CER table, hsbcala commit) plus ``CER.md``."""
    from hsbcala import tracking
    from hsbcala.engines import modeljson

    info = modeljson.read_model(p.checkpoint)
    weights = p.checkpoint.with_name(p.checkpoint.name[: -len(".json")])
    files = [p.checkpoint] + [w for w in (weights, Path(f"{weights}.h5")) if w.exists()]
    name = f"{cfg.script.model_name}.{p.version}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    export_dir = Path(cfg.eval.export_dir).expanduser().resolve()
    export_dir.mkdir(parents=True, exist_ok=True)
    archive = export_dir / f"{name}-{stamp}.tar.gz"

    def _param(key: str) -> Any:
        v = training_params.get(key)
        if v is None or v == "None":  # MLflow params are strings; the config's null was logged as "None"
            return None
        with contextlib.suppress(ValueError):
            return json.loads(v)
        return v

    if training_params:
        training = {"train": _param("data.train"), "val": _param("data.val"), "source": "the MLflow training run",
                    "preset": _param("preset"), "warmstart": _param("warmstart.model"),
                    "network": _param("train.network")}
    else:
        training = {"train": list(cfg.data.train) if not OmegaConf.is_missing(cfg.data, "train") else None,
                    "val": list(cfg.data.val) if not OmegaConf.is_missing(cfg.data, "val") else None,
                    "source": "the evaluation's config (no training run found)"}
    state = checkpoints.load_state(p.model_dir) if p.model_dir else None
    meta = {
        "name": name, "script": cfg.script.name, "version": p.version, "calamari": cfg.version.package,
        "model_files": [f.name for f in files], "network": info.network, "charset_size": len(info.charset),
        "training_data": training, "best_val_cer": state.best_val_cer if state else None,
        "mlflow": result.get("mlflow"),
        "evaluation": {"normalization": result["normalization_description"], "groups": p.groups,
                       "sets": [{k: s[k] for k in ("name", "patterns", "overall", "groups")} for s in result["sets"]]},
        "cer_table": report.markdown([result], footer=False),
        "hsbcala_commit": tracking.git_commit(envs.project_root()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "usage": f"calamari-predict --checkpoint {name}/{p.checkpoint.name} … (calamari-ocr "
                 f"{cfg.version.package.split('==')[-1]})",
    }
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "hsbcala-release.json"
        meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        table_path = Path(tmp) / "CER.md"
        table_path.write_text(report.markdown([result]), encoding="utf-8")
        part = archive.with_name(archive.name + ".part")
        with tarfile.open(part, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=f"{name}/{f.name}")
            tar.add(meta_path, arcname=f"{name}/hsbcala-release.json")
            tar.add(table_path, arcname=f"{name}/CER.md")
        os.replace(part, archive)
    return archive


# ------------------------------------------------------------------------------------------------ multirun


def _job_label(job_dir: Path) -> str:
    with contextlib.suppress(Exception):
        overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        return " ".join(str(o) for o in overrides)
    return f"job {job_dir.name}"


def collect(sweep_dir: Path) -> list[dict]:
    """Every job's result in job order; a job dir without one (the job died) becomes a missing row."""
    jobs = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    results = []
    for d in jobs:
        f = d / RESULT_FILE
        if f.is_file():
            results.append(json.loads(f.read_text(encoding="utf-8")))
        elif (d / ".hydra").is_dir():
            results.append({"model": _job_label(d), "sets": [], "groups": {},
                            "error": f"the job ended without a result (see {d})"})
    return results


def log_comparison(results: list[dict], paths: dict[str, Path], sweep_dir: Path, experiment: str,
                   uri: str) -> str | None:
    """A run holding a multirun's comparison table in the experiment ``eval.comparison_experiment``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    runs = {r["model"]: (r.get("mlflow") or {}).get("run_id") or "" for r in results}
    run = client.create_run(exp_id, run_name=f"comparison-{sweep_dir.parent.name}-{sweep_dir.name}",
                            tags={"hsbcala.kind": "comparison", "sweep_dir": str(sweep_dir),
                                  "models": ", ".join(runs), "runs": json.dumps(runs)[:5000]})
    try:
        for path in paths.values():
            client.log_artifact(run.info.run_id, str(path))
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = []
        for r in results:
            if r.get("error") or not r.get("sets"):
                continue
            for k, v in metrics_of(r).items():
                if "/cer" in k:
                    metrics.append(Metric(f"{r['model']}/{k}"[:250], v, ts, 0))
        if metrics:
            client.log_batch(run.info.run_id, metrics=metrics)
        client.set_terminated(run.info.run_id, "FINISHED")
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


class ComparisonTable(Callback):
    """Hydra callback: after a multirun of evaluate.py, the comparison table of all its jobs in the sweep dir
    (``cer-table.md``, ``.csv``, ``.png``), printed and logged to MLflow; exit 2 when a model is missing."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.get("dry_run", False)).lower() == "true":
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if not sweep_dir.is_dir():
            return
        results = collect(sweep_dir)
        if not results:
            return
        paths = report.write(results, sweep_dir, stem="cer-table")
        print("\n" + report.markdown(results), flush=True)
        _say(f"comparison table: {paths['md']} (and {paths['csv'].name}, {paths['png'].name})")
        uri = next(((r.get("mlflow") or {}).get("tracking_uri") for r in results if r.get("mlflow")), None)
        if uri is None:
            with contextlib.suppress(Exception):
                from hsbcala import tracking

                uri = tracking.tracking_uri(config)
        if uri:
            try:
                experiment = config.eval.comparison_experiment if config.get("eval") else "hsbcala-evaluation"
                run_id = log_comparison(results, paths, sweep_dir, experiment, uri)
                _say(f"comparison logged to MLflow experiment '{experiment}', run {run_id}")
            except Exception as exc:  # noqa: BLE001 - the table on disk is the result; MLflow is a copy
                _say(f"warning: could not log the comparison table to MLflow ({uri}): {str(exc).splitlines()[0]}")
        failed = report.any_failed(results)
        if failed:
            _say(f"error: {len(failed)} of {len(results)} evaluations failed (marked missing in the table): "
                 + "; ".join(f"{r['model']}: {r['error']}" for r in failed))
            sys.exit(2)
