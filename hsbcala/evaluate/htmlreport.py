"""``eval-report.html``: what a model gets wrong, to look at (one evaluation, or the comparison of an ``-m``).

One self-contained file that opens offline (also as an MLflow artifact): no script, no font, no style sheet
and no image fetched from anywhere, the line images embedded as ``data:`` URIs. Readable at 1,280 px.

- the summary: CER and WER with their intervals per set and variant group, the character classes, the Sorbian
  letters, the baseline row and its paired change, all taken from the result :mod:`hsbcala.evaluate.scoring` made
  (``eval-result.json``'s dict); nothing is scored again here;
- the worst lines (``eval.html_lines``, ranked as the printed report ranks them: most errors first) and as
  many drawn from the rest (seeded with ``eval.intervals.seed``): the line image, GT and prediction aligned,
  each substitution, deletion and insertion marked, the line's CER. The alignment is THE one the CER counted
  (:attr:`hsbcala.evaluate.cer.Alignment.ops`, rapidfuzz's Levenshtein opcodes, handed over by
  :func:`hsbcala.evaluate.scoring.score_sets`), so the marks add up to the line's errors;
- the most frequent confusions (grouped as calamari-eval groups them, :func:`hsbcala.evaluate.cer.confusions`), each
  linking to its lines; the lines of a confusion not already shown are added below, a few per confusion;
- after ``evaluate.py -m`` (:func:`write_comparison`): the comparison table and paired differences, and per set
  the same lines side by side for every model: the worst (most errors summed over the models), those where
  the models differ most (largest spread of errors), and a sample of the rest. The jobs' processes are gone by
  then, so the shown lines are aligned again from each job's ``lines.tsv`` (the normalised texts) with the same
  :func:`hsbcala.evaluate.cer.align`: the same deterministic function of the same strings, hence the same opcodes.

Built with the standard library: a page of a few fixed blocks filled by Python loops, every text through
:func:`html.escape` at the one place it is inserted. A template engine (jinja2) would add a dependency to the
launcher's lock for autoescaping and loops that these ~300 lines do not need.
"""

from __future__ import annotations

import base64
import html
import io
import random
import re
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsbcala.evaluate import cer, report

FILE = "eval-report.html"
#: an image file up to this size is embedded as it is; larger ones (raw colour scans) are scaled down first
MAX_EMBED_BYTES = 200_000
#: the size a large image is scaled down to (a line is shown at most 1,240 px wide)
MAX_WIDTH, MAX_HEIGHT = 1600, 120
CONFUSION_EXAMPLES = 3  # lines added per confusion whose lines are not shown otherwise
_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
_WORDS = re.compile(r"\S*\s*")
#: a space, tab … that is part of an error is shown as this (an empty or blank mark would be invisible)
_VISIBLE_SPACE = "\u2423"

_CSS = """
body{font-family:system-ui,"DejaVu Sans",sans-serif;margin:0 auto;padding:12px 20px;max-width:1240px;color:#1b1b1b}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}h3{font-size:1.05em}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}
td.t,th.t{text-align:left}th{background:#f0f0f0}.note{color:#555;font-size:.9em}
.line{border:1px solid #ddd;border-radius:4px;margin:10px 0;padding:6px 8px;scroll-margin-top:8px}
.line:target{outline:3px solid #3b73d9}.meta{font-size:.9em;color:#333;margin-bottom:4px;overflow-wrap:anywhere}
.line img{display:block;max-width:100%;height:auto;margin:4px 0;border:1px solid #eee}
.noimg{color:#a00;font-size:.9em}
.al{display:flex;flex-wrap:wrap;align-items:flex-start;font-family:"DejaVu Sans Mono",monospace;font-size:15px;
line-height:1.45}
.op{display:inline-flex;flex-direction:column;max-width:100%}
.op>span{white-space:pre-wrap;overflow-wrap:anywhere;min-height:1.45em;padding:0 1px}
.lab>span{color:#777;font-size:12px;padding-right:6px;font-family:system-ui,sans-serif}
.sub>span{background:#ffe08a}.del>.g{background:#ffb3b3;text-decoration:line-through}
.ins>.p{background:#a8e6a1;text-decoration:underline}.del>.p,.ins>.g{background:#f3f3f3}
.models{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:6px 14px}.models>div{min-width:0}
.model{font-size:.9em;color:#333}.legend span{padding:0 4px;margin-right:8px}
nav a{margin-right:12px}
"""

