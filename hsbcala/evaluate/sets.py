"""The evaluation sets of :mod:`hsbcala.evaluate.run`: their checked lines, GT, variant groups, and warnings.

A set is a list of globs (``eval.data`` / ``data.val`` / the saved split's validation lines, and each
``eval.extra.NAME``). Its lines are resolved and checked with :mod:`hsbcala.data.resolve` (lines without valid GT are
left out and counted, or stop the run with ``eval.skip_invalid=false``); every line is put into the variant
groups whose file-name patterns (fnmatch on the image's name) it matches. A group no line matches is
reported and shown as n/a, never as a number; lines of which none is named as any variant (the demo's, GT named
without variant tags) are evaluated without groups, said in one plain line (:func:`without_variants`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EvalSet:
    """One evaluation set: its checked lines, their GT, and which variant groups each line belongs to."""

    name: str
    key: str  # config key for messages
    patterns: list[str]
    images: tuple[Path, ...]
    gt: dict[Path, str]  # raw GT text per image
    skipped: tuple[tuple[Path, str], ...]
    members: dict[str, tuple[Path, ...]]  # group -> images (in order)
    ungrouped: int
    documents: dict[Path, str] | None = None  # image -> document, when intervals resample documents
    unit_note: str = "lines"  # what the intervals resample, and where the documents come from


def load_set(
    name: str, key: str, patterns: list[str], groups: dict[str, list[str]], *, base: Path, skip_invalid: bool
) -> EvalSet:
    """Resolve and check one set's lines (:mod:`hsbcala.data.resolve`), read their GT, sort them into groups."""
    from hsbcala.data import resolve as data

    images = data.resolve(patterns, key=key, base=base)
    lines = data.check_lines(images, key=key, skip_invalid=skip_invalid)
    gt = {img: data.gt_path(img).read_text(encoding="utf-8") for img in lines.images}
    members = {
        g: tuple(img for img in lines.images if any(fnmatch.fnmatchcase(img.name, p) for p in pats))
        for g, pats in groups.items()
    }
    grouped = set().union(*members.values()) if members else set()
    return EvalSet(
        name,
        key,
        list(patterns),
        lines.images,
        gt,
        lines.skipped,
        members,
        ungrouped=len(lines.images) - len(grouped),
    )


def warnings_of(s: EvalSet, groups: dict[str, list[str]], *, only_set: bool) -> list[str]:
    """What the user should know about a set: lines left out, empty groups, ungrouped or doubly grouped lines."""
    out = []
    where = "" if only_set else f" of set '{s.name}'"
    if s.skipped:
        first, reason = s.skipped[0]
        out.append(
            f"{s.key}: {len(s.skipped)} lines without valid GT are left out (eval.skip_invalid=true);"
            f" first: {first}: {reason}"
        )
    for g, imgs in s.members.items():
        if not imgs:
            out.append(
                f"eval.groups.{g}: no line{where} matches {', '.join(groups[g])}; "
                f"its CER is n/a (the other groups are evaluated)"
            )
    if groups and s.ungrouped:
        out.append(
            f"{s.key}: {s.ungrouped} of {len(s.images)} lines{where} match no variant group "
            f"(counted in the overall CER only)"
        )
    multi = sum(1 for img in s.images if sum(img in m for m in s.members.values()) > 1) if groups else 0
    if multi:
        out.append(f"eval.groups: {multi} lines{where} match more than one group (counted in each)")
    return out


def without_variants(
    sets: list[EvalSet], groups: dict[str, list[str]]
) -> tuple[dict[str, list[str]], str | None]:
    """(the groups to evaluate, a plain note): when no line of any set matches any group, the lines carry no
    variant in their names (the demo's synthetic lines, ../shared's GT, any GT named without the team's
    ``_GTSBB``-style tags), and the groups are left out with a note naming them: every group would be n/a and
    every line "ungrouped", warnings that say nothing about the model. When some line matches some group, a
    group that matches none stays a warning (:func:`warnings_of`): the data do use the naming, and a variant
    is missing from them."""
    if not groups or any(m for s in sets for m in s.members.values()):
        return groups, None
    for s in sets:
        s.members, s.ungrouped = {}, 0
    patterns = ", ".join(p for pats in groups.values() for p in pats)
    return {}, (
        f"eval.groups {', '.join(groups)}: no line is named as a variant ({patterns}), so there are no "
        f"variant groups in this evaluation"
    )


