"""Calamari 2 (calamari-ocr 2.3.1 on tfaip): command lines, model-directory layout, console output.

Layout: ``checkpoint/checkpoint_NNNN/trainer_params.json`` (+ ``variables/``), one per epoch; with augmentation
the training runs in two stages (``aug_data/`` then ``real_data/`` logs) and the second stage numbers its epochs
from 1 again, overwriting ``checkpoint_0001`` …, so "newest" is decided by ``current_stage``/``current_epoch``
inside ``trainer_params.json``. Best model: ``best.ckpt.json`` + ``best.ckpt/`` (a SavedModel).

Checkpoints are training states (the training graph's variables and the optimizer's slots), not models:
:meth:`Cala2.predictable` exports them as models with ``cala2_export.py`` in the engine environment.

Output: one line per epoch, ``Results of epoch N CER: … - loss: … - val_CER: … - val_loss: …``.
"""

from __future__ import annotations

import glob as _glob
import json
import re
from pathlib import Path
from typing import Any

from hsbcala.core.errors import EngineError
from hsbcala.core.fsutil import read_json, read_json_if_complete
from hsbcala.engines.base import Engine, ProgressParser, Stored, TrainInputs, Update, flag, retarget

EXPORT_SCRIPT = Path(__file__).with_name("cala2_export.py")

_EPOCH = re.compile(r"Results of epoch\s+(\d+)\s+(.*)$")
_PAIR = re.compile(r"([\w/-]+): (-?[\d.]+(?:e[-+]?\d+)?)")
_NUMBERED = re.compile(r"^checkpoint_\d+$")  # not one set aside as checkpoint_NNNN.unrestorable-…
_NAMES = {"CER": "train_cer", "loss": "train_loss", "val_CER": "val_cer", "val_loss": "val_loss"}
# tfaip's BenchmarkCallback table, printed at every epoch's end: "Test Total" of the "Last" row is the seconds the
# last validation took (tfaip/trainer/callbacks/benchmark_callback.py); an epoch without validation repeats it
_LAST_TIME = re.compile(r"^\|\s*Last Time Per\s*\|")
# tfaip's early-stopping verdict, printed before the epoch's results line with the values unrounded: the engine
# judges "better" on these (and exports best.ckpt by them), not on the results line's four decimals
_FLOAT = r"(-?[\d.]+(?:e[-+]?\d+)?)"
_BETTER = re.compile(rf"Better value of val_CER found\. Old = \S+, Best = {_FLOAT}")
_NOT_BETTER = re.compile(rf"No better value of val_CER = {_FLOAT} found\. Keeping best = {_FLOAT}")


