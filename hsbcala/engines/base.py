"""The Engine interface: everything hsbcala must know about one Calamari version, behind one object.

The rest of hsbcala never asks "which version is this?": it asks the engine of the run
(:func:`hsbcala.engines.get`) for a command line, a checkpoint, a parser of its output, the normalisation its
``calamari-eval`` uses. A third version (or a Calamari 2.2.2 site venv with other flag names) is one more
subclass and one line in the registry.

The training vocabulary (``cfg.train``) becomes a command line here and only here (``train_argv`` of each
engine). Both versions get "as similar settings as the two CLIs allow":

==========================  =====================================  =========================================
vocabulary (train.*)        Calamari 2 (2.3.1)                     Calamari 1 (1.0.7)
==========================  =====================================  =========================================
epochs / iterations         --trainer.epochs E                     --max_iters (iterations, or E x I)
samples_per_epoch           --trainer.samples_per_epoch            sets I = ceil(samples / batch_size)
batch_size                  --train.batch_size                     --batch_size
augmentations               --n_augmentations                      --n_augmentations
early_stopping_patience P   --early_stopping.n_to_go P (1/epoch)   --early_stopping_nbest P,
                                                                   --early_stopping_frequency I
val_every N                 --trainer.val_every_n N (if N > 1),    refused for N > 1 (its checks are
                              --early_stopping.frequency N           hsbcala's epochs)
(checkpoints)               every epoch (Calamari 2 default)       --checkpoint_frequency I
(training metrics)          every epoch                            --display I
seed                        --trainer.random_seed                  --seed
workers                     --train.num_processes                  --num_threads
prefetch                    --train.prefetch                       (no equivalent)
val_batch_size/_workers/    --val.batch_size/.num_processes/       (no equivalent: validates with its own
  _prefetch                   .prefetch                              defaults)
preload=false / RAM disk    --train.preload False --val.preload …  --train_data_on_the_fly --validation_…
skip_invalid=false          --data.skip_invalid_gt False           --no_skip_invalid_gt
codec=recompute             --codec.keep_loaded False              (default)
codec=keep_loaded           --codec.keep_loaded True               --keep_loaded_codec
warm start                  --warmstart.model M.ckpt.json          --weights M.ckpt
network                     --network N                            --network N
learning_rate R             --learning_rate.lr R                   --network N,learning_rate=R (N: the
                                                                     default network when none is given)
cluster.gpus > 1            --device.gpus 0 … --device.dist_strategy mirror   (one GPU, no flag)
==========================  =====================================  =========================================

``I`` (iterations per epoch) = ceil(lines per epoch / batch_size), where lines per epoch is
``train.samples_per_epoch`` or the number of training lines: Calamari 2's epoch is one pass over the training
lines, so Calamari 1 checks early stopping and writes a checkpoint once per such pass, and its iteration budget
is ``train.iterations`` if set (the original scripts: 5,000,000) else ``train.epochs x I``.

Resume: Calamari 2 reads every setting back from the checkpoint (``calamari-resume-training
<checkpoint>/trainer_params.json``); Calamari 1 needs the data again (``--checkpoint … --files … --validation``).
Neither takes ``train.epochs``, ``batch_size`` or ``learning_rate`` from the command that resumes: the
checkpoint's values (:meth:`Engine.stored`) are what the engine uses, so hsbcala's console and run description
use them too and a launch with other values is told so. ``train.extend_epochs=N`` raises the epoch budget by N
where the resume command takes one: Calamari 2 (``--trainer.epochs``, tfaip's trainer parameters are
overridable on ``calamari-resume-training``); Calamari 1.0.7's ``calamari-resume-training`` takes only the
checkpoint and the data.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# Both engines print this when, after training on augmented data, they train on the original lines only.
STAGE_SWITCH = "Starting training on original data only"


@dataclass(frozen=True)
class TrainInputs:
    """What a command needs besides the vocabulary: resolved paths and facts about the data and models."""

    model_dir: Path
    train: tuple[str, ...]  # image files or glob patterns, as Calamari gets them
    val: tuple[str, ...]
    n_train: int  # number of training lines (for Calamari 1's iteration arithmetic)
    warmstart: str | None = None  # already in the version's form (Engine.weights_arg)
    network: str | None = None  # from the warm-start model, or configured
    resume_from: Path | None = None  # Calamari 2: trainer_params.json; Calamari 1: model_*.ckpt
    on_ramdisk: bool = False
    gpus: int = 0
    extend_to: int | None = None  # a resume with a new epoch budget per stage (train.extend_epochs)


@dataclass(frozen=True)
class Stored:
    """The settings a checkpoint carries, which the engine uses when it resumes from it (both engines read them
    back from the checkpoint, not from the command): hsbcala's console, run description and messages use them."""

    epochs: int  # epochs per stage (Calamari 1: its iteration budget in passes over the lines)
    epoch: int  # the epoch (within its stage) the checkpoint was written at
    batch_size: int
    learning_rate: float | None


