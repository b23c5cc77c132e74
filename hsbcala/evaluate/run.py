"""Evaluate a trained model: CER overall and per preprocessing variant group, logged to MLflow, tabled.

Flow of :func:`run` (called by ``evaluate.py`` once per Hydra job; ``-m`` evaluates several models):

1. check the ``eval`` node (:func:`check`); find the model: ``eval.model`` or the best model of ``model_dir``
   (:func:`find_model`), refusing a directory without one or one of the other Calamari version;
2. the evaluation sets: ``eval.data`` (default: the validation lines the model's ``manifest.json`` records;
   without one ``data.val``, else the saved split) and the named ``eval.extra`` sets, each resolved
   and checked with :mod:`hsbcala.data.resolve` (lines without valid GT are left out and counted, or stop the run with
   ``eval.skip_invalid=false``); every line is put into the variant groups whose file-name patterns
   (``eval.groups``, fnmatch on the image's name) it matches; a group no line matches is reported and shown as
   n/a, never as a number;
3. ONE prediction pass over all lines of all sets with the version's own ``calamari-predict`` in its engine
   environment. The lines are staged as symlinks ``<job dir>/predict/lines/000001.png …`` and predicted into
   ``<job dir>/predict/pred/``, so predictions are never written into the user's GT directories and two lines
   with the same file name (or sharing a ``.gt.txt``) never overwrite each other's ``.pred.txt``. A line the
   engine skips gets no prediction and counts as an empty one (as calamari-eval does); it is reported.
   While the engine runs, the MLflow run is opened (mlflow's import costs seconds);
4. CER (:mod:`hsbcala.evaluate.cer`: summed edit distances / summed GT characters, after calamari-eval's normalisation
   of the model's version, or ``eval.normalization``) per set, per group; the confusions from the alignment;
5. write ``eval-result.json``, per set ``lines.tsv`` (every line: groups, GT, prediction, errors, CER) and
   ``confusions.tsv`` (the ``eval.confusions`` most frequent), and the one-row table into the Hydra job dir;
   log metrics ``eval/<set>/cer``, ``eval/<set>/cer_<group>`` and those files to the model's training run
   (or a separate evaluation run); with ``eval.export=true`` pack the release archive (:mod:`hsbcala.evaluate.release`).

After a multirun, :class:`hsbcala.evaluate.comparison.ComparisonTable` (a Hydra callback) collects every job's ``eval-result.json`` into the
comparison table (Markdown, CSV, PNG) in the sweep dir and logs it to MLflow. A model whose evaluation failed is
a row marked missing: in a multirun, each job catches its own :class:`~hsbcala.core.errors.HsbcalaError`, says it in
one line, records it in its result and lets the other jobs run; the multirun exits 2 at the end.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hsbcala import engines, modeldir
from hsbcala.config import schema
from hsbcala.core import console, fsutil
from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, DataError, HsbcalaError, Interrupted
from hsbcala.engines import envs
from hsbcala.engines.process import interruptible
from hsbcala.evaluate import cer, champion, charclasses, htmlreport, report, scoring
from hsbcala.evaluate import sets as evalsets
from hsbcala.evaluate.predict import Plan, predict, predict_argv, stage
from hsbcala.evaluate.scoring import RESULT_FILE
from hsbcala.track import evaluation, store

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ------------------------------------------------------------------------------------------------ plan


def check(cfg: Any) -> None:
    """The schema's checks, and the eval node's enumerations and names (ConfigError naming the key)."""
    if cfg.get("eval") is None:
        raise ConfigError("eval: no evaluation settings; run evaluate.py (config conf/evaluate.yaml)")
    probe = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    # evaluation needs no training lines; its lines are eval.data or data.val
    if OmegaConf.is_missing(probe.data, "train"):
        probe.data.train = []
    if OmegaConf.is_missing(probe.data, "val"):  # the model's recorded lines, or eval.data (see plan)
        probe.data.val = []
    with contextlib.suppress(KeyError):
        del probe["hydra"]
    schema.check(probe)
    ev = cfg.eval
    if ev.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {ev.batch_size}")
    if ev.confusions < 0:
        raise ConfigError(f"eval.confusions must be >= 0, got {ev.confusions}")
    if ev.worst_lines < 0:
        raise ConfigError(f"eval.worst_lines must be >= 0, got {ev.worst_lines}")
    if ev.html_lines < 0:
        raise ConfigError(f"eval.html_lines must be >= 0, got {ev.html_lines}")
    if ev.intervals.resamples < 1:
        raise ConfigError(f"eval.intervals.resamples must be >= 1, got {ev.intervals.resamples}")
    if not 0 < ev.intervals.level < 1:
        raise ConfigError(
            f"eval.intervals.level must be between 0 and 1 (0.95 for 95 %), got {ev.intervals.level}"
        )
    try:
        charclasses.letters_of(str(ev.sorbian_letters))
    except ValueError as exc:
        raise ConfigError(f"eval.sorbian_letters: {exc}; give the letters as one string, e.g. ěčřšž") from exc
    for kind in ("groups", "extra"):
        for name, patterns in ev[kind].items():
            if not _NAME.match(name):
                raise ConfigError(f"eval.{kind}.{name}: a name may hold only letters, digits, '_', '-', '.'")
            if not patterns:
                raise ConfigError(f"eval.{kind}.{name}: no patterns given")
    if ev.name is not None and not _NAME.match(ev.name):
        raise ConfigError(f"eval.name={ev.name!r}: a name may hold only letters, digits, '_', '-', '.'")
    if main_set_name(cfg) in ev.extra:
        raise ConfigError(
            f"eval.extra.{main_set_name(cfg)}: the name of the main evaluation set; choose another"
        )


def main_set_name(cfg: Any) -> str:
    return cfg.eval.name or ("val" if cfg.eval.data is None else "eval")


def find_model(cfg: Any) -> tuple[Path, Path | None]:
    """(the model's .ckpt.json, its model directory or None) for ``eval.model`` or the best model of model_dir."""
    from hsbcala.engines import modeljson

    engine = engines.get(cfg.version.name)
    if cfg.eval.model:
        path = Path(cfg.eval.model).expanduser().resolve()
        if not path.name.endswith(".json"):
            path = path.with_name(path.name + ".json")
        if not path.is_file():
            raise DataError(f"eval.model: no such model {path} (give a <name>.ckpt.json)")
        model_dir = path.parent if modeldir.detect_version(path.parent) else None
    else:
        md = modeldir.ModelDir(Path(cfg.model_dir).resolve(), engine)
        model_dir = md.path
        if not md.exists():
            raise DataError(
                f"model_dir {model_dir} does not exist: no model to evaluate; train it first "
                f"(python train.py with the same script/version/overrides) or set model_dir=DIR"
            )
        md.check_version()
        best = md.best_model()
        if not best:
            weights = engine.best_weights + ("/" if engine.best_weights.endswith(".ckpt") else "")
            raise DataError(
                f"model_dir {model_dir} holds no trained model (best.ckpt.json + {weights} missing); "
                f"train it first, or set model_dir=DIR or eval.model=FILE.ckpt.json"
            )
        path = best[0]
    info = modeljson.read_model(path)
    if info.version != engine.major:
        found = engines.label(info.version)
        raise ConfigError(f"{path} is a {found} model, but version={engine.name}; choose version={found}")
    if cfg.eval.model and not engine.weights_of(path):
        raise DataError(f"eval.model {path} has no weights beside it ({engine.weights_names(path)})")
    return path, model_dir


def plan(cfg: Any) -> Plan:
    """Steps 1-2 of :func:`run`: decide everything, create nothing (but the synthetic demo lines if needed)."""
    check(cfg)
    version = cfg.version.name
    checkpoint, model_dir = find_model(cfg)
    env = envs.resolve(cfg, envs.project_root())
    base = Path(cfg.paths.root)
    groups = {g: list(p) for g, p in cfg.eval.groups.items()}
    main = main_set_name(cfg)
    recorded = evalsets.recorded_lines(model_dir) if model_dir is not None else None
    warnings = []
    if cfg.eval.data is not None:
        main_patterns, main_key = list(cfg.eval.data), "eval.data"
    elif recorded is not None:  # what the model was validated on, whatever this configuration says
        main_patterns, main_key = evalsets.recorded_patterns(recorded)
        evalsets.verify_recorded(recorded, cfg.data.cache_dir)  # the same bytes, not just the same names
        say(f"evaluating on the {len(recorded.val)} validation lines recorded in {recorded.manifest}")
        note = evalsets.config_differs(recorded, cfg.data, base)
        if note:
            warnings.append(note)
    elif OmegaConf.is_missing(cfg.data, "val"):
        raise ConfigError(
            "eval.data: no evaluation lines: the model directory records none (no manifest.json); "
            "set eval.data=[GLOBS] (or data.val=[GLOBS])"
        )
    elif cfg.data.val:
        main_patterns, main_key = list(cfg.data.val), "data.val (eval.data=null)"
    else:  # trained on a split (data.val null): its saved validation lines
        from hsbcala.data import split

        saved = split.saved_val(model_dir)
        if not saved:
            raise ConfigError(
                "eval.data: no evaluation lines: data.val is null and the model directory has no "
                "saved split; set eval.data=[GLOBS]"
            )
        main_patterns, main_key = [str(p) for p in saved], "the saved split's validation lines (split.json)"
    specs = [(main, main_key, main_patterns)]
    specs += [(name, f"eval.extra.{name}", list(pats)) for name, pats in cfg.eval.extra.items()]
    sets = []
    for name, key, patterns in specs:
        if not (recorded is not None and cfg.eval.data is None and name == main):
            # not for the recorded lines: they are checked as they are; rendering this configuration's
            # synthetic set would not make them (it goes to its own folder, see hsbcala/synth)
            evalsets.ensure_demo_lines(cfg.data.synthetic, cfg.script.face, patterns)
        s = evalsets.load_set(name, key, patterns, groups, base=base, skip_invalid=cfg.eval.skip_invalid)
        sets.append(s)
    groups, note = evalsets.without_variants(sets, groups)
    if note:
        say(note)
    for s in sets:
        warnings += evalsets.warnings_of(s, groups, only_set=len(specs) == 1)
    warnings += evalsets.training_overlap(recorded.train if recorded else cfg.data, sets, base)
    documents = evalsets.recorded_documents(model_dir)
    for s in sets:
        note = evalsets.assign_documents(s, documents, str(cfg.eval.intervals.unit))
        if note:
            warnings.append(note)
    rules = engines.get(version).eval_rules if cfg.eval.normalization == "engine" else cfg.eval.normalization
    own_val = recorded is not None and cfg.eval.data is None and not cfg.eval.model
    return Plan(
        str(cfg.mlflow.run_name), version, checkpoint, model_dir, env, groups, sets, rules, warnings, own_val
    )


# ------------------------------------------------------------------------------------------------ predict


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


def _base_result(cfg: Any) -> dict:
    """What is known about a job before anything can fail (so a failed model still gets its row)."""
    # a key missing, ``???`` or an interpolation that does not resolve (OmegaConf's errors): the row gets a
    # default, and the same key fails with its own message where the evaluation needs it
    groups = {}
    with contextlib.suppress(OmegaConfBaseException):
        groups = {g: list(p) for g, p in cfg.eval.groups.items()}
    label = f"{cfg.script.name}-{cfg.version.name}"
    with contextlib.suppress(OmegaConfBaseException):
        label = str(cfg.mlflow.run_name)
    model_dir = None
    with contextlib.suppress(OmegaConfBaseException):
        model_dir = str(cfg.model_dir)
    return {
        "model": label,
        "script": cfg.script.name,
        "version": cfg.version.name,
        "model_dir": model_dir,
        "groups": groups,
        "sets": [],
        "error": None,
    }


def run(cfg: DictConfig) -> float | None:
    """Evaluate the model of ``cfg``; return its overall CER on the main set (None: dry run or, in a multirun,
    a failed evaluation, which is recorded in the job's result instead of stopping the other jobs)."""
    out_dir = _job_dir(cfg)
    result = _base_result(cfg)
    try:
        p = plan(cfg)
        for w in p.warnings:
            say(f"warning: {w}")
        if cfg.dry_run:
            _print_plan(cfg, p)
            return None
        result = evaluate(cfg, p, out_dir, result)
    except HsbcalaError as exc:
        result["error"] = str(exc)
        if not cfg.dry_run:
            fsutil.atomic_write_json(out_dir / RESULT_FILE, result)
        if not _is_multirun() or isinstance(exc, Interrupted):
            raise
        say(f"error: {result['model']}: {exc}")
        return None
    overall = result["sets"][0]["overall"]["cer"]
    print(report.text_report(result), flush=True)
    if not _is_multirun():
        print(report.markdown([result], differences=result.get("baseline_differences")), flush=True)
    # last, below the report: where everything printed above is, and the page to look at the lines
    say(f"results in {out_dir}; the lines to look at: {out_dir / htmlreport.FILE}")
    return overall


def _print_plan(cfg: Any, p: Plan) -> None:
    print(f"model: {p.checkpoint} ({p.version}); normalisation: {cer.DESCRIPTION[p.rules]}")
    for s in p.sets:
        groups = ", ".join(f"{g}: {len(m)}" for g, m in s.members.items())
        print(
            f"set {s.name}: {len(s.images)} lines ({groups or 'no groups'}; {s.ungrouped} in no group); "
            f"intervals resample {s.unit_note}"
        )
    argv = predict_argv(
        engines.get(p.version),
        p.env.program("calamari-predict"),
        p.checkpoint,
        Path("<job dir>/predict/lines"),
        Path("<job dir>/predict/pred"),
        cfg.eval.batch_size,
        list(cfg.eval.predict_args),
    )
    print(shlex.join(p.env.wrap(argv)), flush=True)


def evaluate(cfg: Any, p: Plan, out_dir: Path, result: dict) -> dict:
    """Steps 3-5 of :func:`run`: one prediction pass, the CER per set and group, files, MLflow, export."""
    t0 = time.monotonic()
    p.env.ensure()
    work = out_dir / "predict"
    if work.exists():
        shutil.rmtree(work)
    images = p.images
    links = stage(images, work / "lines")
    log_path = out_dir / "predict.log"
    say(f"evaluating {p.checkpoint} ({p.version}) on {len(images)} lines; calamari-predict log: {log_path}")
    tracker = None
    status = "FAILED"

    def open_run() -> None:  # while the engine imports TensorFlow
        nonlocal tracker
        tracker = evaluation.EvalTracker(cfg, p)
        report.preload()  # matplotlib too (~1 s), for the chart afterwards

    try:
        # the whole evaluation: a scancel during the baseline's or the checkpoints' passes ends the run KILLED
        with interruptible("evaluation interrupted by {signal}"):
            predictions, predict_s, argv = predict(
                p, p.checkpoint, images, links, work / "pred", log_path, cfg, meanwhile=open_run
            )
            lines: dict[str, list] = {}  # per set its lines with their alignments, for eval-report.html
            result.update(
                scoring.score_sets(
                    p.sets, p.groups, p.rules, predictions, out_dir, scoring.options(cfg.eval), lines=lines
                )
            )
            result["groups"] = p.groups  # the evaluated ones (none when no line is named as a variant)
            result["predict"] = {"argv": argv, "seconds": round(predict_s, 3), "lines": len(images)}
            if p.own_val:
                result["engine_check"] = _engine_check(p, result, out_dir)
            result["checkpoint"] = str(p.checkpoint)
            result["model_dir"] = str(p.model_dir) if p.model_dir else result.get("model_dir")
            result["mlflow"] = {
                "tracking_uri": tracker.uri,
                "run_id": tracker.run_id,
                "training_run_id": tracker.training_run_id,
                "separate_run": tracker.separate,
            }
            if (
                cfg.eval.baseline
            ):  # the warm-start model on the same staged lines (hsbcala/evaluate/baseline.py)
                from hsbcala.evaluate import baseline

                baseline.evaluate(cfg, p, result, out_dir, images, links)
            curve = []
            if cfg.eval.checkpoints == "all":  # every checkpoint on the same staged lines
                from hsbcala.evaluate import checkpoints as evalcheckpoints

                curve = evalcheckpoints.evaluate(
                    cfg, p, result, images, links, out_dir, tracker.training_params
                )
            shutil.rmtree(work, ignore_errors=True)  # the predictions are kept in lines.tsv
            if cfg.eval.export:
                from hsbcala.evaluate import release

                result["export"] = str(
                    release.export_release(cfg, p, result, tracker.training_params, tracker=tracker)
                )
            if cfg.mlflow.get("register"):  # the registry's champion moves only on a real win
                try:
                    result["registry"] = champion.register(cfg, p, out_dir, tracker)
                # the store's errors only: the results are on disk already; a bug keeps its traceback
                except store.store_errors() as exc:
                    raise ConfigError(
                        f"mlflow.register=true: could not register the evaluated model in {tracker.uri}: "
                        f"{str(exc).splitlines()[0]} (results: {out_dir})"
                    ) from exc
            result["seconds"] = round(time.monotonic() - t0, 3)
            fsutil.atomic_write_json(out_dir / RESULT_FILE, result)
            table = report.write(
                [result], out_dir, stem="cer-table", differences=result.get("baseline_differences")
            )
            table["html"] = htmlreport.write_evaluation(  # logged with the table, under eval/
                result, lines, out_dir / htmlreport.FILE, cfg.eval.html_lines, cfg.eval.intervals.seed
            )
            _log(tracker, p, result, out_dir, table, curve)
            status = "FINISHED"
            say(
                scoring.summary(result)
                + f"; MLflow run {tracker.run_id}"
                + (f"; release {result['export']}" if result.get("export") else "")
            )
            return result
    except (Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            try:
                tracker.end(status)
            except Exception as exc:  # noqa: BLE001 - ending, maybe on another error that must not be masked
                console.swallowed(
                    f"mlflow.tracking_uri={tracker.uri}: ending the evaluation's run {tracker.run_id} as {status}",
                    exc,
                    store.store_errors(),
                    "the store may show it RUNNING; the results are on disk",
                )


def _engine_check(p: Plan, result: dict, out_dir: Path) -> dict:
    """The best model on the training's own validation lines must score what the engine measured for it while
    training (``best_val_cer``): two CERs for one model on the same lines mean one of them is not what it claims
    (:func:`hsbcala.evaluate.scoring.engine_agreement`). One console line either way, with both figures."""
    assert p.model_dir is not None  # own_val: the lines come from the model directory's manifest
    state = modeldir.load_state(p.model_dir)
    engine_cer = state.best_val_cer if state is not None else None
    main = result["sets"][0]
    statistic = engines.get(p.version).val_cer_statistic
    if statistic == "summed":
        ours = main["overall"]["cer"]
    else:  # the engine's own average, from the per-line table just written
        ours = scoring.line_mean_cer(out_dir / main["name"] / scoring.LINES_FILE)
    agree, line = scoring.engine_agreement(ours, engine_cer, main["missing_predictions"], statistic)
    if engine_cer is not None:
        say(line if agree else f"warning: {line}")
    return {
        "evaluation": ours,
        "statistic": statistic,
        "engine": engine_cer,
        "tolerance": scoring.engine_tolerance(engine_cer) if engine_cer is not None else None,
        "agree": agree,
        "note": line,
    }


def _log(tracker: Any, p: Plan, result: dict, out_dir: Path, table: dict[str, Path], curve: list) -> None:
    files = [(out_dir / RESULT_FILE, "eval")]
    for s in p.sets:
        files += [
            (out_dir / s.name / "lines.tsv", f"eval/{s.name}"),
            (out_dir / s.name / "confusions.tsv", f"eval/{s.name}"),
            (out_dir / s.name / "characters.tsv", f"eval/{s.name}"),
        ]
    if (result.get("baseline") or {}).get("sets"):
        files += [(out_dir / "baseline" / s.name / "lines.tsv", f"eval/baseline/{s.name}") for s in p.sets]
    files += [(path, "eval") for path in table.values()]
    tags = {
        "hsbcala.eval.time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "hsbcala.eval.normalization": result["normalization"],
        "hsbcala.eval.data": json.dumps({s.name: s.patterns for s in p.sets}, ensure_ascii=False)[:5000],
    }
    try:
        tracker.log(scoring.metrics_of(result), tags, files)
        if curve:
            tracker.log_curve(curve)
    # the store's errors only: the results are on disk already; a bug keeps its traceback
    except store.store_errors() as exc:
        raise ConfigError(
            f"mlflow.tracking_uri={tracker.uri}: could not log the evaluation to run "
            f"{tracker.run_id}: {str(exc).splitlines()[0]} (results: {out_dir})"
        ) from exc
