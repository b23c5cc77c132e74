"""Benchmark: GT triage (hsbcala.evaluate.triage) beyond its calamari-predict pass. Run on demand, prints its figures:

    .venv/bin/python bench/triage.py [--runs 3] [--lines 5000] [--noise 0.05]

Triage costs one calamari-predict pass (the evaluation's, :func:`hsbcala.evaluate.predict.predict`; its time is the
engine's and is measured by bench/evaluate_speed.py) plus what this benchmark times: ranking every line
(CER and its document median, length vs width, duplicates, Unicode) and writing triage.tsv and triage.html
(the flagged lines' images embedded). Target: <= 10 s for 5,000 lines on the 2-core test machine.

The lines are the real shared Fraktur lines (../shared/data/fraktur19-lines) with their manifest records from
the real data step. The PREDICTIONS ARE FAKED: each line's GT with ``--noise`` of its characters substituted
(seeded), which is acceptable only for timing the ranking and writing; no model reads anything here.
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
DATA = ROOT.parent / "shared" / "data" / "fraktur19-lines"


def noisy(text: str, rate: float, rng: random.Random) -> str:
    return "".join(rng.choice("aeinrstuſ") if rng.random() < rate else c for c in text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument(
        "--noise", type=float, default=0.05, help="share of characters substituted (fake reading)"
    )
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")

    from hsbcala.core import fsutil
    from hsbcala.data import step as datastep
    from hsbcala.evaluate import triage
    from tests.conftest import compose_cfg

    with tempfile.TemporaryDirectory(prefix="hsbcala-bench-") as tmp:
        tmp = Path(tmp)
        cfg = compose_cfg(
            [
                f"paths.root={tmp}",
                f"model_dir={tmp / 'model'}",
                f"data.train=[{DATA}/**/*.png]",
                "data.val=null",
                "data.checks.missing_image=warn",  # ref_AS has one .gt.txt without image (docs/data.md)
                "data_check_only=true",
                f"data.cache_dir={tmp / 'cache'}",
            ]
        )
        t0 = time.perf_counter()
        dp = datastep.prepare(cfg, base=tmp, model_dir=tmp / "model")
        data_s = time.perf_counter() - t0
        records = dp.manifest["lines"][: args.lines]
        rng = random.Random(0)
        preds = {r["image"]: noisy(r["text"], args.noise, rng) for r in records}
        timings: dict[str, list[float]] = {"rank": [], "triage.tsv": [], "triage.html": []}
        for _ in range(args.runs):
            t = time.perf_counter()
            rows = triage.rank(records, preds, "calamari2")
            timings["rank"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fsutil.atomic_write_text(tmp / triage.TSV, triage.tsv(rows))
            timings["triage.tsv"].append(time.perf_counter() - t)
            t = time.perf_counter()
            page = triage.page(rows, model="(faked)", why_no_model="", rules="calamari2", seconds=0.0)
            fsutil.atomic_write_text(tmp / triage.HTML, page)
            timings["triage.html"].append(time.perf_counter() - t)
        totals = [sum(v[i] for v in timings.values()) for i in range(args.runs)]
        flagged = sum(r.score > 0 for r in rows)
        size = (tmp / triage.HTML).stat().st_size
    print(
        f"GT triage beyond calamari-predict, {len(records):,} real Fraktur lines ({args.runs} runs, medians); "
        f"PREDICTIONS FAKED (GT with {args.noise:.0%} of characters substituted): only ranking and writing timed"
    )
    print(f"  (data step to get the manifest, not part of triage: {data_s:.1f} s)")
    for name, v in timings.items():
        print(f"  {name:<12} {statistics.median(v):6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in v)})")
    print(
        f"  {'total':<12} {statistics.median(totals):6.2f} s   target <= 10 s: {statistics.median(totals) / 10:.0%} of it"
    )
    print(
        f"  {flagged:,} lines flagged; triage.html {size / 1e6:.1f} MB with {min(flagged, triage.HTML_LINES)} line images"
    )


if __name__ == "__main__":
    main()
