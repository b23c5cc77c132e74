"""Calamari 1 (calamari-ocr 1.0.7, Keras on TensorFlow 2.15): command lines, model-directory layout, output.

Layout: ``model_NNNNNNNN.ckpt.json`` + ``.h5`` (NNNNNNNN = iteration); with augmentation two stages, the
iteration restarting in the second, so the JSON's ``currentStage``/``iter`` decide which is newest. Best model:
``best.ckpt.json`` + ``.h5``; ``model_last.ckpt`` is written when training ends.

Output: ``#00000040: loss=… ler=… dt=…s`` every ``--display`` iterations (``ler`` is its running CER), and
at every early-stopping check ``Found better model with accuracy of X%`` or ``No better model found.
Currently accuracy of X%`` (so a check's validation CER is printed only when it is a new best).
"""

from __future__ import annotations

import glob as _glob
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbcala.core.fsutil import read_json, read_json_if_complete
from hsbcala.engines.base import (
    Engine,
    ProgressParser,
    Stored,
    TrainInputs,
    Update,
    iterations_per_epoch,
    max_iterations,
    retarget,
)

# Calamari 1.0.7's network when --network is not given (calamari_ocr/scripts/train.py: --network default)
START_SCRIPT = Path(__file__).with_name("cala1_start.py")  # run by the engine env's Python (see there)
DEFAULT_NETWORK = "cnn=40:3x3,pool=2x2,cnn=60:3x3,pool=2x2,lstm=200,dropout=0.5"
_DISPLAY = re.compile(r"^#(\d+): loss=(-?[\d.]+) ler=(-?[\d.]+) dt=([\d.]+)s")
_BETTER = re.compile(r"Found better model with accuracy of (-?[\d.]+)%")
_WORSE = re.compile(r"No better model found\. Currently accuracy of (-?[\d.]+)%")


@dataclass
class Cala1Parser(ProgressParser):
    """Calamari 1's output in epochs: an iteration is ``batch_size / lines_per_epoch`` of an epoch (a pass
    over the training lines, or ``train.samples_per_epoch`` lines, as Calamari 2 counts them), so a step is
    ``round(iterations x batch_size / lines_per_epoch)``, the iterations counted over stages as the engine
    does (``stage * per_stage + iteration``). The engine's own iteration (of its stage, as in its checkpoint
    names) is the metric ``iteration``. Without ``batch_size``/``lines_per_epoch`` a check is an epoch."""

    batch_size: int = 0
    lines_per_epoch: int = 0  # train.samples_per_epoch, else the number of training lines
    _last_iter: int = field(default=0, repr=False)
    _checks: int = field(default=-1, repr=False)
    _check_of: dict[int, float] = field(default_factory=dict, repr=False)  # step -> checks of its stage
    # Calamari 1.0.7 saves a checkpoint's iteration one short (the early-stopping callback writes it before the
    # display callback counts the batch), so after a resume it displays the checkpoint's own iteration once more:
    # a step the run holds already. Display lines up to it are not logged again (set from ``start``).
    _logged_up_to: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        if self._logged_up_to < 0:
            self._logged_up_to = self.start

    def epochs(self, iterations: int) -> float:
        """Epochs (passes over the lines per epoch) that ``iterations`` stand for."""
        if self.batch_size > 0 and self.lines_per_epoch > 0:
            return iterations * self.batch_size / self.lines_per_epoch
        return iterations / self.check_every

    def epoch_of(self, step: int) -> float:
        # the console counts checks (one per pass, as early stopping and the epoch budget do), which the
        # rounded step may pass by a little when batch_size does not divide the lines
        if step in self._check_of:
            return self._check_of[step]
        return step - self.epochs(self._offset())

    def _step(self, position: int) -> int:
        return math.floor(self.epochs(position) + 0.5)  # (round() would round x.5 to even)

    def epoch_at(self, position: int) -> float:
        return position / self.check_every  # the console counts checks

    def _update(self, position: int, metrics: dict[str, float]) -> Update:
        step = self._step(position)
        self._check_of[step] = (position - self._offset()) / self.check_every
        return Update(step, metrics)

    def on_stage_switch(self) -> None:
        if self.stage == 0:
            self._last_iter, self._checks, self._logged_up_to = 0, -1, 0

    def parse(self, line: str) -> list[Update]:
        m = _DISPLAY.search(line)
        if m:
            it = int(m.group(1))
            self.iterations_seen += max(0, it - max(self._last_iter, self.start if self.stage == 0 else 0))
            self._last_iter = it
            if it <= self._logged_up_to:
                return []
            return [
                self._update(
                    self._offset() + it,
                    {
                        "train_loss": float(m.group(2)),
                        "train_cer": float(m.group(3)),
                        "stage": float(self.stage),
                        "iteration": float(it),
                    },
                )
            ]
        better, worse = _BETTER.search(line), _WORSE.search(line)
        if not (better or worse):
            return []
        if self._checks < 0:  # first check of this launch: count from the checkpoint resumed from
            base = self.start if self.stage == 0 or self._last_iter else 0
            self._checks = max(self._last_iter, base) // self.check_every
        self._checks += 1
        self.checks_seen += 1
        it = self._checks * self.check_every
        # (both lines give the best accuracy so far; "No better model" does not print the check's own)
        acc = float((better or worse).group(1)) / 100.0
        if better:
            metrics = {"val_cer": 1.0 - acc, "best_val_cer": self._best(1.0 - acc, float(self._checks))}
        elif acc <= 0:
            # no valid model yet (Calamari 1 starts from accuracy 0): no best CER is invented, but the check
            # still gets its console line (a training can go many checks like this, minutes without a word)
            metrics = {}
        else:
            metrics = {"best_val_cer": self._best(1.0 - acc, float(self._checks))}
        update = self._update(self._offset() + it, {**metrics, "iteration": float(it)})
        update.check = True
        return [update]


