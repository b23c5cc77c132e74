"""The comparison table of evaluated models: Markdown, CSV and a bar chart (PNG), from evaluation results.

A result is the dict :mod:`hsbcala.evaluate` writes as ``eval-result.json`` per model (one per Hydra job). One
row per model: ``model | lines | CER | <group> … | <extra set> CER | <extra set> <group> … | notes``. What
cannot be given is marked, never replaced by a number: ``n/a`` for a variant group that no line matched, and
a row of ``missing`` with the reason in *notes* for a model whose evaluation failed (no model, other version,
bad data, engine failure).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NA = "n/a"
MISSING = "missing"


@dataclass(frozen=True)
class Column:
    title: str  # Markdown header
    key: str  # CSV header
    set_name: str
    group: str | None  # None: the set's overall CER


def _sets(result: dict) -> list[dict]:
    return list(result.get("sets") or [])


def columns(results: list[dict]) -> list[Column]:
    """CER columns: the first set's overall and per-group CER unlabelled, further sets prefixed by name."""
    set_names: list[str] = []
    groups: dict[str, list[str]] = {}
    for r in results:
        for s in _sets(r):
            if s["name"] not in set_names:
                set_names.append(s["name"])
            names = groups.setdefault(s["name"], [])
            for g in s.get("groups", {}):
                if g not in names:
                    names.append(g)
        for g in r.get("groups") or {}:  # a failed model still names the configured groups
            for name in set_names or []:
                if g not in groups.setdefault(name, []):
                    groups[name].append(g)
    cols: list[Column] = []
    for i, name in enumerate(set_names):
        prefix_t, prefix_k = ("", "") if i == 0 else (f"{name} ", f"{name}_")
        cols.append(Column(f"{prefix_t}CER", f"{prefix_k}cer", name, None))
        cols += [Column(f"{prefix_t}{g}", f"{prefix_k}cer_{g}", name, g) for g in groups.get(name, [])]
    if not cols:  # every model failed before its data was known: still one CER column
        cols.append(Column("CER", "cer", "", None))
    return cols


def cell(result: dict, col: Column) -> float | None:
    """The CER of a column, or None where there is no number."""
    for s in _sets(result):
        if s["name"] == col.set_name:
            part = s.get("overall") if col.group is None else (s.get("groups") or {}).get(col.group)
            return None if part is None else part.get("cer")
    return None


def lines_of(result: dict) -> int | None:
    sets = _sets(result)
    return sets[0]["overall"]["lines"] if sets and sets[0].get("overall") else None


def notes(result: dict) -> str:
    if result.get("error"):
        return f"{MISSING}: {result['error']}"
    out = []
    for s in _sets(result):
        where = "" if s is _sets(result)[0] else f" ({s['name']})"
        for g, part in (s.get("groups") or {}).items():
            if part is None:
                pats = ", ".join((result.get("groups") or {}).get(g, []))
                out.append(f"{g}{where}: no line matches {pats}")
        if s.get("skipped"):
            out.append(f"{s['skipped']} lines without valid GT left out{where}")
        if s.get("missing_predictions"):
            out.append(f"{s['missing_predictions']} lines without prediction counted as empty{where}")
        if s.get("ungrouped"):
            out.append(f"{s['ungrouped']} lines in no group{where}")
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


def markdown(results: list[dict], *, footer: bool = True) -> str:
    """The table the team publishes: one row per model, CER in percent, n/a / missing where no number is."""
    cols = columns(results)
    head = ["model", "lines", *(c.title for c in cols), "notes"]
    rows = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(cols) + "---|"]
    for r, label in zip(results, labels(results), strict=True):
        failed = bool(r.get("error"))
        n = lines_of(r)
        values = [MISSING if failed else percent(cell(r, c)) for c in cols]
        text = [label, MISSING if failed or n is None else str(n), *values, notes(r)]
        rows.append("| " + " | ".join(t.replace("|", "\\|") for t in text) + " |")
    out = "\n".join(rows) + "\n"
    if footer:
        out += (
            "\nCER = (substitutions + deletions + insertions) / GT characters, summed over all lines of the set"
            f"; text normalisation: {normalisation_note(results)}. {NA}: no line of that variant group; "
            f"{MISSING}: the model could not be evaluated (see notes).\n"
        )
    return out


def csv_text(results: list[dict]) -> str:
    """The same numbers as fractions (6 decimals); empty cells where there is no number."""
    cols = columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "script", "version", "lines", *(c.key for c in cols), "status", "notes"])
    for r, label in zip(results, labels(results), strict=True):
        failed = bool(r.get("error"))
        vals = ["" if failed or cell(r, c) is None else f"{cell(r, c):.6f}" for c in cols]
        n = lines_of(r)
        w.writerow(
            [
                label,
                r.get("script", ""),
                r.get("version", ""),
                "" if n is None else n,
                *vals,
                MISSING if failed else "ok",
                notes(r),
            ]
        )
    return buf.getvalue()


def preload() -> None:
    """Import matplotlib (about a second) ahead of :func:`chart`, e.g. while the engine predicts."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # not its font-cache chatter in the job log
    import matplotlib.pyplot


def chart(results: list[dict], path: Path, title: str = "CER per model and variant group") -> Path:
    """A grouped bar chart (PNG) of the first set's CER and per-group CER; n/a and missing are labelled."""
    preload()
    import matplotlib.pyplot as plt

    cols = [c for c in columns(results) if c.set_name == columns(results)[0].set_name]
    n_models, n_bars = len(results), len(cols)
    width = 0.8 / max(n_bars, 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * n_models * max(n_bars, 1) * 0.6 + 2), 4.5), dpi=110)
    top = max([cell(r, c) or 0.0 for r in results for c in cols if not r.get("error")] + [0.01]) * 100
    for j, col in enumerate(cols):
        xs, hs = [], []
        for i, r in enumerate(results):
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
            xs.append(x)
            hs.append(100 * value)
        bars = ax.bar(xs, hs, width * 0.95, label="overall" if col.group is None else col.group)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(range(n_models), labels(results), rotation=15 if n_models > 3 else 0)
    ax.set_ylabel("CER (%)")
    ax.set_ylim(0, top * 1.18)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write(results: list[dict], out_dir: Path, stem: str = "cer-table") -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "png": out_dir / f"{stem}.png"}
    paths["md"].write_text(markdown(results), encoding="utf-8")
    paths["csv"].write_text(csv_text(results), encoding="utf-8")
    chart(results, paths["png"])
    return paths


def any_failed(results: list[Any]) -> list[dict]:
    return [r for r in results if r.get("error")]
