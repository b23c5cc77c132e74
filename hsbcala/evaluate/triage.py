"""GT triage (``data_check_only=true data.triage=true``): which lines deserve a human look before training.

The commonest cause of a bad model is bad ground truth (Calamari-OCR/calamari#325: an Upper Sorbian set whose
line segmentation was wrong). Triage reads every training and validation line of the data step's manifest
with a model (``data.triage_model``, else ``warmstart.model``) in ONE ``calamari-predict`` pass
(:func:`hsbcala.evaluate.predict.predict`, the evaluation's runner), and ranks the lines by the sum of these scores
(each 0-1, 1 meaning "almost surely wrong"):

``cer``            the model's CER on the line minus its document's median line CER (a line it reads badly while
                   reading the neighbours well; a model that reads the whole book badly flags nothing);
``length``         image width per GT character (at line height 48) far from the document's median (a cut line,
                   two lines merged, GT of another line): a robust z-score whose spread grows for short lines;
``same_image``     the same image bytes with different GT;
``train_and_val``  the same image in training and validation;
``same_line``      the same image twice on one side;
``same_gt``        the same GT (10+ characters) on different images (a copied GT file);
``normalization``  a line in the minority Unicode normalisation (NFD among NFC lines, or the reverse);
``rare_chars``     characters seen fewer than 5 times in the whole data (a typo, a wrong code point);
``val_only_chars`` validation characters never seen in training (the model cannot learn them);
``no_prediction``  the engine gave no prediction (it skipped the line).

Without a model the checks that need none still run, and the console and the report say the CER column is
absent. Output, in the directory ``data_check_only`` writes to: ``triage.tsv`` (every line, worst first; its
first column is the image's path, so rows copied into a file work as ``data.exclude=[FILE]``, see
:mod:`hsbcala.data.exclude`) and ``triage.html`` (the flagged lines with their images embedded, one file that opens
offline).
"""

from __future__ import annotations

import html
import math
import shutil
import statistics
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hsbcala.core.console import say
from hsbcala.core.errors import ConfigError, DataError
from hsbcala.evaluate import cer, htmlreport

TSV = "triage.tsv"
HTML = "triage.html"
HTML_LINES = 300  # flagged lines shown (with images) in triage.html; triage.tsv has every line
RARE = 5  # a character seen fewer times than this in the whole data is rare
SAME_GT_MIN_CHARS = 10  # shorter texts (page numbers, "—", running heads) legitimately repeat
LINE_HEIGHT = 48  # both engines' line height (hsbcala/data/linesize.py): widths are compared at this height

KINDS = {  # key: what it means (the report's legend)
    "cer": "the model reads it much worse than its document's other lines",
    "length": "text length does not fit the image width (cut or merged line, GT of another line)",
    "same_image": "the same image with different GT",
    "train_and_val": "the same image in training and validation",
    "same_line": "the same image twice on one side",
    "same_gt": "the same GT on different images",
    "normalization": "Unicode normalisation differs from most lines (NFC/NFD)",
    "rare_chars": f"characters seen fewer than {RARE} times",
    "val_only_chars": "characters only in validation",
    "no_prediction": "the engine gave no prediction",
}


@dataclass
class Row:
    """One line's triage: its manifest record's facts, the model's reading, and the findings."""

    image: str
    split: str
    document: str
    text: str
    prediction: str | None = None
    cer: float | None = None
    px_per_char: float | None = None
    findings: dict[str, tuple[float, str]] = field(default_factory=dict)  # kind -> (score, why)

    @property
    def score(self) -> float:
        return sum(s for s, _ in self.findings.values())

    def add(self, kind: str, score: float, why: str) -> None:
        old = self.findings.get(kind)
        if old is None or score > old[0]:
            self.findings[kind] = (round(score, 3), why)


# ------------------------------------------------------------------------------------------------ ranking


