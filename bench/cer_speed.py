"""Benchmark: CER alignment with rapidfuzz against the pure-Python Levenshtein matrix it replaced (on demand):

    .venv/bin/python bench/cer_speed.py [--runs 5] [--lines 3000]

Both align the same pairs: N real GT lines of ../shared/data against a seeded corruption of themselves (3 %
substitutions, 2 % deletions, 2 % insertions per character), normalised as evaluate.py does, taken from
tests/test_cer.py (:func:`sample_pairs`, :func:`_reference_align`, the old implementation copied verbatim).
Only the alignment is timed (no file reading, no normalisation); runs alternate between the two, and which
goes first alternates too. Prints the median seconds per pass over all lines, microseconds per line and the
speed-up, then checks that the error counts agree line by line and how many lines split the same total
differently into substitutions / deletions / insertions (tie-breaking, see hsbcala/evaluate/cer.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsbcala.evaluate import cer
from tests.conftest import SHARED
from tests.test_cer import LINES, _reference_align, sample_pairs


def timed(fn, pairs) -> float:
    t0 = time.perf_counter()
    for gt, pred in pairs:
        fn(gt, pred)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lines", type=int, default=LINES)
    args = ap.parse_args()
    data = SHARED / "data"
    if not data.is_dir():
        sys.exit(f"needs the shared GT lines at {data}")
    pairs = sample_pairs(data, args.lines)
    sides = {"pure Python (old)": _reference_align, "rapidfuzz (cer.align)": cer.align}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.runs):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            times[name].append(timed(sides[name], pairs))
        print(
            f"run {i + 1}/{args.runs}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in sides), flush=True
        )

    old, new = (statistics.median(times[n]) for n in sides)
    chars = sum(len(g) for g, _ in pairs)
    print(f"\n{len(pairs)} lines, {chars} GT characters, {args.runs} runs each (median seconds per pass):")
    for name, med in zip(sides, (old, new), strict=True):
        print(
            f"  {name:22} median {med:7.3f} s  {med / len(pairs) * 1e6:7.1f} µs/line   runs: "
            + ", ".join(f"{t:.3f}" for t in times[name])
        )
    print(f"  speed-up (old / new)   {old / new:7.1f} x")

    ref = [_reference_align(g, p) for g, p in pairs]
    ours = [cer.align(g, p) for g, p in pairs]
    same_errors = sum(a.errors == r.errors for a, r in zip(ours, ref, strict=True))
    split = sum(
        (a.substitutions, a.deletions, a.insertions) != (r.substitutions, r.deletions, r.insertions)
        for a, r in zip(ours, ref, strict=True)
    )
    confusions = sum(a.confusions != r.confusions for a, r in zip(ours, ref, strict=True))

    def sdi(als):
        return "/".join(
            str(sum(getattr(a, k) for a in als)) for k in ("substitutions", "deletions", "insertions")
        )

    print(
        f"\nerrors: {sum(r.errors for r in ref)} old, {sum(a.errors for a in ours)} new; "
        f"identical on {same_errors}/{len(pairs)} lines"
    )
    print(
        f"S/D/I split: old {sdi(ref)}, new {sdi(ours)}; differs on {split} lines, confusions on {confusions}"
    )


if __name__ == "__main__":
    main()
