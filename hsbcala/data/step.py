"""The data step of every training: resolve, split, check, hash, report, before anything is created.

:func:`prepare` (called by :func:`hsbcala.train.plan.plan`) does, in order:

1. resolve ``data.train`` / ``data.val`` (globs; GT archives unpacked once, :mod:`hsbcala.data.archives`);
2. no ``data.val``: split ``data.train`` by document with a seed (:mod:`hsbcala.data.split`), or reuse the split
   saved in the model directory; else refuse validation lines that are also training lines;
3. read and hash every line (image facts cached, :mod:`hsbcala.data.hashcache`) and run the pair and content
   checks with their actions (:mod:`hsbcala.data.checks`): fail → :class:`DataError` (one line naming the check
   and the first file), drop → the line is left out, warn → reported;
4. build the manifest (:mod:`hsbcala.data.manifest`) and, for a fresh warm start, the codec report against the
   model's codec (:mod:`hsbcala.data.codec`).

Nothing is written here. :meth:`DataPlan.write` puts ``manifest.json``, ``split.json`` and the codec report
into the model directory once the runner has created it (after every check passed), and :meth:`DataPlan.track`
logs them to MLflow (artifacts under ``data/``; tags ``data.content_sha256``, ``data.manifest_sha256``).
``data_check_only=true`` runs this step alone (:func:`check_only`). A dry run only resolves (and splits):
no line is read, so it stays fast.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbcala.core import fsutil
from hsbcala.core.errors import DataError
from hsbcala.data import archives, checks, codec, exclude, manifest, split
from hsbcala.data import resolve as data
from hsbcala.data.hashcache import HashCache

STATE_FILE = "hsbcala-state.json"  # hsbcala.modeldir.STATE_FILE (not imported: keep this module light)


@dataclass
class DataPlan:
    """What the data step decided: the engine's data arguments, counts, and the reports to write."""

    engine_train: tuple[str, ...]
    engine_val: tuple[str, ...]
    n_train: int
    n_val: int
    skipped: int = 0
    outcome: checks.Outcome | None = None
    split: split.Split | None = None
    manifest: dict[str, Any] | None = None
    codec_report: dict[str, Any] | None = None
    error: str | None = None  # the failed check's message (kept only when data_check_only)
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    written: dict[str, Path] = field(default_factory=dict)
    manifest_sha256: str | None = None
    exclusion: exclude.Exclusion | None = None  # data.exclude: the lines left out

    # ----------------------------------------------------------------------------------------- console
    def announce(self, say) -> None:
        """Print what the checks found, the split, and the codec table (stderr, before training)."""
        if self.manifest is None:
            return
        t = self.manifest["totals"]
        how = (
            "given"
            if self.split is None
            else (
                f"split by {self.split.by}{' (reused)' if self.split.reused else f', seed {self.split.seed}'}"
            )
        )
        say(
            f"data: {t['train']['lines']:,} training + {t['val']['lines']:,} validation lines "
            f"({t['train']['documents']} + {t['val']['documents']} documents, {how}), {t['dropped']} dropped, "
            f"{t['charset_size']} characters; checked in {self.seconds:.1f} s "
            f"({self.cache_hits} images from the cache); data train {manifest.split_digest(self.manifest, 'train')}"
            f" + val {manifest.split_digest(self.manifest, 'val')}"  # the digests of the run's MLflow datasets
        )
        for f in [f for f in self.outcome.findings.values() if f.items] if self.outcome else []:
            path, reason, key = f.items[0]
            verb = {"drop": "dropped", "warn": "warning:", "fail": "FAILED:"}[f.action]
            say(
                f"{verb} {key}: {len(f.items)} × {checks.CHECKS[f.check][0]} "
                f"(data.checks.{f.check}={f.action}); first: {path}: {reason}"
            )
        for note in self.split.notes if self.split else []:
            say(f"split: {note}")
        for line in self.exclusion.messages() if self.exclusion else []:
            say(line)
        if self.codec_report is not None:
            for line in codec.short_table(self.codec_report):
                say(line)

    # ------------------------------------------------------------------------------------------- files
    def write(self, directory: Path) -> str | None:
        """Write manifest, split and codec report into ``directory``; a note if the data changed since the
        manifest a previous launch wrote there."""
        if self.manifest is None:
            return None
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        before = manifest.previous_content_sha256(directory)
        self.written["manifest"], self.manifest_sha256 = manifest.write(self.manifest, directory)
        if self.split is not None:
            path = directory / split.SPLIT_FILE
            # atomic: a later launch reuses the saved split, and refuses one that was cut short
            fsutil.atomic_write_text(
                path, json.dumps(self.split.to_json(), ensure_ascii=False, indent=1) + "\n"
            )
            self.written["split"] = path
        if self.codec_report is not None:
            for path in codec.write(self.codec_report, directory):
                self.written[path.name] = path
        now = self.manifest["content_sha256"]
        if before and before != now:
            return (
                f"the data differ from the previous launch's (data {before[:12]} → {now[:12]}); "
                f"see manifest.json"
            )
        return None

    def track(self, tracker: Any) -> None:
        """Log the written files (artifacts ``data/…``) and the data's hashes and counts (tags)."""
        if self.manifest is None:
            return
        for path in self.written.values():
            tracker.log_artifact(path, "data")
        t = self.manifest["totals"]
        tags = {
            "data.content_sha256": self.manifest["content_sha256"],
            "data.n_train": str(t["train"]["lines"]),
            "data.n_val": str(t["val"]["lines"]),
            "data.dropped": str(t["dropped"]),
            "data.split": "given" if self.split is None else f"{self.split.by}:seed={self.split.seed}",
        }
        if self.manifest_sha256:
            tags["data.manifest_sha256"] = self.manifest_sha256
        if self.codec_report is not None:
            tags["data.codec_added"] = "".join(e["char"] for e in self.codec_report["added"])[:250]
        tracker.set_tags(tags)