def _median_by(values: dict[int, float], docs: dict[int, str], min_lines: int) -> dict[int, float]:
    """Each line's reference: its document's median, or the set's when the document has too few lines."""
    by_doc: dict[str, list[float]] = defaultdict(list)
    for i, v in values.items():
        by_doc[docs[i]].append(v)
    overall = statistics.median(values.values()) if values else 0.0
    med = {d: statistics.median(v) for d, v in by_doc.items() if len(v) >= min_lines}
    return {i: med.get(docs[i], overall) for i in values}


def _cer(rows: list[Row], records: list[dict], predictions: dict[str, str | None], rules: str) -> None:
    values = {}
    for i, (row, rec) in enumerate(zip(rows, records, strict=True)):
        pred = predictions.get(rec["image"])
        if pred is None:
            row.add("no_prediction", 0.5, "the engine gave no prediction (it skipped the line)")
            continue
        row.prediction = pred
        g, p = cer.normalize(rec["text"] or "", rules), cer.normalize(pred, rules)
        if g:
            row.cer = min(1.0, cer.distance(g, p) / len(g))
            values[i] = row.cer
    ref = _median_by(values, {i: rows[i].document for i in values}, 3)
    for i, c in values.items():
        if c - ref[i] >= 0.15:  # below: a model's ordinary spread between lines
            rows[i].add("cer", c - ref[i], f"CER {c:.0%} where its document's median is {ref[i]:.0%}")


def _length(rows: list[Row], records: list[dict]) -> None:
    logs, n_chars = {}, {}
    for i, (row, rec) in enumerate(zip(rows, records, strict=True)):
        n = len(unicodedata.normalize("NFC", rec["text"] or ""))
        if n and rec.get("width") and rec.get("height"):
            row.px_per_char = rec["width"] * LINE_HEIGHT / rec["height"] / n
            logs[i], n_chars[i] = math.log(row.px_per_char), n
    if len(logs) < 5:
        return
    ref = _median_by(logs, {i: rows[i].document for i in logs}, 5)
    dev = {i: logs[i] - ref[i] for i in logs}
    # robust spread (MAD) of the log ratio; a short text's px per character varies more (a capital, a dash),
    # hence + 1/n. Measured on the 5,326 shared Fraktur lines: MAD 0.056, a half-width line deviates by 0.69.
    sigma = max(0.05, 1.4826 * statistics.median(abs(d) for d in dev.values()))
    for i, d in dev.items():
        z = abs(d) / (sigma + 1 / n_chars[i])
        if z > 3:
            have, want = rows[i].px_per_char, math.exp(ref[i])
            why = (
                f"{have:.0f} px per character where its document has {want:.0f}: "
                + ("text too long for the image (cut line? GT of another line?)" if d < 0 else "")
                + ("text too short for the image (merged lines? GT missing text?)" if d > 0 else "")
            )
            rows[i].add("length", min(1.0, (z - 3) / 3), why)


def _duplicates(rows: list[Row], records: list[dict]) -> None:
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec.get("image_sha256"):
            by_image[rec["image_sha256"]].append(i)
    nfc = [unicodedata.normalize("NFC", r["text"] or "").strip() for r in records]
    for group in (g for g in by_image.values() if len(g) > 1):
        for i in group:
            others = [j for j in group if j != i]
            differ = [j for j in others if nfc[j] != nfc[i]]
            crossed = [j for j in others if records[j]["split"] != records[i]["split"]]
            if differ:
                rows[i].add(
                    "same_image", 1.0, f"the same image as {records[differ[0]]['image']} with other GT"
                )
            if crossed:
                rows[i].add(
                    "train_and_val",
                    1.0,
                    f"the same image is in {records[crossed[0]]['split']} as {records[crossed[0]]['image']}",
                )
            same = [j for j in others if j not in crossed and records[j]["gt"] != records[i]["gt"]]
            if same and not differ:
                rows[i].add("same_line", 0.3, f"the same image again as {records[same[0]]['image']}")
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(nfc):
        if len(t) >= SAME_GT_MIN_CHARS:
            by_text[t].append(i)
    for group in (g for g in by_text.values() if len(g) > 1):
        for i in group:
            # other images (not the same bytes) with their own GT file (variants share theirs)
            others = [
                j
                for j in group
                if records[j]["image_sha256"] != records[i]["image_sha256"]
                and records[j]["gt"] != records[i]["gt"]
            ]
            if others:
                rows[i].add(
                    "same_gt",
                    0.6 * min(1.0, len(nfc[i]) / 40),
                    f"the same GT as {records[others[0]]['image']} (another image)",
                )


