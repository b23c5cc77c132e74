"""Benchmark: new Upper Sorbian letters starting from their base letters' output rows (train.new_chars_init=base)
against Calamari's random rows (random), on a stand-in German Fraktur model fine-tuned on Sorbian lines:

    .venv/bin/python bench/new_chars.py [--seeds 1 2 3] [--epochs 4] [--samples 96] [--work DIR]

1. German stand-in: synthetic Fraktur lines (hsbcala.data.synth, Blankenburg face) rendered from real German text
   (the GT of ../shared/data/fraktur19-lines/ref_AS with ſ written s and ⸗ written -, lines of plain Latin
   letters, umlauts, ß, digits and punctuation only), a small Calamari 2 model trained on them from scratch
   with the demo preset's recipe (conf/preset/demo.yaml: 1,000 lines, batch 8, learning rate 0.002, epochs of
   400 lines; ``--german-epochs`` 9), once, reused from --work (the directory names carry the parameters). Its
   validation CER on the 40 German validation lines is printed per epoch, so that the reader knows it reads.
2. Upper Sorbian: the synthetic demo lines (the built-in Sorbian phrases; same face, other text), the same
   train/val lines for every run. The letters new to the German codec are the subject (ě č ć ř ź ł ń ž š …).
3. For each seed, ``random`` (the German model as it is: Calamari appends random rows) and ``base`` (the model
   prepared by hsbcala.train.newchars: rows copied from e, c, r, z, l, n, …), fine-tuned with the same budget
   (``--epochs`` × ``--samples`` lines, the stand-in's batch size and learning rate, no augmentation, no early
   stopping), same seed and data.
4. Every epoch's checkpoint predicts the Sorbian validation lines (bench/new_chars_predict.py, in the engine
   environment): CER overall, CER on the new letters (edits of GT new-letter characters + predicted new letters
   inserted, over the GT new-letter count) and each new letter's recall (its GT occurrences on an equal-path of
   the alignment), per epoch; mean ± standard deviation (min-max) over the seeds. The engine runs directly
   (calamari-train of the cala2 environment, one process per run), not through train.py: only the initial
   rows differ between the two arms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rapidfuzz.distance import Levenshtein

from hsbcala.data import synth
from hsbcala.engines import envs, modeljson
from hsbcala.train import newchars
from tests.conftest import SHARED, compose_cfg

GERMAN = SHARED / "data" / "fraktur19-lines" / "ref_AS"
SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?()-äöüÄÖÜß")
NETWORK = "cnn=40:3x3,pool=2x2,cnn=60:3x3,pool=2x2,lstm=200,dropout=0.5"
PREDICT = ROOT / "bench" / "new_chars_predict.py"
VAL_ENGINE = 12  # lines the engine validates on each epoch (no effect on training: no early stopping); the
# figures come from every epoch's checkpoint predicting all Sorbian validation lines
RUN_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def german_text(out: Path, n: int = 3000) -> Path:
    seen, lines = set(), []
    for gt in sorted(GERMAN.glob("*/*.gt.txt")):
        t = unicodedata.normalize("NFC", gt.read_text(encoding="utf-8").strip())
        t = t.replace("ſ", "s").replace("⸗", "-")  # else only 386 lines of ref_AS pass, too few for 1,000
        if len(t) >= 25 and set(t) <= SAFE and t not in seen:
            seen.add(t)
            lines.append(t)
        if len(lines) >= n:
            break
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def train(
    env,
    out: Path,
    data: Path,
    *,
    epochs: int,
    samples: int | None,
    seed: int,
    warm: str | None,
    batch: int,
    lr: float,
    n_val: int = VAL_ENGINE,
) -> float:
    argv = [
        env.program("calamari-train"),
        "--trainer.output_dir", str(out),
        "--train.images", str(data / "train" / "*" / "*.png"),
        "--val.images", *map(str, sorted((data / "val").glob("*/*.png"))[:n_val]),
        "--trainer.epochs", str(epochs),
        "--train.batch_size", str(batch),
        "--learning_rate.lr", str(lr),
        "--n_augmentations", "0",
        "--early_stopping.n_to_go", "0",
        "--trainer.random_seed", str(seed),
        "--train.num_processes", "2",
        "--trainer.progress_bar_mode", "2",
        "--trainer.export_best", "True",
    ]  # fmt: skip
    argv += ["--trainer.samples_per_epoch", str(samples)] if samples else []
    argv += ["--warmstart.model", warm, "--codec.keep_loaded", "False"] if warm else ["--network", NETWORK]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=RUN_ENV, check=False)
    (out / "bench-engine.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"training {out} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.monotonic() - t0


def val_cers(log: Path) -> list[float]:
    """The engine's validation CER after each epoch, from its log."""
    return [
        float(line.split("val_CER: ")[1].split()[0])
        for line in log.read_text(encoding="utf-8").splitlines()
        if "Results of epoch" in line and "val_CER: " in line
    ]


