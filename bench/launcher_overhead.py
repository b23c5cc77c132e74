"""Benchmark: what hsbcala costs on top of Calamari itself. Run on demand, prints its figures:

    .venv/bin/python bench/launcher_overhead.py [--runs 3] [--version cala2] [--epochs 3]

1. Launcher overhead: wall time of ``python train.py …`` (Hydra, data checks, MLflow run with system metrics,
   output parsing, artifact logging) for a ~60 s training, against the bare Calamari command that train.py
   runs (taken from its own ``dry_run=true`` output), same data, same settings, each in a fresh model
   directory; runs alternate between the two. Target: median ratio <= 1.05.
2. ``dry_run`` latency: wall time of ``python train.py dry_run=true`` (no TensorFlow, no MLflow import).
   Target: < 2 s.

Needs ../shared (the real Fraktur lines).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT.parent / "shared" / "data" / "fraktur19-lines" / "ref_AS"


def overrides(tmp: Path, model_dir: Path, version: str, epochs: int) -> list[str]:
    books = sorted(BOOKS.iterdir())
    return [
        f"version={version}",
        f"paths.root={tmp}",
        f"model_dir={model_dir}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
        "data.train=[" + ",".join(f"{b}/*.png" for b in books[:4]) + "]",
        f"data.val=[{books[4]}/*.png]",
        f"train.epochs={epochs}",
        "train.samples_per_epoch=160",
        "train.batch_size=16",
        "train.workers=1",
        "train.augmentations=0",
        "train.network='cnn=16:3x3,pool=2x2,lstm=32'",
    ]


def timed(argv: list[str], **kw) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(argv)[:300]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--version", default="cala2", choices=["cala1", "cala2"])
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    if not BOOKS.is_dir():
        sys.exit(f"needs the shared Fraktur lines at {BOOKS}")
    py, train = sys.executable, str(ROOT / "train.py")

    with tempfile.TemporaryDirectory(prefix="hsbcala-bench-") as t:
        tmp = Path(t)
        dry = []
        for i in range(5):
            dry.append(
                timed(
                    [py, train, *overrides(tmp, tmp / f"dry{i}", args.version, args.epochs), "dry_run=true"],
                    cwd=tmp,
                )
            )
        launcher, bare = [], []
        for i in range(args.runs):
            ov = overrides(tmp, tmp / f"bare{i}", args.version, args.epochs)
            cmd = subprocess.run(
                [py, train, *ov, "dry_run=true"], capture_output=True, text=True, cwd=tmp, check=True
            ).stdout.strip()
            bare.append(timed(shlex.split(cmd), cwd=tmp))
            launcher.append(
                timed([py, train, *overrides(tmp, tmp / f"hsb{i}", args.version, args.epochs)], cwd=tmp)
            )
            print(
                f"run {i + 1}/{args.runs}: bare {bare[-1]:.1f} s, train.py {launcher[-1]:.1f} s", flush=True
            )

    ratios = [h / b for h, b in zip(launcher, bare)]
    print(f"\nversion {args.version}, {args.runs} runs each, {args.epochs} epochs of 160 lines")
    print(
        f"bare Calamari        median {statistics.median(bare):7.2f} s   runs: "
        + ", ".join(f"{x:.1f}" for x in bare)
    )
    print(
        f"python train.py      median {statistics.median(launcher):7.2f} s   runs: "
        + ", ".join(f"{x:.1f}" for x in launcher)
    )
    print(f"overhead ratio       median {statistics.median(ratios):7.3f}     (target <= 1.05)")
    print(
        f"dry_run latency      median {statistics.median(dry):7.2f} s   (target < 2 s; runs: "
        + ", ".join(f"{x:.2f}" for x in dry)
        + ")"
    )


if __name__ == "__main__":
    main()
