"""eval-report.html: the lines to look at, for one evaluation and for an ``evaluate.py -m`` comparison.

Quick: real line images of ../shared with predictions made wrong in known places, scored by the real
:func:`hsbcala.evaluate.scoring.score_sets`, rendered, and the marks checked against the alignment the CER counted (they
rebuild GT and prediction and add up to each line's errors). Slow: the tiny real models of both versions
(tests/test_evaluate.py's session fixtures) evaluated in-process on real lines, the comparison of the two made by
the real Hydra callback, both reports found in MLflow and opened in a real headless Chromium (screenshot:
something drawn, nothing past 1,280 px; DOM: the worst line's marks as parsed by the browser).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hsbcala.evaluate import cer, comparison, htmlreport, scoring
from hsbcala.evaluate import sets as evalsets
from tests.conftest import ROOT, missing, need, run_inprocess
from tests.test_evaluate import base_overrides

_OP = re.compile(
    r'<span class="op (eq|sub|del|ins)"><span class="g">(.*?)</span><span class="p">(.*?)</span></span>'
)


def _card(page: str, anchor: str) -> str:
    start = page.index(f'<div class="line" id="{anchor}">')
    end = page.find('<div class="line" id=', start + 1)
    return page[start : end if end > 0 else len(page)]


def _marks(card: str) -> list[tuple[str, str, str]]:
    """(kind, GT part, predicted part) of one aligned block, unescaped, the visible space back to a space."""
    return [
        (
            k,
            html.unescape(g).replace(htmlreport._VISIBLE_SPACE, " "),
            html.unescape(p).replace(htmlreport._VISIBLE_SPACE, " "),
        )
        for k, g, p in _OP.findall(card)
    ]


def _check_marks(card: str, gt: str, pred: str, errors: int) -> None:
    """The marks rebuild both texts and count exactly the line's errors (the CER's count)."""
    m = _marks(card)
    assert "".join(g for _, g, _ in m) == gt and "".join(p for _, _, p in m) == pred
    counted = sum(len(g) if k in ("sub", "del") else len(p) if k == "ins" else 0 for k, g, p in m)
    assert counted == errors


def _only_offline(page: str) -> None:
    """Nothing to fetch: every src is a data: URI, every href an anchor or a local file; no script."""
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    for attr, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        assert value.startswith(("data:image/", "#", "file:")) or not re.match(r"^[a-z]+:", value), (
            attr,
            value,
        )


# ------------------------------------------------------------------------------------------------ quick


@pytest.fixture
def real_lines(shared: Path) -> dict[Path, str]:
    book = sorted((shared / "data" / "fraktur19-lines" / "ref_AS").iterdir())[5]
    images = sorted(book.glob("*.png"))[:8]
    return {p: p.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8").strip() for p in images}


def _scored(tmp: Path, gt: dict[Path, str], pred: dict[Path, str]) -> tuple[dict, dict]:
    images = tuple(gt)
    s = evalsets.EvalSet("val", "eval.data", ["*.png"], images, gt, (), {"odd": images[::2]}, ungrouped=4)
    lines: dict = {}
    result = scoring.score_sets([s], {"odd": ["x"]}, "calamari2", pred, tmp, lines=lines)
    result.update(model="fraktur-cala2 <test>", version="cala2", checkpoint="/m/best.ckpt.json")
    return result, lines


def test_the_worst_line_is_shown_with_the_cers_own_marks_and_everything_escaped(tmp_path, real_lines):
    imgs = list(real_lines)
    gt = dict(real_lines)
    gt[imgs[3]] = 'Hdźe <b>je</b> & "wón"'  # a planted GT to escape, on a real image
    pred = dict(gt)
    pred[imgs[3]] = "Hdze <i>je</b> & wónn"  # ź→z, b→i, the first quote deleted, the last read as n
    pred[imgs[1]] = gt[imgs[1]][:-2]  # two deletions at the end
    result, lines = _scored(tmp_path, gt, pred)
    page = htmlreport.render_evaluation(result, lines, n=2, seed=0)
    worst = result["sets"][0]["worst_lines"][0]
    assert worst["gt"] == gt[imgs[3]] and worst["errors"] == 4
    card = _card(page, "s0-l4")  # row 4 of lines.tsv
    assert page.index('id="s0-worst"') < page.index('id="s0-l4"') < page.index('id="s0-l2"')
    # the substitution ź→z where the alignment the CER counted puts it
    al = cer.align(worst["gt"], worst["prediction"])
    _, g1, g2, p1, p2 = next(op for op in al.ops if op[0] == "replace")
    assert (worst["gt"][g1:g2], worst["prediction"][p1:p2]) == ("ź", "z")
    assert '<span class="op sub"><span class="g">ź</span><span class="p">z</span></span>' in card
    assert '<span class="op sub"><span class="g">b</span><span class="p">i</span></span>' in card
    assert '<span class="op del"><span class="g">&quot;</span><span class="p"></span></span>' in card
    _check_marks(card, worst["gt"], worst["prediction"], worst["errors"])
    _check_marks(_card(page, "s0-l2"), gt[imgs[1]], pred[imgs[1]], 2)
    assert "CER 18.18 % (4 errors / 22 GT characters)" in card  # the line's own CER
    # escaped everywhere: the GT's markup and the model's name are text, never tags
    assert "<b>" not in page and "je&lt;/b&gt; " in page and "fraktur-cala2 &lt;test&gt;" in page
    # the summary from the result, not recomputed: CER with interval, groups, classes, letters
    o = result["sets"][0]["overall"]
    assert f"{100 * o['cer']:.2f} %" in page and "group odd" in page and "Sorbian letters" in page
    # the confusion table links each confusion to its shown lines
    assert "<code>ź</code> → <code>z</code>" in page and '<a href="#s0-l4">4</a>' in page
    for target in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{target}"' in page, target
    # the two worst and two more drawn from the rest, each with its real image embedded
    assert page.count('<div class="line" id=') == 4 and page.count('src="data:image/png;base64,') == 4
    _only_offline(page)


def test_html_lines_zero_keeps_the_summary_and_the_confusions(tmp_path, real_lines):
    imgs = list(real_lines)
    pred = {**real_lines, imgs[0]: real_lines[imgs[0]] + "x"}
    result, lines = _scored(tmp_path, real_lines, pred)
    page = htmlreport.render_evaluation(result, lines, n=0)
    assert '<div class="line"' not in page and "eval.html_lines=0" in page and "Character classes" in page


def test_an_unreadable_or_tiff_image_does_not_stop_the_report(tmp_path, real_lines):
    from PIL import Image

    img = next(iter(real_lines))
    tif, big = tmp_path / "line.tif", tmp_path / "big.png"
    with Image.open(img) as im:
        im.crop((0, 0, 300, im.height)).save(tif)  # small: only its format decides
        im.convert("RGB").resize((im.width * 3, im.height * 3)).save(big, compress_level=0)
    assert tif.stat().st_size < htmlreport.MAX_EMBED_BYTES < big.stat().st_size
    images = htmlreport.Images()
    assert images.uri(tif).startswith("data:image/png;base64,")  # converted: browsers do not show TIFF
    uri = images.uri(big)  # a big scan: scaled down, not embedded at full size
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.height <= htmlreport.MAX_HEIGHT and im.width <= htmlreport.MAX_WIDTH
    assert images.uri(tmp_path / "gone.png") is None
    assert "image not readable" in htmlreport.image_html(images, tmp_path / "gone.png")


# ------------------------------------------------------------------------------------------------ chromium


def chromium(page: Path, tmp: Path) -> tuple[Path, str]:
    """A screenshot at 1,280 px and the DOM as a real headless Chromium (Debian's package) built it."""
    exe = shutil.which("chromium")
    if exe is None:
        missing("chromium not installed (apt-get install chromium; setup.sh --test installs it)")
    png = tmp / f"{page.stem}.png"
    argv = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--window-size=1280,2000",
        "--hide-scrollbars",  # else the scroll bar covers the right margin the test checks
    ]
    shot = subprocess.run(
        [*argv, f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=180
    )
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    dom = subprocess.run([*argv, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return png, dom.stdout


def _check_screenshot(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as im:
        gray = im.convert("L")
        assert gray.size == (1280, 2000)
        hist = gray.histogram()
        drawn = sum(hist[:240]) / (gray.size[0] * gray.size[1])
        assert drawn > 0.02, f"only {100 * drawn:.2f} % of the screenshot is not blank"
        # nothing runs past the page's 1,240 px column at 1,280 px: the right margin stays white
        margin = gray.crop((1266, 0, 1280, 2000))
        assert margin.getextrema()[0] >= 240


@pytest.mark.slow
def test_the_report_opens_in_headless_chromium(tmp_path, real_lines):
    imgs = list(real_lines)
    pred = {**real_lines, imgs[2]: "Wězo " + real_lines[imgs[2]][3:]}
    result, lines = _scored(tmp_path, real_lines, pred)
    page = htmlreport.write_evaluation(result, lines, tmp_path / htmlreport.FILE, n=3)
    png, dom = chromium(page, tmp_path)
    _check_screenshot(png)
    card = _card(dom, "s0-l3")
    w = result["sets"][0]["worst_lines"][0]  # the normalised texts (the prediction's two spaces are one)
    _check_marks(card, w["gt"], w["prediction"], w["errors"])
    assert dom.count('<div class="line" id=') == 4 and dom.count("<img ") == 4  # 1 with errors + 3 drawn


# ------------------------------------------------------------------------------------------------ slow: real


def _evaluate(tiny_models: Path, lines: Path, version: str, job: Path) -> dict:
    res = run_inprocess(
        "evaluate",
        [
            *base_overrides(tiny_models, lines),
            f"version={version}",
            f"model_dir={tiny_models / f'model-{version}'}",
            f"hydra.run.dir={job}",
            "eval.html_lines=5",
            "eval.intervals.resamples=50",
        ],
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"results in {job}; the lines to look at: {job / htmlreport.FILE}" in res.stderr
    return json.loads((job / scoring.RESULT_FILE).read_text(encoding="utf-8"))


@pytest.mark.slow
def test_real_models_reports_and_their_comparison_open_in_chromium(tiny_models, variant_lines, tmp_path):
    import mlflow

    need(variant_lines)
    sweep = tmp_path / "sweep"
    results = {
        v: _evaluate(tiny_models, variant_lines, v, sweep / str(i)) for i, v in enumerate(("cala1", "cala2"))
    }
    # one evaluation: the worst line with the marks of the CER's alignment, at its row of lines.tsv
    job = sweep / "1"
    page = (job / htmlreport.FILE).read_text(encoding="utf-8")
    worst = results["cala2"]["sets"][0]["worst_lines"][0]
    rows = htmlreport.read_lines_tsv(job / "eval" / "lines.tsv")
    row = next(i for i, r in enumerate(rows) if r["image"] == worst["image"]) + 1
    first = page[page.index('id="s0-worst"') :]
    assert first.index(f'<div class="line" id="s0-l{row}">') == first.index('<div class="line" id=')
    card = _card(page, f"s0-l{row}")
    _check_marks(card, worst["gt"], worst["prediction"], worst["errors"])
    for tag, g1, g2, p1, p2 in cer.align(worst["gt"], worst["prediction"]).ops:
        if tag == "replace":
            g, p = (
                html.escape(x.replace(" ", htmlreport._VISIBLE_SPACE))
                for x in (worst["gt"][g1:g2], worst["prediction"][p1:p2])
            )
            assert f'<span class="op sub"><span class="g">{g}</span><span class="p">{p}</span></span>' in card
    assert "The 5 worst lines of eval" in page and page.count("data:image/png;base64,") >= 5
    _only_offline(page)
    # logged beside eval-result.json in the model's run
    client = mlflow.MlflowClient(tracking_uri=results["cala2"]["mlflow"]["tracking_uri"])
    arts = {a.path for a in client.list_artifacts(results["cala2"]["mlflow"]["run_id"], "eval")}
    assert {"eval/eval-result.json", f"eval/{htmlreport.FILE}"} <= arts
    # the comparison: the real callback over the two jobs, as after evaluate.py -m
    cfg = OmegaConf.create(
        {
            "dry_run": False,
            "hydra": {"sweep": {"dir": str(sweep)}},
            "eval": {"comparison_experiment": "cmp", "html_lines": 4, "intervals": {"seed": 0}},
        }
    )
    comparison.ComparisonTable().on_multirun_end(cfg)
    cmp_page = (sweep / htmlreport.FILE).read_text(encoding="utf-8")
    assert "where the models differ most" in cmp_page and 'href="1/eval-report.html"' in cmp_page
    differ = _card(cmp_page, "s0-d1")
    assert (
        differ.count('<div class="model">') == 2 and "fraktur-cala1" in differ and "fraktur-cala2" in differ
    )
    _only_offline(cmp_page)
    run = client.search_runs([client.get_experiment_by_name("cmp").experiment_id])[0]
    assert f"{htmlreport.FILE}" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # both open in a real browser: something drawn, nothing past 1,280 px, the marks in the DOM
    png, dom = chromium(job / htmlreport.FILE, tmp_path)
    _check_screenshot(png)
    _check_marks(_card(dom, f"s0-l{row}"), worst["gt"], worst["prediction"], worst["errors"])
    png, dom = chromium(sweep / htmlreport.FILE, tmp_path)
    _check_screenshot(png)
    assert dom.count('<div class="model">') >= 2 * 4
