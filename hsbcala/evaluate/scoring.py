"""Scoring an evaluation: CER per set and variant group with confidence intervals, character classes, WER,
per-line table, confusions, MLflow metric names.

Pure but for writing, per set in ``<out_dir>/<set>/``: ``lines.tsv`` (every line: document, groups, GT,
prediction, errors, CER, words, word errors), ``confusions.tsv`` (the most frequent), ``characters.tsv`` (every
character: class, GT count, recall, precision, most frequent misreading). The CER itself is :mod:`hsbcala.evaluate.cer`
(calamari-eval's normalisation, summed edit distances over summed GT characters); its interval
:mod:`hsbcala.evaluate.intervals`; classes and WER :mod:`hsbcala.evaluate.charclasses`, from the same alignment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbcala.core.console import say
from hsbcala.evaluate import cer, charclasses, intervals, report

JOB_DIR = (
    "job_dir"  # the key comparison.collect() adds to each result: where its lines.tsv files are (not saved)
)
RESULT_FILE = "eval-result.json"  # one evaluation job's result (read by hsbcala.evaluate.comparison)
LINES_FILE = "lines.tsv"
LINES_HEADER = (
    "image",
    "document",
    "groups",
    "chars",
    "errors",
    "cer",
    "words",
    "word_errors",
    "gt",
    "prediction",
)


@dataclass(frozen=True)
class Options:
    """What is computed besides the CER (from the ``eval`` node: :func:`options`)."""

    confusions: int = 50
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    sorbian: tuple[str, ...] = field(
        default_factory=lambda: charclasses.letters_of(charclasses.DEFAULT_SORBIAN)
    )
    worst_lines: int = 10

    def interval(self, errors: Sequence[int], chars: Sequence[int], units: Sequence | None):
        return intervals.bootstrap_cer(
            errors, chars, units, resamples=self.resamples, level=self.level, seed=self.seed
        )


def options(ev: Any) -> Options:
    iv = ev.intervals
    return Options(
        confusions=int(ev.confusions),
        resamples=int(iv.resamples),
        level=float(iv.level),
        seed=int(iv.seed),
        sorbian=charclasses.letters_of(str(ev.sorbian_letters)),
        worst_lines=int(ev.worst_lines),
    )


@dataclass
class _Line:
    image: Path
    document: str
    groups: list[str]
    gt: str
    pred: str
    errors: int
    words: int
    word_errors: int
    alignment: cer.Alignment | None = None  # the CER's own alignment (hsbcala.evaluate.htmlreport shows it)


def _interval_dict(iv: intervals.Interval) -> dict:
    d = iv.as_dict()
    d.pop("point")  # the point estimate is the part's own "cer"/"wer"
    return d


def _part(lines: list[_Line], opts: Options, units: bool) -> dict:
    """A set's or group's figures from its lines (a :class:`hsbcala.evaluate.cer.Score`'s summary + intervals)."""
    errors, chars = [x.errors for x in lines], [len(x.gt) for x in lines]
    docs = [x.document for x in lines] if units else None
    return {"interval": _interval_dict(opts.interval(errors, chars, docs))}


def set_cer(s: Any, rules: str, predictions: dict[Path, str | None], opts: Options) -> intervals.Interval:
    """A set's CER and its interval only (no files, classes or WER): e.g. one checkpoint of many."""
    errors, chars = [], []
    for img in s.images:
        gt = cer.normalize(s.gt[img], rules)
        errors.append(cer.distance(gt, cer.normalize(predictions.get(img) or "", rules)))
        chars.append(len(gt))
    docs = getattr(s, "documents", None)
    return opts.interval(errors, chars, [docs[img] for img in s.images] if docs else None)


def score_sets(
    sets_in: Sequence[Any],
    groups: dict[str, list[str]],
    rules: str,
    predictions: dict[Path, str | None],
    out_dir: Path,
    opts: Options | int = Options(),
    lines: dict[str, list] | None = None,
) -> dict:
    """CER per set (:class:`hsbcala.evaluate.sets.EvalSet`) and group with intervals, classes and WER; per set
    ``lines.tsv``, ``confusions.tsv`` and ``characters.tsv`` in ``out_dir/<set>/``. ``lines``, when given,
    receives per set name its lines with their alignments (for :mod:`hsbcala.evaluate.htmlreport`)."""
    if isinstance(opts, int):  # the number of confusions only (the arguments before intervals existed)
        opts = Options(confusions=opts)
    sets = []
    for s in sets_in:
        overall = cer.Score()
        by_group = {g: cer.Score() for g in groups}
        member_sets = {g: set(m) for g, m in s.members.items()}
        stats = charclasses.CharStats(opts.sorbian)
        docs = getattr(s, "documents", None)
        rows: list[_Line] = []
        missing = 0
        for img in s.images:
            raw = predictions.get(img)
            missing += raw is None
            gt, pred = cer.normalize(s.gt[img], rules), cer.normalize(raw or "", rules)
            al = cer.align(gt, pred)
            overall.add(gt, al)
            we, nw = stats.add(gt, pred, al.ops)
            gs = [g for g in groups if img in member_sets[g]]
            for g in gs:
                by_group[g].add(gt, al)
            doc = docs[img] if docs else ""
            rows.append(_Line(img, doc, gs, gt, pred, al.errors, nw, we, al))
        if lines is not None:
            lines[s.name] = rows
        set_dir = out_dir / s.name
        set_dir.mkdir(parents=True, exist_ok=True)
        _write_lines(set_dir / LINES_FILE, rows)
        _write_confusions(set_dir / "confusions.tsv", overall, opts.confusions)
        _write_characters(set_dir / "characters.tsv", stats)
        by_docs = bool(docs)
        ov = overall.summary() | _part(rows, opts, by_docs)
        if ov["interval"]["warning"]:
            say(f"warning: {s.key}: {ov['interval']['warning']}")
        group_parts = {}
        for g in groups:
            if not s.members[g]:
                group_parts[g] = None
                continue
            g_rows = [x for x in rows if g in x.groups]
            group_parts[g] = by_group[g].summary() | _part(g_rows, opts, by_docs)
        wer_iv = opts.interval([x.word_errors for x in rows], [x.words for x in rows], _docs(rows, by_docs))
        summary = stats.summary()
        worst = sorted(rows, key=lambda x: (-x.errors, str(x.image)))[: opts.worst_lines]
        sets.append(
            {
                "name": s.name,
                "key": s.key,
                "patterns": s.patterns,
                "skipped": len(s.skipped),
                "missing_predictions": missing,
                "ungrouped": s.ungrouped if groups else 0,
                "interval_unit": getattr(s, "unit_note", "lines"),
                "overall": ov,
                "groups": group_parts,
                "wer": summary["wer"] | {"interval": _interval_dict(wer_iv)},
                "classes": summary["classes"],
                "sorbian_letters": summary["sorbian_letters"],
                "top_confusions": [[g, pr, n] for (g, pr), n in overall.confusions.most_common(10)],
                "worst_lines": [
                    {
                        "image": str(x.image),
                        "errors": x.errors,
                        "chars": len(x.gt),
                        "gt": x.gt,
                        "prediction": x.pred,
                    }
                    for x in worst
                    if x.errors
                ],
            }
        )
        if missing:
            say(
                f"warning: {s.key}: {missing} lines got no prediction from calamari-predict (skipped by the "
                f"engine, see predict.log); counted as empty predictions, as calamari-eval does"
            )
    return {
        "normalization": rules,
        "normalization_description": cer.DESCRIPTION[rules],
        "intervals": {"resamples": opts.resamples, "level": opts.level, "seed": opts.seed},
        "sorbian_letters": "".join(opts.sorbian),
        "sets": sets,
    }


def _docs(rows: list[_Line], by_docs: bool) -> list[str] | None:
    return [x.document for x in rows] if by_docs else None


def _write_lines(path: Path, rows: list[_Line]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(LINES_HEADER) + "\n")
        for x in rows:
            line_cer = f"{x.errors / len(x.gt):.4f}" if x.gt else ""
            f.write(
                f"{x.image}\t{x.document}\t{','.join(x.groups)}\t{len(x.gt)}\t{x.errors}\t{line_cer}\t"
                f"{x.words}\t{x.word_errors}\t{x.gt}\t{x.pred}\n"
            )


def _write_confusions(path: Path, overall: cer.Score, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("count\tgt\tprediction\n")
        f.writelines(
            f"{k}\t{json.dumps(g, ensure_ascii=False)}\t{json.dumps(pr, ensure_ascii=False)}\n"
            for (g, pr), k in overall.confusions.most_common(n)
        )


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _write_characters(path: Path, stats: charclasses.CharStats) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("char\tclass\tgt\tright\trecall\tpredicted\tprecision\tmisread\tmisread_count\n")
        for r in stats.characters():
            misread = "" if r["misread"] is None else json.dumps(r["misread"], ensure_ascii=False)
            f.write(
                f"{json.dumps(r['char'], ensure_ascii=False)}\t{r['class']}\t{r['gt']}\t{r['right']}\t"
                f"{_fmt(r['recall'])}\t{r['predicted']}\t{_fmt(r['precision'])}\t{misread}\t{r['misread_count']}\n"
            )


def read_lines(path: Path) -> list[dict]:
    """``lines.tsv`` back: per line image, document, chars, errors (ints), for paired comparisons."""
    out = []
    with open(path, encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split("\t")
        idx = {k: head.index(k) for k in ("image", "chars", "errors") if k in head}
        doc = head.index("document") if "document" in head else None
        for line in f:
            cells = line.rstrip("\n").split("\t")
            out.append(
                {
                    "image": cells[idx["image"]],
                    "document": cells[doc] if doc is not None else "",
                    "chars": int(cells[idx["chars"]]),
                    "errors": int(cells[idx["errors"]]),
                }
            )
    return out


def summary(result: dict) -> str:
    s = result["sets"][0]
    groups = ", ".join(f"{g} {report.percent(v['cer'] if v else None)}" for g, v in s["groups"].items())
    ci = report.interval_text(s["overall"])
    return (
        f"{result['model']}: CER {report.percent(s['overall']['cer'])}"
        + (f" {ci}" if ci else "")
        + f" (errors / GT characters) on {s['overall']['lines']} lines of "
        f"{s['name']}" + (f" ({groups})" if groups else "")
    )


_UNSAFE = re.compile(r"[^\w.\- /]")


def metric_name(name: str) -> str:
    """A name MLflow accepts as a metric key whatever it is made of (run names hold ``=`` and ``,``): every
    character but letters, digits, ``_ - . /`` and space becomes ``_``; no empty, ``.`` or ``..`` segment."""
    name = _UNSAFE.sub("_", name)
    parts = [p for p in name.split("/") if p]
    parts = ["_" * len(p) if p in (".", "..") else p for p in parts]
    return "/".join(parts)[:250] or "_"


def metrics_of(result: dict) -> dict[str, float]:
    """MLflow metrics per set: ``cer`` (+ ``cer_low``/``cer_high``), ``cer_<group>`` (+ interval), counts,
    ``wer``, ``cer_class_<class>``, ``recall_<letter>`` of the Sorbian letters (only where there is a number)."""
    out: dict[str, float] = {}

    def put(key: str, value: float | None) -> None:
        if value is not None:
            out[metric_name(key)] = float(value)

    for s in result["sets"]:
        base = f"eval/{s['name']}"
        o = s["overall"]
        put(f"{base}/cer", o["cer"])
        iv = o.get("interval") or {}
        put(f"{base}/cer_low", iv.get("low"))
        put(f"{base}/cer_high", iv.get("high"))
        put(f"{base}/lines", o["lines"])
        put(f"{base}/chars", o["chars"])
        put(f"{base}/errors", o["errors"])
        for g, v in s["groups"].items():
            if v is not None:
                put(f"{base}/cer_{g}", v["cer"])
                giv = v.get("interval") or {}
                put(f"{base}/cer_{g}_low", giv.get("low"))
                put(f"{base}/cer_{g}_high", giv.get("high"))
        if s.get("wer"):
            put(f"{base}/wer", s["wer"]["wer"])
        for c, v in (s.get("classes") or {}).items():
            put(f"{base}/cer_class_{c}", v["cer"])
            put(f"{base}/recall_class_{c}", v["recall"])
        for r in s.get("sorbian_letters") or []:
            put(f"{base}/recall_{r['char']}", r["recall"])
    for s in (result.get("baseline") or {}).get("sets") or []:  # eval.baseline=true
        put(f"eval/{s['name']}/baseline_cer", s["overall"]["cer"])
    for d in result.get("baseline_differences") or []:
        put(f"eval/{d['set']}/finetune_change", d["point"])
        put(f"eval/{d['set']}/finetune_change_low", d["interval"].get("low"))
        put(f"eval/{d['set']}/finetune_change_high", d["interval"].get("high"))
    return out


#: how far evaluation's CER of the best model on the training's own validation lines may lie from the engine's
#: best validation CER (``hsbcala-state.json``: ``best_val_cer``, 4 decimals) and still count as the same figure:
#: half a percentage point. The engine compares the codec labels of the training graph's greedy CTC decoding
#: (the same argmax-and-merge calamari-predict decodes with) with the GT, before the text post-processing
#: calamari-predict applies (whitespace runs, strip); a near-random model that outputs runs of spaces differs by
#: some tenths of a point (measured, Calamari 2, 3 epochs: 1.4725 vs 1.4699, 1.3207 vs 1.3220, 0.9332 vs 0.9332;
#: Calamari 1, 8 iterations: 0.9219 vs 0.9163), growing with the garbage it outputs, hence also 2 % of the engine's
#: figure (the issue's 0.8936 vs 0.9973 is far outside either). The statistic is the engine's own
#: (``Engine.val_cer_statistic``): Calamari 2 sums errors over GT characters as calamari-eval does, Calamari 1
#: averages each line's rate, which is compared as such.
ENGINE_CER_TOLERANCE = 0.005
ENGINE_CER_RELATIVE = 0.02


def engine_tolerance(engine: float) -> float:
    """How far evaluation may lie from the engine's figure ``engine`` (see :data:`ENGINE_CER_TOLERANCE`)."""
    return max(ENGINE_CER_TOLERANCE, ENGINE_CER_RELATIVE * engine)


def line_mean_cer(lines_tsv: Path) -> float | None:
    """The mean of the per-line CERs (errors / GT characters) of a set's ``lines.tsv`` (lines with GT)."""
    rates = []
    with open(lines_tsv, encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split("\t")
        chars, errors = head.index("chars"), head.index("errors")
        for row in f:
            cols = row.rstrip("\n").split("\t")
            if int(cols[chars]):
                rates.append(int(cols[errors]) / int(cols[chars]))
    return sum(rates) / len(rates) if rates else None


def engine_agreement(
    ours: float | None, engine: float | None, missing: int, statistic: str
) -> tuple[bool, str]:
    """(agree, one line) comparing evaluation's CER of the best model (``statistic``: the engine's, see
    :data:`ENGINE_CER_TOLERANCE`) with the engine's best validation CER on the same lines; the line says why they
    may differ when they do."""
    if ours is None or engine is None:
        return True, "no figure to compare"
    what = "CER" if statistic == "summed" else "mean line CER (the engine's statistic)"
    both = (
        f"evaluation {what} {ours:.4f} vs the engine's best validation CER {engine:.4f} (hsbcala-state.json)"
    )
    tolerance = engine_tolerance(engine)
    if abs(ours - engine) <= tolerance:
        return True, f"the best model on its own validation lines agrees with training: {both}"
    why = [
        f"{missing} lines got no prediction (counted as empty)" if missing else None,
        (
            "the best model is not the one the engine's figure belongs to (a training resumed with other "
            "settings, or best.ckpt replaced after training), or the engine measured other lines than its "
            "manifest records"
        ),
    ]
    return False, (
        f"the best model on its own validation lines differs from training by more than "
        f"{tolerance:.4f}: {both}; {'; '.join(w for w in why if w)}"
    )
