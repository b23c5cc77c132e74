"""``eval.checkpoints=all``: score every checkpoint of the training (both stages) on the evaluation sets, log the
curve to the training run in MLflow, and name the best checkpoint per set.

Each checkpoint is one more calamari-predict pass over the lines already staged for the model
(:func:`hsbcala.baseline.predict`), scored with the same normalisation (:mod:`hsbcala.cer`; CER and its interval
per set). The curve goes to the model's MLflow run (the training run, or the separate evaluation run) as
``eval/<set>/checkpoint_cer_stage<k>`` (k = 1 for the augmented stage, 2 for the second stage on the original
lines), one point per checkpoint at the step the training's own curves use for it (its epoch counted over both
stages; Calamari 1's iteration converted by its engine's progress parser), so "best on validation"
(``val_cer``) and "best on this set" can be compared on one chart.

Which checkpoints can be scored is the engine's matter: Calamari 1's ``model_NNNN.ckpt.json`` + ``.h5`` are
models calamari-predict loads. Calamari 2's ``checkpoint/checkpoint_NNNN/`` are training states (the training
graph's weights; loading them into the exported model's graph restores nothing: tried, every variable is
reported missing), so ``version=cala2`` is refused in :func:`check` until an export step exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hsbcala import cer, engines, intervals
from hsbcala.console import say
from hsbcala.errors import ConfigError, EngineError

#: versions whose checkpoints calamari-predict can load as they are
PREDICTABLE = {"cala1"}


def check(version: str) -> None:
    if version not in PREDICTABLE:
        raise ConfigError(
            f"eval.checkpoints=all: {version}'s checkpoints (checkpoint/checkpoint_NNNN/) are training states, "
            f"not models calamari-predict can load; only {', '.join(sorted(PREDICTABLE))} for now "
            f"(eval.checkpoints=best, or eval.model=FILE for one exported model)"
        )


def model_of(checkpoint: Path) -> Path:
    """The ``.ckpt.json`` calamari-predict takes for an engine checkpoint (Calamari 1: ``model_N.ckpt``)."""
    return checkpoint if checkpoint.name.endswith(".json") else Path(f"{checkpoint}.json")


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
    from hsbcala.baseline import predict

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
    step_of = _steps(cfg, p, engine, training_params or {})
    say(f"eval.checkpoints=all: scoring {len(found)} checkpoints, one calamari-predict pass each")
    settings = {k: result["intervals"][k] for k in ("resamples", "level", "seed")}
    points = []
    for k, cp in enumerate(found, 1):
        stage, position = engine.checkpoint_key(cp)
        log = out_dir / "checkpoints" / f"predict-{k:03d}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            preds, _ = predict(p, model_of(cp), images, links, links[0].parent.parent, log, cfg)
        except EngineError as exc:
            result["checkpoints"].append(
                {
                    "checkpoint": str(cp),
                    "stage": stage + 1,
                    "position": position,
                    "error": str(exc),
                    "sets": {},
                }
            )
            say(f"warning: eval.checkpoints=all: {cp}: {exc}")
            continue
        row = {
            "checkpoint": str(cp),
            "stage": stage + 1,
            "position": position,
            "step": step_of(stage, position),
        }
        row.update(error=None, sets={})
        for s in p.sets:
            errors, chars = [], []
            for img in s.images:
                gt, pr = cer.normalize(s.gt[img], p.rules), cer.normalize(preds.get(img) or "", p.rules)
                errors.append(cer.distance(gt, pr))
                chars.append(len(gt))
            units = [s.documents[img] for img in s.images] if s.documents else None
            iv = intervals.bootstrap_cer(errors, chars, units, **settings)
            row["sets"][s.name] = {"cer": iv.point, "low": iv.low, "high": iv.high}
            if iv.point is not None:
                points.append(
                    (f"eval/{s.name}/checkpoint_cer_stage{stage + 1}", iv.point, step_of(stage, position))
                )
        result["checkpoints"].append(row)
        say(
            f"checkpoint {k}/{len(found)} {cp.name} (stage {stage + 1}, {position}): "
            + ", ".join(f"{n} {100 * v['cer']:.2f} %" for n, v in row["sets"].items() if v["cer"] is not None)
        )
    best = {}
    for s in p.sets:
        scored = [r for r in result["checkpoints"] if (r["sets"].get(s.name) or {}).get("cer") is not None]
        if scored:
            r = min(scored, key=lambda r: (r["sets"][s.name]["cer"], r["stage"], r["position"]))
            best[s.name] = {
                "checkpoint": r["checkpoint"],
                "stage": r["stage"],
                "position": r["position"],
                "cer": r["sets"][s.name]["cer"],
            }
            say(
                f"best checkpoint on '{s.name}': {Path(r['checkpoint']).name} (stage {r['stage']}, "
                f"{r['position']}) CER {100 * r['sets'][s.name]['cer']:.2f} %; the exported best model: "
                f"{100 * next(x for x in result['sets'] if x['name'] == s.name)['overall']['cer']:.2f} %"
            )
    result["best_checkpoint"] = best
    return points


def _steps(cfg: Any, p: Any, engine: Any, params: dict[str, str]):
    """(stage, position) -> the step the training's curves use for that point: its epoch counted over both
    stages, the engine's progress parser converting Calamari 1's iterations with the *training's* settings
    (its MLflow run's params ``train.*``, else this configuration's) as the training's MLflow run does; the
    position itself when the training's size is not known (no manifest)."""
    import yaml
    from omegaconf import OmegaConf

    from hsbcala import fsutil

    try:
        manifest = fsutil.read_json(p.model_dir / "manifest.json")
        n_train = int(manifest["totals"]["train"]["lines"])
        train = OmegaConf.to_container(cfg.train, resolve=True)
        for key in train:
            if f"train.{key}" in params:  # what the training ran with (params are strings)
                train[key] = yaml.safe_load(str(params[f"train.{key}"]).replace("None", "null"))
        parser = engine.progress_parser(OmegaConf.create(train), n_train)
    except Exception:  # noqa: BLE001 - an old or foreign model directory: positions as they are
        return lambda stage, position: position

    def step(stage: int, position: int) -> int:
        parser.stage = stage
        # the parser's own mapping of an engine position to a metric step (stage offset, iterations → epochs)
        return int(parser._update(parser._offset() + position, {}).step)

    return step