_PAGE = string.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style></head>
<body>
<h1>$title</h1>
<p class="note">$subtitle</p>
<p class="legend note">Marks: <span class="sub" style="background:#ffe08a">substitution</span>
<span style="background:#ffb3b3;text-decoration:line-through">deletion (in GT)</span>
<span style="background:#a8e6a1;text-decoration:underline">insertion (in the prediction)</span>
<span>\u2423 a space that is part of an error</span>. The marks are the alignment the CER counts.</p>
$body
</body></html>
"""
)


def e(text: Any) -> str:
    """Escaped for HTML text and attribute values (quotes too)."""
    return html.escape(str(text), quote=True)


# ------------------------------------------------------------------------------------------------ one line


@dataclass(frozen=True)
class Shown:
    """A line as the report shows it (from a :class:`hsbcala.evaluate.scoring` line or a ``lines.tsv`` row)."""

    image: Path
    document: str
    groups: tuple[str, ...]
    gt: str
    pred: str
    errors: int
    ops: tuple[tuple[str, int, int, int, int], ...]


def _visible(text: str) -> str:
    return "".join(_VISIBLE_SPACE if c.isspace() else c for c in text)


def aligned(gt: str, pred: str, ops: Iterable[Sequence]) -> str:
    """GT over prediction, one column per opcode; matched stretches cut after each space so a long line
    wraps. Classes ``eq``, ``sub``, ``del``, ``ins``; ``g`` holds the GT part, ``p`` the predicted one."""
    out = ['<div class="al"><span class="op lab"><span class="g">GT</span><span class="p">OCR</span></span>']
    for tag, g1, g2, p1, p2 in ops:
        if tag == "equal":
            out += [
                f'<span class="op eq"><span class="g">{w}</span><span class="p">{w}</span></span>'
                for w in (e(x) for x in _WORDS.findall(gt[g1:g2]) if x)
            ]
            continue
        kind = {"replace": "sub", "delete": "del", "insert": "ins"}[tag]
        out.append(
            f'<span class="op {kind}"><span class="g">{e(_visible(gt[g1:g2]))}</span>'
            f'<span class="p">{e(_visible(pred[p1:p2]))}</span></span>'
        )
    out.append("</div>")
    return "".join(out)


def _line_cer(errors: int, chars: int) -> str:
    return f"CER {report.percent(errors / chars)}" if chars else "CER n/a (no GT characters)"


class Images:
    """Line images as ``data:`` URIs, each file read once (a comparison shows one image for every model)."""

    def __init__(self) -> None:
        self._cache: dict[Path, str | None] = {}

    def uri(self, path: Path) -> str | None:
        if path not in self._cache:
            self._cache[path] = self._load(path)
        return self._cache[path]

    @staticmethod
    def _load(path: Path) -> str | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        mime = _MIME.get(path.suffix.lower())
        if mime is None or len(data) > MAX_EMBED_BYTES:  # TIFF/BMP browsers do not show; big scans
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.thumbnail((MAX_WIDTH, MAX_HEIGHT))
                    im = im.convert("RGB" if im.mode not in ("L", "1", "RGB") else im.mode)
                    buf = io.BytesIO()
                    im.save(buf, "PNG", optimize=False)
            except (UnidentifiedImageError, OSError):
                return None
            data, mime = buf.getvalue(), "image/png"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_html(images: Images, path: Path) -> str:
    uri = images.uri(path)
    if uri is None:
        return f'<div class="noimg">image not readable: {e(path)}</div>'
    return f'<img src="{uri}" alt="{e(path.name)}" loading="lazy">'


def line_card(anchor: str, number: int, line: Shown, images: Images, extra: str = "") -> str:
    meta = [
        f'<a href="#{anchor}">line {number}</a>',
        f"{_line_cer(line.errors, len(line.gt))} ({line.errors} errors / {len(line.gt)} GT characters)",
        e(line.image),
    ]
    if line.document:
        meta.append(f"document {e(line.document)}")
    if line.groups:
        meta.append("groups " + e(", ".join(line.groups)))
    return (
        f'<div class="line" id="{anchor}"><div class="meta">{" · ".join(meta)}{extra}</div>'
        f"{image_html(images, line.image)}{aligned(line.gt, line.pred, line.ops)}</div>"
    )


# ------------------------------------------------------------------------------------------------ tables


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], text_cols: int = 1) -> str:
    """Cells are HTML already (escape before); the first ``text_cols`` columns left-aligned."""
    cls = [' class="t"' if i < text_cols else "" for i in range(len(head))]
    out = ["<table><tr>" + "".join(f"<th{c}>{h}</th>" for c, h in zip(cls, head, strict=True)) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(cls, r, strict=True)) + "</tr>")
    return "".join(out) + "</table>"


def _cer_cell(p: dict | None, key: str = "cer") -> str:
    if p is None:
        return report.NA
    ci = report.interval_text({"interval": p.get("interval")}) if p.get("interval") else ""
    return e(report.percent(p.get(key)) + (f" {ci}" if ci else ""))


def _pct(v: float | None) -> str:
    return report.NA if v is None else f"{100 * v:.1f} %"


def _quoted(text: str) -> str:
    return "<code>" + e(repr(text)[1:-1] if text else "∅") + "</code>"


def set_summary(s: dict) -> str:
    """A set's figures from the result: overall, groups, WER; classes; Sorbian letters."""
    o = s["overall"]
    rows = [
        [
            "all lines",
            str(o["lines"]),
            str(o["chars"]),
            _cer_cell(o),
            f"{o['errors']} ({o.get('substitutions', 0)} / {o.get('deletions', 0)} / {o.get('insertions', 0)})",
        ]
    ]
    for g, p in (s.get("groups") or {}).items():
        rows.append(
            [f"group {e(g)}", report.NA, report.NA, report.NA, report.NA]
            if p is None
            else [f"group {e(g)}", str(p["lines"]), str(p["chars"]), _cer_cell(p), str(p["errors"])]
        )
    out = [
        _table(["", "lines", "GT characters", "CER [interval]", "errors (S / D / I)"], rows),
        f'<p class="note">Intervals over {e(s.get("interval_unit", "lines"))}.'
        + (f" {s['skipped']} lines without valid GT left out." if s.get("skipped") else "")
        + (
            f" {s['missing_predictions']} lines without prediction counted as empty."
            if s.get("missing_predictions")
            else ""
        )
        + "</p>",
    ]
    if s.get("wer"):
        w = s["wer"]
        out.append(f"<p>WER {_cer_cell(w, 'wer')} ({w['errors']} word errors / {w['words']} GT words)</p>")
    if s.get("classes"):
        out.append("<h3>Character classes</h3>")
        out.append(
            _table(
                ["class", "GT characters", "errors", "CER", "recall", "precision"],
                (
                    [
                        e(k),
                        str(v["chars"]),
                        str(v["errors"]),
                        e(report.percent(v["cer"])),
                        _pct(v["recall"]),
                        _pct(v["precision"]),
                    ]
                    for k, v in s["classes"].items()
                ),
            )
        )
    letters = [
        r for r in s.get("sorbian_letters") or [] if r["gt"] or r["predicted"]
    ]  # as the printed report
    if letters:
        out.append("<h3>Sorbian letters</h3>")
        out.append(
            _table(
                ["letter", "GT count", "recall", "precision", "most frequent misreading"],
                (
                    [
                        e(r["char"]),
                        str(r["gt"]),
                        _pct(r["recall"]),
                        _pct(r["precision"]),
                        "" if r["misread"] is None else f"{_quoted(r['misread'])} {r['misread_count']}×",
                    ]
                    for r in letters
                ),
            )
        )
    return "".join(out)


