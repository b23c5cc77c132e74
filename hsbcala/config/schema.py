"""Structured config schema: one dataclass per config group, registered in Hydra's ConfigStore.

The root :class:`Config` is the base of ``conf/config.yaml`` (its defaults list starts with ``base_config``), so
Hydra validates every key and type while composing: a typo such as ``train.bach_size=8`` fails at once with
Hydra's own one-line message naming the key. Field defaults are the team's tuned settings from the original
ZIH scripts; ``conf/preset/demo.yaml`` scales them down for the embedded default run.

``train`` is the ONE vocabulary of training options; :mod:`hsbcala.engines` maps it to each Calamari
version's command line, in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from hsbcala import engines
from hsbcala.core.errors import ConfigError

PROFILERS = ("none", "nsys")


# Enumerations: OmegaConf validates them while composing (Hydra's message names the key and lists the values).
# StrEnum, so a value compares equal to its name (cfg.train.codec == "keep_loaded") and prints as it.
class Codec(StrEnum):
    recompute = "recompute"  # keep the characters the data shares with the model's codec, add new ones
    keep_loaded = "keep_loaded"  # keep every character of the model's codec, add new ones


class NewCharsInit(StrEnum):
    random = "random"  # the engine's own fresh rows for characters the warm-start model lacks
    base = "base"  # a copy of the base letter's row (ě ← e; hsbcala/train/newchars.py)


class IfMissing(StrEnum):
    error = "error"
    warn = "warn"


class Action(StrEnum):
    """What a data check does with the lines it finds (hsbcala/data/checks.py says which a check allows)."""

    fail = "fail"
    warn = "warn"
    drop = "drop"


class SplitBy(StrEnum):
    directory = "directory"
    pattern = "pattern"


# "engine": the model version's own calamari-eval rules; or one engine's rules by name (engines.EVAL_RULES)
Normalization = StrEnum("Normalization", [("engine", "engine"), *((r, r) for r in engines.EVAL_RULES)])


class EvalRun(StrEnum):
    training = "training"
    separate = "separate"


class IntervalUnit(StrEnum):
    auto = "auto"  # documents (the manifest's, else the directory, as data.split) unless all are one: lines
    lines = "lines"
    documents = "documents"  # the same, also when there is only one (no interval), a note if guessed


class EvalCheckpoints(StrEnum):
    best = "best"
    all = "all"


@dataclass
class ScriptConf:
    """A script (type face family) the team trains models for."""

    name: str = MISSING  # fraktur | antiqua
    model_name: str = MISSING  # stem of the model directory: hsbfraktur | hsblatin
    face: str = MISSING  # face of the synthetic demo lines (hsbcala.data.synth.FACES)
    iso15924: str = MISSING  # the script's ISO 15924 code, as a release's model card names it: Latf | Latn
    # Pretrained model (ensemble directory) to warm-start from, per Calamari version.
    pretrained: dict[str, str] = field(default_factory=dict)


class Device(StrEnum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"


@dataclass
class EngineEnvConf:
    """Where the Calamari engine of a version runs.

    kind=uv: hsbcala creates ``<root>/<version>-<hash of lock>`` from the pinned ``lock`` file on first use
    and reuses it afterwards. kind=venv: an existing virtualenv (``venv``), e.g. one built on an HPC system
    against its TensorFlow module. kind=path: the engine's commands are found on PATH as they are.
    ``modules`` are loaded with Lmod/Environment Modules (``module load …``) before the engine starts.
    kind=uv on a GPU machine: ``cuda_lock`` (the same pins plus TensorFlow's CUDA libraries) instead of ``lock``.
    """

    kind: str = "uv"  # uv | venv | path
    lock: str | None = None  # path of the pinned requirements file (kind=uv), relative to the project
    cuda_lock: str | None = None  # the lock with TensorFlow's CUDA libraries (tensorflow[and-cuda]); kind=uv
    device: Device = Device.auto  # auto: cuda_lock when nvidia-smi shows a GPU | gpu: cuda_lock | cpu: lock
    # Where kind=uv environments are built and kept ($HSBCALA_ENV_ROOT moves them).
    root: str = "${oc.env:HSBCALA_ENV_ROOT,${oc.env:HOME}/.cache/hsbcala/envs}"
    python: str = "3.11"  # the Python version uv builds the environment with (kind=uv)
    venv: str | None = None  # kind=venv
    modules: list[str] = field(default_factory=list)  # loaded (module load …) before the engine starts


@dataclass
class VersionConf:
    """A Calamari major version: its CLI dialect and its engine environment."""

    name: str = MISSING  # cala1 | cala2
    package: str = MISSING  # the pinned calamari-ocr version, for tags and messages
    env: EngineEnvConf = field(default_factory=EngineEnvConf)


@dataclass
class StageConf:
    """Data staging (hsbcala.slurm.job.stage): unpack a GT archive before training, remove it at the end of the job."""

    archive: str | None = None  # a .tar.gz (or .tar/.tar.bz2/.tar.xz) of the GT; null: no staging
    dir: str = "/dev/shm/hsbcala/${script.name}"  # unpacked here; a cluster's data globs point into it
    cleanup: bool = True  # remove it when the job ends (unless another job on the node still uses it)


@dataclass
class ClusterConf:
    """Where a run executes: ``local`` (this machine) or a Slurm site (submitted via hydra-submitit-launcher)."""

    name: str = MISSING  # local | zih_capella | zih_power9 | slurm_generic | slurm_local (a tag of every run)
    gpus: int = 0  # GPUs the training gets; > 1 enables MirroredStrategy with Calamari 2
    # Per-version resources of a site (e.g. zih_power9: 4 GPUs for cala2, 1 for cala1), used by interpolation.
    gpus_per_version: dict[str, int] = field(default_factory=dict)
    cpus_per_version: dict[str, int] = field(default_factory=dict)  # CPUs per job, per version
    modules_per_version: dict[str, list[str]] = field(
        default_factory=dict
    )  # e.g. a TensorFlow module per version
    # Engine environment override for this site (null: the version's own, created with uv).
    env: EngineEnvConf | None = None
    # The node's RAM disk, where data is staged (data on a RAM disk is not preloaded).
    ramdisk: str | None = None
    # Submitted through Slurm (hydra/launcher: hsbcala_slurm); needs -m outside a Slurm job (hsbcala.slurm).
    slurm: bool = False
    stage: StageConf = field(default_factory=StageConf)
    # The command that runs Python in each Slurm job (submitit's `python`; null: the interpreter that submits,
    # which must then exist at the same path on the nodes); hydra.launcher.python takes it to submitit.
    python: str | None = None


@dataclass
class ProfilerConf:
    name: str = "none"  # none | nsys
    # nsys: what to do when nsys is not installed: error (stop before anything starts) | warn (run unprofiled)
    if_missing: IfMissing = IfMissing.error
    executable: str = "nsys"  # the nsys command (a path, or found on PATH)
    report_name: str = "profile"  # report is <model_dir>/<report_name>.nsys-rep
    args: list[str] = field(default_factory=lambda: ["--force-overwrite", "true"])  # nsys profile options


@dataclass
class TrainConf:
    """The one vocabulary of training options (mapped per version in hsbcala.engines)."""

    epochs: int = 500  # the most epochs per stage (early stopping may end a stage sooner)
    # N > 0: train a resumed (also a finished) model N epochs per stage beyond its checkpoint's budget; a resume
    # otherwise keeps the checkpoint's epochs, batch size and learning rate, whatever this command says
    extend_epochs: int = 0
    # Calamari 1 counts iterations: null derives them as epochs x ceil(lines per epoch / batch_size).
    iterations: int | None = None
    samples_per_epoch: int | None = None  # null: one epoch = every training line once
    batch_size: int = 64  # lines per training step
    augmentations: int = 5  # augmented copies per line; > 0: two stages (augmented, then the original lines)
    early_stopping_patience: int = 10  # epochs without a better validation CER before stopping
    seed: int = 50  # the engines' random seed (and data.split.seed's default)
    workers: int = 10  # data-loading processes (Calamari 2) or threads (Calamari 1)
    prefetch: int | None = None  # null: Calamari's default
    # Validation while training (Calamari 2 only; Calamari 1 validates with its own settings). null: Calamari's
    # defaults (batch 16, 4 processes, no prefetch); the team's scripts used 64 / 10 / 128.
    val_batch_size: int | None = None
    val_workers: int | None = None  # validation data-loading processes (Calamari 2)
    val_prefetch: int | None = None  # validation prefetch (Calamari 2)
    # Validate every Nth epoch (Calamari 2: its own --trainer.val_every_n, early stopping checked at the same
    # epochs, so train.early_stopping_patience counts validations); at scale validation can cost as much as
    # training. Calamari 1 (validation at each early-stopping check, its epochs) takes only 1.
    val_every: int = 1
    preload: bool = True  # forced off when the data lies on the cluster's RAM disk
    skip_invalid: bool = True  # Calamari skips invalid lines; hsbcala counts and reports them
    codec: Codec = Codec.recompute  # recompute: keep shared characters, add new ones | keep_loaded: keep all
    network: str | None = None  # null: from the warm-start model, else Calamari's default network
    # Adam's learning rate; null: Calamari's default (0.001 in both versions)
    learning_rate: float | None = None
    # A warm start whose codec grows: each new character's output row starts as a copy of its base letter's
    # (base: new_chars_table, else Unicode decomposition) or random (Calamari's own); hsbcala/train/newchars.py.
    new_chars_init: NewCharsInit = NewCharsInit.random
    # "CHAR=BASE" entries for letters that do not decompose (used before decomposition); a list, since Hydra's
    # command line takes no non-ASCII dict keys: train.new_chars_table='[ł=l,Ł=L,đ=d]'
    new_chars_table: list[str] = field(default_factory=lambda: ["ł=l", "Ł=L"])
    extra_args: list[str] = field(default_factory=list)  # appended verbatim to the engine command


@dataclass
class WarmstartConf:
    pretrained_dir: str = "${paths.root}/pretrained"  # holds <model>/0.ckpt.json (+ weights)
    model: str | None = None  # a .ckpt.json to warm-start from; null: train from scratch


@dataclass
class SyntheticConf:
    # the demo lines are rendered into <root>/<face>/{train,val}/<page>/; size and seed in the default root, so sets
    # of other sizes or seeds never re-render each other's lines in place (a sweep over n_train did, and evaluation
    # then scored other lines under the names its manifest records); -pages: the layout in page folders (a set of
    # the older flat layout keeps its folder)
    root: str = "${paths.root}/data/synthetic/${.n_train}+${.n_val}-seed${.seed}-pages"
    n_train: int = 400  # synthetic training lines
    n_val: int = 60  # synthetic validation lines
    seed: int = 50  # the rendering seed: the same seed gives the same lines
    text_file: str | None = (
        None  # Upper Sorbian sentences, one a line; null: the phrases built into hsbcala.data.synth
    )


@dataclass
class DataChecksConf:
    """Action per data check: fail | warn | drop (see hsbcala/data/checks.py; docs/data.md).
    train.skip_invalid=false turns every drop into fail."""

    missing_gt: Action = Action.fail  # image without .gt.txt (fail | drop)
    missing_image: Action = Action.fail  # .gt.txt without image (fail | warn | drop: left out and counted)
    bad_encoding: Action = Action.fail  # GT not valid UTF-8 (fail | drop)
    bad_image: Action = Action.fail  # image does not decode or has a zero dimension (fail | drop)
    empty_gt: Action = Action.drop  # empty or whitespace-only GT (fail | drop)
    multi_line: Action = Action.warn  # GT with more than one line
    too_narrow: Action = Action.warn  # fewer than data.min_px_per_char px per character, or too few for CTC
    too_wide: Action = Action.drop  # wider than data.max_line_width at line height 48 (Calamari 2 drops it)
    too_small: Action = Action.drop  # under data.min_image_px wide or high (no legible text)
    mixed_normalization: Action = Action.warn  # some lines NFC, others not
    whitelist: Action = Action.warn  # characters outside data.whitelist / data.whitelist_file
    invisible_chars: Action = Action.warn  # BOM, zero-width, soft hyphen: engines delete them (fail | warn)


@dataclass
class SplitConf:
    """The seeded document-wise split of data.train when data.val is not given (hsbcala/data/split.py)."""

    val_fraction: float = 0.1  # share of the lines that go to validation (whole documents)
    seed: int = "${train.seed}"  # type: ignore[assignment]  # an interpolation, resolved to an int
    by: SplitBy = (
        SplitBy.directory
    )  # directory (the image's folder) | pattern (data.split.pattern on the path)
    pattern: str | None = None  # regex; its first group (or whole match) is the document


@dataclass
class DataConf:
    train: list[str] = MISSING  # globs of line images with .gt.txt beside them (or GT archives)
    val: list[str] | None = None  # null/[]: split data.train by document (data.split)
    synthetic: SyntheticConf = field(default_factory=SyntheticConf)
    # --- hsbcala/data/step.py: checks, split, manifest, codec report (docs/data.md)
    checks: DataChecksConf = field(default_factory=DataChecksConf)
    split: SplitConf = field(default_factory=SplitConf)
    whitelist: str | None = None  # allowed GT characters (space always allowed); null: no whitelist check
    whitelist_file: str | None = None  # a text file of allowed characters (added to data.whitelist)
    min_px_per_char: float = 4.0  # image width per GT character at line height 48; 0: no check
    max_line_width: int = 4096  # padded width at line height 48 over which Calamari 2 drops a line; 0: off
    min_image_px: int = 8  # smallest width and height of a line image; 0: no check
    archive_max_bytes: int = 20_000_000_000  # a GT archive unpacking to more is refused; 0: no cap
    archive_max_ratio: float = 100.0  # ... or to more than this many times its own size (zip bomb); 0: no cap
    cache_dir: str | None = "${oc.env:HSBCALA_CACHE_DIR,${oc.env:HOME}/.cache/hsbcala}"  # hashes, archives
    # files listing lines to leave out, one image path, .gt.txt or line id a row (# comments; triage.tsv rows
    # work as they are); applied before the split and the checks (hsbcala/data/exclude.py)
    exclude: list[str] = field(default_factory=list)
    # with data_check_only=true: a model reads every line and triage.tsv/.html rank the lines worth a human
    # look (CER against the document's, length vs width, duplicates, Unicode); hsbcala/evaluate/triage.py
    triage: bool = False
    triage_model: str | None = None  # the .ckpt.json triage reads with; null: warmstart.model (none: no CER)


@dataclass
class MlflowConf:
    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite store in the project
    experiment: str = "hsbcala-${script.name}"  # one experiment per script
    run_name: str = "${script.name}-${version.name}${sweep_label:}"  # + a sweep point's short label
    system_metrics: bool = True  # MLflow's machine-wide system/* and the job's own system/job/* (CPU, RSS)
    system_metrics_interval_s: float = 10.0  # seconds between two samples of system/* and system/job/*
    log_model: bool = True  # the best model as the run's MLflow logged model (model/ artifacts too)
    register: bool = False  # also a version of the registered model ${script.model_name}, with its CER


@dataclass
class PathsConf:
    # Base of relative paths, models/, pretrained/, the synthetic data and the default MLflow store
    # (sqlite:///<root>/mlruns.db); default: the directory the command runs in.
    root: str = "${cwd:}"
    models: str = "${paths.root}/models"  # where model directories go


@dataclass
class IntervalConf:
    """The bootstrap confidence intervals of every CER and difference (hsbcala.evaluate.intervals)."""

    resamples: int = 1000  # bootstrap resamples
    level: float = 0.95  # confidence level
    seed: int = 0  # the resampling seed: the same seed gives the same interval
    unit: IntervalUnit = IntervalUnit.auto  # what is resampled: auto | lines | documents


@dataclass
class EvalConf:
    """What ``python evaluate.py`` does (``conf/evaluate.yaml``; null in a training config). See hsbcala.evaluate.run.

    ``groups`` and ``extra`` are dicts: on the command line add an entry with ``+eval.groups.NAME=[patterns]``
    and drop one with ``~eval.groups.NAME``.
    """

    data: list[str] | None = (
        None  # globs of the evaluation lines; null: the validation lines in model_dir's manifest.json
    )
    name: str | None = None  # the set's name in metrics and tables; null: "val" (from data.val), else "eval"
    extra: dict[str, list[str]] = field(default_factory=dict)  # named extra sets: name -> globs
    groups: dict[str, list[str]] = field(
        default_factory=dict
    )  # variant group -> file-name patterns (fnmatch)
    model: str | None = None  # a .ckpt.json to evaluate; null: the best model in model_dir
    normalization: Normalization = (
        Normalization.engine
    )  # engine (as the version's calamari-eval) | calamari1 | calamari2
    skip_invalid: bool = True  # lines without (valid) GT are left out and counted; false: stop at the first
    batch_size: int = 16  # prediction batch size
    predict_args: list[str] = field(default_factory=list)  # appended verbatim to calamari-predict
    confusions: int = 50  # how many of the most frequent confusions to keep
    mlflow_run: EvalRun = (
        EvalRun.training
    )  # training: metrics on the training run | separate: a run of its own
    comparison_experiment: str = "hsbcala-evaluation"  # MLflow experiment of a multirun's comparison table
    export: bool = False  # pack the best model + metadata as a release .tar.gz
    export_dir: str = "${paths.root}/releases"  # where eval.export=true writes the archive
    intervals: IntervalConf = field(default_factory=IntervalConf)
    sorbian_letters: str = "ěčćřšžźłńóĚČĆŘŠŽŹŁŃÓ"  # the class "sorbian" and the per-letter table
    worst_lines: int = 10  # how many of the worst lines the printed report shows
    # eval-report.html: how many of the worst lines it shows with image and aligned text, and as many
    # lines drawn from the rest (seeded by eval.intervals.seed); 0: the summary and confusions only
    html_lines: int = 50
    baseline: bool = False  # also evaluate the warm-start model the training started from
    checkpoints: EvalCheckpoints = EvalCheckpoints.best  # all: score every checkpoint (both stages)


@dataclass
class AuthorConf:
    """One author of a release (HTRMoPo's ``authors`` item)."""

    name: str = MISSING  # the author's name
    affiliation: str | None = None  # institution; null: left out
    orcid: str | None = None  # ORCID iD; null: left out


@dataclass
class ReleaseConf:
    """What a release's model card (``eval.export=true``, hsbcala.evaluate.modelcard) says that hsbcala cannot know.

    A value left null is written as missing in the card, never made up; the card then names the key to set.
    """

    # One line: what the model is; null: "Upper Sorbian <script> text line recognition, Calamari <version>"
    summary: str | None = None
    description: str | None = None  # prose for the card's first section (uses, limits); null: missing
    # the authors, e.g. release.authors='[{name: Jan Nowak, affiliation: Serbski institut}]'
    authors: list[AuthorConf] = field(default_factory=list)
    # the model's licence, one of HTRMoPo's licence identifiers (CC-BY-4.0, Apache-2.0, other-open, …); null: missing
    license: str | None = None
    # persistent identifier (a DOI); null: the release's own name (a publishing tool replaces it with its DOI)
    id: str | None = None
    language: list[str] = field(default_factory=lambda: ["hsb"])  # ISO 639-3 codes of the training text
    # base URL the archive will be downloadable from (the OCR-D resource entry's url: <url>/<archive name>);
    # null: the archive's local path (ocrd resmgr copies a local file as it downloads a URL)
    url: str | None = None
    data_url: str | None = None  # where the training data can be found (URL or PID); null: missing
    data_license: str | None = None  # the training data's licence; null: missing


@dataclass
class Config:
    script: ScriptConf = MISSING
    version: VersionConf = MISSING
    cluster: ClusterConf = MISSING
    profiler: ProfilerConf = field(default_factory=ProfilerConf)
    preset: str = MISSING  # demo | full | scratch (conf/preset/): a tag of every run
    paths: PathsConf = field(default_factory=PathsConf)
    train: TrainConf = field(default_factory=TrainConf)
    warmstart: WarmstartConf = field(default_factory=WarmstartConf)
    data: DataConf = field(default_factory=DataConf)
    mlflow: MlflowConf = field(default_factory=MlflowConf)
    # The model's stable directory; each point of a sweep trains beside it in <model_dir>@<point name>, so a
    # folder of models lists every point and the non-sweep model side by side (hsbcala.config.sweeps).
    model_dir: str = "${paths.models}/${script.model_name}.${version.name}${sweep_suffix:@}"
    dry_run: bool = False  # print the engine command (and the sbatch script), exit 0, create nothing
    data_check_only: bool = (
        False  # run the data step alone: write manifest/reports, exit 0 (2 if a check fails)
    )
    verbose: bool = False  # also stream the engine's own output (always in <model_dir>/engine.log)
    eval: EvalConf | None = None  # evaluate.py only
    release: ReleaseConf | None = None  # evaluate.py only: the model card of eval.export=true


def _sweep_suffix(sep: str = "-") -> str:
    """``${sweep_suffix:SEP}``: SEP + the sweep point's name (:mod:`hsbcala.config.sweeps`), or '' outside a sweep."""
    from hsbcala.config import sweeps

    return sweeps.suffix(sep)


def _sweep_label(sep: str = "-") -> str:
    """``${sweep_label:SEP}``: SEP + the sweep point's short label (:func:`hsbcala.config.sweeps.label`), or ''."""
    from hsbcala.config import sweeps

    return sweeps.label(sep)


def _run_dir(dry_run: Any, normal: str) -> str:
    """Hydra's run directory; a dry run, which must create nothing in the project, gets one under /tmp."""
    import tempfile

    return (
        os.path.join(tempfile.gettempdir(), "hsbcala-dry-run") if str(dry_run).lower() == "true" else normal
    )


def register() -> None:
    """Register resolvers and schema nodes (idempotent)."""
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _run_dir)
    if not OmegaConf.has_resolver("sweep_suffix"):
        OmegaConf.register_new_resolver("sweep_suffix", _sweep_suffix)
    if not OmegaConf.has_resolver("sweep_label"):
        OmegaConf.register_new_resolver("sweep_label", _sweep_label)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def check(cfg: Any) -> None:
    """Checks a schema cannot express (enumerations and cross-field rules): raise ConfigError naming the key."""

    def one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")

    # Keys added with Hydra's "+key=value" bypass the schema while composing: merge once more to refuse them.
    from omegaconf.errors import OmegaConfBaseException

    body = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
    try:
        OmegaConf.merge(OmegaConf.structured(Config), body)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{exc.full_key or 'config'}: {str(exc).splitlines()[0]}") from None
    for key in body:  # every value resolves, and none is missing (???)
        try:
            if OmegaConf.is_config(cfg[key]):
                OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            full = (
                exc.full_key
                if str(exc.full_key or "").startswith(key)
                else f"{key}.{exc.full_key or ''}".strip(".")
            )
            msg = str(exc).splitlines()[0]
            if "Missing mandatory value" in msg:
                msg = f"missing mandatory value; set it, e.g. on the command line: {full}=..."
            raise ConfigError(f"{full}: {msg}") from None
    from hsbcala import engines

    one_of("version.name", cfg.version.name, engines.NAMES)
    from hsbcala.data import checks  # data.* (checks, split, whitelist)

    checks.validate_config(cfg)
    one_of("profiler.name", cfg.profiler.name, PROFILERS)
    env = cfg.cluster.env or cfg.version.env
    one_of(
        "version.env.kind" if cfg.cluster.env is None else "cluster.env.kind",
        env.kind,
        ("uv", "venv", "path"),
    )
    for key in ("epochs", "batch_size", "workers", "val_every"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(cfg.train, key)}")
    for key in ("augmentations", "early_stopping_patience", "extend_epochs"):
        if getattr(cfg.train, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(cfg.train, key)}")
    if cfg.version.name in engines.NAMES and (why := engines.get(cfg.version.name).check_train(cfg.train)):
        raise ConfigError(why)
    if cfg.train.iterations is not None and cfg.train.iterations < 1:
        raise ConfigError(f"train.iterations must be >= 1 or null, got {cfg.train.iterations}")
    if cfg.cluster.gpus < 0:
        raise ConfigError(f"cluster.gpus must be >= 0, got {cfg.cluster.gpus}")
