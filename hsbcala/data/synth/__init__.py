"""Synthetic Upper Sorbian text-line images with ground truth: the project's embedded default training data.

``python train.py`` with no data configured trains on lines that this module renders itself, so a fresh clone
can train a real (tiny) model with nothing but two Debian font packages installed::

    apt-get install fonts-ebgaramond fonts-blankenburg

Modules: :mod:`~hsbcala.data.synth.fonts` (the fonts, and the letters composed for Blankenburg Fraktur),
:mod:`~hsbcala.data.synth.render` (one line image), :mod:`~hsbcala.data.synth.text` (the line texts); this module
builds a whole set.

:func:`ensure_synthetic` creates ``root/<face>/train`` and ``root/<face>/val`` once, laid out like the real GT
(``ref_AS/<book>/<line>.png``): the lines are the pages of one synthetic book, :data:`PAGE_LINES` lines a
page folder (``train/page-001/hsb_fraktur_train_00000.png`` …; the validation pages go on after the training
pages, ``val/page-101/`` …), so that a document is a page as in real data: a split by directory and the
evaluation's intervals over documents work on the demo as on real lines. A stamp file
(``synth.json``) records the parameters, and the set is rebuilt in a temporary directory and swapped in by
renaming when they change. The configured root (``data.synthetic.root``) carries the set's size and seed by
default (``<paths.root>/data/synthetic/1000+60-seed50-pages``; ``-pages``: the layout in page folders, so a set
of the older flat layout keeps its folder and the models trained on it their lines), so a sweep over ``data.synthetic.n_train`` gives
each size its own folder instead of rebuilding one folder in place under the names that earlier models'
manifests record (evaluation refuses lines whose hashes changed: :func:`hsbcala.evaluate.sets.verify_recorded`).
Manual use::

    python -m hsbcala.data.synth OUTDIR --face fraktur
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import unicodedata
from collections.abc import Sequence
from typing import Any

from hsbcala.core import fsutil
from hsbcala.core.errors import ConfigError

# "_x as _x": internals the tests reach as hsbcala.data.synth._x, re-exported explicitly.
from hsbcala.data.synth.fonts import _FRAKTUR_COMPOSED as _FRAKTUR_COMPOSED
from hsbcala.data.synth.fonts import _SPECS as _SPECS
from hsbcala.data.synth.fonts import FACES, _spec, font_path
from hsbcala.data.synth.fonts import _draw_fraktur as _draw_fraktur
from hsbcala.data.synth.fonts import _font as _font
from hsbcala.data.synth.fonts import _Spec as _Spec
from hsbcala.data.synth.render import MAX_HEIGHT, MIN_HEIGHT, render_line
from hsbcala.data.synth.text import (
    BUILTIN_PHRASES,
    CHARSET,
    MAX_CHARS,
    MIN_CHARS,
    SORBIAN_LETTERS,
    _load_sentences,
    make_lines,
)

__all__ = [
    "BUILTIN_PHRASES",
    "CHARSET",
    "FACES",
    "GENERATOR_VERSION",
    "MAX_CHARS",
    "MAX_HEIGHT",
    "MIN_CHARS",
    "MIN_HEIGHT",
    "PAGE_LINES",
    "SORBIAN_LETTERS",
    "STAMP_NAME",
    "ensure_synthetic",
    "font_path",
    "is_synthetic",
    "main",
    "make_lines",
    "render_line",
]

#: Bump when the rendering or the line selection changes, so existing sets are rebuilt. 2: page folders.
GENERATOR_VERSION = 2

#: Lines per page folder: 60 validation lines are 6 documents, enough to resample (a printed page holds more).
PAGE_LINES = 10

STAMP_NAME = "synth.json"


# --------------------------------------------------------------------------------------------- sets
def _complete(face_dir: pathlib.Path, stamp: dict) -> bool:
    try:
        if json.loads((face_dir / STAMP_NAME).read_text(encoding="utf-8")) != stamp:
            return False
        for split, n in (("train", stamp["n_train"]), ("val", stamp["n_val"])):
            names = [x.name for x in (face_dir / split).glob("*/*") if x.is_file()]
            if sum(x.endswith(".png") for x in names) != n or sum(x.endswith(".gt.txt") for x in names) != n:
                return False
    except (OSError, ValueError):
        return False
    return True


def page_name(number: int) -> str:
    """The folder of page *number* (from 1): ``page-001``."""
    return f"page-{number:03d}"


def _write_split(
    dirpath: pathlib.Path, face: str, split: str, lines: list[str], seed: int, first_page: int
) -> None:
    dirpath.mkdir(parents=True)
    for i, line in enumerate(lines):
        stem = f"hsb_{face}_{split}_{i:05d}"
        page = dirpath / page_name(first_page + i // PAGE_LINES)
        page.mkdir(exist_ok=True)
        # the same seed per line as in the flat layout of generator 1: the same pixels, now in page folders
        img = render_line(line, face, seed=seed * 1_000_003 + (i if split == "train" else 500_000 + i))
        img.save(page / f"{stem}.png", format="PNG")
        (page / f"{stem}.gt.txt").write_bytes(unicodedata.normalize("NFC", line).encode("utf-8"))


def pages(n_lines: int) -> int:
    """How many page folders *n_lines* lines fill."""
    return -(-n_lines // PAGE_LINES)


def is_synthetic(image: pathlib.Path) -> bool:
    """Whether *image* is a line of a set this module rendered (``<face>/<split>/<page>/``, its stamp two
    levels above the page folder)."""
    return (pathlib.Path(image).parent.parent.parent / STAMP_NAME).is_file()


def ensure_synthetic(
    root: pathlib.Path,
    face: str,
    *,
    n_train: int = 400,
    n_val: int = 60,
    seed: int = 50,
    text_file: pathlib.Path | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Create (once) root/<face>/train/<page>/*.png+.gt.txt and root/<face>/val/<page>/*.png+.gt.txt (the
    module doc says why pages); return (train_dir, val_dir).

    Idempotent and cheap when already complete: ``root/<face>/synth.json`` records the parameters (and a hash
    of the text); when they differ or files are missing the set is rebuilt in a temporary directory beside it
    and renamed into place, so an interrupted run never leaves a half set. *text_file*: one sentence a line
    (UTF-8); None or a missing file: :data:`BUILTIN_PHRASES`. Raises :class:`DataError` (one line, naming
    the apt package) when the face's font is not installed.
    """
    _spec(face)
    if n_train < 1 or n_val < 1:
        raise ConfigError(f"data.synthetic: n_train and n_val must be >= 1, got {n_train} and {n_val}")
    root = pathlib.Path(root)
    face_dir = root / face
    train_dir, val_dir = face_dir / "train", face_dir / "val"

    sentences, source = _load_sentences(text_file)
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    stamp = {
        "generator": GENERATOR_VERSION,
        "face": face,
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
        "text": source,
        "text_sha256": digest,
        "font": _spec(face).filename,
        "page_lines": PAGE_LINES,
    }
    if _complete(face_dir, stamp):
        return train_dir, val_dir

    font_path(face)  # fail early, with the package name, before any file is written
    root.mkdir(parents=True, exist_ok=True)
    with fsutil.locked(root / f".{face}.lock"):
        if _complete(face_dir, stamp):  # another process built it while we waited
            return train_dir, val_dir
        for stale in root.glob(f".{face}.tmp-*"):  # left by an interrupted run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(f".{face}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)

        train_lines, val_lines = make_lines(sentences, n_train, n_val, seed)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{face}.tmp-", dir=root))
        try:
            _write_split(tmp / "train", face, "train", train_lines, seed, first_page=1)
            _write_split(tmp / "val", face, "val", val_lines, seed, first_page=1 + pages(n_train))
            (tmp / STAMP_NAME).write_text(
                json.dumps(stamp, indent=1, sort_keys=True) + "\n", encoding="utf-8"
            )
            os.chmod(tmp, 0o755)
            if face_dir.exists():
                old = pathlib.Path(tempfile.mkdtemp(prefix=f".{face}.old-", dir=root))
                os.rename(face_dir, old / face)
                os.rename(tmp, face_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, face_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return train_dir, val_dir


# ---------------------------------------------------------------------------------------------- CLI
def ensure_configured(synthetic: Any, face: str) -> tuple[pathlib.Path, pathlib.Path]:
    """:func:`ensure_synthetic` with the settings of the ``data.synthetic`` config node."""
    return ensure_synthetic(
        pathlib.Path(synthetic.root),
        face,
        n_train=synthetic.n_train,
        n_val=synthetic.n_val,
        seed=synthetic.seed,
        text_file=pathlib.Path(synthetic.text_file) if synthetic.text_file else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from hsbcala.core.errors import clean_exit

    p = argparse.ArgumentParser(
        prog="python -m hsbcala.data.synth",
        description="Render synthetic Upper Sorbian line images + .gt.txt into OUTDIR/<face>/{train,val}/<page>/.",
    )
    p.add_argument("outdir", type=pathlib.Path, help="root directory; the set goes to OUTDIR/<face>/")
    p.add_argument("--face", choices=FACES, default="fraktur")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int, default=60)
    p.add_argument("--seed", type=int, default=50)
    p.add_argument(
        "--text-file",
        type=pathlib.Path,
        default=None,
        help="sentences, one a line (UTF-8); default: the built-in phrases",
    )
    args = p.parse_args(argv)
    with clean_exit():
        train, val = ensure_synthetic(
            args.outdir,
            args.face,
            n_train=args.n_train,
            n_val=args.n_val,
            seed=args.seed,
            text_file=args.text_file,
        )
        print(f"train: {train}\nval: {val}")
    return 0