# ------------------------------------------------------------------------------------------------- helpers


def _absolute(patterns: list[str], base: Path) -> tuple[str, ...]:
    out = []
    for p in patterns:
        p = os.path.expanduser(str(p))
        out.append(p if os.path.isabs(p) else str(base / p))
    return tuple(out)


def _engine(patterns: list[str], base: Path, kept: list[Path], as_files: bool) -> tuple[str, ...]:
    """What Calamari gets: the patterns themselves only when Calamari's own glob of them gives exactly the
    checked lines, each once; else the list of the checked files.

    Both versions expand a pattern with ``glob.glob(os.path.expanduser(p))``, not recursive
    (``calamari_ocr/utils/glob.py:33`` in 2.3.1, ``:14`` in 1.0.7), and take every match as an image. A
    pattern that also matches a directory named ``x.png``, a non-image, a dropped line, a line twice
    (overlapping patterns) or a link to a line already given would hand Calamari something hsbcala did not
    check (or check it twice), so it is replaced by the files. Patterns keep command lines short and
    readable (and equal to ``dry_run``'s)."""
    files = tuple(str(p) for p in kept)
    absolute = _absolute(patterns, base)
    if as_files or any("**" in p for p in absolute):
        return files
    matched = [m for p in absolute for m in glob.glob(p)]
    return (
        absolute if len(matched) == len(set(matched)) == len(files) and set(matched) == set(files) else files
    )


def _resolve_kw(data_cfg: Any, base: Path, cache: HashCache) -> dict[str, Any]:
    """The keyword arguments of :func:`hsbcala.data.resolve.resolve` besides the patterns and their key."""
    return {
        "base": base,
        "archive_root": data_cfg.cache_dir,
        "cache": cache,
        "limits": archives.Limits.of(data_cfg),
    }


def _split(cfg: Any, images: tuple[Path, ...], model_dir: Path) -> split.Split:
    s = cfg.data.split
    kw = {"seed": int(s.seed), "fraction": float(s.val_fraction), "by": str(s.by), "pattern": s.pattern}
    saved = split.load(model_dir)
    return split.reuse(saved, images, **kw) if saved is not None else split.make(images, **kw)