def iterations_per_epoch(train: Any, n_train: int) -> int:
    """I: iterations of one pass over the training lines (or over ``train.samples_per_epoch``)."""
    lines = train.samples_per_epoch or n_train
    return max(1, math.ceil(lines / train.batch_size))


def max_iterations(train: Any, n_train: int) -> int:
    """Calamari 1's iteration budget (see the module docstring)."""
    if train.iterations is not None:
        return int(train.iterations)
    return train.epochs * iterations_per_epoch(train, n_train)


def resume_settings(
    engine: Engine, checkpoint: Path, train: Any, n_train: int, *, finished: bool, target: int | None
) -> tuple[Stored, int | None, str]:
    """(the checkpoint's settings, the new epoch budget per stage or None, the one line that tells the user)
    for resuming ``checkpoint`` with ``train`` (``train.extend_epochs``). ``finished``: the training ended (its
    checkpoint is its last); ``target``: the budget of an extension that was interrupted (hsbcala-state.json),
    which a relaunch of the same command continues instead of extending once more."""
    from hsbcala.core.errors import ConfigError

    s = engine.stored(checkpoint)
    extend = int(train.get("extend_epochs") or 0)
    extend_to = None
    if target is not None and not finished:
        # an extension under way (interrupted): the same command continues it, never extends twice
        extend_to = target if target > s.epochs else None
    elif extend > 0:
        if not engine.extendable:
            raise ConfigError(f"train.extend_epochs={extend}: {engine.not_extendable}")
        # a finished training may have stopped early: N more epochs from where it stopped
        extend_to = (s.epoch if finished else s.epochs) + extend
    epochs = extend_to if extend_to is not None else s.epochs
    asked = (
        max_iterations(train, n_train) // iterations_per_epoch(train, n_train)
        if engine.position == "iteration"
        else int(train.epochs)
    )
    ignored = [
        f"{key}={mine}"
        for key, mine, theirs in (
            ("train.epochs", asked, s.epochs),
            ("train.batch_size", train.batch_size, s.batch_size),
            ("train.learning_rate", train.get("learning_rate"), s.learning_rate),
        )
        if mine is not None and theirs is not None and float(mine) != float(theirs)
    ]
    lr = "" if s.learning_rate is None else f", learning rate {s.learning_rate:g}"
    how = f"extended by {epochs - s.epochs} from {s.epochs}" if extend_to is not None else "the checkpoint's"
    line = (
        f"resume: {engine.name} continues from {engine.checkpoint_name(checkpoint)} (epoch {s.epoch}) with "
        f"the checkpoint's settings: {epochs} epochs per stage ({how}), batch {s.batch_size}{lr}"
    )
    if ignored:
        line += f"; this command's {', '.join(ignored)} not used (a resume keeps the checkpoint's; " + (
            "to train N more epochs: train.extend_epochs=N)"
            if engine.extendable
            else "to train with other settings: a new model_dir warm-started from this one)"
        )
    return s, extend_to, line


def flag(value: bool) -> str:
    return "True" if value else "False"


# ------------------------------------------------------------------------------------------------ progress


@dataclass
class Update:
    step: int
    metrics: dict[str, float]
    check: bool = (
        False  # a validation check (Calamari 2: an epoch's line): the console prints one line for it
    )