class Cala1(Engine):
    name = "cala1"
    major = 1
    eval_rules = "calamari1"
    best_weights = "best.ckpt.h5"
    Parser = Cala1Parser
    position = "iteration"

    def runner(self, env: Any) -> list[str]:
        # every .h5 written whole or not at all: an interrupted write cannot tear best.ckpt.h5 (see there)
        return [env.program("python"), str(START_SCRIPT)]

    def train_argv(self, train: Any, inp: TrainInputs) -> list[str]:
        data = ["--files", *inp.train, "--validation", *inp.val]
        skip = [] if train.skip_invalid else ["--no_skip_invalid_gt"]
        if inp.resume_from is not None:
            return ["calamari-resume-training", "--checkpoint", str(inp.resume_from), *data, *skip]
        per_epoch = iterations_per_epoch(train, inp.n_train)
        argv = [
            "calamari-train",
            "--output_dir",
            str(inp.model_dir),
            "--max_iters",
            str(max_iterations(train, inp.n_train)),
            "--seed",
            str(train.seed),
            "--batch_size",
            str(train.batch_size),
            "--num_threads",
            str(train.workers),
            "--n_augmentations",
            str(train.augmentations),
            "--early_stopping_frequency",
            str(per_epoch),
            "--early_stopping_nbest",
            str(train.early_stopping_patience or 1_000_000_000),
            "--checkpoint_frequency",
            str(per_epoch),
            "--display",
            str(max(2, per_epoch)),  # training CER/loss once per check (values <= 1 mean epochs)
            "--no_progress_bars",
        ]
        if train.codec == "keep_loaded":
            argv.append("--keep_loaded_codec")
        if not train.preload or inp.on_ramdisk:
            argv += ["--train_data_on_the_fly", "--validation_data_on_the_fly"]
        if inp.network or train.get("learning_rate") is not None:
            # Calamari 1 takes the learning rate inside the network string (proto/converters.py: learning_rate=)
            network = inp.network or DEFAULT_NETWORK
            if train.get("learning_rate") is not None:
                network += f",learning_rate={train.learning_rate}"
            argv += ["--network", network]
        if inp.warmstart:
            argv += ["--weights", inp.warmstart]
        return argv + skip + data + list(train.extra_args)

    def predict_argv(
        self, program: str, checkpoint: Path, files: str, out_dir: Path, batch_size: int
    ) -> list[str]:
        return [
            program,
            "--checkpoint",
            str(checkpoint),
            "--files",
            files,
            "--output_dir",
            str(out_dir),
            "--batch_size",
            str(batch_size),
            "--no_progress_bars",
        ]

    def owns(self, model_dir: Path) -> bool:
        return any(model_dir.glob("model_*.ckpt.h5")) or (model_dir / "best.ckpt.h5").is_file()

    def checkpoints(self, model_dir: Path) -> list[Path]:
        found = []
        for p in map(Path, _glob.glob(_glob.escape(str(model_dir)) + "/model_*.ckpt.json")):
            if (
                p.name != "model_last.ckpt.json"
                and p.with_suffix(".h5").is_file()
                and read_json_if_complete(p)
            ):
                found.append(p.with_suffix(""))
        return found

    RESTORE_ERRORS = (
        "Read less bytes than requested",  # h5py on a truncated .h5
        "Unable to open file",
        "Unable to synchronously open file",
        "truncated file",
        "file signature not found",
        "bad object header",
        "Unable to open object",
    )

    def checkpoint_files(self, checkpoint: Path) -> list[Path]:
        return [
            Path(f"{checkpoint}.h5"),
            Path(f"{checkpoint}.json"),
        ]  # weights first: the JSON marks it whole

    def record(self, checkpoint: Path) -> Path:
        return Path(f"{checkpoint}.json")

    def predictable(self, checkpoints: list[Path], out_dir: Path, env: Any) -> list[tuple[Path | None, str]]:
        return [(self.record(cp), "") for cp in checkpoints]  # model_N.ckpt.json + .h5 are models already

    def checkpoint_key(self, checkpoint: Path) -> tuple[int, int]:
        d = read_json(self.record(checkpoint))
        return int(d.get("currentStage", 0) or 0), int(d.get("iter", 0) or 0)

    # Calamari 1 writes its current network as "best" when any training starts (on_train_begin: "Creating
    # initial network configuration as current best"), so a resume replaces the best model with the checkpoint
    # resumed from, though no validation improved; its best accuracy itself is carried over in the checkpoint.
    # hsbcala keeps the best model aside before resuming and puts it back after the launch unless the engine
    # found a better one (higher earlyStoppingBestAccuracy in the same or a later stage).
    KEPT = ".hsbcala/best-before-resume"

    def prepare_resume(self, checkpoint: Path, model_dir: Path) -> list[str]:
        for tmp in model_dir.glob(".*.hsbcala-tmp.h5"):  # cala1_start.TMP_SUFFIX: a write cut short by a stop
            tmp.unlink(missing_ok=True)
        done = retarget(self.record(checkpoint), ("outputDir", "earlyStoppingBestModelOutputDir"), model_dir)
        kept = model_dir / self.KEPT
        best = [model_dir / "best.ckpt.json", model_dir / "best.ckpt.h5"]
        if all(f.is_file() for f in best) and not (kept / "best.ckpt.json").is_file():
            # (an earlier kept copy still there means the launch that made it died: that one is the real best)
            tmp = kept.with_name(kept.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for f in best:
                shutil.copy2(f, tmp / f.name)
            os.replace(tmp, kept)
            done.append(f"kept the best model aside in {kept} (Calamari 1 overwrites it when it resumes)")
        return done

    def after_launch(self, model_dir: Path) -> list[str]:
        kept = model_dir / self.KEPT
        if not (kept / "best.ckpt.json").is_file():
            return []
        now = read_json_if_complete(model_dir / "best.ckpt.json")  # cut short by a kill: no better model
        before = read_json_if_complete(kept / "best.ckpt.json")

        def rank(d: dict) -> tuple[int, float]:
            return int(d.get("currentStage", 0) or 0), float(d.get("earlyStoppingBestAccuracy", 0) or 0)

        improved = (
            bool(now)
            and (model_dir / "best.ckpt.h5").is_file()
            and (
                rank(now)[0] > rank(before)[0]
                or (rank(now)[0] == rank(before)[0] and rank(now)[1] > rank(before)[1])
            )
        )
        note = []
        if not improved:
            for name in ("best.ckpt.h5", "best.ckpt.json"):  # weights first: the JSON says "complete"
                tmp = model_dir / f".{name}.restore"
                shutil.copy2(kept / name, tmp)
                os.replace(tmp, model_dir / name)
            note.append(
                "restored the best model kept before resuming (no better one was found in this launch)"
            )
        shutil.rmtree(kept, ignore_errors=True)
        return note

    not_extendable = (
        "Calamari 1.0.7's calamari-resume-training takes no settings, only the checkpoint and the data; "
        "train a new model from this one instead: warmstart.model=<model_dir>/best.ckpt.json model_dir=<another>"
    )

    def stored(self, checkpoint: Path) -> Stored:
        d = read_json(self.record(checkpoint))
        # hsbcala checks early stopping once per pass over the lines (base.iterations_per_epoch)
        per_epoch = max(1, int(d.get("earlyStoppingFrequency", 0) or 1))
        lr = ((d.get("model") or {}).get("network") or {}).get("learningRate")
        return Stored(
            epochs=max(1, int(d.get("maxIters", 0) or 0) // per_epoch),
            epoch=int(d.get("iter", 0) or 0) // per_epoch,
            batch_size=int(d.get("batchSize", 0) or 0),
            learning_rate=None if lr is None else float(lr),
        )

    def resume_point(self, checkpoint: Path) -> tuple[int, int]:
        stage, it = self.checkpoint_key(checkpoint)
        return stage, it + 1  # Calamari 1 continues after the iteration it saved

    def resume_best(self, checkpoint: Path) -> tuple[float | None, int | None]:
        d = read_json(self.record(checkpoint))
        acc = float(d.get("earlyStoppingBestAccuracy", 0) or 0)
        if acc <= 0:  # Calamari 1 starts from accuracy 0: no valid model yet
            return None, None
        return 1.0 - acc, int(d.get("earlyStoppingBestAtIter", 0) or 0) or None

    def progress_parser(
        self, train: Any, n_train: int, *, stage: int = 0, start: int = 0, best_val_cer: float | None = None
    ) -> ProgressParser:
        return self.Parser(
            per_stage=max_iterations(train, n_train),
            check_every=iterations_per_epoch(train, n_train),
            batch_size=train.batch_size,
            lines_per_epoch=train.samples_per_epoch or n_train,
            stage=stage,
            start=start,
            best_val_cer=best_val_cer,
        )

    def no_best_model(self, parser: ProgressParser) -> str | None:
        if parser.checks_seen and parser.best_val_cer is None:
            return (
                "Calamari 1 found no model with a validation CER below 100 % in this stage, so its best.ckpt is "
                "the network it started the stage with (untrained, or the warm-start model), not a trained one"
            )
        return None

    def lines_done(self, parser: ProgressParser, train: Any, n_train: int) -> int:
        return parser.iterations_seen * train.batch_size

    # -- issue 19: the version's rules (base.Engine)
    eval_replacements = (("µ", "μ"), ("–", "-"), ("—", "-"))  # calamari-eval 1.0.7's "various" replacements
    eval_description = (
        "NFC, µ→μ, en/em dash→-, whitespace runs to one space, stripped (as calamari-eval 1.0.7)"
    )
    # Calamari 1.0.7's early stopping (backends/tensorflow_backend/callbacks/earlystopping.py:218-230) averages
    # the graph's per-line tf.edit_distance(normalize=True) (tensorflow_model.py:342-345): np.mean per batch,
    # then over the batches. Calamari 2 weights the same per-line rates by GT length (model.py:52-66): summed.
    val_cer_statistic = "line_mean"

    def epochs_per_stage(self, train: Any, n_train: int) -> int:
        return max(1, max_iterations(train, n_train) // iterations_per_epoch(train, n_train))

    def check_train(self, train: Any) -> str | None:
        if train.early_stopping_patience == 1:
            return (
                "train.early_stopping_patience=1 cannot work: Calamari 1 with --early_stopping_nbest 1 never "
                "validates; use 0 (off) or 2 or more"
            )
        if train.val_every != 1:
            # --early_stopping_frequency would do it, but the console and MLflow count its checks as epochs
            return (
                f"train.val_every={train.val_every} is not mapped for Calamari 1 (it validates at every "
                f"early-stopping check, which hsbcala counts as its epochs); use 1, or fewer validation lines"
            )
        return None
