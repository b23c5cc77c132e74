"""Scoring an evaluation: CER per set and variant group, per-line table, confusions, MLflow metric names.

Pure but for writing ``<out_dir>/<set>/lines.tsv`` (every line: groups, GT, prediction, errors, CER) and
``confusions.tsv`` (the most frequent). The CER itself is :mod:`hsbcala.cer` (calamari-eval's normalisation,
summed edit distances over summed GT characters).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsbcala import cer, report
from hsbcala.console import say

RESULT_FILE = "eval-result.json"  # one evaluation job's result (read by hsbcala.comparison)


def score_sets(
    sets_in: Sequence[Any],
    groups: dict[str, list[str]],
    rules: str,
    predictions: dict[Path, str | None],
    out_dir: Path,
    n_confusions: int,
) -> dict:
    """CER per set (:class:`hsbcala.evaluate.EvalSet`) and group; per set ``lines.tsv`` and ``confusions.tsv``
    in ``out_dir/<set>/``."""
    sets = []
    for s in sets_in:
        overall = cer.Score()
        by_group = {g: cer.Score() for g in groups}
        member_sets = {g: set(m) for g, m in s.members.items()}
        rows = []
        missing = 0
        for img in s.images:
            raw = predictions.get(img)
            missing += raw is None
            gt, pred = cer.normalize(s.gt[img], rules), cer.normalize(raw or "", rules)
            al = cer.align(gt, pred)
            overall.add(gt, al)
            gs = [g for g in groups if img in member_sets[g]]
            for g in gs:
                by_group[g].add(gt, al)
            rows.append((img, gs, gt, pred, al))
        set_dir = out_dir / s.name
        set_dir.mkdir(parents=True, exist_ok=True)
        with open(set_dir / "lines.tsv", "w", encoding="utf-8") as f:
            f.write("image\tgroups\tchars\terrors\tcer\tgt\tprediction\n")
            for img, gs, gt, pred, al in rows:
                line_cer = f"{al.errors / len(gt):.4f}" if gt else ""
                f.write(f"{img}\t{','.join(gs)}\t{len(gt)}\t{al.errors}\t{line_cer}\t{gt}\t{pred}\n")
        with open(set_dir / "confusions.tsv", "w", encoding="utf-8") as f:
            f.write("count\tgt\tprediction\n")
            for (g, pr), n in overall.confusions.most_common(n_confusions):
                f.write(f"{n}\t{json.dumps(g, ensure_ascii=False)}\t{json.dumps(pr, ensure_ascii=False)}\n")
        sets.append(
            {
                "name": s.name,
                "key": s.key,
                "patterns": s.patterns,
                "skipped": len(s.skipped),
                "missing_predictions": missing,
                "ungrouped": s.ungrouped if groups else 0,
                "overall": overall.summary(),
                "groups": {g: (by_group[g].summary() if s.members[g] else None) for g in groups},
                "top_confusions": [[g, pr, n] for (g, pr), n in overall.confusions.most_common(10)],
            }
        )
        if missing:
            say(
                f"warning: {s.key}: {missing} lines got no prediction from calamari-predict (skipped by the "
                f"engine, see predict.log); counted as empty predictions, as calamari-eval does"
            )
    return {"normalization": rules, "normalization_description": cer.DESCRIPTION[rules], "sets": sets}


def summary(result: dict) -> str:
    s = result["sets"][0]
    groups = ", ".join(f"{g} {report.percent(v['cer'] if v else None)}" for g, v in s["groups"].items())
    return (
        f"{result['model']}: CER {report.percent(s['overall']['cer'])} (errors / GT characters) on "
        f"{s['overall']['lines']} lines of "
        f"{s['name']}" + (f" ({groups})" if groups else "")
    )


def metrics_of(result: dict) -> dict[str, float]:
    """MLflow metrics: ``eval/<set>/cer``, ``eval/<set>/cer_<group>`` (only where there is a number), counts."""
    out: dict[str, float] = {}
    for s in result["sets"]:
        o = s["overall"]
        if o["cer"] is not None:
            out[f"eval/{s['name']}/cer"] = o["cer"]
        out[f"eval/{s['name']}/lines"] = o["lines"]
        out[f"eval/{s['name']}/chars"] = o["chars"]
        out[f"eval/{s['name']}/errors"] = o["errors"]
        for g, v in s["groups"].items():
            if v is not None and v["cer"] is not None:
                out[f"eval/{s['name']}/cer_{g}"] = v["cer"]
    return out
