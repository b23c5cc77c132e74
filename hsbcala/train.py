"""One training launch: check everything, build the command, run the engine, track it, end cleanly.

Flow of :func:`run` (called by ``train.py`` once per Hydra job, locally or inside a Slurm job):

1. check the config (schema did types and keys; :func:`hsbcala.schema.check` the rest);
2. the model directory: refuse one of the other Calamari version; stop if its training already finished;
   find the newest checkpoint (resume) or plan a fresh ``calamari-train``;
3. data: render the synthetic demo set if the globs point at it; resolve and check every line
   (:mod:`hsbcala.data`); read the warm-start model (network and codec, :mod:`hsbcala.engines.modeljson`);
4. build the command (``train_argv`` of the version's :mod:`hsbcala.engines` module), wrapped in nsys and module loads when configured;
   ``dry_run=true`` prints it and stops here, having created nothing;
5. make sure the engine environment exists (:mod:`hsbcala.engines.envs`), lock the model directory, start the engine,
   and while it starts open/resume the MLflow run (:mod:`hsbcala.tracking`);
6. stream the engine's output to the console and ``<model_dir>/engine.log``, parse metrics
   (the engine's progress parser) into MLflow;
7. end: FINISHED (artifacts: best model, log, config, nsys report), FAILED (clear error with the log's tail), or
   KILLED on SIGINT/SIGTERM (the engine is stopped; the last checkpoint stays for the next launch).

Nothing is created before step 5, and a fresh training that fails before its first checkpoint removes its
model directory again, so bad input never leaves a half-written model directory behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hsbcala import engines, schema
from hsbcala.console import say
from hsbcala.engines import envs
from hsbcala.engines.base import Engine, TrainInputs
from hsbcala.engines.process import EngineProcess, deferred, interruptible
from hsbcala.errors import ConfigError, DataError, EngineError, Interrupted, RestoreFailed
from hsbcala.modeldir import ModelDir, State

INTERRUPTED = "interrupted by {signal}; the last checkpoint is kept, run the same command again to resume"


@dataclass
class Plan:
    """Everything decided before anything is created."""

    argv: list[str]
    inputs: TrainInputs
    env: envs.EngineEnv
    engine: Engine
    model_dir: ModelDir
    resume_from: Path | None
    state: State | None
    n_val: int = 0
    skipped: int = 0
    profile_report: Path | None = None
    data: Any = None  # hsbcala.datastep.DataPlan: manifest, split, codec report (written by _execute)
    warmstart_source: Path | None = None  # the pretrained model's JSON; copied into the model dir first
    links: tuple[LineLinks, ...] = ()  # long file lists, as links the engine reads through a glob


def _under(pattern: str, root: Path) -> bool:
    return Path(pattern).is_absolute() and Path(pattern).resolve().is_relative_to(root.resolve())


def _ensure_synthetic(cfg: Any, dry_run: bool) -> int | None:
    """Render the synthetic demo lines if the data globs point at them; return the train count for dry runs."""
    syn = cfg.data.synthetic
    root = Path(syn.root)
    if not any(_under(p, root) for p in [*cfg.data.train, *(cfg.data.val or [])]):
        return None
    if dry_run:
        return syn.n_train
    from hsbcala import synth

    synth.ensure_configured(syn, cfg.script.face)
    return None


def _warmstart(
    warmstart: Any, network: str | None, engine: Engine, resume: bool
) -> tuple[str | None, str | None, Path | None]:
    """(weights argument, network, the model's JSON) of the warm start; the network always comes from the
    model. The argument still names the pretrained model; :func:`plan` points it at the model dir's copy."""
    if not warmstart.model or resume:
        return None, network, None
    path = Path(warmstart.model)
    if not (path.is_file() or Path(f"{path}.json").is_file()):
        name = path.parent.name
        from hsbcala.pretrained import get_command

        command = get_command(path)
        if command:
            raise DataError(
                f"warmstart.model: no such model {path}. Get it with: {command} (on an offline node add "
                f"--from DIR|ARCHIVE, a copy of the release archive), or set warmstart.pretrained_dir=DIR, "
                f"or warmstart.model=null to train from scratch"
            )
        raise DataError(
            f"warmstart.model: no such model {path}. Put the pretrained ensemble there (its 0.ckpt.json and "
            f"weights; Calamari {engine.major} model '{name}' from the Calamari-OCR model releases: "
            f"calamari_models_experimental for Calamari 2, calamari_models for Calamari 1), or set "
            f"warmstart.pretrained_dir=DIR, or warmstart.model=null to train from scratch"
        )
    from hsbcala.engines import modeljson

    info = modeljson.read_model(path)
    if info.version != engine.major:
        raise ConfigError(
            f"warmstart.model {info.path} is a Calamari {info.version} model, but version="
            f"{engine.name} (Calamari {engine.major})"
        )
    if network and network != info.network:
        say(f"train.network={network!r} ignored: a warm start uses the model's network {info.network!r}")
    return engine.weights_arg(info.path), info.network, info.path


# A file list longer than this reaches the engine as links in <model_dir>/lines/<split>/ and one glob per
# image suffix: 30,000 paths (a document-wise split of the team's 6,000 lines in five variants) are ~3 MB of
# arguments, over Linux's limit (E2BIG), and Calamari 1.0.7 reads no list file (it keeps each line's newline).
MAX_LISTED = 2000


@dataclass(frozen=True)
class LineLinks:
    """``links[i] -> targets[i]`` to create in ``folder`` (image and its .gt.txt, numbered)."""

    folder: Path
    pairs: tuple[tuple[str, str], ...]  # (link name, target path)


def link_lines(folder: Path, args: tuple[str, ...]) -> tuple[tuple[str, ...], LineLinks | None]:
    """(what the engine gets, the links to make first): ``args`` itself when it is short or patterns, else
    a glob per suffix over numbered links to each image and its ``.gt.txt`` (Calamari's GT rule)."""
    from hsbcala.data import gt_path

    if len(args) <= MAX_LISTED:
        return args, None
    width = max(6, len(str(len(args))))
    pairs, suffixes = [], []
    for i, image in enumerate(args, 1):
        suffix = Path(image).suffix.lower()
        pairs += [(f"{i:0{width}d}{suffix}", image), (f"{i:0{width}d}.gt.txt", str(gt_path(Path(image))))]
        if suffix not in suffixes:
            suffixes.append(suffix)
    return tuple(str(folder / f"*{s}") for s in suffixes), LineLinks(folder, tuple(pairs))


def _make_links(links: LineLinks) -> None:
    """Create the links afresh (atomically: a folder beside, then renamed over the old one)."""
    tmp = links.folder.with_name(links.folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, target in links.pairs:
        os.symlink(target, tmp / name)
    old = links.folder.with_name(links.folder.name + ".old")
    if links.folder.exists():
        os.replace(links.folder, old)
    os.replace(tmp, links.folder)
    shutil.rmtree(old, ignore_errors=True)


WARMSTART_DIR = "warmstart"  # <model_dir>/warmstart/: the copy of the model a training starts from


def _copy_warmstart(source: Path, target_dir: Path) -> None:
    """Copy one ensemble member (``X.ckpt.json`` and its weights ``X.ckpt/`` or ``X.ckpt.h5``) into the model
    directory. The engine warm-starts from the copy: Calamari 2 upgrades an older model version in place,
    and the points of a sweep would race on it, so ``pretrained/`` is never written by a training."""
    if target_dir.is_dir():
        return  # a relaunch of a fresh training that died before its first checkpoint
    stem = source.name[: -len(".json")]  # X.ckpt
    tmp = target_dir.with_name(target_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in source.parent.iterdir():
        if f.name == source.name or f.name.startswith(stem + ".") or f.name == stem:
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
    os.replace(tmp, target_dir)


def plan(cfg: Any) -> Plan:
    """Steps 1-4 of :func:`run`: decide everything, create nothing."""
    schema.check(cfg)
    engine = engines.get(cfg.version.name)
    base = Path(cfg.paths.root)
    md = ModelDir(Path(cfg.model_dir).resolve(), engine)
    env = envs.resolve(cfg, envs.project_root())

    md.check_usable()
    md.check_version()
    state = md.load_state()
    resume_from = md.latest_checkpoint()

    dry_count = _ensure_synthetic(cfg, cfg.dry_run)
    if cfg.dry_run and dry_count is None:  # data staged from an archive in the job: count the archive's lines
        from hsbcala.slurm import job as slurm_job

        dry_count = slurm_job.dry_run_count(cfg)
    # The data step (hsbcala/datastep.py): resolve, split, check, hash, manifest, codec report; a dry run only
    # resolves (and splits). A failed check raises here, before anything is created.
    from hsbcala import datastep

    if cfg.dry_run and cfg.data_check_only:
        raise ConfigError("dry_run=true and data_check_only=true: choose one")
    data_plan = datastep.prepare(
        cfg, base=base, model_dir=md.path, dry_count=dry_count, resuming=resume_from is not None
    )

    warm, network, warm_source = _warmstart(cfg.warmstart, cfg.train.network, engine, resume_from is not None)
    if warm_source is not None:  # the engine starts from the copy in the model directory (_copy_warmstart)
        warm = str(md.path / WARMSTART_DIR / Path(warm).relative_to(warm_source.parent))
    on_ramdisk = bool(cfg.cluster.ramdisk) and all(
        _under(p, Path(cfg.cluster.ramdisk)) for p in cfg.data.train
    )
    train_args, train_links = link_lines(md.lines_dir / "train", data_plan.engine_train)
    val_args, val_links = link_lines(md.lines_dir / "val", data_plan.engine_val)
    inputs = TrainInputs(
        model_dir=md.path,
        train=train_args,
        val=val_args,
        n_train=data_plan.n_train,
        warmstart=warm,
        network=network,
        resume_from=resume_from,
        on_ramdisk=on_ramdisk,
        gpus=cfg.cluster.gpus,
    )
    argv, report = command(cfg, inputs, env)
    return Plan(
        argv,
        inputs,
        env,
        engine,
        md,
        resume_from,
        state,
        data_plan.n_val,
        data_plan.skipped,
        report,
        data_plan,
        warm_source,
        tuple(x for x in (train_links, val_links) if x is not None),
    )


def preflight(cfg: Any) -> None:
    """On the login node, before a Slurm job is submitted: what :func:`plan` checks, with the data step run on
    the data as it is here, so a bad glob or a broken line is found now, not after the queue wait. Data the
    job stages from an archive is checked by listing the archive (``cluster.stage.archive``)."""
    from hsbcala.slurm import job as slurm_job

    if not slurm_job.staged_elsewhere(cfg):
        plan(cfg)
        return
    schema.check(cfg)
    engine = engines.get(cfg.version.name)
    md = ModelDir(Path(cfg.model_dir).resolve(), engine)
    md.check_usable()
    md.check_version()
    slurm_job.dry_run_count(cfg)  # raises when no image of the archive would match data.train
    _warmstart(cfg.warmstart, cfg.train.network, engine, md.latest_checkpoint() is not None)


def command(cfg: Any, inputs: TrainInputs, env: envs.EngineEnv) -> tuple[list[str], Path | None]:
    """The full command line: the engine's argv in its environment, under nsys if profiled (and its report)."""
    argv = engines.get(cfg.version.name).train_argv(cfg.train, inputs)
    argv[0] = env.program(argv[0])
    argv, report = profile(cfg.profiler, inputs.model_dir, argv, site_modules=bool(env.modules))
    return env.wrap(argv), report


def profile(
    profiler: Any, model_dir: Path, argv: list[str], *, site_modules: bool
) -> tuple[list[str], Path | None]:
    """``argv`` under ``nsys profile`` when ``profiler.name`` is nsys (the report lands in the model directory).

    nsys missing: stop before anything starts (``if_missing=error``), or run unprofiled with a warning. With
    site modules it may come from a module loaded later, so it is not looked up here."""
    if profiler.name != "nsys":
        return argv, None
    if shutil.which(profiler.executable) is None and not site_modules:
        if profiler.if_missing == "error":
            raise ConfigError(
                f"profiler=nsys: '{profiler.executable}' not found on PATH; install Nsight "
                f"Systems (or load its module), or set profiler.if_missing=warn / profiler=none"
            )
        say(
            f"warning: '{profiler.executable}' not found; running without profiling (profiler.if_missing=warn)"
        )
        return argv, None
    wrapped = [
        profiler.executable,
        "profile",
        *profiler.args,
        "-o",
        str(model_dir / profiler.report_name),
        *argv,
    ]
    return wrapped, model_dir / f"{profiler.report_name}.nsys-rep"


def run(cfg: DictConfig) -> float | None:
    """Train or resume the model of ``cfg``; return its best validation CER (None for a dry run)."""
    from hsbcala.slurm import job as slurm_job

    # Slurm (hsbcala/slurm/job.py): refuse a Slurm cluster without -m, stage the GT archive; accounting, clean-up.
    with slurm_job.job(cfg):
        return _run(cfg)


def _run(cfg: DictConfig) -> float | None:
    p = plan(cfg)
    if cfg.dry_run:
        print(shlex.join(p.argv), flush=True)
        return None
    if cfg.data_check_only:  # the data step alone: reports into the model dir, exit 0 (2 if a check failed)
        from hsbcala import datastep

        datastep.check_only(p.data, p.model_dir.path, say)
        return None
    if p.state is not None and p.state.status == "finished":
        say(
            f"{p.model_dir.path} has finished training (the engine's best validation CER {p.state.best_val_cer}); "
            f"not retraining. "
            f"Choose another model_dir to train again."
        )
        return p.state.best_val_cer
    p.data.announce(say)  # what the data checks found, the split, the codec table
    p.env.ensure()
    while True:
        try:
            return _execute(cfg, p)
        except RestoreFailed as exc:  # set it aside (renamed, never deleted) and resume the one before it
            moved = p.engine.set_aside(exc.checkpoint)
            say(f"error: {exc}; set aside as {', '.join(m.name for m in moved)}")
            p = plan(cfg)
            if p.resume_from is None:
                raise EngineError(
                    f"no checkpoint of {p.model_dir.path} could be restored (set aside: *.unrestorable-*); "
                    f"move them back to retry, or choose another model_dir to train afresh"
                ) from None
            say(f"resuming from the previous checkpoint {p.resume_from} instead")


def _execute(cfg: Any, p: Plan) -> float | None:
    from hsbcala import tracking
    from hsbcala.masking import mask

    md, engine = p.model_dir, p.engine
    tracking.check_store(cfg)  # before anything is created or started: an unusable store fails here
    fresh = not md.exists()
    held = False  # this launch holds the lock: only then may it remove what it created
    state = p.state or State(version=engine.name)
    stage, start = engine.resume_point(p.resume_from) if p.resume_from else (0, 0)
    parser = engine.progress_parser(
        cfg.train, p.inputs.n_train, stage=stage, start=start, best_val_cer=state.best_val_cer
    )
    parser.best_val_cer_stage1 = state.best_val_cer_stage1
    tracker = None
    status = "FAILED"
    say(("resuming from " + str(p.resume_from)) if p.resume_from else f"training {md.path}")
    t0 = time.monotonic()
    with interruptible(INTERRUPTED), md.lock() as owner:
        held = True
        try:
            if owner.previous:
                say(
                    f"an earlier launch in {md.path} ({owner.describe_previous()}) ended without cleaning up; "
                    f"its MLflow run is marked KILLED, and training resumes from the newest checkpoint"
                )
            with deferred():
                # manifest.json, split.json, codec report (hsbcala.datastep)
                data_note = p.data.write(md.path)
                if p.resume_from is not None:
                    for note in engine.prepare_resume(p.resume_from, md.path):
                        say(f"resume: {note}")
                elif p.warmstart_source is not None:
                    _copy_warmstart(p.warmstart_source, md.path / WARMSTART_DIR)
                for links in p.links:
                    _make_links(links)
            if data_note:
                say(f"warning: {data_note}")
            with EngineProcess(p.argv, md.engine_log, echo=True) as proc:
                owner.engine_started(proc.pid)
                # MLflow starts while the engine imports TensorFlow; the reader thread keeps draining meanwhile.
                with deferred():
                    tracker = tracking.Tracker(
                        cfg,
                        state.run_id,
                        tags=tracking.run_tags(cfg, envs.project_root(), md.path),
                        params={
                            k: mask(v)
                            for k, v in tracking.flatten(OmegaConf.to_container(cfg, resolve=True)).items()
                        },
                        spool=md.spool,
                        previous=owner.previous,
                    )
                    state.run_id, state.tracking_uri = tracker.run_id, tracker.uri
                    state.history.append(
                        {
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                            "resumed_from": str(p.resume_from) if p.resume_from else None,
                        }
                    )
                    md.save_state(state)
                if not tracker.resumed:
                    tracker.log_text(mask(OmegaConf.to_yaml(cfg, resolve=True)), "config/config.yaml")
                    tracker.log_text(shlex.join(p.argv) + "\n", "config/command.txt")
                    if p.env.lock:
                        tracker.log_artifact(p.env.lock, "environment")
                if p.skipped:
                    tracker.log(0, {"skipped_lines": p.skipped})
                p.data.track(tracker)  # data/ artifacts, data.* tags (hsbcala.datastep)
                from hsbcala import provenance

                provenance.log(tracker, p.env, envs.project_root())  # environment/: freeze, modules, git
                for line in proc.lines():
                    owner.heartbeat()
                    for update in parser.feed(line):
                        tracker.log(update.step, update.metrics)
                code = proc.wait()
                if (
                    code != 0
                    and p.resume_from is not None
                    and parser.epochs_seen == parser.iterations_seen == 0
                    and engine.restore_failed(proc.output_tail())
                ):
                    raise RestoreFailed(
                        f"the checkpoint {p.resume_from} could not be restored: {proc.last_lines(1)}",
                        p.resume_from,
                    )
                if code != 0:
                    raise EngineError(
                        f"{Path(p.argv[0]).name} exited with code {code} (log: {md.engine_log}): "
                        f"{proc.last_lines()}"
                    )
            elapsed = time.monotonic() - t0
            with deferred():
                for note in engine.after_launch(md.path):
                    say(note)
                _keep_bests(state, parser)
                prior = sum(h.get("wall_time_s", 0.0) for h in state.history[:-1])
                state.history[-1]["wall_time_s"] = elapsed
                state.status = "finished"
                md.save_state(state)  # finished, whatever tracking does next
            lines_done = engine.lines_done(parser, cfg.train, p.inputs.n_train)
            tracker.log_final(
                {
                    "best_val_cer": parser.best_val_cer,
                    "best_val_cer_stage1": parser.best_val_cer_stage1,
                    "lines_per_second": lines_done / elapsed if elapsed > 0 else None,
                    "wall_time_s": prior + elapsed,
                }
            )
            untrained = engine.no_best_model(parser)
            if untrained:
                say(f"warning: {untrained}; it is not logged as the run's model")
                tracker.set_tags({"hsbcala.best_model": "untrained"})
            elif cfg.mlflow.log_model:
                for f in md.best_model():
                    tracker.log_artifact(f, "model")
            if p.profile_report is not None:
                tracker.log_artifact(p.profile_report, "profile")
            tracker.log_artifact(md.engine_log, "logs")
            status = "FINISHED"
            best = "n/a" if parser.best_val_cer is None else f"{parser.best_val_cer:.4f}"
            say(
                f"finished {md.path}: best validation CER {best} (the engine's: mean of per-line error rates; "
                f"evaluate.py's CER sums errors over characters); MLflow run {tracker.run_id}"
            )
            if tracker.degraded:
                say(
                    f"warning: tracking is incomplete (the store failed during the run); metrics not sent are in "
                    f"{md.spool}: python -m hsbcala.tracking replay {md.path}"
                )
            return parser.best_val_cer
        except (Interrupted, KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:  # still holding the lock: nobody else can be using the directory we may remove
            with deferred():
                _end(md, engine, state, parser, tracker, status, fresh=fresh, held=held, t0=t0)


def _keep_bests(state: State, parser: Any) -> None:
    """The state's best CERs from the parser: the exported model's stage, and the first stage's apart."""
    if parser.best_val_cer_stage1 is not None:
        state.best_val_cer_stage1 = parser.best_val_cer_stage1
    if parser.best_val_cer is not None or parser.stage > 0:
        state.best_val_cer = parser.best_val_cer


def _end(
    md: ModelDir,
    engine: Engine,
    state: State,
    parser: Any,
    tracker: Any,
    status: str,
    *,
    fresh: bool,
    held: bool,
    t0: float,
) -> None:
    """However the launch ended: the engine's repairs, the state (best CER, wall time), the run's end, and a
    fresh model directory without any checkpoint removed again (only by the launch that created it)."""
    if status != "FINISHED" and held:
        with contextlib.suppress(Exception):
            for note in engine.after_launch(md.path):
                say(note)
    _keep_bests(state, parser)
    if state.history and "wall_time_s" not in state.history[-1]:
        state.history[-1]["wall_time_s"] = time.monotonic() - t0  # interrupted launches count too
    if tracker is not None:
        if status != "FINISHED":
            with contextlib.suppress(Exception):  # the run is ending anyway; the log stays in the model dir
                tracker.log_artifact(md.engine_log, "logs")
        tracker.end(status)
    if status == "FAILED" and fresh and held and md.exists() and md.latest_checkpoint() is None:
        shutil.rmtree(md.path, ignore_errors=True)  # nothing worth resuming: leave nothing behind
    elif held and md.exists() and status != "FINISHED" and state.run_id:
        with contextlib.suppress(OSError):
            md.save_state(state)
