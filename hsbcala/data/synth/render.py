"""Rendering one synthetic line image.

Output
------
Each line is a grayscale (mode ``L``) PNG of black text on white that looks binarised (only values 0 and
255): rendered anti-aliased, slightly rotated (±0.25°), blurred and mixed with a little noise, then
thresholded at a varying level (thinner or bolder strokes, ragged edges). It is 48–64 px high (font size
varies with it) with a few pixels of white around the ink. Beside ``<id>.png`` lies ``<id>.gt.txt``: the
rendered text, UTF-8, NFC, one line without a trailing newline. All variation is drawn from a
:class:`random.Random` seeded by ``(face, seed, text)``, so a seed gives the same bytes on every run (with
the same Pillow/FreeType build).
"""

from __future__ import annotations

import random
import unicodedata

from PIL import Image, ImageDraw, ImageFilter

from hsbcala.core.errors import DataError
from hsbcala.data.synth.fonts import _draw_fraktur, _font, _frame_ratio, _spec
from hsbcala.data.synth.text import CHARSET

MIN_HEIGHT = 48
MAX_HEIGHT = 64


# ------------------------------------------------------------------------------------------ rendering
def _check_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    bad = sorted(set(text) - CHARSET)
    if not text.strip() or "\n" in text or bad:
        raise DataError(
            f"synthetic line {text!r} is empty or has characters outside hsbcala.data.synth.CHARSET: {bad}"
        )
    return text


def render_line(text: str, face: str, *, seed: int = 0) -> Image.Image:
    """Render one line of *text* in *face* as a binarised-looking grayscale image, 48–64 px high.

    The same (text, face, seed) always gives the same pixels. Raises :class:`DataError` for characters
    outside :data:`CHARSET` or a missing font, :class:`ConfigError` for an unknown face.
    """
    _spec(face)
    text = _check_text(text)
    # the seed string of the old module path: the same seed draws the same demo lines as before the move
    rng = random.Random(f"hsbcala.synth:{face}:{seed}:{text}")

    pad_top, pad_bottom = rng.randint(2, 5), rng.randint(2, 5)
    target = rng.randint(MIN_HEIGHT + 2, MAX_HEIGHT - 2)  # wanted image height
    r_top, r_bottom = _frame_ratio(face)
    size = max(8, round((target - pad_top - pad_bottom) / (r_bottom - r_top)))
    font = _font(face, size)

    margin = size
    width = int(font.getlength(text) + size * 0.5 * text.count("ł") + 2 * margin) + 1
    baseline = 2 * size
    canvas = Image.new("L", (width, 3 * size), 255)
    if face == "fraktur":
        _draw_fraktur(canvas, margin, baseline, text, font, face)
    else:
        ImageDraw.Draw(canvas).text((margin, baseline), text, font=font, fill=0, anchor="ls")

    angle = rng.uniform(-0.25, 0.25)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)

    ink = Image.eval(canvas, lambda v: 255 - v).point(lambda v: 255 if v > 64 else 0).getbbox()
    if ink is None:  # only spaces: impossible after _check_text, but keep a sane frame
        ink = (margin, baseline, margin + 1, baseline + 1)
    top = min(ink[1], baseline + round(r_top * size))
    bottom = max(ink[3], baseline + round(r_bottom * size))
    left = ink[0] - rng.randint(2, 6)
    right = ink[2] + rng.randint(2, 6)
    img = canvas.crop((left, top - pad_top, right, bottom + pad_bottom))

    if img.height > MAX_HEIGHT:  # a tall descender or a tilted long line
        img = img.resize(
            (max(1, round(img.width * MAX_HEIGHT / img.height)), MAX_HEIGHT), Image.Resampling.LANCZOS
        )
    if img.height < MIN_HEIGHT:
        grown = Image.new("L", (img.width, MIN_HEIGHT), 255)
        grown.paste(img, (0, (MIN_HEIGHT - img.height) // 2))
        img = grown

    # Print and scan: blur, paper/ink noise, then a threshold that makes strokes thinner or bolder.
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    noise = Image.frombytes("L", img.size, rng.randbytes(img.width * img.height))
    noise = noise.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))
    img = Image.blend(img, noise, rng.uniform(0.08, 0.2))
    threshold = rng.randint(105, 150)
    # No specks: a dot near a letter would read as a diacritic the ground truth does not have.
    return img.point(lambda v: 255 if v > threshold else 0)