def _unicode(rows: list[Row], records: list[dict]) -> None:
    texts = [r["text"] or "" for r in records]
    nfc = [unicodedata.normalize("NFC", t) for t in texts]
    not_nfc = [i for i, t in enumerate(texts) if t != nfc[i]]
    # lines whose NFD differs could be either way; the minority form is the suspect one
    decomposable = [i for i, t in enumerate(nfc) if unicodedata.normalize("NFD", t) != t]
    if not_nfc and len(not_nfc) < len(decomposable):
        for i in not_nfc:
            rows[i].add(
                "normalization",
                0.8,
                f"not in NFC (decomposed) while {len(decomposable) - len(not_nfc)} lines with such "
                f"characters are NFC",
            )
    elif not_nfc and len(not_nfc) < len(decomposable) * 2:  # mostly decomposed: the NFC ones stand out
        for i in (i for i in decomposable if texts[i] == nfc[i]):
            rows[i].add("normalization", 0.8, f"in NFC while {len(not_nfc)} lines are decomposed (NFD)")
    counts = Counter(c for t in nfc for c in t)
    train_chars = {c for t, r in zip(nfc, records, strict=True) if r["split"] == "train" for c in t}
    for i, t in enumerate(nfc):
        rare = sorted({c for c in t if counts[c] < RARE and not c.isspace()})
        if rare:
            shown = ", ".join(f"‹{c}› U+{ord(c):04X} ({counts[c]}×)" for c in rare[:5])
            rows[i].add("rare_chars", 0.25, f"rare: {shown}")
        if records[i]["split"] == "val":
            only = sorted({c for c in t if c not in train_chars and not c.isspace()})
            if only:
                shown = ", ".join(f"‹{c}› U+{ord(c):04X}" for c in only[:5])
                rows[i].add("val_only_chars", 0.4, f"only in validation: {shown}")
    for row in rows:  # one character problem counts once: the larger of the two
        if "rare_chars" in row.findings and "val_only_chars" in row.findings:
            row.findings["rare_chars"] = (0.0, row.findings["rare_chars"][1])


def rank(
    records: list[dict[str, Any]], predictions: dict[str, str | None] | None, rules: str = "calamari2"
) -> list[Row]:
    """Every manifest line record as a :class:`Row`, worst first (``predictions``: image path -> text or None
    when the engine skipped the line; None: no model, no CER)."""
    rows = [Row(r["image"], r["split"], str(r.get("document") or ""), r["text"] or "") for r in records]
    if predictions is not None:
        _cer(rows, records, predictions, rules)
    _length(rows, records)
    _duplicates(rows, records)
    _unicode(rows, records)
    return sorted(rows, key=lambda r: (-r.score, r.image))


# ------------------------------------------------------------------------------------------------ output


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("\t", " ").replace("\r", "↵").replace("\n", "↵")


