"""GT triage (``data.triage=true``) and ``data.exclude``: real Fraktur lines from ../shared with planted defects,
a tiny real Calamari 2 model trained through train.py reading them in the real calamari-predict pass, the
report opened in a real headless Chromium. The ranking's CER rule is also checked on written-down records."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

from hsbcala.evaluate import triage
from tests.conftest import ROOT, SHARED, missing, need, run_inprocess
from tests.test_train_integration import launch, tiny

BOOKS = SHARED / "data" / "fraktur19-lines" / "ref_AS"


def _gt(png: Path) -> str:
    return png.with_suffix(".gt.txt").read_text(encoding="utf-8").strip()


def _copy(pngs: list[Path], dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    for png in pngs:
        shutil.copy(png, dst / png.name)
        shutil.copy(png.with_suffix(".gt.txt"), dst / f"{png.stem}.gt.txt")
    return [dst / p.name for p in pngs]


def _lines(book: Path, n: int) -> list[Path]:
    return sorted(p for p in book.glob("*.png") if p.with_suffix(".gt.txt").is_file())[:n]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny real Calamari 2 model (train.py, 2 epochs) trained on the first lines of two other books."""
    books = sorted(need(BOOKS, "shared Fraktur lines").iterdir())
    tmp = tmp_path_factory.mktemp("triage-model")
    train, val = _copy(_lines(books[5], 20), tmp / "t"), _copy(_lines(books[6], 8), tmp / "v")
    proc = launch(tiny(tmp, [train[0].parent], [val[0].parent], "cala2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "model-cala2" / "best.ckpt.json"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """40 real lines of two books (training) and 10 of a third (validation), with four defects planted:
    a line given another line's GT, a line cut to half its width, a line in NFD, a training line copied into
    validation."""
    from PIL import Image

    books = sorted(need(BOOKS, "shared Fraktur lines").iterdir())
    tmp = tmp_path_factory.mktemp("triage-lines")
    b1, b2 = _copy(_lines(books[0], 20), tmp / "b1"), _copy(_lines(books[1], 20), tmp / "b2")
    v = tmp / "v"
    _copy(_lines(books[2], 10), v)
    longest = sorted(b1, key=lambda p: -len(_gt(p)))
    # swapped GT: the longest line of b1 gets the GT of a short line of a book not in the set
    swapped = longest[0]
    short = min((p for p in _lines(books[3], 999) if len(_gt(p)) >= 8), key=lambda p: len(_gt(p)))
    swapped.with_suffix(".gt.txt").write_text(_gt(short), encoding="utf-8")
    # cut: a long line of b2 cropped to half its width (its GT still the whole line's)
    cut = max(b2, key=lambda p: len(_gt(p)))
    with Image.open(cut) as im:
        im.crop((0, 0, im.width // 2, im.height)).save(cut)
    # NFD: a line with a precomposed letter, decomposed
    nfd = next(p for p in longest[1:] if unicodedata.normalize("NFD", _gt(p)) != _gt(p))
    nfd.with_suffix(".gt.txt").write_text(unicodedata.normalize("NFD", _gt(nfd)), encoding="utf-8")
    # a training line also in validation, under another name
    dup = sorted(b2)[3]
    shutil.copy(dup, v / "copy.png")
    shutil.copy(dup.with_suffix(".gt.txt"), v / "copy.gt.txt")
    return {"root": tmp, "swapped": swapped, "cut": cut, "nfd": nfd, "dup": dup, "dup_val": v / "copy.png"}


def _overrides(root: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        "version=cala2",
        f"paths.root={root}",
        f"model_dir={model_dir}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlruns.db'}",
        f"data.train=[{root}/b1/*.png,{root}/b2/*.png]",
        f"data.val=[{root}/v/*.png]",
        "data_check_only=true",
        *extra,
    ]


def _rows(path: Path) -> list[list[str]]:
    return [r.split("\t") for r in path.read_text(encoding="utf-8").splitlines() if not r.startswith("#")]


@pytest.fixture(scope="module")
def triaged(model, planted) -> dict:
    root = planted["root"]
    out = root / "model-triage"
    res = run_inprocess(
        "train", _overrides(root, out, "data.triage=true", f"data.triage_model={model}"), ROOT
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return {**planted, "dir": out, "stderr": res.stderr}


@pytest.mark.slow
def test_planted_defects_are_in_the_top_five(triaged):
    rows = _rows(triaged["dir"] / triage.TSV)
    assert len(rows) == 51  # every line: 40 training, 10 + 1 validation
    top = [r[0] for r in rows[:5]]
    for defect in ("swapped", "cut", "nfd", "dup", "dup_val"):
        assert str(triaged[defect]) in top, (defect, [(r[0], r[1], r[4]) for r in rows[:8]])
    by_image = {r[0]: r for r in rows}
    assert "length" in by_image[str(triaged["swapped"])][4]
    assert "length" in by_image[str(triaged["cut"])][4] and "cut line" in by_image[str(triaged["cut"])][4]
    assert "normalization" in by_image[str(triaged["nfd"])][4]
    assert "train_and_val" in by_image[str(triaged["dup_val"])][4]
    # the model read every line in the one calamari-predict pass: a CER per line
    assert all(r[5] != "" for r in rows), "a line without the model's CER"
    assert "triage: " in triaged["stderr"] and "reads 51 lines" in triaged["stderr"]


@pytest.mark.slow
def test_triage_html_in_headless_chromium(triaged, tmp_path):
    from PIL import Image, ImageChops

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing("chromium not installed (apt-get install -y chromium; setup.sh --test)")
    page = triaged["dir"] / triage.HTML
    # no network: nothing but the file itself and data: URIs
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"(?!data:|#)", text)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]
    # a profile of its own: another test's Chromium may run beside it
    flags.append(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    first = re.search(r'<tr id="line-1">(.*?)</tr>', dom, re.DOTALL)
    assert first, dom[:2000]
    # the line image is embedded (htmlreport's embedding, shared with the evaluation report), named in its alt text
    assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="[^"]+\.png"', first.group(1))
    ranked = re.findall(r'<div class="path">([^<]*)</div>', dom)
    for defect in ("swapped", "cut", "nfd", "dup", "dup_val"):
        assert str(triaged[defect]) in ranked[:5]
    # the prediction is shown with the alignment's spans
    assert 'class="err"' in dom or 'class="ins"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as im:
        im = im.convert("RGB")
        assert im.size == (1280, 1600)
        diff = ImageChops.difference(im, Image.new("RGB", im.size, (255, 255, 255))).convert("L")
        inked = sum(diff.point(lambda v: 255 if v > 40 else 0).histogram()[255:])
    assert inked > 0.02 * 1280 * 1600, f"only {inked} non-white pixels: a blank page?"


@pytest.mark.slow
def test_exclude_drops_exactly_the_listed_lines(model, triaged):
    root = triaged["root"]
    rows = (triaged["dir"] / triage.TSV).read_text(encoding="utf-8").splitlines()
    listed = root / "exclude.txt"
    # the header and the two worst rows as copied from triage.tsv, a comment, a line not in the data
    listed.write_text(
        "\n".join(rows[:3]) + "\n# checked by hand\n" + f"{root}/b1/gone.png\n", encoding="utf-8"
    )
    out = root / "model-excluded"
    res = run_inprocess(
        "train", _overrides(root, out, f"data.exclude=[{listed}]", f"warmstart.model={model}"), ROOT
    )
    assert res.returncode == 0, res.stderr[-3000:]
    gone = {rows[1].split("\t")[0], rows[2].split("\t")[0]}
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert {r["image"] for r in man["lines"]} == {r.split("\t")[0] for r in rows[1:]} - gone
    assert man["totals"]["excluded"] == 2 and set(man["excluded"]["lines"]) == gone
    assert man["excluded"]["not_in_data"] == [f"{root}/b1/gone.png"]
    codec = json.loads((out / "codec-report.json").read_text(encoding="utf-8"))
    assert codec["excluded_lines"] == 2
    assert "without the 2 lines left out by data.exclude" in (out / "codec-report.txt").read_text("utf-8")
    assert "data.exclude: 2 line(s) left out" in res.stderr
    assert "warning: data.exclude: 1 listed line(s) are not in the data" in res.stderr


# ------------------------------------------------------------------------------------------------ quick


def test_without_a_model_the_other_checks_run(planted, tmp_path):
    res = run_inprocess("train", _overrides(planted["root"], tmp_path / "m", "data.triage=true"), ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "the model's CER column is absent" in res.stderr
    rows = _rows(tmp_path / "m" / triage.TSV)
    assert all(r[5] == "" for r in rows)  # no CER
    top = [r[0] for r in rows[:5]]
    assert str(planted["dup_val"]) in top and str(planted["cut"]) in top
    assert "No model" in (tmp_path / "m" / triage.HTML).read_text(encoding="utf-8")


def test_bad_input_is_one_line(planted, tmp_path):
    root = planted["root"]
    res = run_inprocess(
        "train", _overrides(root, tmp_path / "m", f"data.exclude=[{tmp_path}/nope.txt]"), ROOT
    )
    assert res.returncode == 2 and f"data.exclude: cannot read {tmp_path}/nope.txt" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    training = [
        o for o in _overrides(root, tmp_path / "m", "data.triage=true") if o != "data_check_only=true"
    ]
    res = run_inprocess("train", training, ROOT)
    assert res.returncode == 2 and "data.triage=true runs with data_check_only=true" in res.stderr, res.stderr
    res = run_inprocess(
        "train",
        _overrides(root, tmp_path / "m", "data.triage=true", f"data.triage_model={tmp_path}/x.ckpt"),
        ROOT,
    )
    assert res.returncode == 2 and "data.triage_model: no such model" in res.stderr, res.stderr


def _record(image: str, doc: str, text: str, width: int, split: str = "train") -> dict:
    return {
        "image": image,
        "gt": image + ".gt.txt",
        "text": text,
        "image_sha256": image,
        "gt_sha256": image,
        "width": width,
        "height": 48,
        "document": doc,
        "split": split,
    }


def test_cer_is_judged_against_the_documents_median():
    """A line read badly among well-read neighbours is flagged; a document read badly throughout is not."""
    text = "abcdefghijklmnopqrst"
    good = [_record(f"a{i}", "A", text, 400) for i in range(5)]
    bad_book = [_record(f"b{i}", "B", text, 400) for i in range(5)]
    preds = {r["image"]: text for r in good} | {r["image"]: "zzzzzzzzzzzzzzzz" for r in bad_book}
    preds["a4"] = "abzzzzzzzzzzzzzzzst"  # 15 of 20 wrong where the book's median is 0
    rows = triage.rank(good + bad_book, preds)
    assert rows[0].image == "a4" and "cer" in rows[0].findings
    assert all("cer" not in r.findings for r in rows[1:])
