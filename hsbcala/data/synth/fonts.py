"""The fonts of the synthetic lines, and the letters Blankenburg Fraktur lacks, composed from its own parts.

Faces
-----
``antiqua``
    EB Garamond (``fonts-ebgaramond``, ``EBGaramond12-Regular.otf``). It has every Upper Sorbian letter
    (ě č ć ř š ž ź ł ń ó, capitals too) as a precomposed glyph and is rendered as is.
``fraktur``
    Blankenburg (``fonts-blankenburg``, ``Blankenburg_UNZ1A.ttf``), the only Fraktur face packaged in
    Debian 12 (``apt-cache search fraktur`` / ``blackletter``). Its 256 glyphs cover Latin-1 plus š ž Š Ž, ó Ó and the spacing acute ´, but **not**
    ě č ć ř ź ł ń nor Ě Č Ć Ř Ź Ł Ń, and it has no combining marks. Those letters are composed here, from
    parts of Blankenburg itself, so that the marks match the face's weight and style:

    * caron (ě č ř, Ě Č Ř): the caron is cut out of Blankenburg's own ``š``: the ink of ``š`` above the top
      of ``s``. It is drawn over the base letter (``e c r`` / ``E C R``) rendered in Blankenburg, centred on
      the base's ink, with the same gap above it as in ``š``. Capitals get the same mark above the cap
      height (Blankenburg's ``Š`` squeezes the ``S`` under a flattened caron, which does not scale to others);
    * acute (ć ń ź, Ć Ń Ź): likewise cut out of Blankenburg's ``ó`` above ``o``;
    * stroke (ł Ł): a slanted bar, half as thick as the stem, drawn through the stem of Blankenburg's ``l``
      (half-way up its ascender) and ``L`` (at 45 % of its height); the stem is found by scanning the
      rendered glyph.

    Letters that Blankenburg has (š ž ó …) are never composed. Everything is measured from the font at the
    rendering size, so nothing is hard-coded in pixels. No other font is needed.
"""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from hsbcala.core.errors import ConfigError, DataError

FACES = ("antiqua", "fraktur")


class _Spec:
    """Where a face's font lives and which Debian package brings it."""

    def __init__(self, family: str, filename: str, package: str, dirs: Sequence[str]) -> None:
        self.family = family
        self.filename = filename
        self.package = package
        self.dirs = tuple(dirs)


_SPECS = {
    "antiqua": _Spec(
        "EB Garamond",
        "EBGaramond12-Regular.otf",
        "fonts-ebgaramond",
        ["/usr/share/fonts/opentype/ebgaramond"],
    ),
    "fraktur": _Spec(
        "Blankenburg", "Blankenburg_UNZ1A.ttf", "fonts-blankenburg", ["/usr/share/fonts/truetype/blankenburg"]
    ),
}

# Letters Blankenburg lacks: base letter and the part drawn on it.
_FRAKTUR_COMPOSED = {
    "ě": ("e", "caron"), "č": ("c", "caron"), "ř": ("r", "caron"),
    "Ě": ("E", "caron"), "Č": ("C", "caron"), "Ř": ("R", "caron"),
    "ć": ("c", "acute"), "ń": ("n", "acute"), "ź": ("z", "acute"),
    "Ć": ("C", "acute"), "Ń": ("N", "acute"), "Ź": ("Z", "acute"),
    "ł": ("l", "stroke"), "Ł": ("L", "STROKE"),
}  # fmt: skip
# Mark name -> (letter with the mark in Blankenburg, letter without it). Only lower-case sources: Blankenburg's
# Š and Ó squeeze the letter to keep the mark inside the cap height, so their marks are flattened stubs.
_MARK_SOURCES = {"caron": ("š", "s"), "acute": ("ó", "o")}
# Tallest/deepest letters of each face: the vertical frame every line is cut to, so baselines line up.
_FRAME_TEXT = "ŠÓÄÅbdfhklgjpqy()"


