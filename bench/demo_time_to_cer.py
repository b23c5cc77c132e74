"""Benchmark: how fast the embedded default (``python train.py``, no overrides) learns to read. Prints its figures:

    .venv/bin/python bench/demo_time_to_cer.py [--runs 1] [--script fraktur] [-- extra overrides …]

Runs the README's first command as a new user does (the demo preset: synthetic Upper Sorbian lines rendered by
hsbcala, a model from scratch), each run in a fresh temporary root (its own synthetic set, model directory and
MLflow store), and reads hsbcala's per-epoch console lines as they come, stamped with the wall time since the
command started (start-up, rendering and the data step included). Prints per run the validation CER curve
against time and the time to reach each threshold (10 %, 5 %, 2 %), then the medians over runs.

Target (issue 12): validation CER <= 5 % within 10 minutes on an otherwise idle 2-core machine. The machine's
load is printed beside the figures: on a shared machine the times are longer, the CER per epoch is not.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCH = re.compile(r"epoch (\d+)/\d+ \| CER ([0-9.]+)")  # the validation CER (hsbcala.core.console)
THRESHOLDS = (0.10, 0.05, 0.02)


def one_run(script: str, extra: list[str]) -> list[tuple[float, int, float]]:
    """(seconds since start, epoch, val CER) per validation of one ``python train.py`` run."""
    with tempfile.TemporaryDirectory(prefix="hsbcala-demo-bench-") as tmp:
        argv = [
            sys.executable,
            str(ROOT / "train.py"),
            f"script={script}",
            f"paths.root={tmp}",
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlruns.db",
            f"hydra.run.dir={tmp}/run",
            *extra,
        ]
        t0 = time.monotonic()
        points = []
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp)
        assert proc.stderr is not None
        for line in proc.stderr:
            m = EPOCH.search(line)
            if m:
                points.append((time.monotonic() - t0, int(m.group(1)), float(m.group(2))))
                print(
                    f"  {points[-1][0]:6.0f} s  epoch {m.group(1):>3}  val CER {float(m.group(2)):.4f}",
                    flush=True,
                )
            elif "error" in line:
                print("  " + line.rstrip(), flush=True)
        if proc.wait() != 0:
            sys.exit(f"train.py failed with exit {proc.returncode}")
        print(f"  finished after {time.monotonic() - t0:.0f} s", flush=True)
        return points


def time_to(points: list[tuple[float, int, float]], threshold: float) -> float | None:
    return next((t for t, _, cer in points if cer <= threshold), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--script", default="fraktur", choices=["fraktur", "antiqua"])
    ap.add_argument("overrides", nargs="*", help="extra train.py overrides (to try other settings)")
    args = ap.parse_args()
    print(f"# {os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.2f}")
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}: python train.py script={args.script} {' '.join(args.overrides)}")
        runs.append(one_run(args.script, args.overrides))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    for threshold in THRESHOLDS:
        times = [time_to(points, threshold) for points in runs]
        reached = [t for t in times if t is not None]
        median = f"median {statistics.median(reached) / 60:.1f} min" if reached else "never"
        print(f"val CER <= {threshold:.0%}: reached in {len(reached)}/{len(runs)} runs, {median}")
    best = [min(cer for _, _, cer in points) for points in runs if points]
    if best:
        print(
            f"best val CER: median {statistics.median(best):.4f} (runs: {', '.join(f'{b:.4f}' for b in best)})"
        )


if __name__ == "__main__":
    main()
