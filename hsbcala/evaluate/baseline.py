"""``eval.baseline=true``: the model the training warm-started from, evaluated on the same lines with its own
engine, as a row of the table and a paired comparison ("fine-tuning changed CER by −x.xx points [CI]").

Where the baseline comes from (:func:`find`), in this order:

1. ``<model_dir>/warmstart/<name>.ckpt.json`` + its weights: the copy of the pretrained ensemble member the
   engine started from (:func:`hsbcala.train.plan.copy_warmstart`; kept in the model directory for good). Calamari
   2 may have upgraded the copy's format in place; its weights are the pretrained ones.
2. the pretrained model named in ``<model_dir>/codec-report.json`` (``model``: written for every fresh warm
   start), if it is still there;
3. otherwise there is no baseline: a row marked ``missing`` with the reason (the copy and the recorded model
   gone), never a number. A model directory that records no warm start at all (neither 1 nor 2: every warm start
   writes both) was trained from scratch, like the demo: nothing to compare with, said in one quiet line, no row.

The baseline is predicted by the same engine as the model (a warm start is always of the training's own
Calamari version: the training refuses another), over the lines already staged for the model, and scored with
the same normalisation, intervals and classes (files in ``<job dir>/baseline/<set>/``). A fine-tuned model
with a higher CER than its baseline is flagged in the table's notes and in the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hsbcala import engines
from hsbcala.core import fsutil
from hsbcala.core.console import say
from hsbcala.core.errors import EngineError
from hsbcala.evaluate import comparison, intervals, scoring

DIR = "baseline"  # <job dir>/baseline/<set>/lines.tsv …


def find(model_dir: Path | None, engine: Any) -> tuple[Path | None, str]:
    """(the warm-start model's ``.ckpt.json``, where it was found) or (None, why there is none)."""
    from hsbcala.engines import modeljson
    from hsbcala.modeldir import WARMSTART_DIR

    if model_dir is None:
        return None, "eval.model is outside a model directory: no warm start is recorded"
    report = (
        fsutil.read_json(model_dir / "codec-report.json")
        if (model_dir / "codec-report.json").is_file()
        else {}
    )
    recorded = Path(report["model"]) if report.get("model") else None
    copies = sorted((model_dir / WARMSTART_DIR).glob("*.ckpt.json"))
    candidates = [(c, f"the warm-start copy {c}") for c in copies]
    if recorded is not None:
        candidates.append((recorded, f"the warm-start model {recorded} (codec-report.json)"))
    for path, where in candidates:
        if path.is_file() and engines.weights_of(path):
            info = modeljson.read_model(path)
            if info.version != engine.major:
                return None, f"{where} is a {engines.label(info.version)} model, not {engine.name}"
            return path, where
    if not candidates:
        return None, (
            f"{model_dir} records no warm start (no {WARMSTART_DIR}/ copy, no codec-report.json): "
            f"trained from scratch, so there is no baseline to compare with"
        )
    return None, (
        f"the warm-start model is gone: no {model_dir / WARMSTART_DIR}/*.ckpt.json with weights"
        + (f", and {recorded} (recorded in codec-report.json) is missing" if recorded else "")
    )


def from_scratch(model_dir: Path | None) -> bool:
    """Whether the model directory records no warm start at all (no ``warmstart/`` copy, no codec-report.json)."""
    from hsbcala.modeldir import WARMSTART_DIR

    return (
        model_dir is not None
        and not (model_dir / "codec-report.json").is_file()
        and not any((model_dir / WARMSTART_DIR).glob("*.ckpt.json"))
    )


def evaluate(cfg: Any, p: Any, result: dict, out_dir: Path, images: list[Path], links: list[Path]) -> None:
    """Add ``result["baseline"]`` (a row: scored sets, or an error) and ``result["baseline_differences"]``
    (per set: the model − its baseline, paired) and flag a model worse than its baseline."""
    label = f"{result['model']} baseline"
    ckpt, where = find(p.model_dir, engines.get(p.version))
    if ckpt is None and from_scratch(p.model_dir):  # not a failure: there is no baseline to miss
        result["baseline_differences"] = []
        say(f"eval.baseline: {where}")
        return
    row = {
        "model": label,
        "version": p.version,
        "script": result.get("script"),
        "groups": p.groups,
        "sets": [],
        "error": None,
        "source": where,
    }
    result["baseline"] = row
    result["baseline_differences"] = []
    if ckpt is None:
        row["error"] = where
        say(f"warning: eval.baseline: {where}; its row is marked missing")
        return
    row["model"] = label = f"{result['model']} baseline ({_name(ckpt, p.model_dir)})"
    log_path = out_dir / "baseline-predict.log"
    say(f"evaluating the baseline {ckpt} on the same lines; calamari-predict log: {log_path}")
    from hsbcala.evaluate.predict import predict

    try:
        preds, seconds, _ = predict(
            p, ckpt, images, links, links[0].parent.parent / "pred-baseline", log_path, cfg
        )
    except EngineError as exc:
        row["error"] = f"the baseline {ckpt} could not be evaluated: {exc}"
        say(f"warning: eval.baseline: {row['error']}")
        return
    row.update(scoring.score_sets(p.sets, p.groups, p.rules, preds, out_dir / DIR, scoring.options(cfg.eval)))
    row.update(checkpoint=str(ckpt), predict={"seconds": round(seconds, 3), "lines": len(images)})
    settings = {k: result["intervals"][k] for k in ("resamples", "level", "seed")}
    for s in result["sets"]:
        mine = scoring.read_lines(out_dir / s["name"] / scoring.LINES_FILE)
        base = scoring.read_lines(out_dir / DIR / s["name"] / scoring.LINES_FILE)
        d = comparison.paired(
            mine,
            base,
            set_name=s["name"],
            a=result["model"],
            b=label,
            by_documents=comparison.by_documents(s),
            settings=settings,
        )
        d["sentence"] = finetune_sentence(d)
        result["baseline_differences"].append(d)
        say(d["sentence"])
    worse = [d for d in result["baseline_differences"] if d["point"] is not None and d["point"] > 0]
    if worse:
        result["flag"] = "WORSE than its baseline: " + "; ".join(
            f"{d['set']} {100 * d['point']:+.2f} points" + (" (beyond noise)" if d["excludes_zero"] else "")
            for d in worse
        )
        say(f"warning: {result['model']}: {result['flag']}")


def _name(ckpt: Path, model_dir: Path | None) -> str:
    """A short name of the baseline: the pretrained model's directory and file (from codec-report.json when
    the copy in ``warmstart/`` is used), else the file."""
    from hsbcala.modeldir import WARMSTART_DIR

    if ckpt.parent.name != WARMSTART_DIR or model_dir is None:
        return f"{ckpt.parent.name}/{ckpt.name}"
    path = model_dir / "codec-report.json"
    recorded = (fsutil.read_json(path) if path.is_file() else {}).get("model")
    return f"{Path(recorded).parent.name}/{Path(recorded).name}" if recorded else f"warm start {ckpt.name}"


def finetune_sentence(d: dict) -> str:
    if d["point"] is None:
        return f"fine-tuning: no CER on '{d['set']}' (no GT characters)"
    iv = d["interval"]
    ci = intervals.bounds_text(iv, signed=True, na="[n/a]")
    verdict = (
        "" if iv.get("low") is None else (" (beyond noise)" if d["excludes_zero"] else " (within noise)")
    )
    worse = " — WORSE than the baseline" if d["point"] > 0 else ""
    return (
        f"fine-tuning changed CER on '{d['set']}' by {100 * d['point']:+.2f} points {ci}{verdict}{worse} "
        f"({d['lines']} lines)"
    )
