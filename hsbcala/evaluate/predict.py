"""The evaluation's plan and its one calamari-predict pass, shared by everything that lets a model read lines.

:class:`Plan` (which model, which version and environment, which sets and groups), :func:`stage` (the lines as
unique symlinks, so predictions never collide), :func:`predict_argv` and :func:`predict` (one pass of the version's
``calamari-predict`` through the one process runner). ``run`` (``python evaluate.py``), the baseline, the
checkpoint scores, the release check and GT triage all use this module; nothing here imports them back.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbcala import engines
from hsbcala.core.errors import EngineError
from hsbcala.engines import envs
from hsbcala.engines.base import Engine
from hsbcala.engines.process import EngineProcess
from hsbcala.evaluate import sets as evalsets


@dataclass
class Plan:
    label: str
    version: str
    checkpoint: Path  # the model's .ckpt.json
    model_dir: Path | None  # None: eval.model outside a model directory
    env: envs.EngineEnv
    groups: dict[str, list[str]]
    sets: list[evalsets.EvalSet]
    rules: str
    warnings: list[str] = field(default_factory=list)
    own_val: bool = False  # the main set is the validation lines the model's manifest records

    @property
    def images(self) -> list[Path]:
        """Every line of every set, once (one prediction pass)."""
        seen: dict[Path, None] = {}
        for s in self.sets:
            seen.update(dict.fromkeys(s.images))
        return list(seen)


def predict_argv(
    engine: Engine,
    program: str,
    checkpoint: Path,
    lines_dir: Path,
    out_dir: Path,
    batch_size: int,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The engine's calamari-predict command: every image in ``lines_dir`` into ``out_dir/<stem>.pred.txt``.

    The glob is expanded by Calamari itself (no argument-length limit for large sets)."""
    files = os.path.join(glob.escape(str(lines_dir)), "*")
    return engine.predict_argv(program, checkpoint, files, out_dir, batch_size) + list(extra)


def predict(
    p: Plan,
    checkpoint: Path,
    images: list[Path],
    links: list[Path],
    pred_dir: Path,
    log_path: Path,
    cfg: Any,
    *,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[dict[Path, str | None], float, list[str]]:
    """One calamari-predict pass of ``checkpoint`` over the staged lines (``links``: :func:`stage`) into
    ``pred_dir``: the predictions by image (None: the engine skipped that line), its seconds and command.
    ``meanwhile``: work done while the engine starts. A pass that predicts no line at all is an error."""
    argv = p.env.wrap(
        predict_argv(
            engines.get(p.version),
            p.env.program("calamari-predict"),
            checkpoint,
            links[0].parent,
            pred_dir,
            cfg.eval.batch_size,
            list(cfg.eval.predict_args),
        )
    )
    pred_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with EngineProcess(argv, log_path, cwd=log_path.parent, log_mode="w") as proc:
        if meanwhile is not None:
            meanwhile()
        code = proc.wait()
        if code != 0:
            raise EngineError(
                f"calamari-predict exited with code {code} (log: {log_path}): {proc.last_lines()}"
            )
        tail = proc.last_lines()
    seconds = time.monotonic() - t0
    out: dict[Path, str | None] = {}
    for img, link in zip(images, links, strict=True):
        f = pred_dir / f"{link.name.split('.', 1)[0]}.pred.txt"
        out[img] = f.read_text(encoding="utf-8") if f.is_file() else None
    if all(v is None for v in out.values()):
        raise EngineError(f"calamari-predict wrote no prediction into {pred_dir} (log: {log_path}): {tail}")
    return out, seconds, argv


def stage(images: list[Path], lines_dir: Path) -> list[Path]:
    """Symlink the images as ``000001<suffix>`` …: unique names, so predictions never collide."""
    lines_dir.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(images))))
    out = []
    for i, img in enumerate(images, 1):
        link = lines_dir / f"{i:0{width}d}{img.suffix.lower()}"
        os.symlink(img, link)
        out.append(link)
    return out
