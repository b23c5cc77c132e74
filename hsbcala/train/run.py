"""One training launch: check everything, build the command, run the engine, track it, end cleanly.

Flow of :func:`run` (called by ``train.py`` once per Hydra job, locally or inside a Slurm job; steps 1-4 are
:mod:`hsbcala.train.plan`):

1. check the config (schema did types and keys; :func:`hsbcala.config.schema.check` the rest);
2. the model directory: refuse one of the other Calamari version; stop if its training already finished;
   find the newest checkpoint (resume) or plan a fresh ``calamari-train``;
3. data: render the synthetic demo set if the globs point at it; resolve and check every line
   (:mod:`hsbcala.data.resolve`); read the warm-start model (network and codec, :mod:`hsbcala.engines.modeljson`);
4. build the command (``train_argv`` of the version's :mod:`hsbcala.engines` module), wrapped in nsys and module loads when configured;
   ``dry_run=true`` prints it and stops here, having created nothing;
5. make sure the engine environment exists (:mod:`hsbcala.engines.envs`), lock the model directory, start the engine,
   and while it starts open/resume the MLflow run (:mod:`hsbcala.track.tracking`);
6. stream the engine's output to the console and ``<model_dir>/engine.log``, parse metrics
   (the engine's progress parser) into MLflow;
7. end: FINISHED (artifacts: best model, log, config, nsys report), FAILED (clear error with the log's tail), or
   KILLED on SIGINT/SIGTERM (the engine is stopped; the last checkpoint stays for the next launch).

Nothing is created before step 5, and a fresh training that fails before its first checkpoint removes its
model directory again, so bad input never leaves a half-written model directory behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hsbcala.core import console
from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, EngineError, HsbcalaError, Interrupted, RestoreFailed
from hsbcala.engines import envs
from hsbcala.engines.base import Engine
from hsbcala.engines.process import EngineProcess, deferred, interruptible
from hsbcala.modeldir import WARMSTART_DIR, ModelDir, State
from hsbcala.train.plan import Plan, copy_warmstart, make_links, plan, warmstart_files

INTERRUPTED = "interrupted by {signal}; the last checkpoint is kept, run the same command again to resume"


def run(cfg: DictConfig) -> float | None:
    """Train or resume the model of ``cfg``; return its best validation CER (None for a dry run)."""
    from hsbcala.slurm import job as slurm_job

    # Slurm (hsbcala/slurm/job.py): refuse a Slurm cluster without -m, stage the GT archive; accounting, clean-up.
    with slurm_job.job(cfg):
        return _run(cfg)


def _refuse_other_data(p: Plan) -> None:
    """A finished model directory asked to train on other lines than its manifest's: an error (exit 2), not "not
    retraining" with exit 0, which would leave the user believing the new data was trained on."""
    from hsbcala.data import manifest

    before = manifest.previous_content_sha256(p.model_dir.path)
    now = (p.data.manifest or {}).get("content_sha256")
    if before and now and before != now:
        raise ConfigError(
            f"{p.model_dir.path} has finished training on other data (its manifest.json: data {before[:12]}, "
            f"this command: data {now[:12]}); give this training its own model_dir=…, or move that directory "
            f"away to train there afresh"
        )


def _finished(p: Plan) -> str:
    """A finished model that this launch does not extend: what it is, and how to train it more."""
    more = (
        "to train it N epochs more: the same command with train.extend_epochs=N"
        if p.engine.extendable
        else f"train.extend_epochs is not possible here: {p.engine.not_extendable}"
    )
    return (
        f"{p.model_dir.path} has finished training (the engine's best validation CER "
        f"{p.state.best_val_cer if p.state else None}); not retraining; {more}; "
        f"to train afresh: another model_dir"
    )


