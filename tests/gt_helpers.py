"""Helpers for the data-step tests: copies of real Fraktur lines, config composition, the data step itself."""

from __future__ import annotations

import os
import shutil
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import SHARED, need

FRAKTUR = SHARED / "data" / "fraktur19-lines"
HSB_TEXT = SHARED / "data" / "hsb-text" / "hsb_ud_sentences.txt"


def books(collection: str = "ref_AS") -> list[Path]:
    return sorted(p for p in need(FRAKTUR / collection).iterdir() if p.is_dir())


def gt_of(image: Path) -> Path:
    return image.parent / (image.name.split(".", 1)[0] + ".gt.txt")


def copy_book(src: Path, dst: Path, n: int | None = None, *, old: bool = False) -> list[Path]:
    """Copy the first n lines (image + GT) of a real book; ``old``: back-date them (cacheable at once)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for png in sorted(p for p in src.glob("*.png") if gt_of(p).is_file())[:n]:
        for f in (png, gt_of(png)):
            shutil.copyfile(f, dst / f.name)
            if old:
                os.utime(dst / f.name, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
        out.append(dst / png.name)
    return out


def text(image: Path) -> str:
    return gt_of(image).read_text(encoding="utf-8").strip()


def composed_line(images: list[Path]) -> Path:
    """A line whose GT changes under NFD (has ä, ö, ü …)."""
    for image in images:
        t = unicodedata.normalize("NFC", text(image))
        if unicodedata.normalize("NFD", t) != t:
            return image
    pytest.fail("no line with a composed character")


def cfg(tmp: Path, *overrides: str):
    """A composed training config isolated in ``tmp`` (cache, model dir)."""
    from tests.conftest import compose_cfg

    base = [
        f"paths.root={tmp}",
        f"model_dir={tmp / 'model'}",
        f"data.cache_dir={tmp / 'cache'}",
        f"data.train=[{tmp}/train/*.png]",
        f"data.val=[{tmp}/val/*.png]",
    ]
    return compose_cfg(base + list(overrides))


def prepare(tmp: Path, *overrides: str):
    from hsbcala.config import schema
    from hsbcala.data import step as datastep

    c = cfg(tmp, *overrides)
    schema.check(c)
    return datastep.prepare(c, base=tmp, model_dir=Path(c.model_dir))