class Cala2Parser(ProgressParser):
    """tfaip's output in epochs. The best so far is the engine's own verdict where it prints one (the
    early-stopping lines, unrounded), so that the console, the state and MLflow name the model that
    best.ckpt holds; only output without them (older tfaip, early stopping off) is compared here."""

    _verdict: tuple[float, float, bool] | None = None  # (val CER, best, better) of the epoch being printed

    def parse(self, line: str) -> list[Update]:
        better, worse = _BETTER.search(line), _NOT_BETTER.search(line)
        if better:
            self._verdict = (float(better.group(1)), float(better.group(1)), True)
            return []
        if worse:
            self._verdict = (float(worse.group(1)), float(worse.group(2)), False)
            return []
        if _LAST_TIME.match(line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            try:
                self._last_val_s = float(cells[4])  # Benchmark | Train Total | … | Test Total | …
            except (IndexError, ValueError):
                self._last_val_s = None
            return []
        m = _EPOCH.search(line)
        if not m:
            return []
        epoch = int(m.group(1))
        values = {k: float(v) for k, v in _PAIR.findall(m.group(2))}
        metrics = {_NAMES[k]: v for k, v in values.items() if k in _NAMES}
        verdict, self._verdict = self._verdict, None
        if "val_cer" in metrics and verdict is not None:
            metrics["val_cer"], best, improved = verdict
            if improved or self.best_val_cer is None or self.best_val_cer != best:
                # (a resume without a recorded best learns the engine's here; its epoch stays unknown)
                self.best_epoch = float(epoch) if improved else None
            self.best_val_cer = best
            metrics["best_val_cer"] = best
        elif "val_cer" in metrics:
            metrics["best_val_cer"] = self._best(metrics["val_cer"], float(epoch))
        if "val_cer" in metrics:
            self.checks_seen += 1
            if (
                self._last_val_s is not None
            ):  # this epoch validated: its table's test time is this validation's
                self.val_seconds += self._last_val_s
        self._last_val_s = None
        metrics["stage"] = float(self.stage)
        self.epochs_seen += 1
        return [Update(self._offset() + epoch, metrics, check=True)]


class Cala2(Engine):
    name = "cala2"
    major = 2
    eval_rules = "calamari2"
    best_weights = "best.ckpt"
    Parser = Cala2Parser
    position = "epoch"

    def train_argv(self, train: Any, inp: TrainInputs) -> list[str]:
        if inp.resume_from is not None:
            # tfaip's resume parses the checkpoint's trainer parameters and takes overrides of them (the
            # schedule follows: learning_rate.epochs is set from trainer.epochs when training starts)
            extend = [] if inp.extend_to is None else ["--trainer.epochs", str(inp.extend_to)]
            return ["calamari-resume-training", str(inp.resume_from), *extend]
        argv = [
            "calamari-train",
            "--trainer.output_dir",
            str(inp.model_dir),
            "--trainer.epochs",
            str(train.epochs),
            "--trainer.random_seed",
            str(train.seed),
            "--trainer.export_best",
            "True",
            "--trainer.progress_bar_mode",
            "2",  # one progress line every few seconds, not a \r-redrawn bar
            "--train.batch_size",
            str(train.batch_size),
            "--train.num_processes",
            str(train.workers),
            "--n_augmentations",
            str(train.augmentations),
            "--early_stopping.n_to_go",
            str(train.early_stopping_patience or -1),
            "--early_stopping.frequency",
            str(train.val_every),  # the epochs that validate are the ones early stopping can judge
            "--codec.keep_loaded",
            flag(train.codec == "keep_loaded"),
            "--data.skip_invalid_gt",
            flag(train.skip_invalid),
            "--train.skip_invalid",
            flag(train.skip_invalid),
            "--val.skip_invalid",
            flag(train.skip_invalid),
        ]
        if train.val_every != 1:
            argv += ["--trainer.val_every_n", str(train.val_every)]
        if train.samples_per_epoch:
            argv += ["--trainer.samples_per_epoch", str(train.samples_per_epoch)]
        if train.prefetch is not None:
            argv += ["--train.prefetch", str(train.prefetch)]
        for key, flag_name in (
            ("val_batch_size", "--val.batch_size"),
            ("val_workers", "--val.num_processes"),
            ("val_prefetch", "--val.prefetch"),
        ):
            if train.get(key) is not None:
                argv += [flag_name, str(train[key])]
        if not train.preload or inp.on_ramdisk:
            argv += ["--train.preload", "False", "--val.preload", "False"]
        if inp.network:
            argv += ["--network", inp.network]
        if train.get("learning_rate") is not None:
            argv += ["--learning_rate.lr", str(train.learning_rate)]
        if inp.warmstart:
            argv += ["--warmstart.model", inp.warmstart]
        if inp.gpus > 1:
            argv += ["--device.gpus", *[str(i) for i in range(inp.gpus)], "--device.dist_strategy", "mirror"]
        elif inp.gpus == 1:
            argv += ["--device.gpus", "0"]
        argv += ["--train.images", *inp.train, "--val.images", *inp.val]
        return argv + list(train.extra_args)

    def predict_argv(
        self, program: str, checkpoint: Path, files: str, out_dir: Path, batch_size: int
    ) -> list[str]:
        return [
            program,
            "--checkpoint",
            str(checkpoint),
            "--data.images",
            files,
            "--output_dir",
            str(out_dir),
            "--pipeline.batch_size",
            str(batch_size),
            "--verbose",
            "False",
            "--predictor.progress_bar",
            "False",
        ]

    def owns(self, model_dir: Path) -> bool:
        return (model_dir / "checkpoint").is_dir() or (model_dir / "best.ckpt").is_dir()

    def checkpoints(self, model_dir: Path) -> list[Path]:
        pattern = _glob.escape(str(model_dir)) + "/checkpoint/checkpoint_*/trainer_params.json"
        return [
            p
            for p in map(Path, _glob.glob(pattern))
            if _NUMBERED.match(p.parent.name)
            and (p.parent / "variables").is_dir()
            and read_json_if_complete(p)
        ]

    RESTORE_ERRORS = (
        "Read less bytes than requested",  # TensorFlow's checkpoint reader on truncated variables
        "DataLossError",
        "Unable to open table file",
        "Checksum does not match",
        "truncated record",
        "Failed to restore",
        "Could not find variable",
        "Unsuccessful TensorSliceReader",
    )

    def checkpoint_files(self, checkpoint: Path) -> list[Path]:
        return [checkpoint.parent]  # checkpoint/checkpoint_NNNN/ (trainer_params.json, variables/, …)

    def record(self, checkpoint: Path) -> Path:
        return checkpoint

    def checkpoint_name(self, checkpoint: Path) -> str:
        return checkpoint.parent.name  # checkpoint_NNNN (the checkpoint is its trainer_params.json)

    def predictable(self, checkpoints: list[Path], out_dir: Path, env: Any) -> list[tuple[Path | None, str]]:
        """Export each checkpoint as ``out_dir/stage<k>-epoch<NNNN>.ckpt.json`` + ``.ckpt/`` (one engine
        process for all; its output in ``out_dir/export.log``)."""
        from hsbcala.engines.process import EngineProcess

        if not checkpoints:
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        names = [
            f"stage{stage + 1}-epoch{epoch:04d}" for stage, epoch in map(self.checkpoint_key, checkpoints)
        ]
        spec = {"out": str(out_dir), "checkpoints": [[str(c.parent), n] for c, n in zip(checkpoints, names)]}
        argv = env.wrap([env.program("python"), str(EXPORT_SCRIPT), json.dumps(spec, ensure_ascii=True)])
        log = out_dir / "export.log"
        with EngineProcess(argv, log, log_mode="w") as proc:
            summary = [line for line in proc.lines() if line.startswith('{"exported"')]
            code = proc.wait()
        if code != 0 or not summary:
            raise EngineError(
                f"exporting the Calamari 2 checkpoints as models failed (exit {code}, log: {log}): "
                f"{proc.last_lines()}"
            )
        done = {e["name"]: e for e in json.loads(summary[-1])["exported"]}
        return [
            (Path(done[n]["model"]), "") if done[n]["error"] is None else (None, done[n]["error"])
            for n in names
        ]

    def checkpoint_key(self, checkpoint: Path) -> tuple[int, int]:
        d = read_json(checkpoint)
        return int(d.get("current_stage", 0) or 0), int(d.get("current_epoch", 0) or 0)

    extendable = True

    def stored(self, checkpoint: Path) -> Stored:
        d = read_json(checkpoint)  # trainer_params.json
        lr = (d.get("learning_rate") or {}).get("lr")
        return Stored(
            epochs=int(d["epochs"]),
            epoch=int(d.get("current_epoch", 0) or 0),
            batch_size=int(d["gen"]["setup"]["train"]["batch_size"]),
            learning_rate=None if lr is None else float(lr),
        )

    def prepare_resume(self, checkpoint: Path, model_dir: Path) -> list[str]:
        # tfaip resumes from <output_dir>/<saved_checkpoint_sub_dir> and writes everything below output_dir
        return retarget(checkpoint, ("output_dir", "early_stopping.best_model_output_dir"), model_dir)

    def resume_point(self, checkpoint: Path) -> tuple[int, int]:
        return self.checkpoint_key(checkpoint)

    def resume_best(self, checkpoint: Path) -> tuple[float | None, int | None]:
        d = read_json(checkpoint)
        es = d.get("early_stopping") or {}
        if es.get("current") is None or es.get("mode", "min") != "min":
            return None, None
        # n: epochs since the best, the best's own counted as 1, where every epoch counts (frequency 1)
        n, epoch = int(es.get("n") or 0), int(d.get("current_epoch", 0) or 0)
        at = epoch - n + 1 if n >= 1 and int(es.get("frequency") or 1) == 1 and epoch - n + 1 >= 1 else None
        return float(es["current"]), at

    def progress_parser(
        self, train: Any, n_train: int, *, stage: int = 0, start: int = 0, best_val_cer: float | None = None
    ) -> ProgressParser:
        return self.Parser(per_stage=train.epochs, stage=stage, start=start, best_val_cer=best_val_cer)

    def lines_done(self, parser: ProgressParser, train: Any, n_train: int) -> int:
        return parser.epochs_seen * (train.samples_per_epoch or n_train)

    # -- issue 19: the version's rules (base.Engine)
    weight_suffixes = ("", ".h5")  # 2.3 (model version 6): a SavedModel X.ckpt/; 2.0-2.2 (<= 5): X.ckpt.h5
    eval_replacements = ()
    eval_description = "NFC, whitespace runs to one space, stripped (as calamari-eval 2.3.1)"

    def check_weights(self, model_json: Path, model_version: object) -> str | None:
        if isinstance(model_version, int) and model_version <= 5:
            return super().check_weights(model_json, model_version)
        ckpt = model_json.with_name(model_json.name[: -len(".json")])
        variables = ckpt / "variables"
        if (
            (ckpt / "saved_model.pb").is_file()
            and (variables / "variables.index").is_file()
            and any(p.stat().st_size > 0 for p in variables.glob("variables.data-*"))
        ):
            return None
        return (
            f"expected the SavedModel {ckpt}/ (saved_model.pb, variables/variables.index, "
            f"variables/variables.data-*)"
        )

    def check_train(self, train: Any) -> str | None:
        if train.early_stopping_patience == 1:
            return (
                "train.early_stopping_patience=1 cannot work: Calamari 2 (tfaip) stops early only when n_to_go > 1; "
                "use 0 (off) or 2 or more"
            )
        return None
