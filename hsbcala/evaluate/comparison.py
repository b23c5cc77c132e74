"""After ``python evaluate.py -m``: the comparison table of every job of the sweep (a Hydra callback), with the
paired differences of the models evaluated on the same lines.

Each job of the multirun wrote its ``eval-result.json`` and per set ``lines.tsv`` (:mod:`hsbcala.evaluate.run`);
:class:`ComparisonTable` collects them in job order into ``cer-table.md/.csv/.png`` (+ ``cer-table-differences.csv``)
in the sweep dir, prints the table, logs it to MLflow as a comparison run (:func:`hsbcala.track.evaluation.log_comparison`),
and exits 2 when a model is missing or MLflow refused the comparison. A job that died without a result is a row
marked missing, never a number.

**Paired differences** (:func:`differences`): for every set and every pair of models that evaluated it, CER(A) −
CER(B) on the lines both evaluated (matched by image path), with the paired bootstrap interval of
:func:`hsbcala.evaluate.intervals.paired_difference` (documents when both results resampled documents, else lines; the
settings of the first result). A pair whose intervals exclude zero differs beyond resampling noise.
"""

from __future__ import annotations

import contextlib
import json
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hsbcala.core import console
from hsbcala.core.console import say
from hsbcala.evaluate import htmlreport, intervals, report, scoring
from hsbcala.evaluate.scoring import JOB_DIR, RESULT_FILE
from hsbcala.track import evaluation, store
from hsbcala.track import info as trackinfo

_UNREADABLE = (OSError, ValueError, TypeError, yaml.YAMLError, OmegaConfBaseException)


def _job_label(job_dir: Path) -> str:
    """The job's overrides, else ``job <n>`` (no overrides.yaml: the job died before Hydra wrote it)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return f"job {job_dir.name}"
    try:
        return " ".join(str(o) for o in OmegaConf.load(path))
    except _UNREADABLE as exc:  # damaged or not a list: the row still counts, under its number
        console.swallowed(f"reading {path}", exc, _UNREADABLE)
        return f"job {job_dir.name}"


def collect(sweep_dir: Path) -> list[dict]:
    """Every job's result in job order; a job dir without one (the job died) becomes a missing row."""
    jobs = sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )
    results = []
    for d in jobs:
        f = d / RESULT_FILE
        if f.is_file():
            r = json.loads(f.read_text(encoding="utf-8"))
            r[JOB_DIR] = str(d)
            results.append(r)
        elif (d / ".hydra").is_dir():
            results.append(
                {
                    "model": _job_label(d),
                    "sets": [],
                    "groups": {},
                    "error": f"the job ended without a result (see {d})",
                }
            )
    return results


def _settings(results: list[dict]) -> dict:
    s = next((r["intervals"] for r in results if r.get("intervals")), None) or {}
    return {"resamples": s.get("resamples", 1000), "level": s.get("level", 0.95), "seed": s.get("seed", 0)}


def paired(
    lines_a: list[dict],
    lines_b: list[dict],
    *,
    set_name: str,
    a: str,
    b: str,
    by_documents: bool,
    settings: dict,
) -> dict:
    """CER(A) − CER(B) on the lines both evaluated (rows of :func:`hsbcala.evaluate.scoring.read_lines`)."""
    b_of = {x["image"]: x for x in lines_b}
    common = [(x, b_of[x["image"]]) for x in lines_a if x["image"] in b_of]
    note = ""
    if len(common) < max(len(lines_a), len(lines_b)):
        note = f"on the {len(common)} lines both evaluated ({len(lines_a)} and {len(lines_b)})"
    chars_a = [x["chars"] for x, _ in common]
    chars_b = [y["chars"] for _, y in common]
    if chars_a != chars_b:
        note = "; ".join(
            filter(None, [note, "GT normalised differently (eval.normalization=calamari2 compares alike)"])
        )
    units = [x["document"] for x, _ in common] if by_documents else None
    iv = intervals.paired_difference(
        [x["errors"] for x, _ in common],
        [y["errors"] for _, y in common],
        chars_a,
        units,
        chars_b=chars_b,
        **settings,
    )
    d = {
        "set": set_name,
        "a": a,
        "b": b,
        "lines": len(common),
        "point": iv.point,
        "interval": {k: v for k, v in iv.as_dict().items() if k != "point"},
        "excludes_zero": iv.excludes_zero(),
        "note": note,
    }
    d["sentence"] = sentence(d)
    return d


def sentence(d: dict, verb: str = "differs from") -> str:
    """``A − B on set: +1.23 points [0.50, 2.01] (excludes 0)`` in words."""
    if d["point"] is None:
        return f"{d['a']} vs {d['b']} on '{d['set']}': n/a (no GT characters)"
    iv = d["interval"]
    ci = intervals.bounds_text(iv, signed=True)
    verdict = (
        "no interval"
        if iv.get("low") is None
        else ("excludes 0" if d["excludes_zero"] else "includes 0: not distinguishable from noise")
    )
    return (
        f"{d['a']} − {d['b']} on '{d['set']}' ({d['lines']} lines): CER {100 * d['point']:+.2f} points {ci} "
        f"({verdict})"
    )


def _set_of(result: dict, name: str) -> dict | None:
    return next((s for s in result.get("sets") or [] if s["name"] == name), None)


def by_documents(*sets: dict) -> bool:
    """Whether the sets' own intervals resampled documents (the structured unit, not the printed note, which
    says "1 document" for a set of one)."""
    return all(s["overall"]["interval"]["unit"] == "documents" for s in sets)