def training_overlap(trained: Any, sets: list[EvalSet], base: Path) -> list[str]:
    """A warning when evaluation lines are also training lines: ``trained`` is the list of lines the model
    was trained on (from its manifest), or the ``data`` node whose ``train`` globs stand for them."""
    from omegaconf import OmegaConf

    from hsbcala.core.errors import DataError
    from hsbcala.data import resolve as data

    if isinstance(trained, list):
        train = trained
    elif OmegaConf.is_missing(trained, "train") or not trained.train:
        return []  # no training lines named (evaluation needs none): nothing to compare
    else:
        try:
            train = data.resolve(list(trained.train), key="data.train", **_resolve_kw(trained, base))
        except DataError:  # the configuration's training data is not on this machine: nothing to compare
            return []
    train_gts = {data.gt_path(p).resolve() for p in train}
    out = []
    for s in sets:
        n = sum(1 for img in s.images if data.gt_path(img).resolve() in train_gts)
        if n:
            out.append(
                f"{s.key}: {n} of {len(s.images)} evaluation lines are also training lines (data.train); "
                f"their CER flatters the model"
            )
    return out


@dataclass
class Recorded:
    """The lines a model directory's ``manifest.json`` says the model was trained and validated on."""

    manifest: Path
    train: list[Path]
    val: list[Path]
    #: each validation line's record: image_sha256, gt_sha256, text (what the model was validated on)
    records: dict[Path, dict[str, Any]] = field(default_factory=dict)


def recorded_lines(model_dir: Path) -> Recorded | None:
    """The training/validation lines of the model's manifest (None: no manifest, or no validation lines)."""
    from hsbcala.core import fsutil

    path = model_dir / "manifest.json"
    d = fsutil.read_json(path)
    lines = d.get("lines") or []
    val = [Path(x["image"]) for x in lines if x.get("split") == "val"]
    if not val:
        return None
    records = {Path(x["image"]): x for x in lines if x.get("split") == "val"}
    return Recorded(path, [Path(x["image"]) for x in lines if x.get("split") == "train"], val, records)


def recorded_patterns(rec: Recorded) -> tuple[list[str], str]:
    """The recorded validation lines as exact patterns, refusing (one line) when they are gone."""
    import glob as _glob

    from hsbcala.core.errors import DataError

    missing = [p for p in rec.val if not p.is_file()]
    if missing:
        staged = (
            "; they were staged for the job (cluster.stage) and are removed after it"
            if any(str(p).startswith("/dev/shm/") for p in missing)
            else ""
        )
        raise DataError(
            f"the model's {len(rec.val)} validation lines recorded in {rec.manifest} are not here "
            f"({len(missing)} missing, e.g. {missing[0]}){staged}; point evaluation at them with "
            f"eval.data=[GLOBS]"
        )
    return [_glob.escape(str(p)) for p in rec.val], f"the validation lines recorded in {rec.manifest.name}"


def verify_recorded(rec: Recorded, cache_dir: str | None) -> None:
    """Refuse (one line) when recorded validation lines are no longer the bytes the manifest hashed.

    The manifest names lines by path; the same path can hold other content later (a synthetic set rendered
    again with other settings, GT corrected, an image re-binarised). Scored under the old names, such lines
    would give a CER of other data, reported as the model's validation CER. The hashes are checked like the
    training's data step computes them (:func:`hsbcala.data.checks.scan`; image hashes cached by file identity)."""
    from hsbcala.core.errors import DataError
    from hsbcala.data import checks
    from hsbcala.data.hashcache import HashCache

    cache = HashCache(cache_dir)
    changed = []
    for line in checks.scan(rec.val, key="the manifest's validation lines", cache=cache):
        r = rec.records.get(line.image) or {}
        if line.gt_sha256 != r.get("gt_sha256") or line.image_sha256 != r.get("image_sha256"):
            changed.append((line, r))
    cache.save()
    if not changed:
        return
    line, r = changed[0]
    if line.gt_sha256 != r.get("gt_sha256"):
        now = line.text if line.text is not None else (line.problem or ("", "unreadable"))[1]
        example = f"{line.gt} now reads {_short(now)!r}, recorded {_short(r.get('text') or '')!r}"
    else:
        example = f"{line.image} is another image than the one recorded (SHA-256 {str(r.get('image_sha256'))[:12]}…)"
    raise DataError(
        f"{len(changed)} of {len(rec.val)} validation lines recorded in {rec.manifest} changed since the model "
        f"was trained (e.g. {example}); these are not the lines it was validated on: restore them (a synthetic "
        f"set: the training's data.synthetic settings render it again exactly), or evaluate other lines with "
        f"eval.data=[GLOBS]"
    )


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def config_differs(rec: Recorded, data_conf: Any, base: Path) -> str | None:
    """A warning when this configuration's data.val names other lines than the model was validated on."""
    from omegaconf import OmegaConf

    from hsbcala.core.errors import DataError
    from hsbcala.data import resolve as data

    if OmegaConf.is_missing(data_conf, "val") or not data_conf.val:
        return None
    why = ""
    try:
        resolved = data.resolve(list(data_conf.val), key="data.val", **_resolve_kw(data_conf, base))
    except DataError as exc:
        # Not resolvable here (e.g. the demo's synthetic set, for a model trained elsewhere). The recorded lines
        # ARE here (recorded_patterns checked), so these patterns do name other lines; say why, rather than
        # "differs" alone (before, any exception read as "no lines" and the warning gave no reason).
        resolved, why = (), f" ({exc})"
    if {p.resolve() for p in resolved} != {p.resolve() for p in rec.val}:
        return (
            f"data.val of this configuration ({', '.join(data_conf.val)}) is not what the model was validated "
            f"on{why}; evaluating on its recorded validation lines ({rec.manifest}); set eval.data to choose others"
        )
    return None