def _codec_report(cfg: Any, kept: list[checks.Line], resuming: bool) -> dict[str, Any] | None:
    """Against the warm-start model, for a fresh warm start whose model exists (else the runner says why)."""
    if not cfg.warmstart.model or resuming:
        return None
    from hsbcala.engines import modeljson

    if not modeljson.json_path(cfg.warmstart.model).is_file():
        return None
    info = modeljson.read_model(Path(cfg.warmstart.model))
    # the text as the engine trains on it (Calamari 1 maps en/em dashes to '-' and µ to μ; both NFC)
    from hsbcala import engines
    from hsbcala.engines import text as engine_text

    rules = engines.get(cfg.version.name).eval_rules
    counts = codec.count_chars(engine_text.normalize(line.text or "", rules) for line in kept)
    return codec.report(
        counts, info.charset, model=str(info.path), model_version=info.version, policy=str(cfg.train.codec)
    )


def _dry(cfg: Any, base: Path, model_dir: Path, dry_count: int | None, cache: HashCache) -> DataPlan:
    """The fast path of ``dry_run``: resolve (and split), read no line."""
    train_p, val_p = list(cfg.data.train), list(cfg.data.val or [])
    kw = _resolve_kw(cfg.data, base, cache)
    ex = exclude.load(list(cfg.data.exclude), base)
    keep = ex.apply if ex is not None else tuple
    if not val_p:
        sp = _split(cfg, keep(data.resolve(train_p, key="data.train", **kw)), model_dir)
        return DataPlan(
            tuple(map(str, sp.train)), tuple(map(str, sp.val)), len(sp.train), len(sp.val), split=sp
        )
    if dry_count is not None and ex is None and not archives.involves_archive(train_p + val_p, base):
        # the demo set (hsbcala's own files) or data staged on the node: not here to resolve
        return DataPlan(_absolute(train_p, base), _absolute(val_p, base), dry_count, 0)
    train = keep(data.resolve(train_p, key="data.train", **kw))
    val = keep(data.resolve(val_p, key="data.val", **kw))
    as_files = archives.involves_archive(train_p + val_p, base)
    return DataPlan(
        _engine(train_p, base, list(train), as_files),
        _engine(val_p, base, list(val), as_files),
        len(train),
        len(val),
    )


def _no_valid(key: str, lines: list[checks.Line], outcome: checks.Outcome) -> str:
    bad = [
        (line.image, line.problem[1] if line.problem else f"dropped ({check})")
        for line, check in outcome.dropped
        if line.key == key
    ]
    first = f"; first: {bad[0][0]}: {bad[0][1]}" if bad else ""
    return f"{key}: no valid line: all {len(lines)} lines are invalid{first}"


# ---------------------------------------------------------------------------------------------------- API