def differences(results: list[dict]) -> list[dict]:
    """Per set, every pair of models that evaluated it (in table order); lines from each job's lines.tsv."""
    ok = [r for r in results if not r.get("error") and r.get(JOB_DIR)]
    names = dict(zip((id(r) for r in results), report.labels(results), strict=True))
    settings = _settings(results)
    set_names = list(dict.fromkeys(s["name"] for r in ok for s in r["sets"]))
    out = []
    cache: dict[tuple[int, str], list[dict]] = {}

    def lines(r: dict, set_name: str) -> list[dict] | None:
        key = (id(r), set_name)
        if key not in cache:
            path = Path(r[JOB_DIR]) / set_name / scoring.LINES_FILE
            cache[key] = scoring.read_lines(path) if path.is_file() else None
        return cache[key]

    for set_name in set_names:
        having = [r for r in ok if _set_of(r, set_name) and lines(r, set_name) is not None]
        for ra, rb in combinations(having, 2):
            d = paired(
                lines(ra, set_name),
                lines(rb, set_name),
                set_name=set_name,
                a=names[id(ra)],
                b=names[id(rb)],
                by_documents=by_documents(_set_of(ra, set_name), _set_of(rb, set_name)),
                settings=settings,
            )
            if ra.get("normalization") != rb.get("normalization"):
                d["note"] = "; ".join(
                    filter(
                        None,
                        [
                            d["note"],
                            f"text normalised as {ra.get('normalization')} vs {rb.get('normalization')}",
                        ],
                    )
                )
            out.append(d)
    for r in ok:  # each model against its own baseline, as evaluated in its job
        out += r.get("baseline_differences") or []
    return out


def comparison_metrics(results: list[dict], diffs: list[dict]) -> dict[str, float]:
    """The comparison run's metrics: ``<model>/eval/<set>/cer…`` per model and ``diff/<set>/<a> vs <b>`` per
    pair, every name made acceptable to MLflow (run names hold ``=`` and ``,``); two models whose names differ
    only in refused characters get distinct names (``…_2``), so none is dropped."""
    safe: dict[str, str] = {}
    for label in report.labels(results):
        name, k = scoring.metric_name(label.replace("/", "_")), 2
        while name in safe.values():
            name, k = scoring.metric_name(f"{label.replace('/', '_')}_{k}"), k + 1
        safe[label] = name
    out: dict[str, float] = {}
    for r, label in zip(results, report.labels(results), strict=True):
        if r.get("error") or not r.get("sets"):
            continue
        for k, v in scoring.metrics_of(r).items():
            if "/cer" in k or k.endswith("/wer"):
                out[scoring.metric_name(f"{safe[label]}/{k}")] = v
    for d in diffs:
        a, b = (safe.get(x) or scoring.metric_name(x.replace("/", "_")) for x in (d["a"], d["b"]))
        base = scoring.metric_name(f"diff/{d['set']}/{a} vs {b}")
        for suffix, value in (
            ("", d["point"]),
            ("_low", d["interval"].get("low")),
            ("_high", d["interval"].get("high")),
        ):
            if value is not None:
                out[base + suffix] = float(value)
    return out


class ComparisonTable(Callback):
    """Hydra callback: after a multirun of evaluate.py, the comparison table of all its jobs in the sweep dir
    (``cer-table.md``, ``.csv``, ``.png``) with the paired differences, printed and logged to MLflow; exit 2
    when a model is missing or the comparison could not be logged."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.get("dry_run", False)).lower() == "true":
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        if not sweep_dir.is_dir():
            return
        results = collect(sweep_dir)
        if not results:
            return
        diffs = differences(results)
        paths = report.write(results, sweep_dir, stem="cer-table", differences=diffs)
        ev = config.get("eval") or {}
        paths["html"] = htmlreport.write_comparison(  # logged with the table
            results,
            diffs,
            sweep_dir / htmlreport.FILE,
            int(ev.get("html_lines", 50)),
            int((ev.get("intervals") or {}).get("seed", 0)),
        )
        print("\n" + report.markdown(results, differences=diffs), flush=True)
        say(f"comparison table: {paths['md']} (and {paths['csv'].name}, {paths['png'].name})")
        say(f"results in {sweep_dir}; the models' lines side by side: {paths['html']}")
        errors = []
        uri = next(((r.get("mlflow") or {}).get("tracking_uri") for r in results if r.get("mlflow")), None)
        if uri is None:
            # no job got as far as MLflow, and a sweep config without mlflow keys: no store to log the table to
            with contextlib.suppress(OmegaConfBaseException):
                uri = trackinfo.tracking_uri(config)
        if uri:
            experiment = config.eval.comparison_experiment if config.get("eval") else "hsbcala-evaluation"
            try:
                run_id = evaluation.log_comparison(
                    results, paths, sweep_dir, experiment, uri, comparison_metrics(results, diffs)
                )
                say(f"comparison logged to MLflow experiment '{experiment}', run {run_id}")
            except store.store_errors() as exc:  # the table on disk is whole; a bug keeps its traceback
                errors.append(
                    f"mlflow.tracking_uri={trackinfo.masked(uri)}: could not log the comparison to experiment "
                    f"'{experiment}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                    f"(the table is in {sweep_dir})"
                )
        failed = report.any_failed(results)
        if failed:
            errors.append(
                f"{len(failed)} of {len(results)} evaluations failed (marked missing in the table): "
                + "; ".join(f"{r['model']}: {r['error']}" for r in failed)
            )
        for e in errors:
            say(f"error: {e}")
        if errors:
            sys.exit(2)