def _resolve_kw(data_conf: Any, base: Path) -> dict[str, Any]:
    """data.resolve's arguments as the training used them: a GT archive unpacks to the same directory under
    ``data.cache_dir`` (with other arguments its lines would have other paths and read as other lines)."""
    from hsbcala.data import archives

    return {
        "base": base,
        "archive_root": data_conf.cache_dir,
        "limits": archives.Limits.of(data_conf),
        "say": None,
    }


def recorded_documents(model_dir: Path | None) -> dict[Path, str]:
    """Every line's document (book, page) as the model directory's ``manifest.json`` records it (train and
    validation lines; the split's or the directory's document)."""
    from hsbcala.core import fsutil

    if model_dir is None or not (model_dir / "manifest.json").is_file():
        return {}
    lines = fsutil.read_json(model_dir / "manifest.json").get("lines") or []
    return {Path(x["image"]): str(x["document"]) for x in lines if x.get("document") is not None}


def assign_documents(s: EvalSet, recorded: dict[Path, str], unit: str) -> str | None:
    """Decide what the set's intervals resample (``eval.intervals.unit``) and set ``s.documents``; a note when
    ``documents`` was asked for but some lines' documents had to be taken from their directory.

    A line the model's manifest records keeps its document from there; any other line (other books given by
    ``eval.data`` globs) is in the document the training split would give it: its directory, relative to the
    common directory of those lines (:func:`hsbcala.data.split.documents_of`). Lines of one book share type,
    paper and hand, so resampling lines would give a too narrow interval for "unseen books". ``auto`` falls back
    to lines only when all lines are in one document (a single unit cannot be resampled)."""
    from hsbcala.data import split

    if unit == "lines" or not s.images:
        s.documents, s.unit_note = None, "lines"
        return None
    known = {img: recorded[img] for img in s.images if img in recorded}
    others = [img for img in s.images if img not in known]
    by_directory = split.documents_of(others, by="directory", pattern=None)[1] if others else {}
    documents = {img: known.get(img) or by_directory[img] for img in s.images}
    n_docs = len(set(documents.values()))
    docs = f"{n_docs} document{'' if n_docs == 1 else 's'}"
    if unit == "auto" and n_docs < 2:
        s.documents, s.unit_note = None, f"lines ({docs}: too few to resample)"
        return None
    s.documents = documents
    if not others:
        s.unit_note = f"{docs} (manifest.json)"
        return None
    s.unit_note = (
        f"{docs} (by directory, as data.split cuts them)"
        if not known
        else f"{docs} ({len(known)} lines' from manifest.json, the rest by directory)"
    )
    if unit == "auto":  # other books by directory is what auto means; documents=... asked for the manifest's
        return None
    return (
        f"eval.intervals.unit=documents: {len(s.images) - len(known)} of {len(s.images)} lines of set "
        f"'{s.name}' are not in the model's manifest; their document is their directory"
    )


def ensure_demo_lines(synthetic: Any, face: str, patterns: Sequence[str]) -> None:
    """Render the synthetic demo lines (idempotent) if the evaluation globs point at them."""
    root = Path(synthetic.root).resolve()
    if any(Path(p).is_absolute() and Path(p).resolve().is_relative_to(root) for p in patterns):
        from hsbcala.data import synth

        synth.ensure_configured(synthetic, face)