# ----------------------------------------------------------------------------------------------- fonts
def _fc_list_paths() -> list[str]:
    try:
        out = subprocess.run(
            ["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@functools.cache
def font_path(face: str) -> pathlib.Path:
    """The installed font file of *face*; :class:`DataError` naming the apt package when it is missing."""
    spec = _spec(face)
    for d in spec.dirs:
        p = pathlib.Path(d) / spec.filename
        if p.is_file():
            return p
    for line in _fc_list_paths():
        if os.path.basename(line) == spec.filename and os.path.isfile(line):
            return pathlib.Path(line)
    for base in ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts"):
        root = pathlib.Path(base).expanduser()
        if root.is_dir():
            for p in sorted(root.rglob(spec.filename)):
                return p
    raise DataError(
        f"font {spec.family} ({spec.filename}) for the {face} synthetic lines is not installed: "
        f"apt-get install {spec.package}"
    )


def _spec(face: str) -> _Spec:
    if face not in _SPECS:
        raise ConfigError(f"script.face: unknown synthetic face {face!r}; choose one of {', '.join(FACES)}")
    return _SPECS[face]


@functools.lru_cache(maxsize=64)
def _font(face: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(face)), size)


@functools.lru_cache(maxsize=8)
def _frame_ratio(face: str) -> tuple[float, float]:
    """Top and bottom of :data:`_FRAME_TEXT` relative to the baseline, per pixel of font size."""
    f = _font(face, 200)
    _, top, _, bottom = f.getbbox(_FRAME_TEXT, anchor="ls")
    if face == "fraktur":  # composed capitals (Č, Ć, …) carry their mark above the cap height
        for base_ch, part in _FRAKTUR_COMPOSED.values():
            if part in _MARK_SOURCES:
                m = _mark(face, 200, part)
                top = min(top, f.getbbox(base_ch, anchor="ls")[1] - m.gap - m.mask.height)
    return top / 200, bottom / 200


# -------------------------------------------------------------------------------- Fraktur composition
@dataclass(frozen=True)
class _Mark:
    mask: Image.Image  # mode L, 255 = ink
    dx: float  # mark's centre minus the source base letter's ink centre
    gap: float  # base letter's ink top minus mark's ink bottom


@dataclass(frozen=True)
class _Stroke:
    x0: float  # stem's left edge, from the pen position
    x1: float  # stem's right edge
    y: float  # height of the bar's centre, from the baseline (negative: above it)
    stem: float  # stem width


def _glyph_mask(font: ImageFont.FreeTypeFont, text: str) -> tuple[Image.Image, int, int]:
    """*text* drawn white on black with its pen at (pad, baseline); returns (image, pad, baseline)."""
    size = font.size
    pad = size
    w = int(font.getlength(text)) + 2 * pad
    h = 3 * size
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((pad, 2 * size), text, font=font, fill=255, anchor="ls")
    return im, pad, 2 * size


@functools.lru_cache(maxsize=256)
def _mark(face: str, size: int, name: str) -> _Mark:
    font = _font(face, size)
    with_mark, without = _MARK_SOURCES[name]
    im, pad, base = _glyph_mask(font, with_mark)
    bl, bt, br, _ = font.getbbox(without, anchor="ls")
    cut = base + bt - max(1, round(size * 0.02))  # just above the base letter's top
    top_part = im.crop((0, 0, im.width, cut))
    box = top_part.getbbox()
    if box is None:  # cannot happen with Blankenburg; keep rendering without the mark rather than crash
        return _Mark(Image.new("L", (1, 1), 0), 0.0, 0.0)
    mask = top_part.crop(box)
    centre_mark = (box[0] + box[2]) / 2 - pad
    centre_base = (bl + br) / 2
    return _Mark(mask, centre_mark - centre_base, (base + bt) - box[3])


@functools.lru_cache(maxsize=256)
def _stroke(face: str, size: int, name: str) -> _Stroke:
    font = _font(face, size)
    letter = "l" if name == "stroke" else "L"
    im, pad, base = _glyph_mask(font, letter)
    _, top, _, _ = font.getbbox(letter, anchor="ls")
    if letter == "l":
        _, xtop, _, _ = font.getbbox("x", anchor="ls")
        y = (top + xtop) / 2  # half-way up the ascender
    else:
        y = top * 0.45
    row = base + round(y)
    px = im.load()
    runs: list[tuple[int, int]] = []
    x = 0
    while x < im.width:
        if px[x, row] > 127:
            start = x
            while x < im.width and px[x, row] > 127:
                x += 1
            runs.append((start, x))
        x += 1
    if not runs:
        bl, _, br, _ = font.getbbox(letter, anchor="ls")
        runs = [(pad + bl, pad + br)]
    x0, x1 = max(runs, key=lambda r: r[1] - r[0])  # the stem is the widest run
    return _Stroke(x0 - pad, x1 - pad, y, x1 - x0)


def _draw_fraktur(
    im: Image.Image, x: float, baseline: float, text: str, font: ImageFont.FreeTypeFont, face: str
) -> None:
    """Draw *text* at pen (x, baseline) in black; composes the letters Blankenburg lacks."""
    draw = ImageDraw.Draw(im)
    size = font.size
    run = ""

    def flush() -> None:
        nonlocal x, run
        if run:
            draw.text((x, baseline), run, font=font, fill=0, anchor="ls")
            x += font.getlength(run)
            run = ""

    for ch in text:
        if ch not in _FRAKTUR_COMPOSED:
            run += ch
            continue
        flush()
        base_ch, part = _FRAKTUR_COMPOSED[ch]
        draw.text((x, baseline), base_ch, font=font, fill=0, anchor="ls")
        if part in ("stroke", "STROKE"):
            s = _stroke(face, size, part)
            t = max(1.0, s.stem * 0.5) / 2  # half the bar's thickness
            reach = s.stem * (0.95 if part == "stroke" else 0.8)
            rise = s.stem * 0.55
            xa, xb = x + s.x0 - reach, x + s.x1 + reach
            ya, yb = baseline + s.y + rise, baseline + s.y - rise
            draw.polygon([(xa, ya - t), (xb, yb - t), (xb, yb + t), (xa, ya + t)], fill=0)
        else:
            m = _mark(face, size, part)
            bl, bt, br, _ = font.getbbox(base_ch, anchor="ls")
            cx = x + (bl + br) / 2 + m.dx
            bottom = baseline + bt - m.gap
            im.paste(0, (round(cx - m.mask.width / 2), round(bottom - m.mask.height)), m.mask)
        x += font.getlength(base_ch)
    flush()
