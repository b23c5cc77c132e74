"""``data.exclude=[FILE, …]``: lines a person decided to leave out (after looking at ``triage.html``).

Each file lists one line per row: the image's path (as ``triage.tsv``'s first column and ``manifest.json``
write it), its ``.gt.txt``, or its line id (the ``.gt.txt`` path without ``.gt.txt``, which leaves out every
variant of the line: ``a.bin.png`` and ``a.nrm.png`` share ``a.gt.txt``). A row may be a whole ``triage.tsv``
row: only its first tab-separated field is read, so a user copies rows as they are. Blank rows and rows starting
with ``#`` are skipped (``triage.tsv``'s header is one). A relative path is taken from ``paths.root``, as the
data globs are.

The data step leaves the listed lines out right after resolving the globs, before the split and the checks, so
an excluded line is neither trained on, nor validated on, nor checked (``manifest.json``: ``excluded``).

A listed line that is not in the data is a warning with the count, not an error: an exclude list is kept for a
whole collection and used with parts of it (a few books, a held-out set), and lines listed once may later be
deleted or fixed; refusing such a list would make the user keep one copy per subset. A file that cannot be read
is an error (one line naming it): training on lines the user meant to leave out is worse than stopping.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hsbcala.core.errors import DataError

GT_SUFFIX = ".gt.txt"  # hsbcala.data.resolve.GT_SUFFIX (not imported: this module stays light)


@dataclass
class Exclusion:
    """The lists read from ``data.exclude`` and what they matched."""

    files: tuple[str, ...]
    entries: dict[str, str]  # normalised absolute path -> the row as written (for messages)
    excluded: list[Path] = field(default_factory=list)  # the images left out
    matched: set[str] = field(default_factory=set)  # entries (normalised) that matched a line

    @property
    def unmatched(self) -> list[str]:
        return [row for key, row in self.entries.items() if key not in self.matched]

    def apply(self, images: Sequence[Path]) -> tuple[Path, ...]:
        """``images`` without the listed lines (recorded in :attr:`excluded`)."""
        kept = []
        for image in images:
            hits = [k for k in _keys(image) if k in self.entries]
            if hits:
                self.matched.update(hits)
                self.excluded.append(Path(image))
            else:
                kept.append(image)
        return tuple(kept)

    def record(self) -> dict:
        """``manifest.json``'s ``excluded``."""
        return {
            "files": list(self.files),
            "count": len(self.excluded),
            "lines": sorted(str(p) for p in self.excluded),
            "not_in_data": self.unmatched,
        }

    def messages(self) -> list[str]:
        """The console lines: the count, and the listed lines not in the data (a warning)."""
        out = [f"data.exclude: {len(self.excluded)} line(s) left out, listed in {', '.join(self.files)}"]
        missing = self.unmatched
        if missing:
            out.append(
                f"warning: data.exclude: {len(missing)} listed line(s) are not in the data "
                f"(first: {missing[0]}); kept as a warning so one list serves subsets of a collection"
            )
        return out


def _norm(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _keys(image: Path) -> tuple[str, ...]:
    """The names a row may give for ``image``: the image, its ``.gt.txt`` (Calamari's rule: the file name cut
    at its first dot, as :func:`hsbcala.data.resolve.gt_path`), and the line id (that without ``.gt.txt``)."""
    path = _norm(image)
    head, name = os.path.split(path)
    stem = name.split(".", 1)[0]
    line_id = os.path.join(head, stem)
    return (path, line_id + GT_SUFFIX, line_id)


def load(files: Sequence[str], base: Path) -> Exclusion | None:
    """Read the ``data.exclude`` files (None when none is given); :class:`DataError` for an unreadable one."""
    if not files:
        return None
    entries: dict[str, str] = {}
    names = []
    for f in files:
        path = Path(os.path.expanduser(str(f)))
        path = path if path.is_absolute() else Path(base) / path
        names.append(str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DataError(f"data.exclude: cannot read {path}: {why}") from None
        for row in text.splitlines():
            first = row.split("\t", 1)[0].strip()
            if not first or first.startswith("#"):
                continue
            p = first if os.path.isabs(os.path.expanduser(first)) else os.path.join(base, first)
            entries.setdefault(_norm(p), first)
    return Exclusion(tuple(names), entries)