def predict(env, model_dir: Path, images: list[Path]) -> dict[int, dict[str, str]]:
    lines = model_dir / "bench-lines.txt"
    lines.write_text("\n".join(map(str, images)) + "\n", encoding="utf-8")
    out = model_dir / "bench-predictions.json"
    proc = subprocess.run(
        [env.program("python"), str(PREDICT), str(model_dir), str(lines), str(out)],
        capture_output=True,
        text=True,
        env=RUN_ENV,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"prediction in {model_dir} failed:\n{proc.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(out.read_text(encoding="utf-8")).items()}


def figures(pairs: list[tuple[str, str]], new: set[str]) -> dict:
    """CER, new-letter CER and recall per new letter of (GT, prediction) pairs."""
    chars = errors = new_count = new_errors = 0
    hits = dict.fromkeys(sorted(new), 0)
    counts = dict.fromkeys(sorted(new), 0)
    for gt, pred in pairs:
        chars += len(gt)
        for tag, g1, g2, p1, p2 in Levenshtein.opcodes(gt, pred):
            seg, pseg = gt[g1:g2], pred[p1:p2]
            if tag == "equal":
                for c in seg:
                    if c in new:
                        hits[c] += 1
                continue
            errors += max(len(seg), len(pseg)) if tag == "replace" else len(seg) + len(pseg)
            new_errors += sum(c in new for c in seg) + sum(c in new for c in pseg if c not in seg)
        for c in gt:
            if c in new:
                counts[c] += 1
                new_count += 1
    return {
        "cer": errors / max(chars, 1),
        "new_cer": new_errors / max(new_count, 1),
        "recall": {c: hits[c] / counts[c] for c in counts if counts[c]},
        "counts": counts,
    }


def spread(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs (one checkpoint each)")
    ap.add_argument("--samples", type=int, default=96, help="lines per fine-tuning epoch")
    ap.add_argument("--sorbian", type=int, default=150, help="Sorbian training lines")
    ap.add_argument("--german", type=int, default=1000, help="German training lines of the stand-in")
    ap.add_argument("--german-epochs", type=int, default=9)
    ap.add_argument("--german-samples", type=int, default=400, help="lines per epoch of the stand-in")
    ap.add_argument("--batch", type=int, default=8, help="batch size (stand-in and fine-tunes)")
    ap.add_argument("--lr", type=float, default=0.002, help="learning rate (stand-in and fine-tunes)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hsbcala-bench-new-chars"))
    args = ap.parse_args()
    t_start = time.monotonic()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    print("load average (1, 5, 15 min) at the start: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    env = envs.resolve(compose_cfg(["version=cala2"]), ROOT)
    env.ensure()

    text = german_text(work / "german.txt")
    g_train, _ = synth.ensure_synthetic(
        work / "german", "fraktur", n_train=args.german, n_val=40, seed=7, text_file=text
    )
    s_train, s_val = synth.ensure_synthetic(
        work / "sorbian", "fraktur", n_train=args.sorbian, n_val=60, seed=11
    )
    recipe = f"{args.german}x{args.german_epochs}x{args.german_samples}-b{args.batch}-lr{args.lr}"
    german_dir = work / f"german-model-{recipe}"
    if not (german_dir / "best.ckpt.json").is_file():
        shutil.rmtree(german_dir, ignore_errors=True)
        secs = train(
            env,
            german_dir,
            g_train.parent,
            epochs=args.german_epochs,
            samples=args.german_samples,
            seed=1,
            warm=None,
            batch=args.batch,
            lr=args.lr,
            n_val=40,
        )
        print(
            f"German stand-in trained: {args.german} lines, {args.german_epochs} epochs × {args.german_samples} "
            f"lines, batch {args.batch}, lr {args.lr} in {secs:.0f} s"
        )
    g_cer = val_cers(german_dir / "bench-engine.log")
    print(
        "German stand-in, validation CER on 40 German lines per epoch: "
        + " ".join(f"{x:.3f}" for x in g_cer),
        flush=True,
    )
    german = modeljson.read_model(german_dir / "best.ckpt.json")

    val_images = sorted(s_val.glob("*/*.png"))
    val_gt = {
        p.stem: unicodedata.normalize(
            "NFC", p.with_suffix("").with_suffix(".gt.txt").read_text("utf-8").strip()
        )
        for p in val_images
    }
    train_chars = set()
    for gt in s_train.glob("*/*.gt.txt"):
        train_chars |= set(unicodedata.normalize("NFC", gt.read_text("utf-8").strip()))
    new = sorted(train_chars - set(german.charset))
    found = newchars.origins(new, german.charset, {"ł": "l", "Ł": "L"})
    print("new letters: " + ", ".join(f"{o.char} ← {o.base or 'random'}" for o in found))
    new_in_val = {c for c in new if any(c in t for t in val_gt.values())}

    prepared = work / f"german-prepared-{recipe}"
    if not (prepared / "best.ckpt.json").is_file():
        tmp = work / "german-prepared.part"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(german_dir, tmp, ignore=shutil.ignore_patterns("checkpoint", "bench-*", "*.log"))
        newchars.prepare(env.program("python"), 2, tmp / "best.ckpt.json", found)
        os.replace(tmp, prepared)

    # the German model on German validation lines, before any fine-tuning (how good the stand-in is)
    results: dict[str, dict[int, list[dict]]] = {"random": {}, "base": {}}
    times = {"random": [], "base": []}
    for seed in args.seeds:
        for arm, model in (("random", german_dir), ("base", prepared)):
            out = work / f"{arm}-seed{seed}-{recipe}-ft{args.epochs}x{args.samples}"
            if not (out / "bench-predictions.json").is_file():
                shutil.rmtree(out, ignore_errors=True)
                secs = train(
                    env,
                    out,
                    s_train.parent,
                    epochs=args.epochs,
                    samples=args.samples,
                    seed=seed,
                    warm=str(model / "best.ckpt.json"),
                    batch=args.batch,
                    lr=args.lr,
                )
                times[arm].append(secs)
                preds = predict(env, out, val_images)
                print(
                    f"  seed {seed} {arm}: trained in {secs:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True
                )
            else:
                preds = {
                    int(k): v
                    for k, v in json.loads((out / "bench-predictions.json").read_text("utf-8")).items()
                }
            for epoch, texts in sorted(preds.items()):
                f = figures([(val_gt[k], v) for k, v in texts.items()], new_in_val)
                results[arm].setdefault(epoch, []).append(f)
            last = results[arm][max(preds)][-1]
            print(
                f"  seed {seed} {arm:6}: CER {last['cer']:.3f}, new-letter CER {last['new_cer']:.3f}",
                flush=True,
            )

    print()
    print(
        f"Fine-tuning a German stand-in ({args.german} synthetic lines, {args.german_epochs} epochs × "
        f"{args.german_samples} lines, validation CER {min(g_cer, default=float('nan')):.3f}) on "
        f"{args.sorbian} synthetic Upper Sorbian lines: {args.epochs} epochs × {args.samples} lines, "
        f"batch {args.batch}, lr {args.lr}, "
        f"seeds {args.seeds}; {len(val_images)} Sorbian validation lines "
        f"({sum(f['counts'][c] for c in new_in_val for f in [results['base'][1][0]])} new-letter occurrences)"
    )
    print()
    print("| epoch | CER random | CER base | new-letter CER random | new-letter CER base |")
    print("|---|---|---|---|---|")
    for epoch in sorted(results["base"]):
        r, b = results["random"][epoch], results["base"][epoch]
        print(
            f"| {epoch} | {spread([x['cer'] for x in r])} | {spread([x['cer'] for x in b])} | "
            f"{spread([x['new_cer'] for x in r])} | {spread([x['new_cer'] for x in b])} |"
        )
    print()
    print("Recall per new letter (mean over seeds), random → base, per epoch:")
    counts = results["base"][1][0]["counts"]
    for c in sorted(new_in_val):
        curve = " ".join(
            f"{statistics.mean(x['recall'][c] for x in results['random'][e]):.2f}→"
            f"{statistics.mean(x['recall'][c] for x in results['base'][e]):.2f}"
            for e in sorted(results["base"])
        )
        print(
            f"  {c} ({counts[c]:>3}×, from {next(o.base or 'random' for o in found if o.char == c)}): {curve}"
        )
    last = max(results["base"])
    wins = sum(
        b["new_cer"] < r["new_cer"]
        for r, b in zip(results["random"][last], results["base"][last], strict=True)
    )
    mean_r = statistics.mean(x["new_cer"] for x in results["random"][last])
    mean_b = statistics.mean(x["new_cer"] for x in results["base"][last])
    print()
    print(
        f"after epoch {last}: new-letter CER random {mean_r:.3f}, base {mean_b:.3f}; base lower in {wins} of "
        f"{len(args.seeds)} seeds → {'base wins' if mean_b < mean_r and wins == len(args.seeds) else 'no clear win'}"
    )
    print("load average (1, 5, 15 min) at the end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    t = ", ".join(f"{k} {statistics.mean(v):.0f} s" for k, v in times.items() if v)
    print(
        f"mean fine-tuning time per run: {t or 'reused'}; benchmark wall time {time.monotonic() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
