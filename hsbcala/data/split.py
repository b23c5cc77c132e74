"""A seeded train/validation split of one data set by document, used when ``data.val`` is not given.

Lines of one document (a book or page) look alike: splitting line by line would put a page's lines on both
sides and make the validation CER optimistic. So whole documents go to one side:

- ``data.split.by=directory`` (default): a document is the directory holding the line image (``ref_AS/<book>/``);
- ``data.split.by=pattern``: a document is what the regular expression ``data.split.pattern`` finds
  (``re.search``) in the image's path relative to the common root of all lines; its first group if it has one,
  else the whole match. E.g. ``'^([^/]+)/'`` = the first directory level, ``'^(.*)_\\d+\\.png$'`` = the file name
  without its line number. An image the pattern does not match is an error naming it.

The documents are ordered by SHA-256 of ``"<seed>:<document>"`` (independent of Python's random module, and
a new document does not reorder the others), then taken into validation one by one, each only if it brings the
number of validation lines closer to ``data.split.val_fraction`` of all lines, until that is reached; at
least one document goes to each side. The split is made on the resolved images (before the line checks), so
that a dry run prints the same command line and a dropped line never moves a document.

The split is saved as ``<model_dir>/split.json`` (settings, documents and the line lists) and reused on
every later launch (resume, or a training after ``data_check_only=true``): a line keeps its side; a line that
was not there before goes to the side of its document, or to training if its document is new (reported).
Delete ``split.json`` to split again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbcala.core.errors import DataError

SPLIT_FILE = "split.json"
FORMAT = "hsbcala-split/1"


@dataclass
class Split:
    seed: int
    val_fraction: float
    by: str
    pattern: str | None
    root: str
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    documents: dict[Path, str]  # image -> document
    notes: list[str] = field(default_factory=list)  # what reuse had to decide (new lines, changed settings)
    reused: bool = False

    def side_documents(self) -> dict[str, list[str]]:
        return {side: sorted({self.documents[p] for p in getattr(self, side)}) for side in ("train", "val")}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "by": self.by,
            "pattern": self.pattern,
            "root": self.root,
            "documents": self.side_documents(),
            "train": [{"image": str(p), "document": self.documents[p]} for p in self.train],
            "val": [{"image": str(p), "document": self.documents[p]} for p in self.val],
        }


def _document(image: Path, root: str, regex: re.Pattern | None, pattern: str | None) -> str:
    rel = Path(os.path.relpath(image, root)).as_posix()
    if regex is None:
        return Path(rel).parent.as_posix()
    m = regex.search(rel)
    if m is None:
        raise DataError(
            f"data.split.pattern={pattern!r} does not match {image} "
            f"(matched against {rel!r}, the path below {root})"
        )
    return m.group(1) if regex.groups else m.group(0)


def documents_of(
    images: Sequence[Path], *, by: str, pattern: str | None, root: str | None = None
) -> tuple[str, dict[Path, str]]:
    """(common root, image -> document) for the images (``root``: relative to this one instead)."""
    if not images:
        raise DataError("data.train: no lines to split")
    root = root or os.path.commonpath([str(Path(p).parent) for p in images])
    regex = re.compile(pattern) if by == "pattern" and pattern else None
    return root, {Path(image): _document(Path(image), root, regex, pattern) for image in images}


def _order(docs: Sequence[str], seed: int) -> list[str]:
    return sorted(docs, key=lambda d: (hashlib.sha256(f"{seed}:{d}".encode()).hexdigest(), d))


def choose_val(sizes: dict[str, int], *, fraction: float, seed: int) -> set[str]:
    """The validation documents: seeded order, each taken if it brings the count closer to the target."""
    if len(sizes) < 2:
        only = next(iter(sizes), "?")
        raise DataError(
            f"data.val is not given and all {sum(sizes.values())} lines of data.train are in one "
            f"document ({only!r}), so they cannot be split by document: give data.val, or a "
            f"data.split.pattern that finds documents in the file names "
            f"(data.split.by=pattern)"
        )
    target = fraction * sum(sizes.values())
    val: set[str] = set()
    n = 0
    for doc in _order(list(sizes), seed):
        if n >= target or len(val) == len(sizes) - 1:
            break
        if abs(n + sizes[doc] - target) < abs(n - target):
            val.add(doc)
            n += sizes[doc]
    if not val:  # every document is bigger than twice the target: take the smallest
        val.add(min(_order(list(sizes), seed), key=lambda d: sizes[d]))
    return val


def make(images: Sequence[Path], *, seed: int, fraction: float, by: str, pattern: str | None) -> Split:
    images = sorted((Path(p) for p in images), key=os.fspath)
    root, docs = documents_of(images, by=by, pattern=pattern)
    val_docs = choose_val(Counter(docs.values()), fraction=fraction, seed=seed)
    return Split(
        seed=seed,
        val_fraction=fraction,
        by=by,
        pattern=pattern,
        root=root,
        train=tuple(p for p in images if docs[p] not in val_docs),
        val=tuple(p for p in images if docs[p] in val_docs),
        documents=docs,
    )


def load(model_dir: Path) -> dict[str, Any] | None:
    """The saved split of a model directory, or None."""
    path = Path(model_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); delete it to split the data again") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise DataError(
            f"{path} is not a split saved by hsbcala ({FORMAT}); delete it to split the data again"
        )
    return saved


def saved_val(model_dir: Path) -> list[Path] | None:
    """The validation lines of a model trained on a split (``data.val`` null), e.g. for evaluation; None when
    the model directory has no saved split."""
    saved = load(model_dir)
    return None if saved is None else [Path(e["image"]) for e in saved["val"]]


def reuse(
    saved: dict[str, Any], images: Sequence[Path], *, seed: int, fraction: float, by: str, pattern: str | None
) -> Split:
    """The saved split applied to the current images (see the module doc for new and vanished lines)."""
    images = sorted((Path(p) for p in images), key=os.fspath)
    by_name = {e["image"]: ("val", e["document"]) for e in saved["val"]}
    by_name.update({e["image"]: ("train", e["document"]) for e in saved["train"]})
    side: dict[Path, str] = {}
    docs: dict[Path, str] = {}
    for p in images:
        known = by_name.get(str(p))
        if known is not None:
            side[p], docs[p] = known
    val_docs = set(saved["documents"]["val"])
    notes = []
    if (saved["seed"], saved["val_fraction"], saved["by"], saved["pattern"]) != (seed, fraction, by, pattern):
        notes.append(
            f"data.split settings differ from the saved split (seed {saved['seed']}, val_fraction "
            f"{saved['val_fraction']}, by {saved['by']}); the saved split is kept (delete split.json "
            f"in the model directory to split again)"
        )
    new = [p for p in images if p not in side]
    if new:
        _, new_docs = documents_of(new, by=saved["by"], pattern=saved["pattern"], root=saved["root"])
        for p in new:
            docs[p] = new_docs[p]
            side[p] = "val" if new_docs[p] in val_docs else "train"
        to_val = sum(side[p] == "val" for p in new)
        notes.append(
            f"{len(new)} line(s) not in the saved split (first: {new[0]}): {len(new) - to_val} to "
            f"training, {to_val} to validation, after their documents"
        )
    gone = len(by_name) - (len(images) - len(new))
    if gone:
        notes.append(f"{gone} line(s) of the saved split are no longer in data.train")
    result = Split(
        seed=saved["seed"],
        val_fraction=saved["val_fraction"],
        by=saved["by"],
        pattern=saved["pattern"],
        root=saved["root"],
        train=tuple(p for p in images if side[p] == "train"),
        val=tuple(p for p in images if side[p] == "val"),
        documents=docs,
        notes=notes,
        reused=True,
    )
    if not result.val or not result.train:
        empty = "validation" if not result.val else "training"
        raise DataError(
            f"the saved split ({SPLIT_FILE} in the model directory) leaves no {empty} line for the "
            f"current data.train; delete it to split again"
        )
    return result
