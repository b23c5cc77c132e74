"""Benchmark: a Fraktur model from scratch on real 19th-century print, judged on books it never saw (issue 20).

    .venv/bin/python bench/reference.py base [--cache DIR] [--test-books 8] [-- extra train.py overrides …]
    .venv/bin/python bench/reference.py team [--cache DIR] [--lines 3000] [-- extra train.py overrides …]
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

**team** is the team's path on top of the finished base model (refused in one line before): the base model packed
as the release archive ``<cache>/releases/reference_base.tar.gz`` (one member, ``reference_base/0.ckpt.json`` +
``0.ckpt/``), described by a registry of its own (``<cache>/registry.json``, hsbcala's registry format, the
archive's size and sha256), served by ``http.server`` on 127.0.0.1 (a thread of this process) and installed with
``python -m hsbcala.pretrained get reference_base --registry … --dir <cache>/pretrained`` as a user would. Then
``preset=full`` fine-tunes it (warm start, recomputed codec, new letters, two stages, early stopping), scaled to
2 cores by overrides only (batch 16, 2 workers, 1 augmented copy, 2,000 lines an epoch), on synthetic Upper
Sorbian Fraktur lines rendered from ../shared's 644 UD sentences (``--lines`` training lines, a tenth of that for
validation; the letter counts are printed) into ``<cache>/models/team`` (MLflow experiment ``reference-team``,
``curve-team.jsonl``). ``evaluate.py`` with ``eval.baseline=true`` then scores it against the base model on the
synthetic validation lines (the Sorbian-letter table) and on the held-out German books (forgetting), and the
figures are printed beside the issue's targets. Resumable as base (the archive, the registry, the installed model
and the rendered lines are made once); overrides after ``--`` go to train.py and evaluate.py and win over the
benchmark's (``--lines 100 -- train.epochs=1 train.samples_per_epoch=32`` checks the wiring in minutes).
``train.codec=recompute`` (preset=full's) drops the base model's characters the Sorbian lines never use (ſ, ⸗, …:
4 % of the German GT characters), which the forgetting figure then shows; ``-- train.codec=keep_loaded`` keeps them.

Not yet here (issue 20): ``new_chars_init`` at scale.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import http.server
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fraktur19-lines"
# an epoch line of hsbcala's console (hsbcala.core.console.Progress): ``stage 1/2 epoch 7/500 | CER 0.0169, best …``
# (the validation CER; ``train CER …`` on an epoch without validation is no point), and the wording before 44e510b,
# ``epoch 14/100 | train CER 0.0094 | val CER 0.0176 | …``, which curves begun then hold
EPOCH = re.compile(r"stage (\d+)/\d+ epoch (\d+)/\d+ \|(?: train CER [0-9.]+ \|)? (?:val )?CER ([0-9.]+)")
THRESHOLDS = (0.05, 0.02, 0.015, 0.012)
TEXT = ROOT.parent / "shared" / "data" / "hsb-text" / "hsb_ud_sentences.txt"  # 644 Upper Sorbian UD sentences
RELEASE = "reference_base"  # the base model's name as a pretrained model
SORBIAN = "ěčćřšžźłńóĚČĆŘŠŽŹŁŃÓ"  # eval.sorbian_letters' default
SYN_SEED = 50
RARE = 100  # a letter seen fewer times in training is flagged: the issue asks for hundreds
TARGET_RECALL = 0.98  # issue 20: every Sorbian letter on the synthetic validation lines
TARGET_FORGETTING = 0.005  # issue 20: at most +0.5 CER points on the held-out German books


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
    argv = [
        sys.executable,
        str(ROOT / "train.py"),
        *common(cache),
        f"data.train=[{train_dir}/**/*.png]",
        "data.val=null",
        f"hydra.run.dir={cache}/outputs/{time.strftime('%Y%m%d-%H%M%S')}",
        *extra,
    ]
    return follow(argv, cache / "curve.jsonl", cache)


def follow(argv: list[str], curve_file: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run one ``python train.py``, streaming its console and appending a point per epoch line to
    ``curve_file``; the clock goes on from the file's last point, so a resumed training continues its curve."""
    curve = load_curve(curve_file)
    offset = curve[-1]["seconds"] if curve else 0.0
    print("reference: " + " ".join(argv), flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env
    )
    assert proc.stderr is not None
    with curve_file.open("a") as out:
        for line in proc.stderr:
            sys.stderr.write(line)
            point = epoch_point(line)
            if point:
                point = {"seconds": round(offset + time.monotonic() - t0, 1), **point}
                point["load"] = round(os.getloadavg()[0], 1)
                out.write(json.dumps(point) + "\n")
                out.flush()
    return proc.wait()