@dataclass
class ProgressParser:
    """Stateful parser of an engine's console output; ``feed(line)`` returns the metric updates that line
    completes. Metric names are the same for both versions (MLflow compares them side by side):

    - ``train_cer``, ``train_loss``; ``val_cer``, ``val_loss`` (where the engine prints them);
    - ``best_val_cer``: the best validation CER so far in this stage, at every check. Both engines start
      "best" afresh on the original lines (and export that stage's best), so the first stage's best is kept
      apart as ``best_val_cer_stage1`` (logged at the stage switch) and ``best_val_cer`` always describes
      the model that is exported;
    - ``stage``: 0 while training on augmented data, 1 on the original lines only (both engines train twice
      when augmenting, restarting their epoch/iteration count for the second stage).

    Steps are epochs for both versions, so MLflow draws their curves on one x-axis: Calamari 2 reports
    epochs; Calamari 1 reports iterations, which its parser converts (iterations x batch size / lines per epoch)
    and keeps as the metric ``iteration``. Steps continue across stages (``stage * per_stage + position``) and
    across resumes (``start``), so a resumed training continues the same curve. Subclasses parse their
    engine's lines in :meth:`parse` and make every update through :meth:`_update`.
    """

    per_stage: int  # Calamari 2: epochs per stage; Calamari 1: max iterations per stage
    check_every: int = 1  # Calamari 1: iterations between early-stopping checks
    stage: int = 0
    start: int = 0  # epoch (cala2) or iteration (cala1) of the checkpoint resumed from
    best_val_cer: float | None = None  # of the current stage
    best_epoch: float | None = None  # where best_val_cer was reached (the console's epoch within its stage)
    best_val_cer_stage1: float | None = None  # of the first (augmented) stage, once it is over
    epochs_seen: int = 0
    iterations_seen: int = 0
    checks_seen: int = 0  # validations the engine reported
    val_seconds: float = 0.0  # wall time the engine says it spent validating in this launch (0: not reported)
    _last_val_s: float | None = None  # the latest validation time the engine printed, until its epoch's line

    def feed(self, line: str) -> list[Update]:
        if STAGE_SWITCH in line:
            self.on_stage_switch()
            metrics = {"stage": 1.0}
            if self.stage == 0:  # (a resumed second stage prints the line again)
                self.best_val_cer_stage1, self.best_val_cer = self.best_val_cer, None
                self.best_epoch = None
                if self.best_val_cer_stage1 is not None:
                    metrics["best_val_cer_stage1"] = self.best_val_cer_stage1
            self.stage = 1
            return [self._update(self._offset(), metrics)]
        return self.parse(line)

    def parse(self, line: str) -> list[Update]:  # pragma: no cover - abstract
        raise NotImplementedError

    def epoch_of(self, step: int) -> float:
        """The epoch (within its stage) an update's step stands for."""
        return float(step - self._offset())

    def step_at(self, stage: int, position: int) -> int:
        """The step the training's curves use for the engine's ``position`` (epoch or iteration, as its
        checkpoints record it) in ``stage`` (0 or 1): e.g. a checkpoint's point on the ``val_cer`` chart."""
        return self._step(stage * self.per_stage + position)

    def _step(self, position: int) -> int:
        """The step of an engine position counted over stages (epochs: the position itself)."""
        return position

    def epoch_at(self, position: int) -> float:
        """The epoch within its stage, as the console counts, of an engine position within the stage."""
        return float(position)

    def _update(self, position: int, metrics: dict[str, float]) -> Update:
        """The update at the engine's ``position`` (stage offset included; epoch or iteration)."""
        return Update(self._step(position), metrics)

    def on_stage_switch(self) -> None:
        """Reset per-stage counters (the engine restarts its numbering)."""

    def _offset(self) -> int:
        return self.stage * self.per_stage

    def _best(self, cer: float, epoch: float) -> float:
        """The best CER so far with ``cer`` reached at ``epoch`` (within the stage, as the console counts)."""
        if self.best_val_cer is None or cer < self.best_val_cer:
            self.best_val_cer, self.best_epoch = cer, epoch
        return self.best_val_cer


# ------------------------------------------------------------------------------------------------ engine