def tsv(rows: list[Row]) -> str:
    """``triage.tsv``: the header is a ``#`` row, so copied rows (header or not) work in ``data.exclude``."""
    out = ["# image\tscore\tsplit\tdocument\tfindings\tcer\tpx_per_char\tgt\tprediction"]
    for r in rows:
        found = "; ".join(f"{k} {s:.2f}: {why}" for k, (s, why) in r.findings.items() if s > 0)
        out.append(
            "\t".join(
                [
                    r.image,
                    f"{r.score:.3f}",
                    r.split,
                    _cell(r.document),
                    _cell(found),
                    "" if r.cer is None else f"{r.cer:.4f}",
                    "" if r.px_per_char is None else f"{r.px_per_char:.1f}",
                    _cell(r.text),
                    _cell(r.prediction),
                ]
            )
        )
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:sans-serif;margin:1.5em;max-width:1240px;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-top:1px solid #ccc;padding:.35em;vertical-align:top;text-align:left}
img{max-width:100%;height:auto;background:#fff;border:1px solid #ddd}
.t{font-family:"DejaVu Serif",serif;font-size:1.15em;white-space:pre-wrap}
.err{background:#fbb}.ins{background:#bdf}.score{font-weight:bold}
.path{font-family:monospace;font-size:.8em;color:#555;word-break:break-all;user-select:all}
ul{margin:.2em 0;padding-left:1.2em}.note{background:#ffd;padding:.5em}
"""


def _marked(text: str, spans: list[tuple[int, int]], cls: str) -> str:
    out, pos = [], 0
    for a, b in spans:
        out.append(html.escape(text[pos:a]))
        out.append(f'<span class="{cls}">{html.escape(text[a:b]) or "&#8203;"}</span>')
        pos = b
    return "".join(out) + html.escape(text[pos:])


def _aligned(gt: str, pred: str, rules: str) -> tuple[str, str]:
    """GT and prediction (normalised as the CER compares them), the CER's alignment highlighted."""
    g, p = cer.normalize(gt, rules), cer.normalize(pred, rules)
    al = cer.align(g, p)
    gs = [(a, b) for tag, a, b, _, _ in al.ops if tag in ("replace", "delete")]
    ps = [(c, d) for tag, _, _, c, d in al.ops if tag in ("replace", "insert")]
    return _marked(g, gs, "err"), _marked(p, ps, "ins")


def page(rows: list[Row], *, model: str | None, why_no_model: str, rules: str, seconds: float | None) -> str:
    """``triage.html``: one self-contained page (images embedded, nothing fetched)."""
    flagged = [r for r in rows if r.score > 0]
    counts = Counter(k for r in rows for k, (s, _) in r.findings.items() if s > 0)
    legend = "".join(
        f"<tr><td>{k}</td><td>{counts.get(k, 0)}</td><td>{html.escape(v)}</td></tr>" for k, v in KINDS.items()
    )
    if model:
        reader = f"Read by <code>{html.escape(model)}</code> in {seconds:.0f} s (one calamari-predict pass)."
    else:
        reader = f'<span class="note">No model: {html.escape(why_no_model)}; the CER column is absent.</span>'
    images = htmlreport.Images()  # the evaluation report's embedding: TIFF converted, big scans scaled down
    body = []
    for rank_, r in enumerate(flagged[:HTML_LINES], 1):
        if r.prediction is not None:
            gt, pred = _aligned(r.text, r.prediction, rules)
            texts = f'<div class="t">{gt}</div><div class="t">{pred}</div>'
        else:
            texts = f'<div class="t">{html.escape(r.text)}</div>'
        found = "".join(
            f"<li><b>{k}</b> {s:.2f}: {html.escape(w)}</li>" for k, (s, w) in r.findings.items() if s > 0
        )
        body.append(
            f'<tr id="line-{rank_}"><td>{rank_}<br><span class="score">{r.score:.2f}</span></td>'
            f"<td>{htmlreport.image_html(images, Path(r.image))}{texts}<ul>{found}</ul>"
            f'<div class="path">{html.escape(r.image)}</div></td>'
            f"<td>{html.escape(r.split)}<br>{html.escape(r.document)}"
            + ("" if r.cer is None else f"<br>CER {r.cer:.0%}")
            + "</td></tr>"
        )
    more = (
        f"<p>{len(flagged) - HTML_LINES} more flagged lines are in {TSV}.</p>"
        if len(flagged) > HTML_LINES
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>GT triage: {len(flagged)} of {len(rows)} lines</title><style>{_CSS}</style></head><body>"
        f"<h1>GT triage: {len(flagged)} of {len(rows)} lines worth a look</h1><p>{reader}</p>"
        "<p>To leave lines out, copy their paths (or whole rows of "
        f"<code>{TSV}</code>) into a file and train with <code>data.exclude=[FILE]</code>.</p>"
        f'<table id="legend"><tr><th>finding</th><th>lines</th><th>meaning</th></tr>{legend}</table>'
        '<h2>Lines, worst first</h2><table id="lines"><tr><th>#</th><th>image, GT'
        + (" (red: what the model misread), prediction (blue: what it read instead)" if model else "")
        + f", findings</th><th>split, document</th></tr>{''.join(body)}</table>{more}</body></html>\n"
    )


# ------------------------------------------------------------------------------------------------ run


def model_for(cfg: Any, engine: Any) -> tuple[Path | None, str]:
    """(the model triage reads with, "") or (None, why there is none); a bad one is refused in one line."""
    from hsbcala import engines
    from hsbcala.engines import modeljson

    key = "data.triage_model" if cfg.data.triage_model else "warmstart.model"
    raw = cfg.data.triage_model or cfg.warmstart.model
    if not raw:
        return None, "no data.triage_model and no warmstart.model"
    path = Path(str(raw)).expanduser()
    path = path if path.is_absolute() else Path(cfg.paths.root) / path
    if not path.name.endswith(".json"):
        path = path.with_name(path.name + ".json")
    if not path.is_file():
        raise DataError(f"{key}: no such model {path} (give a <name>.ckpt.json)")
    info = modeljson.read_model(path)
    if info.version != engine.major:
        found = engines.label(info.version)
        raise ConfigError(
            f"{key}: {path} is a {found} model, but version={engine.name}; choose version={found}"
        )
    if not engine.weights_of(path):
        raise DataError(f"{key}: {path} has no weights beside it ({engine.weights_names(path)})")
    return path, ""


def predictions(
    cfg: Any, p: Any, model: Path, images: list[Path], work: Path
) -> tuple[dict[str, str | None], float]:
    """The one calamari-predict pass of the evaluation (:func:`hsbcala.evaluate.predict.predict`) over ``images``."""
    from hsbcala.evaluate import predict as evaluate

    shutil.rmtree(work, ignore_errors=True)
    links = evaluate.stage(images, work / "lines")
    log = work.parent / "triage-predict.log"
    say(f"triage: {model} reads {len(images):,} lines; calamari-predict log: {log}")
    p.env.ensure()
    # evaluate.predict takes the evaluation's plan and config; it reads only these fields of them
    plan = SimpleNamespace(env=p.env, version=p.engine.name)
    conf = SimpleNamespace(eval=SimpleNamespace(batch_size=int(cfg.train.batch_size), predict_args=[]))
    try:
        by_image, seconds, _ = evaluate.predict(plan, model, images, links, work / "pred", log, conf)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {str(k): v for k, v in by_image.items()}, seconds


def run(cfg: Any, p: Any, target: Path) -> list[Row]:
    """``data.triage=true``: read, rank and write ``triage.tsv`` + ``triage.html`` into ``target``."""
    from hsbcala.core import fsutil

    records = list((p.data.manifest or {}).get("lines") or [])
    model, why = model_for(cfg, p.engine)
    preds, seconds = None, None
    if model is None:
        say(f"triage: {why}: the model's CER column is absent; the checks that need no model still run")
    elif records:
        preds, seconds = predictions(
            cfg, p, model, [Path(r["image"]) for r in records], target / "triage-predict"
        )
    t0 = time.perf_counter()
    rules = p.engine.eval_rules
    rows = rank(records, preds, rules)
    target.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write_text(target / TSV, tsv(rows))
    fsutil.atomic_write_text(
        target / HTML,
        page(rows, model=str(model) if model else None, why_no_model=why, rules=rules, seconds=seconds),
    )
    flagged = [r for r in rows if r.score > 0]
    top = "; ".join(f"{Path(r.image).name} {r.score:.2f} ({', '.join(r.findings)})" for r in flagged[:3])
    say(
        f"triage: {len(flagged):,} of {len(rows):,} lines worth a look (worst: {top or '-'}); wrote {TSV}, "
        f"{HTML} to {target} in {time.perf_counter() - t0:.1f} s"
    )
    return rows