def epoch_point(line: str) -> dict | None:
    """(epoch, validation CER, stage) of a console epoch line; None for other lines and epochs without
    validation. The stage is kept: preset=full trains two, each counting its epochs from 1."""
    m = EPOCH.search(line)
    if not m:
        return None
    return {"epoch": int(m.group(2)), "val_cer": float(m.group(3)), "stage": int(m.group(1))}


def evaluate(cache: Path, test_dir: Path, extra: list[str]) -> int:
    tail = [
        *common(cache),
        f"data.train=[{cache}/data/train/**/*.png]",
        f"eval.data=[{test_dir}/**/*.png]",
        "eval.name=unseen_books",
        "eval.mlflow_run=separate",
        *extra,
    ]
    return evaluate_py(tail, cache / "outputs" / f"eval-{time.strftime('%Y%m%d-%H%M%S')}", cache)


def evaluate_py(tail: list[str], job_dir: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """One ``python evaluate.py`` with its results in ``job_dir`` (eval-result.json …)."""
    argv = [sys.executable, str(ROOT / "evaluate.py"), *tail, f"hydra.run.dir={job_dir}"]
    print("reference: " + " ".join(argv), flush=True)
    return subprocess.call(argv, cwd=cwd, env=env)


def report(cache: Path) -> None:
    """The base curve with its times to CER, then the team's curve if there is one."""
    if not print_curve(load_curve(cache / "curve.jsonl"), "base", THRESHOLDS):
        print("reference: no epoch of the base model recorded yet")
    print_curve(
        load_curve(cache / "curve-team.jsonl"), "team (preset=full on synthetic Upper Sorbian lines)", ()
    )


def print_curve(curve: list[dict], what: str, thresholds: tuple[float, ...]) -> bool:
    if not curve:
        return False
    print(f"{what}: validation CER against training wall time ({len(curve)} validations):")
    staged = any(p.get("stage", 1) > 1 for p in curve)  # (points recorded before the stage was have none)
    for p in curve:
        stage = f"stage {p.get('stage', 1)} " if staged else ""
        print(
            f"  {p['seconds'] / 60:7.1f} min  {stage}epoch {p['epoch']:>3}  val CER {p['val_cer']:.4f}  "
            f"load {p['load']}"
        )
    for t in thresholds:
        hit = next((p for p in curve if p["val_cer"] <= t), None)
        when = f"{hit['seconds'] / 60:.1f} min (epoch {hit['epoch']})" if hit else "not reached"
        print(f"  time to val CER <= {t:.1%}: {when}")
    best = min(curve, key=lambda p: p["val_cer"])
    print(f"  best val CER {best['val_cer']:.4f} at {best['seconds'] / 60:.1f} min (epoch {best['epoch']})")
    loads = sorted(p["load"] for p in curve if p.get("load") is not None)  # (none for points filled in later)
    if loads:
        print(f"  machine load during training: median {loads[len(loads) // 2]} (1-minute load average)")
    return True


# ------------------------------------------------------------------------------------------ the team's path


def base_model(cache: Path) -> Path:
    """``<cache>/models/base`` if its training finished with a best model; else exit 2 with one line."""
    base = cache / "models" / "base"
    state_file = base / "hsbcala-state.json"
    try:
        status = json.loads(state_file.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError) as exc:
        status = f"unreadable ({getattr(exc, 'strerror', None) or exc})"
    if status != "finished" or not (base / "best.ckpt.json").is_file():
        print(
            f"reference: team needs the finished base model ({state_file}: status {status}"
            f"{'' if (base / 'best.ckpt.json').is_file() else ', no best.ckpt.json'}); run the base part first",
            file=sys.stderr,
        )
        sys.exit(2)
    return base


def pack_release(cache: Path, base: Path) -> Path:
    """``<cache>/releases/reference_base.tar.gz``: ``reference_base/0.ckpt.json`` + its weights, made once.

    Not hsbcala's own ``eval.export=true`` (hsbcala.evaluate.release), which ``get`` also installs (its one
    ``best.ckpt.json`` as the member ``0.ckpt.json``) but which costs an evaluation. This is the layout of a
    published release (Calamari-OCR's): the model folder, its members numbered from 0."""
    from hsbcala import engines

    archive = cache / "releases" / f"{RELEASE}.tar.gz"
    model = base / "best.ckpt.json"
    if archive.is_file():
        if archive.stat().st_mtime < model.stat().st_mtime:
            sys.exit(
                f"reference: {model} is newer than its release {archive}; remove {archive.parent}, "
                f"{cache / 'pretrained'} and {cache / 'models' / 'team'} to redo the team's path on it"
            )
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    part = archive.with_name(archive.name + ".part")
    with tarfile.open(part, "w:gz") as tar:
        for f in [model, *engines.weights_of(model)]:  # best.ckpt.json, best.ckpt/ -> 0.ckpt.json, 0.ckpt/
            tar.add(f, arcname=f"{RELEASE}/0{f.name.removeprefix('best')}")
    os.replace(part, archive)  # a half-written archive never carries the final name
    print(f"reference: packed {model} as {archive}", flush=True)
    return archive


def write_registry(cache: Path, base: Path, archive: Path, url: str) -> Path:
    """``<cache>/registry.json``: hsbcala's registry format, one entry for the packed base model."""
    import hashlib

    from hsbcala.engines import modeljson

    model = base / "best.ckpt.json"
    info = modeljson.read_model(model)
    state = json.loads((base / "hsbcala-state.json").read_text(encoding="utf-8"))
    registry = cache / "registry.json"
    entry = {
        "calamari": state["version"],
        "network": info.network,
        "model_version": json.loads(model.read_text(encoding="utf-8")).get("version"),
        "members": 1,
        "url": f"{url}/{archive.name}",
        "path_in_archive": RELEASE,
        "size": archive.stat().st_size,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "description": (
            "bench/reference.py's base model: preset=scratch trained on ../shared's 19th-century German Fraktur "
            f"books (ref_AS + ref_BA) less the held-out ones, best validation CER {state.get('best_val_cer')}"
        ),
        "source": f"{model}, packed by bench/reference.py team, served on the loopback interface",
    }
    about = "bench/reference.py team: the base model as a release (format: hsbcala/pretrained_registry.json)"
    registry.write_text(
        json.dumps({"about": about, "models": {RELEASE: entry}}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return registry


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on 127.0.0.1 (a free port, a thread of this process); yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # get prints its own progress
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def install(cache: Path, base: Path, env: dict[str, str]) -> int:
    """Pack, register, serve and ``get`` the base model into ``<cache>/pretrained`` (skipped when installed)."""
    from hsbcala.pretrained import load_registry, status

    archive = pack_release(cache, base)
    registry = cache / "registry.json"
    target = cache / "pretrained" / RELEASE
    if registry.is_file() and status(target, load_registry(registry)[RELEASE]) == "present":
        print(f"reference: {target} is installed", flush=True)
        return 0
    with serve(archive.parent) as url:
        registry = write_registry(cache, base, archive, url)  # after the port is known: its URL names it
        argv = [sys.executable, "-m", "hsbcala.pretrained", "get", RELEASE]
        argv += ["--registry", str(registry), "--dir", str(cache / "pretrained")]
        print("reference: " + " ".join(argv), flush=True)
        return subprocess.call(argv, cwd=cache, env=env)


def synthetic_lines(cache: Path, n_train: int) -> tuple[Path, int]:
    """Render (once) the synthetic Fraktur set exactly as train.py would (same function, same parameters) and
    print how often each Sorbian letter occurs in it; (its root, the validation line count)."""
    from hsbcala.data import synth

    n_val = max(2, n_train // 10)
    root = cache / "data" / "synthetic" / f"hsb-ud-{n_train}+{n_val}-seed{SYN_SEED}"
    print(f"reference: synthetic lines from {TEXT} in {root} (rendered once)", flush=True)
    synth.ensure_synthetic(root, "fraktur", n_train=n_train, n_val=n_val, seed=SYN_SEED, text_file=TEXT)
    counts = {}
    for split in ("train", "val"):
        text = "".join(f.read_text(encoding="utf-8") for f in (root / "fraktur" / split).glob("*/*.gt.txt"))
        counts[split] = collections.Counter(text)
    print(f"Sorbian letters in the {n_train} training and {n_val} validation lines:")
    print("  letter " + " ".join(f"{c:>5}" for c in SORBIAN))
    for split in ("train", "val"):
        print(f"  {split:<6} " + " ".join(f"{counts[split][c]:>5}" for c in SORBIAN))
    rare = [c for c in SORBIAN if counts["train"][c] < RARE]
    source = collections.Counter(TEXT.read_text(encoding="utf-8"))
    if rare:
        nowhere = [c for c in rare if not source[c]]
        print(
            f"  under {RARE} training occurrences: {' '.join(rare)}"
            + (f"; {' '.join(nowhere)} never occur in {TEXT.name}" if nowhere else "")
            + " (more --lines raise the others)"
        )
    return root, n_val


def team_overrides(cache: Path, syn_root: Path, n_train: int, n_val: int) -> list[str]:
    """preset=full on the synthetic lines, warm-started from the installed base model, scaled to 2 cores."""
    return [
        f"paths.root={cache}",
        f"mlflow.tracking_uri=sqlite:///{cache}/mlruns.db",
        "mlflow.experiment=reference-team",
        f"model_dir={cache}/models/team",
        "version=cala2",
        "preset=full",
        f"script.pretrained.cala2={RELEASE}",
        f"warmstart.pretrained_dir={cache}/pretrained",
        f"data.synthetic.root={syn_root}",
        f"data.synthetic.n_train={n_train}",
        f"data.synthetic.n_val={n_val}",
        f"data.synthetic.seed={SYN_SEED}",
        f"data.synthetic.text_file={TEXT}",
        f"data.train=[{syn_root}/fraktur/train/*/*.png]",
        f"data.val=[{syn_root}/fraktur/val/*/*.png]",
        # 2 cores instead of the team's GPU: batch 16 and 2 loader workers (preset=scratch's measured settings),
        # one augmented copy (two stages as the team's five, at a fifth of the cost) and 2,000 lines an epoch,
        # so that validation and early stopping come every ~6 minutes; the codec, the warm start, the stages
        # and the patience stay preset=full's
        "train.batch_size=16",
        "train.workers=2",
        "train.augmentations=1",
        "train.samples_per_epoch=2000",
    ]


def points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def difference(result: dict) -> dict | None:
    """The paired fine-tuned − baseline difference of the result's first set."""
    return next(iter(result.get("baseline_differences") or []), None)


def print_letters(result: dict) -> tuple[list[str], list[str]]:
    """The Sorbian-letter table (model and baseline recall); (the letters under the recall target, those
    absent from the lines)."""
    mine = {r["char"]: r for r in result["sets"][0]["sorbian_letters"]}
    base_sets = (result.get("baseline") or {}).get("sets") or []
    base = {r["char"]: r for r in base_sets[0]["sorbian_letters"]} if base_sets else {}
    print(f"Sorbian letters on '{result['sets'][0]['name']}' (recall: fine-tuned, baseline):")
    print("  letter   GT  recall  baseline  misread as")
    below, absent = [], []
    for c in SORBIAN:
        r = mine.get(c)
        if r is None or not r["gt"]:
            print(f"  {c:<6} {0:>4}  (not in these lines)")
            absent.append(c)
            continue
        b = base.get(c, {}).get("recall")
        misread = "" if r["misread"] is None else f"{r['misread'] or '(left out)'} {r['misread_count']}x"
        print(
            f"  {c:<6} {r['gt']:>4}  {r['recall']:.3f}   {'n/a' if b is None else f'{b:.3f}':>6}    {misread}"
        )
        if r["recall"] < TARGET_RECALL:
            below.append(c)
    return below, absent


def team(cache: Path, n_train: int, extra: list[str], no_eval: bool) -> int:
    base = base_model(cache)
    if not TEXT.is_file():
        sys.exit(f"reference: {TEXT} is missing (../shared beside the repository)")
    test_dir = cache / "data" / "test"
    if not test_dir.is_dir():
        sys.exit(f"reference: {test_dir} is missing (the base part makes it: the held-out German books)")
    from hsbcala.pretrained import REGISTRY_ENV

    # hsbcala's own hints (a missing warm-start model's get command, a release's base-model URL) look the
    # model up in the registry: this one
    env = {**os.environ, REGISTRY_ENV: str(cache / "registry.json")}
    rc = install(cache, base, env)
    if rc != 0:
        print(f"reference: the get ended with exit {rc}", file=sys.stderr)
        return rc
    syn_root, n_val = synthetic_lines(cache, n_train)
    overrides = team_overrides(cache, syn_root, n_train, n_val)
    argv = [sys.executable, str(ROOT / "train.py"), *overrides]
    argv += [f"hydra.run.dir={cache}/outputs/team-{time.strftime('%Y%m%d-%H%M%S')}", *extra]
    rc = follow(argv, cache / "curve-team.jsonl", cache, env)
    print_curve(load_curve(cache / "curve-team.jsonl"), "team", ())
    if rc != 0:
        print(
            f"reference: train.py ended with exit {rc}; run the same command again to resume", file=sys.stderr
        )
        return rc
    if no_eval:
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # the synthetic validation lines (eval.data=null: those in the model's manifest), then the German books
    tail = [*overrides, "eval.baseline=true", "eval.mlflow_run=separate", *extra]
    sets = {
        "val": tail,
        "unseen": [*tail, f"eval.data=[{test_dir}/**/*.png]", "eval.name=unseen_books"],
    }
    results = {}
    for name, argv_tail in sets.items():
        job_dir = cache / "outputs" / f"team-eval-{name}-{stamp}"
        rc = evaluate_py(argv_tail, job_dir, cache, env)
        if rc != 0:
            print(f"reference: evaluate.py ended with exit {rc}", file=sys.stderr)
            return rc
        results[name] = json.loads((job_dir / "eval-result.json").read_text(encoding="utf-8"))
    summary(results["val"], results["unseen"])
    return 0


def summary(synthetic: dict, german: dict) -> None:
    """The Sorbian-letter table, the fine-tuning change and the forgetting, beside the issue's targets."""
    print("\nthe team's path against issue 20's targets:")
    below, absent = print_letters(synthetic)
    print(
        f"  target recall >= {TARGET_RECALL} each letter: "
        + ("met" if not below else f"NOT met for {' '.join(below)}")
        + (f" (not judged: {' '.join(absent)}, absent from the validation lines)" if absent else "")
    )
    for name, result, target in (
        ("synthetic validation lines", synthetic, "better than the baseline, interval excluding 0"),
        ("held-out German books (forgetting)", german, f"at most {100 * TARGET_FORGETTING:+.2f} points"),
    ):
        d = difference(result)
        cer = result["sets"][0]["overall"]
        base_sets = (result.get("baseline") or {}).get("sets") or []
        base_cer = base_sets[0]["overall"]["cer"] if base_sets else None
        shown = "n/a" if base_cer is None else f"{base_cer:.4f}"
        print(f"{name} ({cer['lines']} lines): CER {cer['cer']:.4f}, baseline {shown}")
        if d is None or d["point"] is None:
            why = (result.get("baseline") or {}).get("error")
            print(f"  no paired difference (baseline: {why}); target {target}: not judged")
            continue
        iv = d["interval"]
        if name.startswith("synthetic"):
            met = d["point"] < 0 and iv.get("high") is not None and iv["high"] < 0
        else:
            met = d["point"] <= TARGET_FORGETTING
        print(
            f"  fine-tuned − baseline: {points(d['point'])} points [{points(iv.get('low'))}, "
            f"{points(iv.get('high'))}] ({iv.get('unit')}, {d['lines']} lines); target {target}: "
            f"{'met' if met else 'NOT met'}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["base", "team", "report"])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/hsbcala/bench-reference")
    ap.add_argument("--test-books", type=int, default=8)
    ap.add_argument("--no-eval", action="store_true", help="train (or resume) only")
    ap.add_argument(
        "--lines", type=int, default=3000, help="team: synthetic training lines (a tenth of that validates)"
    )
    ap.add_argument("extra", nargs="*", help="overrides for train.py/evaluate.py, after --")
    # split at "--" by hand: argparse fills the positional 'extra' (empty) together with 'part', so overrides
    # after an option ('base --cache DIR -- x=y') were refused as unrecognized arguments
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    args.extra += argv[cut + 1 :]
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        report(cache)
        return 0
    if args.part == "team":
        return team(cache, args.lines, args.extra, args.no_eval)
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
