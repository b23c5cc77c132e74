"""Benchmark: the data step (hsbcala.data.step) on the shared Fraktur lines. Run on demand, prints its figures:

    .venv/bin/python bench/data_check.py [--runs 3] [--pattern '**/*.png']

Resolving, splitting, reading, hashing (SHA-256 of every image and GT) and checking every line, as
``python train.py data.train=[…] data.val=null`` does before training, on ../shared/data/fraktur19-lines
(5,326 lines; 3,480 in ref_AS, 1,850 in ref_BA):

1. cold, disk: empty hash cache, and the data's pages evicted from the OS page cache (``posix_fadvise
   DONTNEED`` per file; it works without root, but a file another process keeps mapped may stay cached);
2. cold: empty hash cache, files in the page cache (e.g. a first training right after copying the data);
3. warm: the hash cache of the previous run (a resume, or a training after ``data_check_only=true``):
   no image is read, only stat()ed; the GT files are still read (they are the text of the manifest).

Target: under 10 s for 5,000 lines on the 2-core test machine (cold), and a warm run that hashes nothing.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "fraktur19-lines"


def evict(paths: list[str]) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pattern", default="**/*.png", help="below ../shared/data/fraktur19-lines")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")

    from hsbcala.data import step as datastep
    from tests.conftest import compose_cfg

    files = glob.glob(str(DATA / "**" / "*"), recursive=True)
    with tempfile.TemporaryDirectory(prefix="hsbcala-bench-") as tmp:
        tmp = Path(tmp)

        def step(cache: Path):
            cfg = compose_cfg(
                [
                    f"paths.root={tmp}",
                    f"model_dir={tmp / 'model'}",
                    f"data.cache_dir={cache}",
                    f"data.train=[{DATA}/{args.pattern}]",
                    "data.val=null",
                    "data_check_only=true",
                ]
            )
            t0 = time.perf_counter()
            dp = datastep.prepare(cfg, base=tmp, model_dir=tmp / "model")
            return time.perf_counter() - t0, dp

        figures: dict[str, list[float]] = {"cold, disk": [], "cold": [], "warm": []}
        for i in range(args.runs):
            evict(files)
            s, dp = step(tmp / f"cache-disk-{i}")
            figures["cold, disk"].append(s)
            s, _ = step(tmp / f"cache-{i}")
            figures["cold"].append(s)
            s, warm = step(tmp / f"cache-{i}")
            figures["warm"].append(s)
            assert warm.cache_misses == 0, warm.cache_misses
        t = dp.manifest["totals"]
        n = t["lines"] + t["dropped"]
        problems = {k: v["count"] for k, v in dp.manifest["checks"].items() if v["count"]}
        print(
            f"data step on {n:,} real lines ({DATA}/{args.pattern}): {t['train']['lines']:,} train + "
            f"{t['val']['lines']:,} val by document, {t['image_bytes'] / 1e6:.0f} MB of images; "
            f"findings: {problems or 'none'}"
        )
        for name, values in figures.items():
            print(
                f"  {name:<11} median {statistics.median(values):5.2f} s  "
                f"({', '.join(f'{v:.2f}' for v in values)}; {n / statistics.median(values):,.0f} lines/s)"
            )
        print(f"  warm run: {warm.cache_hits:,} images from the cache, {warm.cache_misses} hashed")


if __name__ == "__main__":
    main()