def _run(cfg: DictConfig) -> float | None:
    p = plan(cfg)
    finished = p.state is not None and p.state.status == "finished" and p.inputs.extend_to is None
    if cfg.dry_run:
        if finished:  # its resume command would never run
            say(_finished(p))
            return None
        if p.warmstart_source is not None:  # the command names the copy; say what is copied from where
            files = ", ".join(
                f.name + ("/" if f.is_dir() else "") for f in warmstart_files(p.warmstart_source)
            )
            say(
                f"warm start: copies {files} from {p.warmstart_source.parent} into "
                f"{p.model_dir.path / WARMSTART_DIR}/ before the engine starts (the command reads the copy)"
            )
        print(shlex.join(p.argv), flush=True)
        return None
    if cfg.data_check_only:  # the data step alone: reports into the model dir, exit 0 (2 if a check failed)
        from hsbcala.data import step as datastep

        after = None
        if cfg.data.triage:  # the lines ranked for a human look (hsbcala/evaluate/triage.py)
            from hsbcala.evaluate import triage

            after = functools.partial(triage.run, cfg, p)
        datastep.check_only(p.data, p.model_dir.path, say, after)
        return None
    if finished:
        _refuse_other_data(p)
        say(_finished(p))
        return p.state.best_val_cer
    if p.state is not None and p.state.status == "finished":  # extended: on the data it was trained on only
        _refuse_other_data(p)
    p.data.announce(say)  # what the data checks found, the split, the codec table
    from hsbcala.track import info as trackinfo

    # the store before the engine env (whose first build downloads ~2 GB): a bad URI costs seconds, not minutes
    trackinfo.check_store(cfg)
    p.env.ensure()
    while True:
        try:
            return _execute(cfg, p)
        except StalePlan as exc:  # another launch ended between plan() and the lock: decide everything again
            say(f"{exc}; planning again")
            return _run(cfg)
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
    from hsbcala.core.masking import mask
    from hsbcala.track import info as trackinfo
    from hsbcala.track import tracking

    md, engine = p.model_dir, p.engine
    fresh = not md.exists()
    held = False  # this launch holds the lock: only then may it remove what it created
    state = p.state or State(version=engine.name)
    stage, start = engine.resume_point(p.resume_from) if p.resume_from else (0, 0)
    parser = engine.progress_parser(
        cfg.train, p.inputs.n_train, stage=stage, start=start, best_val_cer=state.best_val_cer
    )
    parser.best_val_cer_stage1 = state.best_val_cer_stage1
    parser.best_epoch = state.best_epoch if state.best_val_cer is not None else None
    if p.resume_from:
        # the engine's own best, restored with its checkpoint: it judges improvements against it, and the state
        # may not hold it (a launch killed before recording it, a state of an older hsbcala, an older
        # checkpoint resumed after a damaged newer one)
        best, at = engine.resume_best(p.resume_from)
        if best is not None and best != parser.best_val_cer:
            parser.best_val_cer, parser.best_epoch = best, None if at is None else parser.epoch_at(at)
    tracker = None
    status = "FAILED"
    if p.resume_from:
        say(f"resuming from {p.resume_from}")  # a fresh start is announced by progress.start's line
    t0 = time.monotonic()
    with interruptible(INTERRUPTED), md.lock() as owner:
        _check_current(p)  # under the lock, before anything is written: nothing of this launch to undo
        if (
            p.inputs.extend_to is not None
        ):  # train.extend_epochs: training again until the new budget is reached
            state.status, state.epochs_target = "training", p.inputs.extend_to
        held = True
        try:
            if owner.previous:
                say(
                    f"an earlier launch in {md.path} ({owner.describe_previous()}) ended without cleaning up; "
                    f"its MLflow run is marked KILLED, and training resumes from the newest checkpoint"
                )
            with deferred():
                # manifest.json, split.json, codec report (hsbcala.data.step)
                data_note = p.data.write(md.path)
                if p.resume_from is not None:
                    for note in engine.prepare_resume(p.resume_from, md.path):
                        say(f"resume: {note}")
                elif p.warmstart_source is not None:
                    copy_warmstart(p.warmstart_source, md.path / WARMSTART_DIR, p.new_chars)
                for links in p.links:
                    make_links(links)
            if data_note:
                say(f"warning: {data_note}")
            progress = console.Progress(
                epochs=engine.epochs_per_stage(cfg.train, p.inputs.n_train),
                stages=2 if cfg.train.augmentations else 1,  # with augmentation both engines train twice
                # in epochs, as the console counts: early stopping judges only every val_every-th epoch
                patience=cfg.train.early_stopping_patience * cfg.train.val_every,
                lines_per_epoch=cfg.train.samples_per_epoch or p.inputs.n_train,
                # a resumed training's best so far, with the epoch it was reached at (not the first line's)
                best=None if parser.best_val_cer is None else (parser.best_val_cer, stage, parser.best_epoch),
                start_epoch=start
                // parser.check_every,  # a resume: the bar counts on from there, as the lines do
            )
            device = envs.device(p.env)
            progress.start(md.path, engine.name, device.text, p.inputs.n_train, p.n_val, cfg.train)
            if note := envs.first_start_note(p.env):  # a GPU on which TensorFlow compiles its kernels first
                say(note)
            # a GPU expected: TensorFlow's fallback to the CPU is said on the console, once
            expect_gpu = device.gpu
            with (
                EngineProcess(p.argv, md.engine_log, echo=bool(cfg.get("verbose"))) as proc,
                # a terminal gets a bar within the epoch (not with verbose: the engine's lines go there too)
                contextlib.nullcontext() if cfg.get("verbose") else progress.bar(),
            ):
                owner.engine_started(proc.pid)
                # MLflow starts while the engine imports TensorFlow; the reader thread keeps draining meanwhile.
                with deferred():
                    tracker = tracking.Tracker(
                        cfg,
                        state.run_id,
                        tags=trackinfo.run_tags(cfg, envs.project_root(), md.path),
                        params={
                            k: mask(v)
                            for k, v in trackinfo.flatten(OmegaConf.to_container(cfg, resolve=True)).items()
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
                            "extended_to": p.inputs.extend_to,
                            # status names the run from here without importing MLflow (seconds)
                            "run_name": tracker.run.info.run_name,
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
                p.data.track(tracker)  # data/ artifacts, data.* tags (hsbcala.data.step)
                tracker.describe(cfg, p)  # the run's note; the lines as MLflow dataset inputs
                if p.inputs.extend_to is not None:  # (the run's params, immutable, keep the first launch's)
                    tracker.set_tags({"hsbcala.epochs_extended_to": str(p.inputs.extend_to)})
                from hsbcala.track import provenance

                provenance.log(tracker, p.env, envs.project_root())  # environment/: freeze, modules, git
                for line in proc.lines():
                    owner.heartbeat()
                    if expect_gpu and envs.gpu_fallback(line):
                        say(
                            f"warning: TensorFlow will not use the GPU ({line.strip()[-120:]}); training on the CPU"
                        )
                        expect_gpu = False
                    for update in parser.feed(line):
                        tracker.log(update.step, update.metrics)
                        progress.follow(parser, update)
                        if update.check and (parser.best_val_cer, parser.best_epoch) != (
                            state.best_val_cer,
                            state.best_epoch,
                        ):  # the best so far in the state, as _end keeps it: status reads it without MLflow
                            _keep_bests(state, parser)
                            md.save_state(state)
                code = proc.wait()  # (an engine stopped by SIGTERM/SIGINT raises Interrupted)
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
                        f"{p.program} exited with code {code} (log: {md.engine_log}): {proc.last_lines()}"
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
                    "val_time_share": parser.val_seconds / elapsed
                    if parser.val_seconds and elapsed > 0
                    else None,
                }
            )
            untrained = engine.no_best_model(parser)
            if untrained:
                say(f"warning: {untrained}; it is not logged as the run's model")
                tracker.set_tags({"hsbcala.best_model": "untrained"})
            elif cfg.mlflow.log_model:
                for f in md.best_model():
                    tracker.log_artifact(f, "model")
                tracker.log_model(md.best_model(), cfg, parser.best_val_cer)  # (+ registry: mlflow.register)
            if p.profile_report is not None:
                tracker.log_artifact(p.profile_report, "profile")
            tracker.log_artifact(md.engine_log, "logs")
            status = "FINISHED"
            best = "n/a" if parser.best_val_cer is None else f"{parser.best_val_cer:.4f}"
            say(
                f"finished {md.path}: best validation CER {best} (the engine's own, measured while training; "
                f"evaluate.py measures the exported model anew); MLflow run {tracker.shown()}"
            )
            if parser.val_seconds and elapsed > 0:  # at scale validation can cost as much as the training
                say(
                    f"validation took {parser.val_seconds / elapsed:.0%} of this launch's wall time "
                    f"({parser.val_seconds:,.0f} s of {elapsed:,.0f} s, {parser.checks_seen} validations, the engine's "
                    f"own timing); train.val_every=N validates every Nth epoch"
                )
            if tracker.degraded:
                say(
                    f"warning: tracking is incomplete (the store failed during the run); metrics not sent are in "
                    f"{md.spool}: python -m hsbcala.track.tracking replay {md.path}"
                )
            return parser.best_val_cer
        except (Interrupted, KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:  # still holding the lock: nobody else can be using the directory we may remove
            with deferred():
                _end(md, engine, state, parser, tracker, status, fresh=fresh, held=held, t0=t0)


class StalePlan(Exception):
    """The model directory changed between :func:`hsbcala.train.plan.plan` and the lock (another launch of it
    ended in between): the plan's state and checkpoint are no longer the directory's."""


def _check_current(p: Plan) -> None:
    """Raise :class:`StalePlan` unless the state and newest checkpoint the plan read are still the directory's.

    The plan is made without the lock (a dry run must create nothing, and the lock creates the directory), and
    the engine environment may be built between plan and lock: a launch that finished meanwhile would otherwise
    be resumed from its old checkpoint with its old state (a second training of a finished model, a new run)."""
    md = p.model_dir
    state, latest = md.load_state(), md.latest_checkpoint()
    if state != p.state or latest != p.resume_from:
        was = p.state.status if p.state is not None else "no state"
        now = state.status if state is not None else "no state"
        raise StalePlan(
            f"{md.path} changed while this launch prepared (another launch ended meanwhile: state {was} -> {now}, "
            f"newest checkpoint {p.resume_from.name if p.resume_from else None} -> "
            f"{latest.name if latest else None})"
        )


def _keep_bests(state: State, parser: Any) -> None:
    """The state's best CERs from the parser: the exported model's stage, and the first stage's apart."""
    if parser.best_val_cer_stage1 is not None:
        state.best_val_cer_stage1 = parser.best_val_cer_stage1
    if parser.best_val_cer is not None or parser.stage > 0:
        state.best_val_cer, state.best_epoch = parser.best_val_cer, parser.best_epoch


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
        try:
            for note in engine.after_launch(md.path):
                say(note)
        except Exception as exc:  # noqa: BLE001 - the launch is ending anyway; said (a bug with its traceback)
            console.swallowed(
                f"the engine's repair of {md.path} after this launch",
                exc,
                (OSError, HsbcalaError),  # copying the kept best model; a damaged record (fsutil.Unreadable)
                "what it repairs is left as it was, and the next launch of the same command tries again",
            )
    _keep_bests(state, parser)
    if state.history and "wall_time_s" not in state.history[-1]:
        state.history[-1]["wall_time_s"] = time.monotonic() - t0  # interrupted launches count too
    if tracker is not None:
        # Tracker.log_artifact is best-effort and says its own failure (a bug with its traceback); the logs
        # stay in the model directory either way
        if status != "FINISHED":
            tracker.log_artifact(md.engine_log, "logs")
        own_log = console.log_file()  # hsbcala's lines beside the engine's, up to the end line
        if own_log is not None and own_log.is_file():
            tracker.log_artifact(own_log, "logs")
        tracker.end(status)
    if status == "FAILED" and fresh and held and md.exists() and md.latest_checkpoint() is None:
        shutil.rmtree(md.path, ignore_errors=True)  # nothing worth resuming: leave nothing behind
    elif held and md.exists() and status != "FINISHED" and state.run_id:
        with contextlib.suppress(OSError):
            md.save_state(state)
