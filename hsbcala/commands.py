"""The one place where hsbcala's training vocabulary (``cfg.train``) becomes a Calamari command line.

Both versions get "as similar settings as the two CLIs allow":

==========================  =====================================  =========================================
vocabulary (train.*)        Calamari 2 (2.3.1)                     Calamari 1 (1.0.7)
==========================  =====================================  =========================================
epochs / iterations         --trainer.epochs E                     --max_iters (iterations, or E x I)
samples_per_epoch           --trainer.samples_per_epoch            sets I = ceil(samples / batch_size)
batch_size                  --train.batch_size                     --batch_size
augmentations               --n_augmentations                      --n_augmentations
early_stopping_patience P   --early_stopping.n_to_go P (1/epoch)   --early_stopping_nbest P,
                                                                   --early_stopping_frequency I
(checkpoints)               every epoch (Calamari 2 default)       --checkpoint_frequency I
(training metrics)          every epoch                            --display I
seed                        --trainer.random_seed                  --seed
workers                     --train.num_processes                  --num_threads
prefetch                    --train.prefetch                       (no equivalent)
preload=false / RAM disk    --train.preload False --val.preload …  --train_data_on_the_fly --validation_…
skip_invalid=false          --data.skip_invalid_gt False           --no_skip_invalid_gt
codec=recompute             --codec.keep_loaded False              (default)
codec=keep_loaded           --codec.keep_loaded True               --keep_loaded_codec
warm start                  --warmstart.model M.ckpt.json          --weights M.ckpt
network                     --network N                            --network N
cluster.gpus > 1            --device.gpus 0 … --device.dist_strategy mirror   (one GPU, no flag)
==========================  =====================================  =========================================

``I`` (iterations per epoch) = ceil(lines per epoch / batch_size), where lines per epoch is
``train.samples_per_epoch`` or the number of training lines: Calamari 2's epoch is one pass over the training
lines, so Calamari 1 checks early stopping and writes a checkpoint once per such pass, and its iteration budget
is ``train.iterations`` if set (the original scripts: 5,000,000) else ``train.epochs x I``.

Resume: Calamari 2 reads every setting back from the checkpoint (``calamari-resume-training
<checkpoint>/trainer_params.json``); Calamari 1 needs the data again (``--checkpoint … --files … --validation``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainInputs:
    """What a command needs besides the vocabulary: resolved paths and facts about the data and models."""

    model_dir: Path
    train: tuple[str, ...]  # image files or glob patterns, as Calamari gets them
    val: tuple[str, ...]
    n_train: int  # number of training lines (for Calamari 1's iteration arithmetic)
    warmstart: str | None = None  # already in the version's form (models.weights_arg)
    network: str | None = None  # from the warm-start model, or configured
    resume_from: Path | None = None  # Calamari 2: trainer_params.json; Calamari 1: model_*.ckpt
    on_ramdisk: bool = False
    gpus: int = 0


def iterations_per_epoch(train: Any, n_train: int) -> int:
    lines = train.samples_per_epoch or n_train
    return max(1, math.ceil(lines / train.batch_size))


def max_iterations(train: Any, n_train: int) -> int:
    """Calamari 1's iteration budget (see the module docstring)."""
    if train.iterations is not None:
        return int(train.iterations)
    return train.epochs * iterations_per_epoch(train, n_train)


def _bool(value: bool) -> str:
    return "True" if value else "False"


def cala2_argv(train: Any, inp: TrainInputs) -> list[str]:
    if inp.resume_from is not None:
        return ["calamari-resume-training", str(inp.resume_from)]
    argv = [
        "calamari-train",
        "--trainer.output_dir", str(inp.model_dir),
        "--trainer.epochs", str(train.epochs),
        "--trainer.random_seed", str(train.seed),
        "--trainer.export_best", "True",
        "--trainer.progress_bar_mode", "2",  # one progress line every few seconds, not a \r-redrawn bar
        "--train.batch_size", str(train.batch_size),
        "--train.num_processes", str(train.workers),
        "--n_augmentations", str(train.augmentations),
        "--early_stopping.n_to_go", str(train.early_stopping_patience or -1),
        "--early_stopping.frequency", "1",
        "--codec.keep_loaded", _bool(train.codec == "keep_loaded"),
        "--data.skip_invalid_gt", _bool(train.skip_invalid),
        "--train.skip_invalid", _bool(train.skip_invalid),
        "--val.skip_invalid", _bool(train.skip_invalid),
    ]
    if train.samples_per_epoch:
        argv += ["--trainer.samples_per_epoch", str(train.samples_per_epoch)]
    if train.prefetch is not None:
        argv += ["--train.prefetch", str(train.prefetch)]
    if not train.preload or inp.on_ramdisk:
        argv += ["--train.preload", "False", "--val.preload", "False"]
    if inp.network:
        argv += ["--network", inp.network]
    if inp.warmstart:
        argv += ["--warmstart.model", inp.warmstart]
    if inp.gpus > 1:
        argv += ["--device.gpus", *[str(i) for i in range(inp.gpus)], "--device.dist_strategy", "mirror"]
    elif inp.gpus == 1:
        argv += ["--device.gpus", "0"]
    argv += ["--train.images", *inp.train, "--val.images", *inp.val]
    return argv + list(train.extra_args)


def cala1_argv(train: Any, inp: TrainInputs) -> list[str]:
    data = ["--files", *inp.train, "--validation", *inp.val]
    skip = [] if train.skip_invalid else ["--no_skip_invalid_gt"]
    if inp.resume_from is not None:
        return ["calamari-resume-training", "--checkpoint", str(inp.resume_from), *data, *skip]
    per_epoch = iterations_per_epoch(train, inp.n_train)
    argv = [
        "calamari-train",
        "--output_dir", str(inp.model_dir),
        "--max_iters", str(max_iterations(train, inp.n_train)),
        "--seed", str(train.seed),
        "--batch_size", str(train.batch_size),
        "--num_threads", str(train.workers),
        "--n_augmentations", str(train.augmentations),
        "--early_stopping_frequency", str(per_epoch),
        "--early_stopping_nbest", str(train.early_stopping_patience or 1_000_000_000),
        "--checkpoint_frequency", str(per_epoch),
        "--display", str(max(2, per_epoch)),  # training CER/loss once per check (values <= 1 mean epochs)
        "--no_progress_bars",
    ]
    if train.codec == "keep_loaded":
        argv.append("--keep_loaded_codec")
    if not train.preload or inp.on_ramdisk:
        argv += ["--train_data_on_the_fly", "--validation_data_on_the_fly"]
    if inp.network:
        argv += ["--network", inp.network]
    if inp.warmstart:
        argv += ["--weights", inp.warmstart]
    return argv + skip + data + list(train.extra_args)


def engine_argv(version: str, train: Any, inp: TrainInputs) -> list[str]:
    """The Calamari command (program name first, resolved later in the engine environment)."""
    if version == "cala2":
        return cala2_argv(train, inp)
    if version == "cala1":
        return cala1_argv(train, inp)
    raise ValueError(f"unknown Calamari version {version!r}")


def profile_argv(profiler: Any, model_dir: Path, argv: list[str]) -> list[str]:
    """Wrap ``argv`` in ``nsys profile`` when the profiler is nsys (the report lands in the model directory)."""
    if profiler.name != "nsys":
        return argv
    return [profiler.executable, "profile", *profiler.args, "-o", str(model_dir / profiler.report_name), *argv]
