"""Benchmark: a Fraktur model from scratch on real 19th-century print, judged on books it never saw (issue 20).

    .venv/bin/python bench/reference.py base [--cache DIR] [--test-books 8] [-- extra train.py overrides …]
    .venv/bin/python bench/reference.py report [--cache DIR]

**base** trains ``preset=scratch`` (Calamari 2) on ../shared's ``fraktur19-lines`` (ref_AS + ref_BA, 136 books),
less ``--test-books`` books held out entirely (seeded choice, the same on every machine); ``data.val=null`` makes
hsbcala split the rest by book for validation and early stopping. Then ``evaluate.py`` scores the best model on the
held-out books (CER with a book-wise interval, classes, worst lines). Prints the validation CER against wall time
and the time to reach 5 %, 2 %, 1.5 % and 1.2 %.

Everything lives under the cache directory (default ``~/.cache/hsbcala/bench-reference``), never in the
repository: the book view (symbolic links into ../shared), the model directory, the MLflow store
(``sqlite:///<cache>/mlruns.db``; open it with ``mlflow ui --backend-store-uri …``) and ``curve.jsonl``, the
(training seconds, epoch, val CER) points. The benchmark is resumable: run the same command again after an
interruption (Ctrl-C, a reboot) and hsbcala's own resume continues the training from its newest checkpoint in
the same MLflow run; the curve's clock continues from where it stopped. A finished training is not retrained:
the rerun only evaluates and prints.

Not yet here (issue 20, later parts): the team's path on top of the base model (release → ``pretrained get`` →
``preset=full`` on synthetic Upper Sorbian lines), ``new_chars_init`` at scale, and forgetting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fraktur19-lines"
EPOCH = re.compile(r"epoch (\d+)/\d+ .*?val CER ([0-9.]+)")
THRESHOLDS = (0.05, 0.02, 0.015, 0.012)


def books(shared: Path) -> list[Path]:
    """Every book directory of ref_AS and ref_BA, sorted (a book = the directory its lines lie in)."""
    return sorted(d for coll in ("ref_AS", "ref_BA") for d in (shared / coll).iterdir() if d.is_dir())


def book_view(cache: Path, shared: Path, n_test: int, seed: int = 20) -> tuple[Path, Path]:
    """``<cache>/data/{train,test}/<collection>__<book>`` as symbolic links into ../shared (made once)."""
    all_books = books(shared)
    test = set(random.Random(seed).sample(all_books, n_test))
    data = cache / "data"
    for part in ("train", "test"):
        (data / part).mkdir(parents=True, exist_ok=True)
    for book in all_books:
        part = "test" if book in test else "train"
        link = data / part / f"{book.parent.name}__{book.name}"
        if not link.is_symlink():
            link.symlink_to(book, target_is_directory=True)
    stale = [p for part in ("train", "test") for p in (data / part).iterdir() if p.resolve() not in all_books]
    wrong = [
        p for p in (data / "train").iterdir() if p.resolve() in test
    ]  # a view made with another --test-books
    if stale or wrong:
        sys.exit(f"reference: {data} was made with other settings; remove it (rm -r {data}) and rerun")
    return data / "train", data / "test"


def common(cache: Path) -> list[str]:
    return [
        f"paths.root={cache}",
        f"mlflow.tracking_uri=sqlite:///{cache}/mlruns.db",
        "mlflow.experiment=reference-base",
        f"model_dir={cache}/models/base",
        "preset=scratch",
        "data.checks.missing_image=warn",  # ref_AS has one .gt.txt without its image
    ]


def load_curve(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(cache: Path, train_dir: Path, extra: list[str]) -> int:
    """One ``python train.py`` (a fresh start or hsbcala's resume), its epoch lines appended to curve.jsonl."""
    curve_file = cache / "curve.jsonl"
    curve = load_curve(curve_file)
    offset = curve[-1]["seconds"] if curve else 0.0
    argv = [
        sys.executable,
        str(ROOT / "train.py"),
        *common(cache),
        f"data.train=[{train_dir}/**/*.png]",
        "data.val=null",
        f"hydra.run.dir={cache}/outputs/{time.strftime('%Y%m%d-%H%M%S')}",
        *extra,
    ]
    print("reference: " + " ".join(argv), flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cache)
    assert proc.stderr is not None
    with curve_file.open("a") as out:
        for line in proc.stderr:
            sys.stderr.write(line)
            m = EPOCH.search(line)
            if m:
                point = {
                    "seconds": round(offset + time.monotonic() - t0, 1),
                    "epoch": int(m.group(1)),
                    "val_cer": float(m.group(2)),
                    "load": round(os.getloadavg()[0], 1),
                }
                out.write(json.dumps(point) + "\n")
                out.flush()
    return proc.wait()


def evaluate(cache: Path, test_dir: Path, extra: list[str]) -> int:
    argv = [
        sys.executable,
        str(ROOT / "evaluate.py"),
        *common(cache),
        f"data.train=[{cache}/data/train/**/*.png]",
        f"eval.data=[{test_dir}/**/*.png]",
        "eval.name=unseen_books",
        "eval.mlflow_run=separate",
        f"hydra.run.dir={cache}/outputs/eval-{time.strftime('%Y%m%d-%H%M%S')}",
        *extra,
    ]
    print("reference: " + " ".join(argv), flush=True)
    return subprocess.call(argv, cwd=cache)


def report(cache: Path) -> None:
    curve = load_curve(cache / "curve.jsonl")
    if not curve:
        print("reference: no epoch recorded yet")
        return
    print(f"validation CER against training wall time ({len(curve)} validations):")
    for p in curve:
        print(
            f"  {p['seconds'] / 60:7.1f} min  epoch {p['epoch']:>3}  val CER {p['val_cer']:.4f}  load {p['load']}"
        )
    for t in THRESHOLDS:
        hit = next((p for p in curve if p["val_cer"] <= t), None)
        when = f"{hit['seconds'] / 60:.1f} min (epoch {hit['epoch']})" if hit else "not reached"
        print(f"  time to val CER <= {t:.1%}: {when}")
    best = min(curve, key=lambda p: p["val_cer"])
    print(f"  best val CER {best['val_cer']:.4f} at {best['seconds'] / 60:.1f} min (epoch {best['epoch']})")
    loads = sorted(p["load"] for p in curve)
    print(f"  machine load during training: median {loads[len(loads) // 2]} (1-minute load average)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["base", "report"])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/hsbcala/bench-reference")
    ap.add_argument("--test-books", type=int, default=8)
    ap.add_argument("--no-eval", action="store_true", help="train (or resume) only")
    ap.add_argument("extra", nargs="*", help="overrides for train.py/evaluate.py, after --")
    args = ap.parse_args()
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        report(cache)
        return 0
    if not SHARED.is_dir():
        sys.exit(f"reference: {SHARED} is missing (../shared beside the repository)")
    train_dir, test_dir = book_view(cache, SHARED, args.test_books)
    n_test = sum(1 for _ in test_dir.glob("*/*.png"))
    print(f"reference: {args.test_books} held-out books ({n_test} lines) in {test_dir}", flush=True)
    rc = train(cache, train_dir, args.extra)
    report(cache)
    if rc != 0:
        print(
            f"reference: train.py ended with exit {rc}; run the same command again to resume", file=sys.stderr
        )
        return rc
    return 0 if args.no_eval else evaluate(cache, test_dir, args.extra)


if __name__ == "__main__":
    sys.exit(main())