class Engine(ABC):
    """One Calamari version: its CLI dialect, its model-directory layout, its output, its evaluation rules."""

    name: ClassVar[str]  # the config's version.name: cala1 | cala2
    major: ClassVar[int]  # Calamari's major version, as model files record it
    eval_rules: ClassVar[
        str
    ]  # the normalisation of this version's calamari-eval (hsbcala.evaluate.cer.RULES)
    best_weights: ClassVar[str]  # the best model's weights beside best.ckpt.json (for messages)
    position: ClassVar[str]  # what a step counts: "epoch" | "iteration"
    Parser: ClassVar[type[ProgressParser]]  # the parser of its console output

    # -- commands
    @abstractmethod
    def train_argv(self, train: Any, inp: TrainInputs) -> list[str]:
        """The training (or resume) command; program name first, resolved later in the engine environment."""

    def runner(self, env: Any) -> list[str]:
        """What runs the training program in the engine environment ``env`` (put before its resolved path)."""
        return []

    @abstractmethod
    def predict_argv(
        self, program: str, checkpoint: Path, files: str, out_dir: Path, batch_size: int
    ) -> list[str]:
        """``calamari-predict`` of ``files`` (a glob Calamari expands itself) into ``out_dir/<stem>.pred.txt``."""

    def weights_arg(self, model_json: Path) -> str:
        """The warm-start argument for a ``<name>.ckpt.json`` model (checks that its weights are there)."""
        from hsbcala.engines import modeljson

        return modeljson.weights_arg(model_json, self.major)

    # -- the model directory
    @abstractmethod
    def owns(self, model_dir: Path) -> bool:
        """Whether the engine's own files in ``model_dir`` show that this version wrote it."""

    @abstractmethod
    def checkpoints(self, model_dir: Path) -> list[Path]:
        """Complete checkpoints, in the form the resume command takes (any order)."""

    @abstractmethod
    def record(self, checkpoint: Path) -> Path:
        """The JSON file the engine writes with a checkpoint (its stage and position are in it)."""

    @abstractmethod
    def checkpoint_key(self, checkpoint: Path) -> tuple[int, int]:
        """(stage, epoch-or-iteration) recorded inside a checkpoint: both engines restart numbering in the
        second stage and overwrite earlier files, so this, not the file name, says which is newest."""

    def latest_checkpoint(self, model_dir: Path) -> Path | None:
        """The checkpoint to resume from; incomplete ones (interrupted while writing) are passed over."""
        found = self.checkpoints(model_dir)
        return max(found, key=lambda p: (*self.checkpoint_key(p), _mtime(self.record(p))), default=None)

    def checkpoint_name(self, checkpoint: Path) -> str:
        """A checkpoint's name for messages (the file or directory a user would look for)."""
        return checkpoint.name

    @abstractmethod
    def predictable(self, checkpoints: list[Path], out_dir: Path, env: Any) -> list[tuple[Path | None, str]]:
        """Per checkpoint (as :meth:`checkpoints` lists them): (the ``.ckpt.json`` calamari-predict loads, "")
        or (None, why it cannot be predicted). ``out_dir``: where models exported from checkpoints may be
        written; ``env``: the engine environment (:class:`hsbcala.engines.envs.EngineEnv`)."""

    def best_model(self, model_dir: Path) -> list[Path]:
        """The files of the best model (empty if there is none yet)."""
        spec = model_dir / "best.ckpt.json"
        weights = model_dir / self.best_weights
        return [spec, weights] if spec.is_file() and weights.exists() else []

    def prepare_resume(self, checkpoint: Path, model_dir: Path) -> list[str]:
        """Make ``checkpoint`` resume into ``model_dir`` (it may have been copied or moved: both engines record
        the absolute output directory in the checkpoint and would write there); return what was done."""
        return []

    # Lines an engine prints when a checkpoint's files cannot be read back (truncated, corrupt, missing).
    RESTORE_ERRORS: ClassVar[tuple[str, ...]] = ()

    def restore_failed(self, output: str) -> bool:
        """Whether the engine's output says the checkpoint it resumed from could not be restored."""
        return any(marker in output for marker in self.RESTORE_ERRORS)

    def set_aside(self, checkpoint: Path) -> list[Path]:
        """Rename a checkpoint that cannot be restored (never delete it), so the previous one is resumed."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for f in self.checkpoint_files(checkpoint):
            target = f.with_name(f"{f.name}.unrestorable-{stamp}")
            os.replace(f, target)
            moved.append(target)
        return moved

    @abstractmethod
    def checkpoint_files(self, checkpoint: Path) -> list[Path]:
        """The files (or directories) making up one checkpoint."""

    # Whether the resume command takes a new epoch budget (train.extend_epochs); else why not, for the message.
    extendable: ClassVar[bool] = False
    not_extendable: ClassVar[str] = ""

    @abstractmethod
    def stored(self, checkpoint: Path) -> Stored:
        """The settings ``checkpoint`` carries (what a resume from it uses)."""

    def after_launch(self, model_dir: Path) -> list[str]:
        """Repair what a launch may have damaged (called however the launch ended); return what was done."""
        return []

    @abstractmethod
    def resume_point(self, checkpoint: Path) -> tuple[int, int]:
        """(stage, position) the engine continues from after resuming ``checkpoint`` (for metric steps)."""

    def resume_best(self, checkpoint: Path) -> tuple[float | None, int | None]:
        """(best validation CER of the checkpoint's stage, the position it was reached at or None): what the
        engine's early stopping restores from ``checkpoint`` and judges later epochs against. (None, None):
        the checkpoint records none."""
        return None, None

    # -- output
    @abstractmethod
    def progress_parser(
        self, train: Any, n_train: int, *, stage: int = 0, start: int = 0, best_val_cer: float | None = None
    ) -> ProgressParser:
        """A parser of this engine's console output for a training with these settings."""

    def no_best_model(self, parser: ProgressParser) -> str | None:
        """Why the engine's exported "best" model is no trained model (None: it is one)."""
        return None

    @abstractmethod
    def lines_done(self, parser: ProgressParser, train: Any, n_train: int) -> int:
        """Training lines processed in this launch (for ``lines_per_second``)."""

    # -- rules the rest of hsbcala once decided by version (issue 19: "a third version is one more module")
    #: weights beside ``X.ckpt.json``: ``X.ckpt`` + each suffix (Calamari 1: an .h5; 2.3: a SavedModel directory)
    weight_suffixes: ClassVar[tuple[str, ...]] = (".h5",)
    #: calamari-eval's replacements after NFC, before the whitespace rules (hsbcala.evaluate.cer.RULES), and their words
    eval_replacements: ClassVar[tuple[tuple[str, str], ...]] = ()
    eval_description: ClassVar[str] = ""
    #: what the engine's validation CER (``best_val_cer``) averages: "summed" (errors / GT characters over the
    #: lines, as calamari-eval) or "line_mean" (the mean of each line's errors / its GT characters)
    val_cer_statistic: ClassVar[str] = "summed"

    def weights_of(self, model_json: Path) -> list[Path]:
        """The weights beside the model file ``model_json`` (``X.ckpt.json``) that exist; empty: none."""
        stem = model_json.with_name(model_json.name[: -len(".json")])
        return [w for w in (Path(f"{stem}{s}") for s in self.weight_suffixes) if w.exists()]

    def weights_names(self, model_json: Path) -> str:
        """The weights this engine looks for beside ``model_json``, for messages (``X.ckpt/ or X.ckpt.h5``)."""
        stem = model_json.name[: -len(".json")]
        return " or ".join(f"{stem}{s}" if s else f"{stem}/" for s in self.weight_suffixes)

    def check_weights(self, model_json: Path, model_version: object) -> str | None:
        """Why the weights of ``model_json`` (of the model file version ``model_version``) are missing or
        empty, naming what was expected; None: they are there."""
        h5 = Path(f"{model_json.with_name(model_json.name[: -len('.json')])}.h5")
        return None if h5.is_file() and h5.stat().st_size > 0 else f"expected {h5}"

    def epochs_per_stage(self, train: Any, n_train: int) -> int:
        """Epochs per stage as the console counts them (``train.epochs``; Calamari 1: its budget in passes)."""
        return int(train.epochs)

    def check_train(self, train: Any) -> str | None:
        """Why ``train`` settings cannot work with this engine (None: they can); checked before anything runs."""
        return None


def retarget(record: Path, keys: tuple[str, ...], model_dir: Path) -> list[str]:
    """Point the directory-valued ``keys`` of a checkpoint's JSON ``record`` at ``model_dir`` (atomically);
    a message per key changed. Values that are not directories of another place are left alone."""
    from hsbcala.core import fsutil

    d = fsutil.read_json(record)
    changed = []
    target = str(model_dir.resolve())
    for dotted in keys:
        node, *rest = dotted.split(".")
        holder: dict = d
        key = node
        for part in rest:
            holder = holder.get(key) if isinstance(holder.get(key), dict) else {}
            key = part
        old = holder.get(key)
        if isinstance(old, str) and old and Path(old).resolve() != Path(target):
            holder[key] = target
            changed.append(f"{dotted}: {old} → {target}")
            d = _replace_prefix(
                d, old.rstrip("/") + "/", target + "/"
            )  # e.g. the links in <model_dir>/lines/
    if changed:
        fsutil.atomic_write_json(record, d)
    return changed


def _replace_prefix(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace_prefix(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_prefix(v, old, new) for v in node]
    if isinstance(node, str) and node.startswith(old):
        return new + node[len(old) :]
    return node


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