def prepare(
    cfg: Any, *, base: Path, model_dir: Path, dry_count: int | None = None, resuming: bool = False
) -> DataPlan:
    """The data step (see the module doc). Raises :class:`DataError` when a check fails, unless
    ``data_check_only`` (then the message is kept in :attr:`DataPlan.error` and the reports are still built)."""
    t0 = time.perf_counter()
    cache = HashCache(cfg.data.cache_dir)
    try:
        if cfg.dry_run:
            return _dry(cfg, base, model_dir, dry_count, cache)
        kw = _resolve_kw(cfg.data, base, cache)
        train_p, val_p = list(cfg.data.train), list(cfg.data.val or [])
        train_images = data.resolve(train_p, key="data.train", **kw)
        # data.exclude: before the split and the checks (an excluded line is not checked, split or used)
        exclusion = exclude.load(list(cfg.data.exclude), base)
        if exclusion is not None:
            train_images = exclusion.apply(train_images)
        sp = None
        if val_p:
            val_images = data.resolve(val_p, key="data.val", **kw)
            if exclusion is not None:
                val_images = exclusion.apply(val_images)
            overlap = data._overlap(train_images, val_images)
            if overlap is not None:
                raise DataError(overlap)
            val_key = "data.val"
        else:
            sp = _split(cfg, train_images, model_dir)
            train_images, val_images = sp.train, sp.val
            val_key = "data.train"
        side = {p: "train" for p in train_images} | {p: "val" for p in val_images}
        lines = checks.scan(train_images, key="data.train", cache=cache) + checks.scan(
            val_images, key=val_key, cache=cache
        )
        orphans = {gt: "data.train" for gt in checks.orphan_gts(train_images)}
        orphans.update({gt: val_key for gt in checks.orphan_gts(val_images) if gt not in orphans})
        outcome = checks.evaluate(
            lines,
            sorted(orphans.items()),
            actions=checks.actions(cfg),
            min_px_per_char=float(cfg.data.min_px_per_char),
            allowed=checks.whitelist(cfg),
            max_line_width=int(cfg.data.max_line_width),
            min_image_px=int(cfg.data.min_image_px),
        )
    finally:
        cache.save()
    error = outcome.error_message(bool(cfg.train.skip_invalid))
    kept_train = [line for line in outcome.kept if side[line.image] == "train"]
    kept_val = [line for line in outcome.kept if side[line.image] == "val"]
    if error is None:
        if not kept_train:
            error = _no_valid("data.train", [x for x in lines if side[x.image] == "train"], outcome)
        elif not kept_val:
            error = _no_valid(val_key, [x for x in lines if side[x.image] == "val"], outcome)
    if error is not None and not cfg.data_check_only:
        raise DataError(error)
    split_info: dict[str, Any] = (
        {"mode": "given"}
        if sp is None
        else {
            "mode": "split",
            "seed": sp.seed,
            "val_fraction": sp.val_fraction,
            "by": sp.by,
            "pattern": sp.pattern,
            "reused": sp.reused,
        }
    )
    documents = sp.documents if sp is not None else {p: p.parent.name for p in side}
    man = manifest.build(
        outcome.kept,
        side,
        documents,
        status="failed" if error else "passed",
        checks=outcome.report(),
        dropped=outcome.dropped,
        split=split_info,
        dropped_gts=outcome.dropped_gts,
    )
    report = _codec_report(cfg, outcome.kept, resuming)
    if exclusion is not None:
        man["totals"]["excluded"] = len(exclusion.excluded)
        man["excluded"] = exclusion.record()
        if report is not None:
            report["excluded_lines"] = len(exclusion.excluded)
    as_files = sp is not None or archives.involves_archive(train_p + val_p, base)
    return DataPlan(
        engine_train=_engine(train_p, base, [x.image for x in kept_train], as_files),
        engine_val=_engine(val_p, base, [x.image for x in kept_val], as_files),
        n_train=len(kept_train),
        n_val=len(kept_val),
        skipped=len(outcome.dropped) + len(outcome.dropped_gts),
        outcome=outcome,
        split=sp,
        manifest=man,
        codec_report=report,
        error=error,
        seconds=time.perf_counter() - t0,
        cache_hits=cache.hits,
        cache_misses=cache.misses,
        exclusion=exclusion,
    )


def check_only(dp: DataPlan, model_dir: Path, say, after: Any = None) -> None:
    """``data_check_only=true``: print, write the reports, exit 0 or raise the failed check's DataError.

    The reports go into the model directory, or into ``<model_dir>/data-check/`` when it already holds a
    training (whose own manifest must not be overwritten). ``after(target)``: more reports into the same
    directory (``data.triage``: :func:`hsbcala.evaluate.triage.run`), also when a check failed."""
    dp.announce(say)
    target = model_dir / "data-check" if (model_dir / STATE_FILE).exists() else model_dir
    note = dp.write(target)
    if note:
        say(note)
    if after is not None:
        after(target)
    say(
        f"data check {'FAILED' if dp.error else 'passed'}: wrote {', '.join(p.name for p in dp.written.values())} "
        f"to {target}"
    )
    if dp.error:
        raise DataError(dp.error)
