"""The comparison table of evaluated models: Markdown, CSV and a bar chart (PNG), and the printed report.

A result is the dict :mod:`hsbcala.evaluate.run` writes as ``eval-result.json`` per model (one per Hydra job). One
row per model (and one per evaluated baseline, right below its model): ``model | lines | CER | <group> … | WER |
Sorbian | <extra set> CER | <extra set> <group> … | notes``, every CER with its confidence interval when the
result has one. What cannot be given is marked, never replaced by a number: ``n/a`` for a variant group that
no line matched (and for an interval of a set too small to resample), and a row of ``missing`` with the reason
in *notes* for a model whose evaluation failed (no model, other version, bad data, engine failure, a baseline
that cannot be found).

Below the table, the paired differences (:mod:`hsbcala.evaluate.comparison`): per set and pair of models, CER(A) −
CER(B) in points with its paired-bootstrap interval and whether that interval excludes zero.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.evaluate import intervals

NA = "n/a"
MISSING = "missing"


@dataclass(frozen=True)
class Column:
    title: str  # Markdown header
    key: str  # CSV header
    set_name: str
    group: str | None  # None: the set's overall figure
    kind: str = "cer"  # cer (overall or group) | wer | sorbian (the class CER of the Sorbian letters)


def _sets(result: dict) -> list[dict]:
    return list(result.get("sets") or [])


def rows(results: list[dict]) -> list[dict]:
    """The table's rows: every result, each followed by its baseline's (``eval.baseline=true``)."""
    out = []
    for r in results:
        out.append(r)
        if r.get("baseline"):
            out.append(r["baseline"])
    return out


def columns(results: list[dict]) -> list[Column]:
    """CER columns: the first set's overall and per-group CER unlabelled, WER and the Sorbian letters' CER
    when evaluated, then further sets prefixed by name."""
    set_names: list[str] = []
    groups: dict[str, list[str]] = {}
    extras: dict[str, set[str]] = {}
    for r in results:
        for s in _sets(r):
            if s["name"] not in set_names:
                set_names.append(s["name"])
            names = groups.setdefault(s["name"], [])
            for g in s.get("groups", {}):
                if g not in names:
                    names.append(g)
            if s.get("wer"):
                extras.setdefault(s["name"], set()).add("wer")
            if s.get("classes"):
                extras.setdefault(s["name"], set()).add("sorbian")
        for g in r.get("groups") or {}:  # a failed model still names the configured groups
            for name in set_names or []:
                if g not in groups.setdefault(name, []):
                    groups[name].append(g)
    cols: list[Column] = []
    for i, name in enumerate(set_names):
        prefix_t, prefix_k = ("", "") if i == 0 else (f"{name} ", f"{name}_")
        cols.append(Column(f"{prefix_t}CER", f"{prefix_k}cer", name, None))
        cols += [Column(f"{prefix_t}{g}", f"{prefix_k}cer_{g}", name, g) for g in groups.get(name, [])]
        if "wer" in extras.get(name, ()):
            cols.append(Column(f"{prefix_t}WER", f"{prefix_k}wer", name, None, "wer"))
        if "sorbian" in extras.get(name, ()):
            cols.append(Column(f"{prefix_t}Sorbian letters", f"{prefix_k}cer_sorbian", name, None, "sorbian"))
    if not cols:  # every model failed before its data was known: still one CER column
        cols.append(Column("CER", "cer", "", None))
    return cols


def part(result: dict, col: Column) -> dict | None:
    """The dict behind a cell (``cer``/``wer`` and maybe ``interval``), or None where there is no number."""
    for s in _sets(result):
        if s["name"] != col.set_name:
            continue
        if col.kind == "wer":
            w = s.get("wer")
            return None if w is None else {"cer": w.get("wer"), "interval": w.get("interval")}
        if col.kind == "sorbian":
            return (s.get("classes") or {}).get("sorbian")
        return s.get("overall") if col.group is None else (s.get("groups") or {}).get(col.group)
    return None


def cell(result: dict, col: Column) -> float | None:
    """The figure of a column, or None where there is no number."""
    p = part(result, col)
    return None if p is None else p.get("cer")


def interval_of(p: dict | None) -> tuple[float, float] | None:
    iv = (p or {}).get("interval") or {}
    if iv.get("low") is None or iv.get("high") is None:
        return None
    return iv["low"], iv["high"]


def interval_text(p: dict | None) -> str:
    """``[1.23, 4.56]`` (percent), ``[n/a]`` when an interval was asked for but the set is too small, or ``""``
    when the result has no interval at all (older results, class columns)."""
    if not p or not p.get("interval"):
        return ""
    return intervals.bounds_text(p["interval"], na=f"[{NA}]")


def lines_of(result: dict) -> int | None:
    sets = _sets(result)
    return sets[0]["overall"]["lines"] if sets and sets[0].get("overall") else None


def notes(result: dict) -> str:
    if result.get("error"):
        return f"{MISSING}: {result['error']}"
    out = []
    if result.get("flag"):
        out.append(result["flag"])
    for s in _sets(result):
        where = "" if s is _sets(result)[0] else f" ({s['name']})"
        for g, p in (s.get("groups") or {}).items():
            if p is None:
                pats = ", ".join((result.get("groups") or {}).get(g, []))
                out.append(f"{g}{where}: no line matches {pats}")
        if s.get("skipped"):
            out.append(f"{s['skipped']} lines without valid GT left out{where}")
        if s.get("missing_predictions"):
            out.append(f"{s['missing_predictions']} lines without prediction counted as empty{where}")
        if s.get("ungrouped"):
            out.append(f"{s['ungrouped']} lines in no group{where}")
        warn = ((s.get("overall") or {}).get("interval") or {}).get("warning")
        if warn:
            out.append(f"interval{where}: {warn}")
    return "; ".join(out)


def percent(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.2f} %"


def labels(results: list[dict]) -> list[str]:
    """Row labels: the model's name (its MLflow run name), plus its model directory where names repeat
    (e.g. a sweep over model_dir)."""
    names = [r.get("model", "?") for r in results]
    return [
        f"{n} ({r['model_dir']})" if names.count(n) > 1 and r.get("model_dir") else n
        for n, r in zip(names, results, strict=True)
    ]


def normalisation_note(results: list[dict]) -> str:
    per_version: dict[str, str] = {}
    for r in results:
        if r.get("normalization_description"):
            per_version.setdefault(r.get("version", "?"), r["normalization_description"])
    if len(set(per_version.values())) <= 1:
        return next(iter(per_version.values()), NA)
    return "; ".join(f"{v} models: {d}" for v, d in sorted(per_version.items()))


def interval_note(results: list[dict]) -> str:
    """How the intervals were made, or "" when no result has one."""
    settings = next((r["intervals"] for r in results if r.get("intervals")), None)
    if not settings:
        return ""
    # the structured unit ("lines" | "documents"), not the set's printed note ("1 document (manifest.json)")
    units = sorted(
        {
            ((s.get("overall") or {}).get("interval") or {}).get("unit") or "lines"
            for r in results
            for s in _sets(r)
        }
    )
    return (
        f" [a, b]: {100 * settings['level']:g} % bootstrap confidence interval in percent "
        f"({settings['resamples']} resamples of {' / '.join(units) or 'lines'}, seed {settings['seed']})."
    )


def _value(r: dict, c: Column) -> str:
    v = cell(r, c)
    if v is None:
        return NA
    ci = interval_text(part(r, c))
    return percent(v) + (f" {ci}" if ci else "")


def markdown(results: list[dict], *, footer: bool = True, differences: list[dict] | None = None) -> str:
    """The table the team publishes: one row per model, CER in percent with its interval, n/a / missing where
    no number is; then the paired differences, when given."""
    table_rows = rows(results)
    cols = columns(table_rows)
    head = ["model", "lines", *(c.title for c in cols), "notes"]
    out_rows = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(cols) + "---|"]
    for r, label in zip(table_rows, labels(table_rows), strict=True):
        failed = bool(r.get("error"))
        n = lines_of(r)
        values = [MISSING if failed else _value(r, c) for c in cols]
        text = [label, MISSING if failed or n is None else str(n), *values, notes(r)]
        out_rows.append("| " + " | ".join(t.replace("|", "\\|") for t in text) + " |")
    out = "\n".join(out_rows) + "\n"
    if footer:
        out += (
            "\nCER = (substitutions + deletions + insertions) / GT characters, summed over all lines of the set"
            f"; text normalisation: {normalisation_note(table_rows)}. {NA}: no line of that variant group; "
            f"{MISSING}: the model could not be evaluated (see notes).{interval_note(table_rows)}\n"
        )
    if differences:
        out += "\n" + differences_markdown(differences)
    return out


def differences_markdown(differences: list[dict]) -> str:
    """Per set and pair: CER(A) − CER(B) in points with its paired interval, and whether it excludes zero."""
    out = [
        "Paired differences (same lines, paired bootstrap):",
        "",
        "| set | A | B | lines | CER(A) − CER(B) | interval | excludes 0 |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for d in differences:
        iv = d["interval"]
        if d.get("point") is None:
            diff, ivt, ex = NA, NA, NA
        else:
            diff = f"{100 * d['point']:+.2f} points"
            ivt = intervals.bounds_text(iv, signed=True)
            ex = NA if iv.get("low") is None else ("yes" if iv["low"] > 0 or iv["high"] < 0 else "no")
        cells = [
            d["set"],
            d["a"],
            d["b"],
            str(d["lines"]),
            diff,
            ivt,
            ex + (f" ({d['note']})" if d.get("note") else ""),
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def csv_text(results: list[dict]) -> str:
    """The same numbers as fractions (6 decimals), interval bounds after the figures; empty cells where there
    is no number."""
    table_rows = rows(results)
    cols = columns(table_rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    bounds = [c for c in cols if c.kind != "sorbian"]
    w.writerow(
        [
            "model",
            "script",
            "version",
            "lines",
            *(c.key for c in cols),
            *(f"{c.key}_{b}" for c in bounds for b in ("low", "high")),
            "status",
            "notes",
        ]
    )
    for r, label in zip(table_rows, labels(table_rows), strict=True):
        failed = bool(r.get("error"))
        vals = ["" if failed or cell(r, c) is None else f"{cell(r, c):.6f}" for c in cols]
        ivs = []
        for c in bounds:
            iv = None if failed else interval_of(part(r, c))
            ivs += ["", ""] if iv is None else [f"{iv[0]:.6f}", f"{iv[1]:.6f}"]
        n = lines_of(r)
        w.writerow(
            [
                label,
                r.get("script", ""),
                r.get("version", ""),
                "" if n is None else n,
                *vals,
                *ivs,
                MISSING if failed else "ok",
                notes(r),
            ]
        )
    return buf.getvalue()


def differences_csv(differences: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["set", "a", "b", "lines", "unit", "difference", "low", "high", "excludes_zero", "note"])
    for d in differences:
        iv = d["interval"]
        has = iv.get("low") is not None
        w.writerow(
            [
                d["set"],
                d["a"],
                d["b"],
                d["lines"],
                iv.get("unit", ""),
                "" if d.get("point") is None else f"{d['point']:.6f}",
                f"{iv['low']:.6f}" if has else "",
                f"{iv['high']:.6f}" if has else "",
                ("yes" if iv["low"] > 0 or iv["high"] < 0 else "no") if has else "",
                d.get("note", ""),
            ]
        )
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ chart


def preload() -> None:
    """Import matplotlib (about a second) ahead of :func:`chart`, e.g. while the engine predicts."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # not its font-cache chatter in the job log
    import matplotlib.pyplot


