"""Benchmark: how honest the epoch lines' time-left estimate is (issue 22, item 3). Prints its figures:

    .venv/bin/python bench/eta.py [--versions cala2 cala1] [--epochs 8] [-- extra overrides …]

Runs the demo (``python train.py``, its default demo preset) for each version in a fresh temporary root, stamps
every epoch line with the wall time since the command started, and at the end compares each line's printed
estimate (``~3m10s left``) with the real rest of the command (until it exits: the export and tracking included,
which the estimate does not model). Prints per epoch the estimate, the real rest and the error in per cent, then
the median absolute error after epoch 2. Target: within +-20 % after epoch 2. The machine's load is printed beside
the figures: other processes on a shared CPU make epochs uneven, which no estimate can foresee.
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
LINE = re.compile(r"hsbcala: stage \d+/\d+ epoch (\d+)/\d+ ")
# the line's last part: ``~4m05s left``, ``at most ~16m left``, ``~1m00s-2h05m left (patience 3)`` (the budget's end)
ETA = re.compile(r"\| (?:at most )?~(?:\S+-)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)? left")


def seconds(m: re.Match) -> float:
    h, mins, secs = (int(x or 0) for x in m.groups())
    return h * 3600 + mins * 60 + secs


def one_run(
    version: str, epochs: int, extra: list[str]
) -> tuple[list[tuple[int, float, float | None, str]], float]:
    """([(epoch, seconds since start, estimate s or None, line's ETA text)], total seconds) of one ``python train.py``."""
    with tempfile.TemporaryDirectory(prefix="hsbcala-eta-bench-") as tmp:
        argv = [
            sys.executable,
            str(ROOT / "train.py"),
            f"version={version}",
            f"train.epochs={epochs}",
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
            m = LINE.search(line)
            if m:
                eta = ETA.search(line)  # (none on the last epoch's line: "last epoch done")
                points.append(
                    (
                        int(m.group(1)),
                        time.monotonic() - t0,
                        seconds(eta) if eta else None,
                        line.split(" | ")[-1].strip(),
                    )
                )
                print(f"  {points[-1][1]:6.0f} s  epoch {m.group(1):>3}  {points[-1][3]}", flush=True)
            elif "error" in line:
                print("  " + line.rstrip(), flush=True)
        if proc.wait() != 0:
            sys.exit(f"train.py failed with exit {proc.returncode}")
        return points, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="+", default=["cala2", "cala1"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = ap.parse_args()
    for version in args.versions:
        print(f"# {os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.2f}")
        print(f"python train.py version={version} train.epochs={args.epochs} {' '.join(args.overrides)}")
        points, total = one_run(version, args.epochs, args.overrides)
        print(f"# finished after {total:.0f} s; load average after: {os.getloadavg()[0]:.2f}")
        # two references: the command's exit (what a user waits for) and the last epoch line (what the estimate
        # models: the export and tracking after it are not foreseen)
        last = points[-1][1] if points else total
        print(f"{'epoch':>5} {'estimate':>9} {'to exit':>8} {'error':>7} {'to last':>8} {'error':>7}")
        errors: dict[str, list[float]] = {"exit": [], "last epoch": []}
        for epoch, t, est, text in points:
            if est is None:
                print(f"{epoch:>5} {text}; the command exits {total - t:.0f} s later")
                continue
            row = f"{epoch:>5} {est:>8.0f}s"
            for key, real in (("exit", total - t), ("last epoch", last - t)):
                err = (est - real) / real if real > 0 else None
                if err is not None and epoch > 2:
                    errors[key].append(abs(err))
                row += f" {real:>7.0f}s {err:>+7.0%}" if err is not None else f" {real:>7.0f}s {'':>7}"
            print(row)
        for key, errs in errors.items():
            if errs:
                print(
                    f"# {version}: |error| after epoch 2 vs {key}: median {statistics.median(errs):.0%}, max {max(errs):.0%}"
                )


if __name__ == "__main__":
    main()
