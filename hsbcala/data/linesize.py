"""The size checks of a line (``too_small``, ``too_wide``, ``too_narrow``) and the engines' rules behind them.

:mod:`hsbcala.data.checks` reads every line and applies every check with its action. The three size checks live
apart because they restate what the engines themselves do with a line of a given size (scaling to the line
height, padding, Calamari 2's width limit, the CTC rule of both versions), each read in the engines' sources
and cited by file:line below: this module changes when an engine version does. :func:`problems` gives a
decoded line's size findings with reasons that name these figures.

``too_narrow`` measures the width per character after scaling the line to Calamari's line height (48 px), the
scale at which the engines apply their own limit: with the usual networks (two 2x2 poolings, 4x fewer time
steps than pixels) a line with fewer than 4 px per character cannot be aligned by CTC and is dropped by the
engine without a word; a line the engines' own rule drops (below) is reported whatever its px per character.

What the engines drop, and why hsbcala checks it (read in the installed engines, calamari_ocr 2.3.1 and
1.0.7; paths below ``~/.cache/hsbcala/envs/cala{2,1}-*/lib/python3.11/site-packages/calamari_ocr/``):

- Calamari 2 scales every line to the line height (48, ``ocr/dataset/params.py:23``) keeping its aspect
  ratio (``ocr/dataset/imageprocessors/center_normalizer.py:111-149`` → ``scale_to_height_processor.py:46``:
  width ``max(round(48 / h * w), 1)``; ``h`` is the dewarped height, which depends on the ink, so hsbcala
  uses the image's own height: the aspect-ratio estimate), pads 16 px left and right
  (``final_preparation.py:18,48-66``), and then, while training and validating, drops a line whose padded
  width exceeds ``max_line_width`` = 4096 (``preparesample.py:23-25,39-46``: "Invalid line, line too long",
  a warning in the engine's log and nothing else) → ``too_wide``, default ``drop``: the engine drops the
  line anyway, so dropping it here changes nothing in the training but makes the counts, the manifest and
  ``skipped_lines`` true and gives both versions the same lines; ``fail`` would stop a whole data set for a
  line the engine merely skips. Calamari 1.0.7 has no width limit (``max_line_width`` appears nowhere in
  it): it trains on such a line, and ``padded_batch`` pads its whole batch to that width
  (``ocr/backends/tensorflow_backend/tensorflow_model.py:313-317``).
- Both drop a line with more CTC labels than time steps: Calamari 2 ``preparesample.py:53-65`` (``len(gt)``
  + one blank per repeated character > padded width // 4), Calamari 1 ``tensorflow_model.py:285-287``
  (``len(gt)`` > padded width // 4; pad 16 and line height 48 by default, ``scripts/train.py:81-83``).
  ``too_narrow`` reports that rule (Calamari 2's, the stricter; downscale 4: two 2x2 poolings) besides
  ``data.min_px_per_char``.
- Neither has a minimum image size: a 1x1 image is scaled to a 48x48 blank (``scale_to_height_processor.py:46``;
  a blank image is not dewarped, ``center_normalizer.py:91-93``) and trained on as the picture of its text
  (Calamari 1's check for blank images, ``ocr/datasets/dataset.py:165``, is never called:
  ``ocr/datasets/input_dataset.py:129`` is commented out). An image under ``data.min_image_px`` (8) px wide
  or high shows no legible text at any scan resolution → ``too_small``, default ``drop`` (such files are
  export errors, not lines; each is listed in the manifest).
"""

from __future__ import annotations

import itertools

LINE_HEIGHT = 48  # Calamari's default line height (both versions): the scale of data.min_px_per_char
LINE_PAD = (
    16  # FinalPreparation's padding left and right (both versions), part of the width the engines check
)
DOWNSCALE = 4  # time steps per padded pixel column of the usual networks (two 2x2 poolings)


def scaled_width(width: int, height: int) -> int:
    """The width the engines train on: scaled to :data:`LINE_HEIGHT` keeping the aspect ratio (Calamari 2's
    ``scale_to_h``: ``max(round(scale * w), 1)``), plus :data:`LINE_PAD` left and right."""
    return max(round(LINE_HEIGHT / height * width), 1) + 2 * LINE_PAD


def ctc_labels(text: str) -> int:
    """CTC labels a text needs (Calamari 2's rule): one per character, plus a blank between repeats."""
    return len(text) + sum(1 for a, b in itertools.pairwise(text) if a == b)


def problems(
    width: int, height: int, nfc: str, min_px_per_char: float, max_line_width: int, min_image_px: int
) -> list[tuple[str, str]]:
    """The size checks of one decoded line: too_small, too_wide, too_narrow (check, reason).

    ``width``, ``height``: the image's, both > 0; ``nfc``: its GT, NFC."""
    w, h = width, height
    size = f"{w}x{h} px"
    out: list[tuple[str, str]] = []
    if min_image_px and (w < min_image_px or h < min_image_px):
        reason = (
            f"image is {size}, under data.min_image_px={min_image_px} (no legible text; the engines "
            f"would scale it to a {LINE_HEIGHT} px blur and train on it)"
        )
        out.append(("too_small", reason))
    padded = scaled_width(w, h)
    if max_line_width and padded > max_line_width:
        reason = (
            f"{padded} px wide at line height {LINE_HEIGHT} ({size} scaled, {2 * LINE_PAD} px padding), "
            f'over data.max_line_width={max_line_width}: Calamari 2 drops it ("line too long")'
        )
        out.append(("too_wide", reason))
    labels, steps = ctc_labels(nfc), padded // DOWNSCALE
    per_char = w * LINE_HEIGHT / h / max(len(nfc), 1)
    what = f"{per_char:.1f} px per character at line height {LINE_HEIGHT} ({size}, {len(nfc)} characters"
    if min_px_per_char and labels > steps:  # data.min_px_per_char=0 turns the whole check off
        out.append(("too_narrow", f"{what}): {labels} CTC labels > {steps} time steps, the engines drop it"))
    elif min_px_per_char and per_char < min_px_per_char:
        out.append(("too_narrow", f"{what}; data.min_px_per_char={min_px_per_char:g})"))
    return out
