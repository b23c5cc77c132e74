"""Steps 1-4 of a training launch: decide everything, create nothing (:func:`plan`), and what it needs.

- :func:`plan`: the config's remaining checks, the model directory (other version? newest checkpoint?), the
  data step (:mod:`hsbcala.data.step`), the warm-start model (:mod:`hsbcala.engines.modeljson`), and the
  command line (``train_argv`` of the version's :mod:`hsbcala.engines` module, wrapped in nsys and module
  loads when configured). ``dry_run=true`` prints that command; nothing exists yet.
- what :mod:`hsbcala.train.run` creates from a plan once it holds the model directory's lock: the copy of the
  warm-start model (:func:`copy_warmstart`; with ``train.new_chars_init=base`` prepared so that each new
  character's output row is a copy of its base letter's, :mod:`hsbcala.train.newchars`) and the links of a long
  file list (:func:`make_links`);
- :func:`preflight`: the same checks on a Slurm login node before a job is submitted.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala import engines
from hsbcala.config import schema
from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, DataError
from hsbcala.data import codec
from hsbcala.engines import envs
from hsbcala.engines.base import Engine, TrainInputs
from hsbcala.engines.modeljson import ModelInfo
from hsbcala.modeldir import WARMSTART_DIR, ModelDir, State
from hsbcala.train import newchars


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
    data: Any = None  # hsbcala.data.step.DataPlan: manifest, split, codec report (written by _execute)
    warmstart_source: Path | None = None  # the pretrained model's JSON; copied into the model dir first
    new_chars: NewChars | None = None  # train.new_chars_init=base: how the copy is prepared (copy_warmstart)
    links: tuple[LineLinks, ...] = ()  # long file lists, as links the engine reads through a glob

    @property
    def program(self) -> str:
        """The engine's program (calamari-train, calamari-resume-training) among what runs it (bash, nsys,
        the engine env's start scripts): the name messages give."""
        names = [Path(a).name for a in self.argv]
        return next((n for n in names if n.startswith("calamari-")), names[0])


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
    from hsbcala.data import synth

    synth.ensure_configured(syn, cfg.script.face)
    return None


def _warmstart(
    warmstart: Any, network: str | None, engine: Engine, resume: bool
) -> tuple[str | None, str | None, ModelInfo | None]:
    """(weights argument, network, the model) of the warm start; the network always comes from the model. The
    argument still names the pretrained model; :func:`plan` points it at the model dir's copy."""
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
    return engine.weights_arg(info.path), info.network, info


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
    from hsbcala.data.resolve import gt_path

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


def make_links(links: LineLinks) -> None:
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


@dataclass(frozen=True)
class NewChars:
    """How to prepare the warm-start copy for ``train.new_chars_init=base`` (run by :func:`copy_warmstart`)."""

    version: int  # Calamari major version of the model
    python: str  # the engine environment's Python (h5py, TensorFlow, Calamari)
    wrap: Any  # the environment's module loads (EngineEnv.wrap)
    origins: tuple[newchars.Origin, ...]
    record: dict[str, Any]


def warmstart_files(source: Path) -> list[Path]:
    """The files of the ensemble member ``source`` (``X.ckpt.json``) that :func:`copy_warmstart` copies."""
    stem = source.name[: -len(".json")]  # X.ckpt
    return sorted(
        f
        for f in source.parent.iterdir()
        if f.name == source.name or f.name.startswith(stem + ".") or f.name == stem
    )


