"""One training launch: check everything, build the command, run the engine, track it, end cleanly.

Flow of :func:`run` (called by ``train.py`` once per Hydra job, locally or inside a Slurm job):

1. check the config (schema did types and keys; :func:`hsbcala.schema.check` the rest);
2. the model directory: refuse one of the other Calamari version; stop if its training already finished;
   find the newest checkpoint (resume) or plan a fresh ``calamari-train``;
3. data: render the synthetic demo set if the globs point at it; resolve and check every line
   (:mod:`hsbcala.data`); read the warm-start model (network and codec, :mod:`hsbcala.models`);
4. build the command (:mod:`hsbcala.commands`), wrapped in nsys and module loads when configured;
   ``dry_run=true`` prints it and stops here, having created nothing;
5. make sure the engine environment exists (:mod:`hsbcala.envs`), lock the model directory, start the engine,
   and while it starts open/resume the MLflow run (:mod:`hsbcala.tracking`);
6. stream the engine's output to the console and ``<model_dir>/train.log``, parse metrics
   (:mod:`hsbcala.progress`) into MLflow;
7. end: FINISHED (artifacts: best model, log, config, nsys report), FAILED (clear error with the log's tail), or
   KILLED on SIGINT/SIGTERM (the engine is stopped; the last checkpoint stays for the next launch).

Nothing is created before step 5, and a fresh training that fails before its first checkpoint removes its
model directory again, so bad input never leaves a half-written model directory behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hsbcala import checkpoints, commands, envs, schema
from hsbcala.errors import ConfigError, DataError, EngineError, Interrupted

MAJOR = {"cala1": 1, "cala2": 2}


@dataclass
class Plan:
    """Everything decided before anything is created."""

    argv: list[str]
    inputs: commands.TrainInputs
    env: envs.EngineEnv
    model_dir: Path
    resume_from: Path | None
    state: checkpoints.State | None
    n_val: int = 0
    skipped: int = 0
    profile_report: Path | None = None
    data: Any = None  # hsbcala.datastep.DataPlan: manifest, split, codec report (written by _execute)


def _say(msg: str) -> None:
    print(f"hsbcala: {msg}", file=sys.stderr, flush=True)


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

    synth.ensure_synthetic(root, cfg.script.face, n_train=syn.n_train, n_val=syn.n_val, seed=syn.seed,
                           text_file=Path(syn.text_file) if syn.text_file else None)
    return None


def _warmstart(cfg: Any, resume: bool) -> tuple[str | None, str | None]:
    """(weights argument, network) of the warm start; the network always comes from the model."""
    if not cfg.warmstart.model or resume:
        return None, cfg.train.network
    path = Path(cfg.warmstart.model)
    if not (path.is_file() or Path(f"{path}.json").is_file()):
        name = path.parent.name
        raise DataError(
            f"warmstart.model: no such model {path}. Put the pretrained ensemble there (its 0.ckpt.json and "
            f"weights; Calamari {MAJOR[cfg.version.name]} model '{name}' from the Calamari-OCR model releases: "
            f"calamari_models_experimental for Calamari 2, calamari_models for Calamari 1), or set "
            f"warmstart.pretrained_dir=DIR, or warmstart.model=null to train from scratch"
        )
    from hsbcala.engines import modeljson

    info = modeljson.read_model(path)
    major = MAJOR[cfg.version.name]
    if info.version != major:
        raise ConfigError(f"warmstart.model {info.path} is a Calamari {info.version} model, but version="
                          f"{cfg.version.name} (Calamari {major})")
    if cfg.train.network and cfg.train.network != info.network:
        _say(f"train.network={cfg.train.network!r} ignored: a warm start uses the model's network {info.network!r}")
    return modeljson.weights_arg(info.path, major), info.network


def plan(cfg: Any) -> Plan:
    """Steps 1-4 of :func:`run`: decide everything, create nothing."""
    schema.check(cfg)
    version = cfg.version.name
    base = Path(cfg.paths.root)
    model_dir = Path(cfg.model_dir).resolve()
    env = envs.resolve(cfg, envs.project_root())

    checkpoints.check_version(model_dir, version)
    state = checkpoints.load_state(model_dir)
    resume_from = checkpoints.latest_checkpoint(model_dir, version) if model_dir.is_dir() else None

    dry_count = _ensure_synthetic(cfg, cfg.dry_run)
    if cfg.dry_run and dry_count is None:  # data staged from an archive in the job: count the archive's lines
        from hsbcala.slurm import job as slurm_job

        dry_count = slurm_job.dry_run_count(cfg)
    # The data step (hsbcala/datastep.py): resolve, split, check, hash, manifest, codec report; a dry run only
    # resolves (and splits). A failed check raises here, before anything is created.
    from hsbcala import datastep

    if cfg.dry_run and cfg.data_check_only:
        raise ConfigError("dry_run=true and data_check_only=true: choose one")
    data_plan = datastep.prepare(cfg, base=base, model_dir=model_dir, dry_count=dry_count,
                                 resuming=resume_from is not None)
    n_train, n_val, skipped = data_plan.n_train, data_plan.n_val, data_plan.skipped

    warm, network = _warmstart(cfg, resume_from is not None)
    on_ramdisk = bool(cfg.cluster.ramdisk) and all(_under(p, Path(cfg.cluster.ramdisk)) for p in cfg.data.train)
    inputs = commands.TrainInputs(
        model_dir=model_dir,
        train=data_plan.engine_train,
        val=data_plan.engine_val,
        n_train=n_train,
        warmstart=warm,
        network=network,
        resume_from=resume_from,
        on_ramdisk=on_ramdisk,
        gpus=cfg.cluster.gpus,
    )
    argv, report = command(cfg, inputs, env)
    return Plan(argv, inputs, env, model_dir, resume_from, state, n_val, skipped, report, data_plan)


def command(cfg: Any, inputs: commands.TrainInputs, env: envs.EngineEnv) -> tuple[list[str], Path | None]:
    """The full command line: the engine's argv in its environment, under nsys if profiled (and its report)."""
    argv = commands.engine_argv(cfg.version.name, cfg.train, inputs)
    argv[0] = env.program(argv[0])
    model_dir = inputs.model_dir
    report = None
    if cfg.profiler.name == "nsys":
        if shutil.which(cfg.profiler.executable) is None and not env.modules:
            if cfg.profiler.if_missing == "error":
                raise ConfigError(f"profiler=nsys: '{cfg.profiler.executable}' not found on PATH; install Nsight "
                                  f"Systems (or load its module), or set profiler.if_missing=warn / profiler=none")
            _say(f"warning: '{cfg.profiler.executable}' not found; running without profiling "
                 f"(profiler.if_missing=warn)")
        else:
            argv = commands.profile_argv(cfg.profiler, model_dir, argv)
            report = model_dir / f"{cfg.profiler.report_name}.nsys-rep"
    return env.wrap(argv), report


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted in the main thread, so the engine is stopped and the run ends KILLED."""

    def handler(signum, _frame):
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}; the last checkpoint is kept, "
                          "run the same command again to resume")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _model_dir_lock(model_dir: Path) -> Iterator[None]:
    """Two launches on one model directory must not train over each other."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / ".hsbcala.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"model_dir {model_dir} is in use by another training (lock "
                              f"{model_dir / '.hsbcala.lock'}); wait for it or choose another model_dir") from None
        yield


