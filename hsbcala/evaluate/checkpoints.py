"""``eval.checkpoints=all``: score every checkpoint of the training (both stages) on the evaluation sets, log the
curve to the training run in MLflow, and name the best checkpoint per set.

The engine makes each checkpoint a model calamari-predict loads (:meth:`hsbcala.engines.base.Engine.predictable`:
Calamari 1's ``model_NNNN.ckpt.json`` + ``.h5`` are models already; Calamari 2's ``checkpoint/checkpoint_NNNN/``
are training states, exported into ``<job dir>/checkpoints/`` with the weights its validation and its best
model use; only the exports best on some set are kept). Each is then one more calamari-predict pass over the lines already staged for the model
(:func:`hsbcala.evaluate.baseline.predict`), scored with the same normalisation (CER and its interval per set:
:func:`hsbcala.evaluate.scoring.set_cer`). The curve goes to the model's MLflow run (the training run, or the separate
evaluation run) as ``eval/<set>/checkpoint_cer_stage<k>`` (k = 1 for the augmented stage, 2 for the second
stage on the original lines), one point per checkpoint at the step the training's own curves use for it
(:meth:`hsbcala.engines.base.ProgressParser.step_at`), so "best on validation" (``val_cer``) and "best on this
set" can be compared on one chart.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hsbcala import engines
from hsbcala.core.console import say
from hsbcala.core.errors import EngineError
from hsbcala.evaluate import scoring
from hsbcala.track import info as trackinfo


def evaluate(
    cfg: Any,
    p: Any,
    result: dict,
    images: list[Path],
    links: list[Path],
    out_dir: Path,
    training_params: dict[str, str] | None = None,
) -> list:
    """Score every checkpoint; fill ``result["checkpoints"]`` and ``result["best_checkpoint"]``; return the
    curve's MLflow points ``(metric, value, step)``."""
    from hsbcala.evaluate.predict import predict

    engine = engines.get(p.version)
    found = engine.checkpoints(p.model_dir) if p.model_dir is not None else []
    result["checkpoints"] = []
    if not found:
        where = p.model_dir if p.model_dir is not None else p.checkpoint.parent
        result["checkpoints_note"] = (
            f"eval.checkpoints=all: {where} holds no checkpoints (only {p.checkpoint.name})"
        )
        say(f"warning: {result['checkpoints_note']}")
        return []
    found.sort(key=engine.checkpoint_key)
    step_at = _steps(cfg, p, engine, training_params or {})
    work = out_dir / "checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    say(f"eval.checkpoints=all: {len(found)} checkpoints, one calamari-predict pass each (logs: {work})")
    models = engine.predictable(found, work, p.env)
    opts = scoring.options(cfg.eval)
    points = []
    for k, (cp, (model, why)) in enumerate(zip(found, models, strict=True), 1):
        stage, position = engine.checkpoint_key(cp)
        row = {
            "checkpoint": str(cp),
            "name": engine.checkpoint_name(cp),
            "model": str(model) if model is not None else None,
            "stage": stage + 1,
            "position": position,
            "step": step_at(stage, position),
            "error": why or None,
            "sets": {},
        }
        result["checkpoints"].append(row)
        if model is not None:
            try:
                preds, _, _ = predict(
                    p,
                    model,
                    images,
                    links,
                    links[0].parent.parent / f"pred-{k:03d}",
                    work / f"predict-{k:03d}.log",
                    cfg,
                )
            except EngineError as exc:
                row["error"] = str(exc)
        if row["error"]:
            say(f"warning: eval.checkpoints=all: {cp}: {row['error']}")
            continue
        for s in p.sets:
            iv = scoring.set_cer(s, p.rules, preds, opts)
            row["sets"][s.name] = {"cer": iv.point, "low": iv.low, "high": iv.high}
            if iv.point is not None:
                points.append((f"eval/{s.name}/checkpoint_cer_stage{stage + 1}", iv.point, row["step"]))
        say(
            f"checkpoint {k}/{len(found)} {row['name']} (stage {stage + 1}, {engine.position} {position}): "
            + ", ".join(f"{n} {100 * v['cer']:.2f} %" for n, v in row["sets"].items() if v["cer"] is not None)
        )
    result["best_checkpoint"] = _best(p, result)
    _drop_exports(result, work)
    return points


def _drop_exports(result: dict, work: Path) -> None:
    """Delete the models exported into ``work`` for scoring (Calamari 2: a SavedModel per checkpoint) except
    the best on some set: that one may be the model to keep (``model`` in ``best_checkpoint``)."""
    keep = {b["model"] for b in result["best_checkpoint"].values()}
    for row in result["checkpoints"]:
        model = Path(row["model"]) if row["model"] else None
        if model is None or model.parent != work or str(model) in keep:
            continue  # (Calamari 1's checkpoints are the training's own files)
        shutil.rmtree(model.with_name(model.name[: -len(".json")]), ignore_errors=True)
        model.unlink(missing_ok=True)
        row["model"] = None


def _best(p: Any, result: dict) -> dict:
    """Per set: the checkpoint with the lowest CER (the earlier one on a tie)."""
    best = {}
    for s in p.sets:
        scored = [r for r in result["checkpoints"] if (r["sets"].get(s.name) or {}).get("cer") is not None]
        if not scored:
            continue
        r = min(scored, key=lambda r: (r["sets"][s.name]["cer"], r["stage"], r["position"]))
        best[s.name] = {k: r[k] for k in ("checkpoint", "name", "model", "stage", "position")} | {
            "cer": r["sets"][s.name]["cer"]
        }
        exported = next(x for x in result["sets"] if x["name"] == s.name)["overall"]["cer"]
        say(
            f"best checkpoint on '{s.name}': {r['name']} (stage {r['stage']}, "
            f"{r['position']}) CER {100 * best[s.name]['cer']:.2f} %; the exported best model: "
            f"{100 * exported:.2f} %"
        )
    return best


def _steps(cfg: Any, p: Any, engine: Any, params: dict[str, str]):
    """(stage, position) -> the step the training's curves use for that point, by the engine's progress
    parser set up with the *training's* settings (its MLflow run's params ``train.*``, else this
    configuration's) as the training's MLflow run was; the position itself when the training's size is not
    known (no manifest)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from hsbcala.core import fsutil
    from hsbcala.core.console import swallowed
    from hsbcala.core.errors import HsbcalaError

    def positions(stage: int, position: int) -> int:
        return position

    # an old or foreign model directory (no manifest, or one without the totals), a damaged manifest
    # (fsutil.Unreadable) or a param of the training that does not fit this engine's parser
    expected = (KeyError, TypeError, ValueError, HsbcalaError, OmegaConfBaseException)
    try:
        manifest = fsutil.read_json(p.model_dir / "manifest.json")
        if not manifest:
            say(f"{p.model_dir} has no manifest.json: the curve's steps are the checkpoints' positions")
            return positions
        n_train = int(manifest["totals"]["train"]["lines"])
        train = OmegaConf.to_container(cfg.train, resolve=True)
        for key in train:
            if f"train.{key}" in params:  # what the training ran with
                train[key] = trackinfo.param_value(params[f"train.{key}"])
        parser = engine.progress_parser(OmegaConf.create(train), n_train)
    except expected as exc:
        swallowed(
            f"placing the checkpoints on the training's curve ({p.model_dir})",
            exc,
            expected,
            "the curve's steps are the checkpoints' positions",
        )
        return positions
    return parser.step_at
