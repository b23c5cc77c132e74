"""The evaluation sets of :mod:`hsbcala.evaluate`: their checked lines, GT, variant groups, and warnings.

A set is a list of globs (``eval.data`` / ``data.val`` / the saved split's validation lines, and each
``eval.extra.NAME``). Its lines are resolved and checked with :mod:`hsbcala.data` (lines without valid GT are
left out and counted, or stop the run with ``eval.skip_invalid=false``); every line is put into the variant
groups whose file-name patterns (fnmatch on the image's name) it matches. A group no line matches is
reported and shown as n/a, never as a number.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
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


def load_set(
    name: str, key: str, patterns: list[str], groups: dict[str, list[str]], *, base: Path, skip_invalid: bool
) -> EvalSet:
    """Resolve and check one set's lines (:mod:`hsbcala.data`), read their GT, sort them into groups."""
    from hsbcala import data

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


def training_overlap(data_conf: Any, sets: list[EvalSet], base: Path) -> list[str]:
    """A warning when evaluation lines are also training lines (``data_conf.train``: the ``data`` node)."""
    from hsbcala import data

    try:
        train = data.resolve(list(data_conf.train), key="data.train", base=base)
    except Exception:  # noqa: BLE001 - the training data may not exist here; nothing to compare
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


def ensure_demo_lines(synthetic: Any, face: str, patterns: Sequence[str]) -> None:
    """Render the synthetic demo lines (idempotent) if the evaluation globs point at them."""
    root = Path(synthetic.root).resolve()
    if any(Path(p).is_absolute() and Path(p).resolve().is_relative_to(root) for p in patterns):
        from hsbcala import synth

        synth.ensure_configured(synthetic, face)