class _Pump(threading.Thread):
    """Reads the engine's output as it comes, echoes it to the console and the log, and queues it for the
    metrics parser. A thread of its own so that the engine never blocks on a full pipe while the main thread is
    busy (opening the MLflow run takes seconds; on 2 busy cores, tens of seconds)."""

    def __init__(self, stream, log, tail: deque) -> None:
        super().__init__(name="hsbcala-engine-output", daemon=True)
        self.stream, self.log, self.tail = stream, log, tail
        self.lines: queue.Queue[str | None] = queue.Queue()

    def run(self) -> None:
        try:
            for line in self.stream:
                sys.stdout.write(line)
                with contextlib.suppress(ValueError):  # log already closed: an interrupted run is ending
                    self.log.write(line)
                self.tail.append(line.rstrip())
                self.lines.put(line)
            with contextlib.suppress(ValueError):
                self.log.flush()
        finally:
            self.lines.put(None)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:  # a timeout keeps the main thread responsive to SIGINT/SIGTERM
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                return
            yield line


def _engine_signals() -> None:
    """In the engine's process: ignore SIGUSR1/SIGUSR2. Slurm's walltime warning (--signal) reaches every
    process of the job; it is meant for submitit in the launcher, which then stops the engine itself after the
    last checkpoint is on disk. TensorFlow would otherwise die of the signal's default action."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop the engine: SIGTERM to its process group, SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _resume_point(plan: Plan, version: str) -> tuple[int, int]:
    """(stage, epoch-or-iteration) of the checkpoint resumed from, for continuous metric steps."""
    import json

    if plan.resume_from is None:
        return 0, 0
    if version == "cala2":
        d = json.loads(plan.resume_from.read_text())
        return int(d.get("current_stage", 0) or 0), int(d.get("current_epoch", 0) or 0)
    d = json.loads(Path(f"{plan.resume_from}.json").read_text())
    return int(d.get("currentStage", 0) or 0), int(d.get("iter", 0) or 0) + 1


def run(cfg: DictConfig) -> float | None:
    """Train or resume the model of ``cfg``; return its best validation CER (None for a dry run)."""
    from hsbcala.slurm import job as slurm_job

    # Slurm (hsbcala/slurm.py): refuse a Slurm cluster without -m, stage the GT archive; accounting, clean-up.
    with slurm_job.job(cfg):
        return _run(cfg)


def _run(cfg: DictConfig) -> float | None:
    p = plan(cfg)
    if cfg.dry_run:
        print(shlex.join(p.argv), flush=True)
        return None
    if cfg.data_check_only:  # the data step alone: reports into the model dir, exit 0 (2 if a check failed)
        from hsbcala import datastep

        datastep.check_only(p.data, p.model_dir, _say)
        return None
    if p.state is not None and p.state.status == "finished":
        _say(f"{p.model_dir} has finished training (best validation CER {p.state.best_val_cer}); not retraining. "
             f"Choose another model_dir to train again.")
        return p.state.best_val_cer
    p.data.announce(_say)  # what the data checks found, the split, the codec table
    p.env.ensure(log=_say)
    return _execute(cfg, p)


def _execute(cfg: Any, p: Plan) -> float | None:
    from hsbcala import progress, tracking

    version = cfg.version.name
    fresh = not p.model_dir.exists()
    state = p.state or checkpoints.State(version=version)
    stage, start = _resume_point(p, version)
    per_epoch = commands.iterations_per_epoch(cfg.train, p.inputs.n_train)
    parser = progress.ProgressParser(
        version,
        per_stage=cfg.train.epochs if version == "cala2" else commands.max_iterations(cfg.train, p.inputs.n_train),
        check_every=per_epoch, stage=stage, start=start,
        best_val_cer=state.best_val_cer,
    )
    tracker = None
    proc = None
    status = "FAILED"
    tail: deque[str] = deque(maxlen=12)
    _say(("resuming from " + str(p.resume_from)) if p.resume_from else f"training {p.model_dir}")
    t0 = time.monotonic()
    try:
        with _model_dir_lock(p.model_dir), _signals_raise():
            data_note = p.data.write(p.model_dir)  # manifest.json, split.json, codec report (hsbcala.datastep)
            if data_note:
                _say(f"warning: {data_note}")
            log_path = p.model_dir / "train.log"
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"\n# hsbcala {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(p.argv)}\n")
                log.flush()
                env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
                # start_new_session: a terminal's Ctrl-C reaches hsbcala only, which stops the engine itself
                proc = subprocess.Popen(p.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        encoding="utf-8", errors="replace", bufsize=1, env=env,
                                        start_new_session=True, preexec_fn=_engine_signals)
                pump = _Pump(proc.stdout, log, tail)
                pump.start()
                # MLflow starts while the engine imports TensorFlow; the pump keeps reading meanwhile.
                tracker = tracking.Tracker(
                    cfg, state.run_id,
                    tags=tracking.run_tags(cfg, envs.project_root(), p.model_dir),
                    params=tracking.flatten(OmegaConf.to_container(cfg, resolve=True)),
                )
                state.run_id, state.tracking_uri = tracker.run_id, tracker.uri
                state.history.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                      "resumed_from": str(p.resume_from) if p.resume_from else None})
                checkpoints.save_state(p.model_dir, state)
                if not tracker.resumed:
                    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
                    tracker.log_text(shlex.join(p.argv) + "\n", "config/command.txt")
                    if p.env.lock:
                        tracker.log_artifact(p.env.lock, "environment")
                if p.skipped:
                    tracker.log(0, {"skipped_lines": p.skipped})
                p.data.track(tracker)  # data/ artifacts, data.* tags (hsbcala.datastep)
                from hsbcala import provenance

                provenance.log(tracker, p.env, envs.project_root())  # environment/: freeze, modules, git
                for line in pump:
                    for update in parser.feed(line):
                        tracker.log(update.step, update.metrics)
                code = proc.wait()
                pump.join()
            elapsed = time.monotonic() - t0
            state.best_val_cer = parser.best_val_cer
            if code != 0:
                last = " | ".join(x for x in list(tail)[-3:] if x.strip())
                raise EngineError(f"{Path(p.argv[0]).name} exited with code {code} (log: {log_path}): {last}")
            lines_done = (parser.epochs_seen * (cfg.train.samples_per_epoch or p.inputs.n_train) if version == "cala2"
                          else parser.iterations_seen * cfg.train.batch_size)
            prior = sum(h.get("wall_time_s", 0.0) for h in state.history[:-1])
            state.history[-1]["wall_time_s"] = elapsed
            tracker.log_final({
                "best_val_cer": parser.best_val_cer,
                "lines_per_second": lines_done / elapsed if elapsed > 0 else None,
                "wall_time_s": prior + elapsed,
            })
            best = checkpoints.best_model(p.model_dir, version)
            if cfg.mlflow.log_model:
                for f in best:
                    tracker.log_artifact(f, "model")
            if p.profile_report is not None:
                tracker.log_artifact(p.profile_report, "profile")
            tracker.log_artifact(log_path, "logs")
            state.status = "finished"
            checkpoints.save_state(p.model_dir, state)
            status = "FINISHED"
            _say(f"finished {p.model_dir}: best validation CER "
                 f"{'n/a' if parser.best_val_cer is None else f'{parser.best_val_cer:.4f}'}; MLflow run {tracker.run_id}")
            return parser.best_val_cer
    except (Interrupted, KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if proc is not None:
            _stop(proc)
        if tracker is not None:
            if status != "FINISHED":
                with contextlib.suppress(Exception):
                    tracker.log_artifact(p.model_dir / "train.log", "logs")
            tracker.end(status)
        if status == "FAILED" and fresh and p.model_dir.exists() and \
                checkpoints.latest_checkpoint(p.model_dir, version) is None:
            shutil.rmtree(p.model_dir, ignore_errors=True)  # nothing worth resuming: leave nothing behind
        elif p.model_dir.exists() and status != "FINISHED" and state.run_id:
            checkpoints.save_state(p.model_dir, state)
