"""Benchmark: writing eval-report.html for 10,000 evaluated lines (the budget: 5 s beyond the prediction):

    .venv/bin/python bench/html_report.py [--lines 10000] [--runs 5] [--html-lines 50]

The per-line results are synthesised, not predicted: real line images of ../shared/data with their GT (cycled
when there are fewer than --lines), each "predicted" as a seeded corruption of its GT (tests/test_cer.py's
:func:`corrupt`: 3 % substitutions, 2 % deletions, 2 % insertions per character), scored once by the real
:func:`hsbcala.evaluate.scoring.score_sets` (not timed: that is the evaluation's own scoring, done with or without a
report). Timed: the rendering and writing only, i.e. what ``evaluate.py`` adds for the report
(:func:`hsbcala.evaluate.htmlreport.write_evaluation`, images read and embedded), and, for an ``-m`` of two models, the
comparison page (:func:`hsbcala.evaluate.htmlreport.write_comparison`: both jobs' lines.tsv read, the shown lines
aligned again). Each run starts with an empty image cache. Prints every run, the medians and the budget's
share.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsbcala.evaluate import comparison, htmlreport, scoring
from hsbcala.evaluate import sets as evalsets
from tests.conftest import SHARED
from tests.test_cer import corrupt

BUDGET_S = 5.0


def synthetic_set(data: Path, n: int) -> evalsets.EvalSet:
    """n lines (real images and GT, cycled; distinct paths through numbered symlinks, as evaluate stages them)."""
    pngs = sorted(p for p in data.rglob("*.png") if p.with_suffix("").with_suffix(".gt.txt").is_file())
    if not pngs:
        sys.exit(f"needs line images with .gt.txt under {data}")
    stage = Path(tempfile.mkdtemp(prefix="bench-html-"))
    images, gt = [], {}
    for i in range(n):
        src = pngs[i % len(pngs)]
        link = stage / f"{i:06d}.png"
        link.symlink_to(src)
        images.append(link)
        gt[link] = src.with_suffix("").with_suffix(".gt.txt").read_text(encoding="utf-8")
    docs = {img: img.resolve().parent.name for img in images}
    return evalsets.EvalSet("val", "eval.data", [], tuple(images), gt, (), {}, 0, docs, "documents")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--html-lines", type=int, default=50, help="eval.html_lines (default: its default)")
    args = ap.parse_args()
    s = synthetic_set(SHARED / "data", args.lines)
    out = Path(tempfile.mkdtemp(prefix="bench-html-out-"))
    results, all_lines = [], []
    t0 = time.perf_counter()
    for k in range(2):  # two "models": two corruptions of the same lines
        preds = {img: corrupt(s.gt[img], random.Random(1000 * k + i)) for i, img in enumerate(s.images)}
        lines: dict = {}
        r = scoring.score_sets(
            [s], {}, "calamari2", preds, out / str(k), scoring.Options(resamples=200), lines=lines
        )
        r.update(model=f"model-{k}", version="cala2", checkpoint="synthetic")
        r[comparison.JOB_DIR] = str(out / str(k))
        results.append(r)
        all_lines.append(lines)
    print(f"{args.lines} lines scored twice (not timed) in {time.perf_counter() - t0:.1f} s", flush=True)

    single, compared = [], []
    for i in range(args.runs):
        t = time.perf_counter()
        page = htmlreport.write_evaluation(
            results[0], all_lines[0], out / "0" / htmlreport.FILE, args.html_lines
        )
        single.append(time.perf_counter() - t)
        t = time.perf_counter()
        cmp_page = htmlreport.write_comparison(
            results,
            [],
            out / htmlreport.FILE,
            args.html_lines,  # the differences are the table's (not timed)
        )
        compared.append(time.perf_counter() - t)
        print(
            f"run {i + 1}/{args.runs}: evaluation {single[-1]:.3f} s, comparison {compared[-1]:.3f} s",
            flush=True,
        )
    shown = page.read_text(encoding="utf-8").count('<div class="line" id=')
    print(
        f"\n{args.lines} evaluated lines, eval.html_lines={args.html_lines} ({shown} lines shown with their "
        f"images), median of {args.runs} runs:"
    )
    for name, times, path in (
        ("eval-report.html", single, page),
        ("comparison of 2 models", compared, cmp_page),
    ):
        med = statistics.median(times)
        print(
            f"  {name:<24} {med:6.3f} s  ({100 * med / BUDGET_S:5.1f} % of the {BUDGET_S:g} s budget; "
            f"{path.stat().st_size / 1e6:.1f} MB)"
        )


if __name__ == "__main__":
    main()