def _tick(label: str, n: int | None, width: int = 22) -> str:
    """A readable x label: broken into lines of at most ``width`` characters after ``-``, ``,``, ``/`` or a
    space (never inside a ``key=value``), with the line count below."""
    lines: list[str] = []
    for token in re.split(r"(?<=[-,/ (])", label):
        if lines and len(lines[-1]) + len(token) <= width:
            lines[-1] += token
        else:
            lines.append(token)
    return "\n".join(x.strip() for x in lines) + (f"\n({n} lines)" if n is not None else "")


def _set_lines(r: dict, set_name: str) -> int | None:
    for s in _sets(r):
        if s["name"] == set_name:
            return s["overall"]["lines"]
    return None


def chart(results: list[dict], path: Path, title: str = "CER per model and variant group") -> Path:
    """A grouped bar chart (PNG): one panel per evaluation set, one bar per model and column (overall, each
    group; a distinct colour each, the same in every panel), 95 % intervals as error bars, each model's line
    count under its name; n/a and missing are written where a bar would be."""
    preload()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    table_rows = rows(results)
    all_cols = [c for c in columns(table_rows) if c.kind == "cer"]
    set_names = list(dict.fromkeys(c.set_name for c in all_cols))
    series = list(dict.fromkeys("overall" if c.group is None else c.group for c in all_cols))
    cmap = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    colour = {name: cmap(i % cmap.N) for i, name in enumerate(series)}
    n_models = len(table_rows)
    width_in = max(6.0, min(40.0, 1.2 + n_models * (0.5 + 0.35 * len(series))))
    fig, axes = plt.subplots(
        len(set_names), 1, figsize=(width_in, 3.6 * len(set_names) + 1.0), dpi=110, squeeze=False
    )
    for ax, set_name in zip(axes[:, 0], set_names, strict=True):
        cols = [c for c in all_cols if c.set_name == set_name]
        width = 0.8 / max(len(cols), 1)
        tops = [0.01]
        for r in table_rows:
            for c in cols:
                iv = None if r.get("error") else interval_of(part(r, c))
                v = None if r.get("error") else cell(r, c)
                tops.append(max(v or 0.0, iv[1] if iv else 0.0))
        top = max(tops) * 100
        for j, col in enumerate(cols):
            name = "overall" if col.group is None else col.group
            xs, hs, err_lo, err_hi = [], [], [], []
            for i, r in enumerate(table_rows):
                x = i - 0.4 + width * (j + 0.5)
                value = None if r.get("error") else cell(r, col)
                if value is None:
                    ax.text(
                        x,
                        top * 0.02,
                        MISSING if r.get("error") else NA,
                        ha="center",
                        va="bottom",
                        rotation=90,
                        fontsize=8,
                        color="0.35",
                    )
                    continue
                iv = interval_of(part(r, col))
                xs.append(x)
                hs.append(100 * value)
                err_lo.append(100 * (value - iv[0]) if iv else 0.0)
                err_hi.append(100 * (iv[1] - value) if iv else 0.0)
            if not xs:
                continue
            has_err = any(err_lo) or any(err_hi)
            bars = ax.bar(
                xs,
                hs,
                width * 0.95,
                color=colour[name],
                yerr=[err_lo, err_hi] if has_err else None,
                capsize=3 if has_err else 0,
                error_kw={"elinewidth": 1, "ecolor": "0.2"},
            )
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ticks = [
            _tick(lab, _set_lines(r, set_name)) for lab, r in zip(labels(table_rows), table_rows, strict=True)
        ]
        ax.set_xticks(range(n_models), ticks, fontsize=8)
        ax.set_xlim(-0.6, n_models - 0.4)
        ax.set_ylabel("CER (%)")
        ax.set_ylim(0, top * 1.25)
        ax.set_title(f"set '{set_name}'" if set_name else "", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        handles = [
            Patch(
                color=colour["overall" if c.group is None else c.group],
                label=("overall" if c.group is None else c.group),
            )
            for c in cols
        ]
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    note = (
        " (error bars: 95 % confidence intervals)"
        if any(interval_of(part(r, c)) for r in table_rows for c in all_cols if not r.get("error"))
        else ""
    )
    fig.suptitle(title + note, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def write(
    results: list[dict], out_dir: Path, stem: str = "cer-table", differences: list[dict] | None = None
) -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.png`` in ``out_dir`` (and ``<stem>-differences.csv``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "png": out_dir / f"{stem}.png"}
    paths["md"].write_text(markdown(results, differences=differences), encoding="utf-8")
    paths["csv"].write_text(csv_text(results), encoding="utf-8")
    if differences:
        paths["differences"] = out_dir / f"{stem}-differences.csv"
        paths["differences"].write_text(differences_csv(differences), encoding="utf-8")
    chart(results, paths["png"])
    return paths


def any_failed(results: list[Any]) -> list[dict]:
    return [r for r in results if r.get("error")]


# ------------------------------------------------------------------------------------------------ printed report


def _pct(v: float | None, digits: int = 2) -> str:
    return NA if v is None else f"{100 * v:.{digits}f} %"


def _q(text: str, limit: int = 16) -> str:
    """Quoted (``""`` for nothing), long runs shortened."""
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


def text_report(result: dict, differences: list[dict] | None = None) -> str:
    """A test-style report of one evaluation: per set the overall CER with interval and counts, groups, WER,
    character classes, the Sorbian letters, the worst lines and the most frequent confusions."""
    out = [f"=== {result.get('model', '?')} ({result.get('version', '?')}): {result.get('checkpoint', '')}"]
    if result.get("error"):
        return "\n".join([*out, f"  {MISSING}: {result['error']}"]) + "\n"
    for s in _sets(result):
        o = s["overall"]
        out.append(
            f"--- set {s['name']}: {o['lines']} lines, {o['chars']} GT characters; intervals over "
            f"{s.get('interval_unit', 'lines')}"
        )
        out.append(
            f"  CER {_pct(o['cer'])} {interval_text(o)}  ({o['errors']} errors: {o.get('substitutions', 0)} "
            f"substitutions, {o.get('deletions', 0)} deletions, {o.get('insertions', 0)} insertions)"
        )
        if s.get("wer"):
            w = s["wer"]
            out.append(
                f"  WER {_pct(w['wer'])} {interval_text({'interval': w.get('interval')})}  "
                f"({w['errors']} word errors / {w['words']} words)"
            )
        for g, p in (s.get("groups") or {}).items():
            out.append(
                f"  group {g}: {NA} (no line)"
                if p is None
                else f"  group {g}: CER {_pct(p['cer'])} {interval_text(p)} ({p['lines']} lines)"
            )
        if s.get("classes"):
            parts = [
                f"{k} {_pct(v['cer'])} (recall {_pct(v['recall'], 1)}, {v['chars']} chars)"
                for k, v in s["classes"].items()
                if v["chars"] or v["errors"]
            ]
            out.append("  classes: " + "; ".join(parts))
        letters = [r for r in s.get("sorbian_letters") or [] if r["gt"]]
        if letters:
            out.append("  Sorbian letters (GT count, recall, most frequent misreading):")
            for r in letters:
                mis = "" if r["misread"] is None else f", read as {_q(r['misread'])} {r['misread_count']}×"
                out.append(f"    {r['char']}  {r['gt']:>5}  {_pct(r['recall'], 1):>8}{mis}")
        if s.get("worst_lines"):
            out.append("  worst lines:")
            for x in s["worst_lines"]:
                out.append(f"    {x['errors']} errors / {x['chars']} chars  {x['image']}")
                out.append(f"      GT:   {x['gt']}")
                out.append(f"      pred: {x['prediction']}")
        if s.get("top_confusions"):
            out.append(
                "  most frequent confusions: "
                + ", ".join(f"{_q(g)} → {_q(p)} {n}×" for g, p, n in s["top_confusions"])
            )
    if result.get("baseline"):
        b = result["baseline"]
        if b.get("error"):
            out.append(f"--- baseline: {MISSING}: {b['error']}")
        for s in _sets(b):
            o = s["overall"]
            out.append(f"--- baseline {b['model']} on {s['name']}: CER {_pct(o['cer'])} {interval_text(o)}")
    for d in differences if differences is not None else result.get("baseline_differences") or []:
        out.append(f"  {d.get('sentence') or d['a'] + ' − ' + d['b']}")
    if result.get("flag"):
        out.append(f"  FLAG: {result['flag']}")
    if result.get("registry"):  # mlflow.register=true: the champion decision (hsbcala.evaluate.champion)
        r = result["registry"]
        out.append(f"--- registry: {r['registered_model']} version {r['version']}: {r['decision']}")
    if result.get("checkpoints_note"):
        out.append(f"--- checkpoints: {result['checkpoints_note']}")
    for r in result.get("checkpoints") or []:
        cers = ", ".join(f"{n} {_pct(v['cer'])}" for n, v in r["sets"].items())
        out.append(
            f"--- checkpoint {r.get('name') or Path(r['checkpoint']).name} (stage {r['stage']}, {r['position']}): {cers or r['error']}"
        )
    for name, b in (result.get("best_checkpoint") or {}).items():
        out.append(
            f"  best checkpoint on '{name}': {b.get('name') or Path(b['checkpoint']).name} (stage {b['stage']}, {b['position']}), CER {_pct(b['cer'])}"
        )
    return "\n".join(out) + "\n"