def baseline_html(result: dict) -> str:
    b = result.get("baseline")
    if not b:
        return ""
    out = ['<h2 id="baseline">Baseline</h2>']
    if b.get("error"):
        out.append(f"<p>{e(b['model'])}: {report.MISSING}: {e(b['error'])}</p>")
    else:
        rows = [
            [e(r.get("model", "?")), e(s["name"]), str(s["overall"]["lines"]), _cer_cell(s["overall"])]
            for r in (result, b)
            for s in r.get("sets") or []
        ]
        out.append(_table(["model", "set", "lines", "CER [interval]"], rows, text_cols=2))
    out += [f"<p>{e(d.get('sentence', ''))}</p>" for d in result.get("baseline_differences") or []]
    if result.get("flag"):
        out.append(f"<p><strong>{e(result['flag'])}</strong></p>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ evaluation


def _rank_worst(lines: Sequence[Any]) -> list[int]:
    """Indices by most errors first, then image (the order of :func:`hsbcala.evaluate.scoring.score_sets`' worst lines)."""
    return sorted(range(len(lines)), key=lambda i: (-lines[i].errors, str(lines[i].image)))


def _sample(candidates: list[int], n: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(candidates, min(n, len(candidates))))


def _confusion_index(lines: Sequence[Any], wanted: set[tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
    index: dict[tuple[str, str], list[int]] = {c: [] for c in wanted}
    for i, x in enumerate(lines):
        al = x.alignment
        if al is not None and al.confusions:
            for c in set(al.confusions) & wanted:
                index[c].append(i)
    return index


def _shown(x: Any) -> Shown:
    al = x.alignment
    return Shown(Path(x.image), x.document, tuple(x.groups), x.gt, x.pred, x.errors, al.ops if al else ())


def _confusions_html(
    top: list, index: dict[tuple[str, str], list[int]], shown: set[int], anchor: Any, limit: int = 12
) -> str:
    rows = []
    for g, p, n in top:
        where = index.get((g, p), [])
        links = [f'<a href="#{anchor(i)}">{i + 1}</a>' for i in where if i in shown][:limit]
        more = len(where) - len(links)
        rows.append(
            [
                f"{_quoted(g)} → {_quoted(p)}",
                str(n),
                str(len(where)),
                " ".join(links)
                + (f" <span class='note'>+{more} more in lines.tsv</span>" if more > 0 else ""),
            ]
        )
    return _table(["GT → prediction", "count", "lines", "shown lines"], rows)


def _set_lines_html(si: int, s: dict, lines: Sequence[Any], n: int, seed: int, images: Images) -> str:
    def anchor(i: int) -> str:
        return f"s{si}-l{i + 1}"

    worst = [i for i in _rank_worst(lines)[:n] if lines[i].errors]
    shown = set(worst)
    sample = _sample([i for i in range(len(lines)) if i not in shown], n, seed) if n else []
    shown |= set(sample)
    top = s.get("top_confusions") or []
    index = _confusion_index(lines, {(g, p) for g, p, _ in top})
    extra: list[int] = []
    if n:
        for g, p, _ in top:
            more = [i for i in index[(g, p)] if i not in shown][:CONFUSION_EXAMPLES]
            extra += more
            shown |= set(more)
    name = e(s["name"])
    out = [f'<h3 id="s{si}-confusions">Most frequent confusions in {name}</h3>']
    out.append(_confusions_html(top, index, shown, anchor) if top else "<p>none</p>")
    out.append(f'<h3 id="s{si}-worst">The {len(worst)} worst lines of {name}</h3>')
    out += [line_card(anchor(i), i + 1, _shown(lines[i]), images) for i in worst]
    if not worst:
        out.append("<p>No line has an error.</p>" if n else "<p>eval.html_lines=0: no lines shown.</p>")
    if sample:
        out.append(f'<h3 id="s{si}-sample">{len(sample)} more lines of {name}, drawn at random</h3>')
        out += [line_card(anchor(i), i + 1, _shown(lines[i]), images) for i in sample]
    if extra:
        out.append(f'<h3 id="s{si}-examples">More lines of the confusions above</h3>')
        out += [line_card(anchor(i), i + 1, _shown(lines[i]), images) for i in sorted(extra)]
    return "".join(out)


def render_evaluation(result: dict, lines: dict[str, Sequence[Any]], n: int, seed: int = 0) -> str:
    """The page of one evaluation: ``result`` as :func:`hsbcala.evaluate.scoring.score_sets` (+ evaluate) made it,
    ``lines`` its per-set lines with their alignments (``score_sets(…, lines=…)``)."""
    images = Images()
    sets = result.get("sets") or []
    nav = ['<a href="#summary">summary</a>'] + [
        f'<a href="#s{i}">{e(s["name"])}</a>' for i, s in enumerate(sets)
    ]
    body = [f"<nav>{''.join(nav)}</nav>", '<h2 id="summary">Summary</h2>']
    for i, s in enumerate(sets):
        body.append(f"<h3>Set {e(s['name'])} <span class='note'>({e(s.get('key', ''))})</span></h3>")
        body.append(set_summary(s))
    body.append(baseline_html(result))
    for i, s in enumerate(sets):
        body.append(f'<h2 id="s{i}">Lines of {e(s["name"])}</h2>')
        body.append(_set_lines_html(i, s, lines.get(s["name"], []), n, seed, images))
    subtitle = (
        f"{e(result.get('version', ''))} model {e(result.get('checkpoint', ''))}; text normalised as "
        f"{e(result.get('normalization_description', result.get('normalization', '')))}; "
        f"written {time.strftime('%Y-%m-%d %H:%M')}. Line numbers are the lines' rows in &lt;set&gt;/lines.tsv."
    )
    return _PAGE.substitute(
        title=e(f"{result.get('model', '?')}: evaluation"), css=_CSS, subtitle=subtitle, body="".join(body)
    )


def write_evaluation(
    result: dict, lines: dict[str, Sequence[Any]], path: Path, n: int, seed: int = 0
) -> Path:
    path.write_text(render_evaluation(result, lines, n, seed), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ comparison


def read_lines_tsv(path: Path) -> list[dict]:
    """``<set>/lines.tsv`` with its texts (the normalised GT and prediction: no tab or line break in them)."""
    with open(path, encoding="utf-8") as f:
        head = f.readline().rstrip("\n").split("\t")
        return [dict(zip(head, line.rstrip("\n").split("\t"), strict=False)) for line in f]


def _tsv_shown(row: dict) -> Shown:
    gt, pred = row.get("gt", ""), row.get("prediction", "")
    return Shown(
        Path(row["image"]),
        row.get("document", ""),
        tuple(g for g in row.get("groups", "").split(",") if g),
        gt,
        pred,
        int(row["errors"]),
        cer.align(gt, pred).ops,  # the same function on the same texts as in the job (module doc)
    )


def _comparison_card(
    anchor: str, image: Path, per_model: list[tuple[str, dict | None]], images: Images
) -> str:
    first = next(r for _, r in per_model if r is not None)
    doc = f" · document {e(first['document'])}" if first.get("document") else ""
    cols = []
    for label, row in per_model:
        if row is None:
            cols.append(f'<div><div class="model">{e(label)}: not evaluated on this line</div></div>')
            continue
        x = _tsv_shown(row)
        cols.append(
            f'<div><div class="model"><strong>{e(label)}</strong>: {_line_cer(x.errors, len(x.gt))} '
            f"({x.errors} errors)</div>{aligned(x.gt, x.pred, x.ops)}</div>"
        )
    return (
        f'<div class="line" id="{anchor}"><div class="meta"><a href="#{anchor}">{e(image)}</a>{doc}</div>'
        f'{image_html(images, image)}<div class="models">{"".join(cols)}</div></div>'
    )


def _comparison_set(
    si: int, set_name: str, ok: list[tuple[str, dict]], n: int, seed: int, images: Images
) -> str:
    from hsbcala.evaluate.scoring import JOB_DIR

    per_model: list[tuple[str, dict[str, dict]]] = []
    for label, r in ok:
        path = Path(r[JOB_DIR]) / set_name / "lines.tsv"
        if path.is_file():
            per_model.append((label, {row["image"]: row for row in read_lines_tsv(path)}))
    if not per_model:
        return "<p>No model's lines.tsv found.</p>"
    order = list(dict.fromkeys(img for _, rows in per_model for img in rows))
    errs = {img: [int(rows[img]["errors"]) for _, rows in per_model if img in rows] for img in order}
    worst = sorted(order, key=lambda i: (-sum(errs[i]), i))[:n]
    worst = [i for i in worst if sum(errs[i])]
    spread = sorted(order, key=lambda i: (-(max(errs[i]) - min(errs[i])), i))[:n]
    spread = [i for i in spread if max(errs[i]) > min(errs[i])]
    taken = set(worst) | set(spread)
    rest = [i for i in order if i not in taken]
    sample = [rest[k] for k in _sample(list(range(len(rest))), n, seed)] if n else []

    def cards(kind: str, imgs: list[str]) -> list[str]:
        return [
            _comparison_card(
                f"s{si}-{kind}{k + 1}", Path(img), [(lab, rows.get(img)) for lab, rows in per_model], images
            )
            for k, img in enumerate(imgs)
        ]

    name = e(set_name)
    out = [f'<h3 id="s{si}-differ">{len(spread)} lines of {name} where the models differ most</h3>']
    out += cards("d", spread) or ["<p>The models make the same number of errors on every line.</p>"]
    out.append(
        f'<h3 id="s{si}-worst">The {len(worst)} worst lines of {name} (errors summed over the models)</h3>'
    )
    out += cards("w", worst) or ["<p>No line has an error.</p>"]
    if sample:
        out.append(f'<h3 id="s{si}-sample">{len(sample)} more lines of {name}, drawn at random</h3>')
        out += cards("r", sample)
    return "".join(out)


def render_comparison(
    results: list[dict], differences: list[dict], n: int, seed: int = 0, base: Path | None = None
) -> str:
    """The page of a multirun: the table of every model, the paired differences, and per set the same lines
    side by side for every model (each job's ``lines.tsv``; ``base``: the sweep dir, for links to each job's
    own report)."""
    from hsbcala.evaluate.scoring import JOB_DIR

    images = Images()
    rows = report.rows(results)
    cols = report.columns(rows)
    table = []
    for r, label in zip(rows, report.labels(rows), strict=True):
        failed = bool(r.get("error"))
        cells = [report.MISSING if failed else _cer_cell(report.part(r, c)) for c in cols]
        own = Path(r[JOB_DIR]) / FILE if r.get(JOB_DIR) else None
        name = e(label)
        if own is not None and own.is_file():
            href = own.relative_to(base).as_posix() if base and own.is_relative_to(base) else own.as_uri()
            name = f'<a href="{e(href)}">{name}</a>'
        n_lines = report.lines_of(r)
        table.append(
            [name, report.MISSING if failed or n_lines is None else str(n_lines), *cells, e(report.notes(r))]
        )
    body = ['<h2 id="summary">Models</h2>']
    body.append(_table(["model", "lines", *(e(c.title) for c in cols), "notes"], table))
    body.append(
        f'<p class="note">{e(report.interval_note(rows))} Text normalisation: '
        f"{e(report.normalisation_note(rows))}.</p>"
    )
    if differences:
        body.append("<h2>Paired differences (same lines, paired bootstrap)</h2>")
        body += [f"<p>{e(d.get('sentence') or d['a'] + ' − ' + d['b'])}</p>" for d in differences]
    ok = [
        (lab, r)
        for lab, r in zip(report.labels(results), results, strict=True)
        if not r.get("error") and r.get(JOB_DIR)
    ]
    set_names = list(dict.fromkeys(s["name"] for _, r in ok for s in r.get("sets") or []))
    for si, name in enumerate(set_names):
        body.append(f'<h2 id="s{si}">Lines of {e(name)}, model by model</h2>')
        body.append(_comparison_set(si, name, ok, n, seed, images))
    subtitle = f"{len(results)} evaluations; written {time.strftime('%Y-%m-%d %H:%M')}."
    return _PAGE.substitute(
        title="Comparison of the evaluated models", css=_CSS, subtitle=e(subtitle), body="".join(body)
    )


def write_comparison(results: list[dict], differences: list[dict], path: Path, n: int, seed: int = 0) -> Path:
    path.write_text(render_comparison(results, differences, n, seed, base=path.parent), encoding="utf-8")
    return path