def copy_warmstart(source: Path, target_dir: Path, new_chars: NewChars | None = None) -> None:
    """Copy one ensemble member (``X.ckpt.json`` and its weights ``X.ckpt/`` or ``X.ckpt.h5``) into the model
    directory. The engine warm-starts from the copy: Calamari 2 upgrades an older model version in place,
    and the points of a sweep would race on it, so ``pretrained/`` is never written by a training.

    With ``new_chars`` (``train.new_chars_init=base``) the copy is prepared before it is put in place:
    the new characters appended to its codec, each output row a copy of its base letter's, and the record
    ``warmstart/new-chars.json`` written. Only a fresh training prepares: a resume never gets here, and a
    relaunch before the first checkpoint finds the prepared copy in place."""
    if target_dir.is_dir():
        return  # a relaunch of a fresh training that died before its first checkpoint
    tmp = target_dir.with_name(target_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in warmstart_files(source):
        (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
    if new_chars is not None:
        copied = [o for o in new_chars.origins if o.base is not None]
        if copied:
            say(
                f"warm start: copying the output rows of {len(copied)} new characters from their base letters"
            )
            summary = newchars.prepare(
                new_chars.python, new_chars.version, tmp / source.name, copied, new_chars.wrap
            )
            record = {**new_chars.record, "prepared": summary}
        else:
            record = {**new_chars.record, "prepared": None}
        (tmp / newchars.RECORD).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", "utf-8")
    os.replace(tmp, target_dir)


def _new_chars(
    mode: str,
    table: dict[str, str],
    engine: Engine,
    env: envs.EngineEnv,
    model: ModelInfo | None,
    data_plan: Any,
) -> NewChars | None:
    """``train.new_chars_init`` (``mode``; ``table``: the checked ``train.new_chars_table``) for the warm-start
    ``model``: annotate the codec report and the manifest, and
    say how to prepare the copy (``base`` on a fresh warm start whose codec grows; else None)."""
    report = data_plan.codec_report if data_plan is not None else None
    if model is None or report is None:
        return None  # from scratch, a resume, or a dry run (no codec report)
    found = newchars.origins([e["char"] for e in report["added"]], model.charset, table, mode)
    codec.annotate(report, found, mode)
    if mode != "base" or not found:
        return None
    record = newchars.record(model.path, found)
    if data_plan.manifest is not None:
        data_plan.manifest["warmstart_new_chars"] = record
    return NewChars(engine.major, env.program("python"), env.wrap, tuple(found), record)


def plan(cfg: Any) -> Plan:
    """Steps 1-4 of :func:`run`: decide everything, create nothing."""
    schema.check(cfg)
    table = newchars.check_config(cfg.train, cfg.warmstart)
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
    # The data step (hsbcala/data/step.py): resolve, split, check, hash, manifest, codec report; a dry run only
    # resolves (and splits). A failed check raises here, before anything is created.
    from hsbcala.data import step as datastep

    if cfg.dry_run and cfg.data_check_only:
        raise ConfigError("dry_run=true and data_check_only=true: choose one")
    if cfg.data.triage and not cfg.data_check_only:  # the point is to look before training
        raise ConfigError(
            "data.triage=true runs with data_check_only=true: look at triage.html, list the lines to leave "
            "out in a file, then train with data.exclude=[FILE]"
        )
    try:
        data_plan = datastep.prepare(
            cfg, base=base, model_dir=md.path, dry_count=dry_count, resuming=resume_from is not None
        )
    except DataError as exc:
        raise _explain_staging(cfg, exc) from None

    extend_to = _resume_settings(cfg, engine, resume_from, state, data_plan.n_train)
    warm, network, model = _warmstart(cfg.warmstart, cfg.train.network, engine, resume_from is not None)
    new_chars = _new_chars(str(cfg.train.new_chars_init), table, engine, env, model, data_plan)
    warm_source = model.path if model is not None else None
    if warm_source is not None:  # the engine starts from the copy in the model directory (copy_warmstart)
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
        extend_to=extend_to,
        on_ramdisk=on_ramdisk,
        gpus=envs.engine_gpus(env, cfg.cluster.gpus),  # the GPU the start line names, also with gpus: 0
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
        new_chars,
        tuple(x for x in (train_links, val_links) if x is not None),
    )


def _resume_settings(
    cfg: Any, engine: Engine, resume_from: Path | None, state: State | None, n_train: int
) -> int | None:
    """A resume: say in one line what the engine will use (the checkpoint's epochs, batch size and learning
    rate, whatever this command says; train.extend_epochs), and put those values into ``cfg.train``, so that the
    console, the run's description and (for a new run) its params show the values really used. Returns the new
    epoch budget of an extension (None: the checkpoint's). A finished model without an extension: nothing (it
    is not trained again)."""
    from omegaconf import open_dict, read_write

    from hsbcala.engines.base import resume_settings

    finished = state is not None and state.status == "finished"
    if resume_from is None or (finished and not cfg.train.extend_epochs):
        return None
    stored, extend_to, line = resume_settings(
        engine,
        resume_from,
        cfg.train,
        n_train,
        finished=finished,
        target=state.epochs_target if state is not None else None,
    )
    say(line)
    with read_write(cfg.train), open_dict(cfg.train):
        cfg.train.epochs = extend_to if extend_to is not None else stored.epochs
        cfg.train.batch_size = stored.batch_size
        if engine.position == "iteration":
            cfg.train.iterations = None  # (Calamari 1's budget: the epochs above in passes over the lines)
        if stored.learning_rate is not None:
            cfg.train.learning_rate = stored.learning_rate
    return extend_to


def preflight(cfg: Any) -> None:
    """On the login node, before a Slurm job is submitted: what :func:`plan` checks, with the data step run on
    the data as it is here, so a bad glob or a broken line is found now, not after the queue wait. Data the
    job stages from an archive is checked by listing the archive (``cluster.stage.archive``)."""
    from hsbcala.slurm import job as slurm_job

    if not slurm_job.staged_elsewhere(cfg):
        plan(cfg)
        return
    schema.check(cfg)
    newchars.check_config(cfg.train, cfg.warmstart)
    engine = engines.get(cfg.version.name)
    md = ModelDir(Path(cfg.model_dir).resolve(), engine)
    md.check_usable()
    md.check_version()
    slurm_job.dry_run_count(cfg)  # raises when no image of the archive would match data.train
    _warmstart(cfg.warmstart, cfg.train.network, engine, md.latest_checkpoint() is not None)


def _explain_staging(cfg: Any, exc: DataError) -> DataError:
    """A glob into the job's staging directory matches nothing here: say that the job stages it, and how."""
    stage_dir = str(cfg.cluster.stage.dir or "")
    patterns = [*cfg.data.train, *(cfg.data.val or [])]
    if cfg.cluster.stage.archive or not stage_dir or not any(str(p).startswith(stage_dir) for p in patterns):
        return exc
    return DataError(
        f"{exc}: on cluster={cfg.cluster.name} the job unpacks the ground truth there from cluster.stage.archive "
        f"(a .tar.gz with train/ and val/); set cluster.stage.archive=PATH, or data.train/data.val to data the "
        f"nodes can read"
    )


def command(cfg: Any, inputs: TrainInputs, env: envs.EngineEnv) -> tuple[list[str], Path | None]:
    """The full command line: the engine's argv in its environment, under nsys if profiled (and its report)."""
    engine = engines.get(cfg.version.name)
    argv = engine.train_argv(cfg.train, inputs)
    argv = [*engine.runner(env), env.program(argv[0]), *argv[1:]]
    argv, report = profile(cfg.profiler, inputs.model_dir, argv, site_modules=bool(env.modules))
    return env.wrap(argv, expect_gpus=inputs.gpus), report  # (a GPU expected: checked in seconds at start)


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
