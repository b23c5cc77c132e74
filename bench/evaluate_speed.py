"""Benchmark: evaluating N lines costs one prediction pass, not one per variant group. Run on demand:

    .venv/bin/python bench/evaluate_speed.py [--version cala2] [--lines 1000] [--runs 3] [--model-dir DIR]
    .venv/bin/python bench/evaluate_speed.py --scoring-only [--scoring-lines 10000]

First, scoring alone (no prediction): :func:`hsbcala.evaluate.scoring.score_sets` on 10,000 real GT lines of ../shared
against a seeded corruption of themselves (about 5 % of characters substituted, deleted or inserted), in 3
variant groups and ~N/25 documents, with everything evaluate.py computes: CER per set and group, confidence
intervals (1,000 resamples, over documents), character classes, the Sorbian letters, WER, confusions grouped
as calamari-eval does, and the files (lines.tsv, confusions.tsv, characters.tsv). Target: under 5 s.

Wall time of ``python evaluate.py`` (Hydra, data checks, staging, calamari-predict, CER per set and group,
files, table + chart, MLflow logging) on N real Fraktur lines sorted into 3 variant groups by their file names
(``_GTSBB``, ``_GTOLENA``, ``_GTPAGE``), against ONE bare ``calamari-predict`` over the same lines with the same
arguments and environment evaluate.py uses (:func:`hsbcala.evaluate.predict.predict_argv`), each run in a fresh output
directory; runs alternate between the two, and which goes first alternates too. Target: median ratio <= 1.2.
Also printed: the time evaluate.py spends outside its own calamari-predict (start-up, checks, staging, CER,
files, chart, MLflow), which, unlike the engine's own time, hardly varies when other jobs share the machine.

Without ``--model-dir`` a model is trained first through train.py (the demo preset's network, one short epoch:
prediction time depends on the network, not on how well it is trained). Needs ../shared (the real lines).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOOKS = ROOT.parent / "shared" / "data" / "fraktur19-lines" / "ref_AS"
VARIANTS = ("GTSBB", "GTOLENA", "GTPAGE")


def timed(argv: list[str], **kw) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False, **kw
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(argv)[:300]}\n{proc.stderr[-2000:]}")
    return elapsed


def variant_lines(books: list[Path], n: int, out: Path) -> list[Path]:
    """n lines from ``books``, linked as ``<book>_<id>_<variant>.png`` (+ .gt.txt), variants round-robin."""
    out.mkdir(parents=True)
    images = [p for b in books for p in sorted(b.glob("*.png"))][:n]
    if len(images) < n:
        sys.exit(f"only {len(images)} lines found, {n} wanted")
    links = []
    for i, png in enumerate(images):
        name = f"{png.parent.name}_{png.stem}_{VARIANTS[i % len(VARIANTS)]}"
        (out / f"{name}.png").symlink_to(png)
        (out / f"{name}.gt.txt").symlink_to(png.with_suffix(".gt.txt"))
        links.append(out / f"{name}.png")
    return links


def scoring_only(n: int, resamples: int = 1000) -> float:
    """Seconds :func:`hsbcala.evaluate.scoring.score_sets` takes for ``n`` (GT, corrupted GT) lines (see the doc)."""
    import random

    from hsbcala.evaluate import scoring
    from hsbcala.evaluate import sets as evalsets

    files = sorted((ROOT.parent / "shared" / "data").rglob("*.gt.txt"))
    if not files:
        sys.exit("needs the shared GT lines under ../shared/data")
    rng = random.Random(1)
    noise = "aeinrstuſßfmhbcdlkvwz .,ěčćřłńóžšź"
    gt, preds, docs = {}, {}, {}
    for i in range(n):
        f = files[i % len(files)]
        text = f.read_text(encoding="utf-8")
        img = Path(f"/bench/{f.parent.name}/{i:06d}_{VARIANTS[i % len(VARIANTS)]}.png")
        out = []
        for c in text:
            r = rng.random()
            out.append(
                c
                if r > 0.05
                else rng.choice(noise)
                if r > 0.033
                else ""
                if r > 0.016
                else c + rng.choice(noise)
            )
        gt[img], preds[img], docs[img] = text, "".join(out), f"doc{i // 25}"
    images = tuple(gt)
    groups = {v[2:].lower(): [f"*_{v}*"] for v in VARIANTS}
    members = {
        g: tuple(img for img in images if v in img.name) for g, v in zip(groups, VARIANTS, strict=True)
    }
    s = evalsets.EvalSet("bench", "bench", [], images, gt, (), members, 0, docs, f"{n // 25} documents")
    out_dir = Path(tempfile.mkdtemp(prefix="hsbcala-bench-scoring-"))
    t0 = time.perf_counter()
    result = scoring.score_sets(
        [s], groups, "calamari2", preds, out_dir, scoring.Options(resamples=resamples)
    )
    seconds = time.perf_counter() - t0
    o = result["sets"][0]["overall"]
    print(
        f"scoring only: {n} lines ({o['chars']} GT characters, 3 groups, {n // 25} documents), CER "
        f"{100 * o['cer']:.2f} % [{100 * o['interval']['low']:.2f}, {100 * o['interval']['high']:.2f}], "
        f"WER {100 * result['sets'][0]['wer']['wer']:.2f} %, {resamples} resamples: {seconds:.2f} s "
        f"(target < 5 s: {'OK' if seconds < 5 else 'TOO SLOW'})",
        flush=True,
    )
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scoring-only", action="store_true", help="time scoring alone (no engine) and stop")
    ap.add_argument("--scoring-lines", type=int, default=10_000)
    ap.add_argument("--version", default="cala2", choices=["cala1", "cala2"])
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--model-dir", type=Path, help="a trained model directory of --version (default: train one)"
    )
    args = ap.parse_args()
    scoring_only(args.scoring_lines)
    if args.scoring_only:
        return
    if not BOOKS.is_dir():
        sys.exit(f"needs the shared Fraktur lines at {BOOKS}")

    from hydra import compose, initialize_config_dir

    from hsbcala import engines
    from hsbcala.config import schema
    from hsbcala.engines import envs
    from hsbcala.evaluate import run as evaluate

    py = sys.executable
    books = sorted(BOOKS.iterdir())
    tmp = Path(tempfile.mkdtemp(prefix="hsbcala-bench-eval-"))
    store = f"sqlite:///{tmp / 'mlruns.db'}"
    model_dir = args.model_dir.resolve() if args.model_dir else tmp / "model"
    if args.model_dir is None:
        print(f"training a model (demo network, 1 short epoch) in {model_dir} …", flush=True)
        timed(
            [
                py,
                str(ROOT / "train.py"),
                f"version={args.version}",
                f"paths.root={tmp}",
                f"model_dir={model_dir}",
                f"mlflow.tracking_uri={store}",
                f"data.train=[{books[0]}/*.png]",
                f"data.val=[{books[1]}/*.png]",
                "train.epochs=1",
                "train.samples_per_epoch=32",
                "train.batch_size=16",
                "train.workers=1",
                "train.augmentations=0",
                f"hydra.run.dir={tmp / 'train-run'}",
            ],
            cwd=ROOT,
        )
    lines_dir = tmp / "lines"
    images = variant_lines(books[2:], args.lines, lines_dir)

    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("evaluate", overrides=[f"version={args.version}", f"model_dir={model_dir}"])
    env = envs.resolve(cfg, envs.project_root())
    env.ensure()
    checkpoint, _ = evaluate.find_model(cfg)
    stage = tmp / "stage"
    evaluate.stage(images, stage / "lines")

    groups = [f"~eval.groups.{g}" for g in cfg.eval.groups] + [
        f"+eval.groups.{v[2:].lower()}=[*_{v}*]" for v in VARIANTS
    ]
    full, bare, inside = [], [], []
    for i in range(args.runs):
        out = stage / f"pred-{i}"
        out.mkdir()
        argv = env.wrap(
            evaluate.predict_argv(
                engines.get(args.version),
                env.program("calamari-predict"),
                checkpoint,
                stage / "lines",
                out,
                cfg.eval.batch_size,
            )
        )
        full_argv = [
            py,
            str(ROOT / "evaluate.py"),
            f"version={args.version}",
            f"paths.root={tmp}",
            f"model_dir={model_dir}",
            f"mlflow.tracking_uri={store}",
            f"eval.data=[{lines_dir}/*.png]",
            f"hydra.run.dir={tmp / f'eval-run-{i}'}",
            *groups,
        ]
        # the engine's environment as evaluate.py sets it; which one goes first alternates (drift cancels)
        engine_env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        if i % 2 == 0:
            bare.append(timed(argv, cwd=tmp, env=engine_env))
            full.append(timed(full_argv, cwd=ROOT))
        else:
            full.append(timed(full_argv, cwd=ROOT))
            bare.append(timed(argv, cwd=tmp, env=engine_env))
        result = json.loads((tmp / f"eval-run-{i}" / evaluate.RESULT_FILE).read_text(encoding="utf-8"))
        inside.append(result["predict"]["seconds"])
        print(
            f"run {i + 1}: bare calamari-predict {bare[-1]:.1f} s, evaluate.py {full[-1]:.1f} s "
            f"(ratio {full[-1] / bare[-1]:.3f}; its own calamari-predict {inside[-1]:.1f} s, everything else "
            f"{full[-1] - inside[-1]:.1f} s)",
            flush=True,
        )
    ratio = statistics.median(full) / statistics.median(bare)
    print(f"\n{args.version}, {args.lines} lines, {len(VARIANTS)} variant groups, {args.runs} runs each:")
    print(
        f"  bare calamari-predict: median {statistics.median(bare):.1f} s ({', '.join(f'{t:.1f}' for t in bare)})"
    )
    print(
        f"  evaluate.py:           median {statistics.median(full):.1f} s ({', '.join(f'{t:.1f}' for t in full)})"
    )
    print(f"  ratio (median/median): {ratio:.3f}  (target <= 1.2): {'OK' if ratio <= 1.2 else 'TOO SLOW'}")
    # On a machine shared with other jobs the engine's own time varies by tens of percent from run to run; what
    # evaluate.py adds around its one calamari-predict is measured directly and is stable:
    extra = statistics.median(f - p for f, p in zip(full, inside, strict=True))
    base = statistics.median(bare)
    print(
        f"  evaluate.py outside its calamari-predict: median {extra:.1f} s -> (bare + that) / bare = "
        f"{(base + extra) / base:.3f}"
    )
    print(f"  files: {tmp}")


if __name__ == "__main__":
    main()
