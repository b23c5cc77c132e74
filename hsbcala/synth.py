"""Synthetic Upper Sorbian text-line images with ground truth: the project's embedded default training data.

``python train.py`` with no data configured trains on lines that this module renders itself, so a fresh clone
can train a real (tiny) model with nothing but two Debian font packages installed::

    apt-get install fonts-ebgaramond fonts-blankenburg

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

Output
------
Each line is a grayscale (mode ``L``) PNG of black text on white that looks binarised (only values 0 and
255): rendered anti-aliased, slightly rotated (±0.25°), blurred and mixed with a little noise, then
thresholded at a varying level (thinner or bolder strokes, ragged edges). It is 48–64 px high (font size
varies with it) with a few pixels of white around the ink. Beside ``<id>.png`` lies ``<id>.gt.txt``: the
rendered text, UTF-8, NFC, one line without a trailing newline. All variation is drawn from a
:class:`random.Random` seeded by ``(face, seed, text)``, so a seed gives the same bytes on every run (with
the same Pillow/FreeType build).

Text
----
Lines of 15–60 characters are cut at word boundaries from sentences: those of a text file (one sentence a
line, e.g. the team's 644 sentences from the Upper Sorbian UD treebank), or, when none is given or the file
is missing, :data:`BUILTIN_PHRASES` below. Words with characters outside :data:`CHARSET` (Greek, Arabic,
wiki mark-up, …) are left out and split a sentence. The sentences are split into train and val (seeded)
before cutting, and any line text in both is dropped from val, so train and val never share a line. When a
pool yields too few lines (the built-in list does), it is topped up with word sequences drawn from its own
words.

:func:`ensure_synthetic` creates ``root/<face>/train`` and ``root/<face>/val`` once; a stamp file
(``synth.json``) records the parameters, and the set is rebuilt in a temporary directory and swapped in by
renaming when they change. Manual use::

    python -m hsbcala.synth OUTDIR --face fraktur
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from hsbcala.errors import ConfigError, DataError

FACES = ("antiqua", "fraktur")

#: Bump when the rendering or the line selection changes, so existing sets are rebuilt.
GENERATOR_VERSION = 1

STAMP_NAME = "synth.json"
MIN_CHARS = 15
MAX_CHARS = 60
MIN_HEIGHT = 48
MAX_HEIGHT = 64

SORBIAN_LETTERS = "ěčćřšžźłńóĚČĆŘŠŽŹŁŃÓ"
#: Every character a synthetic line may contain (both faces render all of them).
CHARSET = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    + SORBIAN_LETTERS
    + "äöüßÄÖÜ"
    + " .,;:!?()-\"'/%„“”«»–"
)

#: Upper Sorbian phrases (written for this module) used when no text file is given or found. Together they
#: hold every Upper Sorbian letter, lower and upper case, several times.
BUILTIN_PHRASES = (
    "Serbske Budyšin je stolica Hornjeje Łužicy.",
    "Dobry dźeń, kak so maš? Dźakuju so, derje.",
    "Witajće k nam do Łužicy, do kraja Serbow!",
    "Hornjoserbšćina je zapadosłowjanska rěč.",
    "Naša wjes leži při rěce Sprjewi pod horami.",
    "W zymje je tu přeco wjele sněha a lodu.",
    "Dźěći hraja na dworje a spěwaja wjesele.",
    "Ćichi wječor nad Choćebuzom a Grodkom.",
    "Žona a muž dźěłataj cyły dźeń na polu.",
    "Mój nan je wučer w Chrósćicach při Kamjencu.",
    "Ćěsne hasy stareho města su prózdne.",
    "Přeju wam wjesołe hody a zbožowne nowe lěto!",
    "Knihownja je wočinjena wot póndźele do pjatka.",
    "Ryba płuwa w čistej wodźe hłubokeho hata.",
    "Hdźe je dróha do Kamjenca a do Radworja?",
    "Serbski ludowy ansambl zaspěwa dźensa wječor.",
    "Stary kóń stoji w hródźi a čaka na wowka.",
    "Woheń so w kachlach pali, wonka je zyma.",
    "Žaba skoči z brjoha do hata, ptačk zaćichnje.",
    "Wšitcy čłowjekojo su wot naroda swobodni a jenacy po dostojnosći a prawach.",
    "Ćišćernja Domowiny w Budyšinje wuda nowu knihu.",
    "Rěčny kurs za dorosćenych započnje w septembru.",
    "Čitaj knihu wot spočatka hač do kónca!",
    "Šula so rano w sydmich započnje, dźěći hižo čakaja.",
    "Ćah přijědźe z Drježdźan z połhodźinskim zapozdźenjom.",
    "Łužica je rjany kraj z wjele jězorami a lěsami.",
    "Měrćin Nowak-Njechorński běše serbski spisowaćel a moler.",
    "Handrij Zejler je basnik serbskeje hymny.",
    "Rjana Łužica, sprawna, přećelna, mojich serbskich wótcow kraj,",
    "mojich zbóžnych sonow raj, swjate su mi twoje hona!",
    "Na kermuši so tancuje, spěwa a hraje hač do nocy.",
    "Ptački spěwaja w zahrodźe, słónco so směje.",
    "Jan Arnošt Smoler zhromadźi serbske ludowe spěwy.",
    "Kraj, hdźež serbska rěč žiwa wostanje na wěčnosć.",
    "Njedźelu pojědźemy z kołom do Radworja a Ralbic.",
    "Čerwjeny mak kćěje na polu při pućiku.",
    "Ćěmna nóc nad hatom, měsačk so błyšći w wodźe.",
    "Přichodny tydźeń změjemy zhromadźiznu w Slepom.",
    "Žně so w juliju započinaja, kóždy pomha.",
    "Mać wari słódki kofej a peče tykanc.",
    "Wěra, nadźija a lubosć su najwažniše.",
    "Budyšin, 12. oktobra 1848. Čestny přećel!",
    "Hdyž so dešćik skónči, dźěmy do lěsa na hriby.",
    "Zelene łuki a čiste rěki našeje domizny.",
    "Wokoło Łazka a Bukec je wjele małych wjeskow.",
    "Ćežka zyma, kóń a wóz stejitej w Čornym Chołmcu.",
    "DŹEŃ SERBSKEJE RĚČE W BUDYŠINJE",
    "ŁUŽISKA ĆIŠĆERNJA, ŽIWJENJE A ŠULA",
    "ČASOPIS PŘIRODA A DOMIZNA, ČISŁO 3",
    "STARY KÓŃ NA WJESNEJ DRÓZE",
    "PISMIKI: Ě Č Ć Ř Š Ž Ź Ł Ń Ó, dź, Dź, DŹ.",
    "Njebjo je módre, Ewa a Jan dźětaj do šule.",
)


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


# ------------------------------------------------------------------------------------------ rendering
def _check_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    bad = sorted(set(text) - CHARSET)
    if not text.strip() or "\n" in text or bad:
        raise DataError(
            f"synthetic line {text!r} is empty or has characters outside hsbcala.synth.CHARSET: {bad}"
        )
    return text


def render_line(text: str, face: str, *, seed: int = 0) -> Image.Image:
    """Render one line of *text* in *face* as a binarised-looking grayscale image, 48–64 px high.

    The same (text, face, seed) always gives the same pixels. Raises :class:`DataError` for characters
    outside :data:`CHARSET` or a missing font, :class:`ConfigError` for an unknown face.
    """
    _spec(face)
    text = _check_text(text)
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


# ------------------------------------------------------------------------------------------- text
def _load_sentences(text_file: pathlib.Path | None) -> tuple[list[str], str]:
    """Sentences and a description of where they came from (recorded in the stamp)."""
    if text_file is not None:
        path = pathlib.Path(text_file)
        if path.is_file():
            try:
                raw = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"synthetic text file {path}: cannot read it as UTF-8 ({exc})") from exc
            sentences = [unicodedata.normalize("NFC", s).strip() for s in raw.splitlines()]
            sentences = [s for s in sentences if s]
            return sentences, "file"
        warnings.warn(f"synthetic text file {path} not found; using the built-in phrases", stacklevel=3)
    return list(BUILTIN_PHRASES), "builtin"


def _word_ok(word: str) -> bool:
    return all(c in CHARSET for c in word)


def _cut(sentence: str, rng: random.Random) -> list[str]:
    """Cut a sentence into lines of MIN_CHARS..MAX_CHARS at word boundaries, leaving out unusable words."""
    groups: list[list[str]] = [[]]
    for word in sentence.split():
        if _word_ok(word) and len(word) <= MAX_CHARS:
            groups[-1].append(word)
        elif groups[-1]:
            groups.append([])
    lines: list[str] = []
    for words in groups:
        cur: list[str] = []
        goal = rng.randint(25, MAX_CHARS)
        for word in words:
            if cur and len(" ".join(cur)) + 1 + len(word) > goal:
                lines.append(" ".join(cur))
                cur, goal = [], rng.randint(25, MAX_CHARS)
            cur.append(word)
        if cur:
            tail = " ".join(cur)
            if len(tail) < MIN_CHARS and lines and len(lines[-1]) + 1 + len(tail) <= MAX_CHARS:
                lines[-1] += " " + tail
            else:
                lines.append(tail)
    return [line for line in lines if MIN_CHARS <= len(line) <= MAX_CHARS]


def _salad(words: list[str], rng: random.Random) -> str:
    goal = rng.randint(MIN_CHARS + 5, MAX_CHARS)
    out: list[str] = []
    while True:
        w = rng.choice(words)
        if out and len(" ".join(out)) + 1 + len(w) > goal:
            break
        out.append(w)
    return " ".join(out)


def _pool_lines(sentences: list[str], n: int, rng: random.Random, exclude: set[str]) -> list[str]:
    """*n* distinct lines from *sentences* (topped up with word sequences), none of them in *exclude*."""
    seen = set(exclude)
    lines: list[str] = []
    for s in sentences:
        for line in _cut(s, rng):
            if line not in seen:
                seen.add(line)
                lines.append(line)
    rng.shuffle(lines)
    lines = lines[:n]
    words = sorted({w for s in sentences for w in s.split() if _word_ok(w) and len(w) <= MAX_CHARS - 10})
    tries = 0
    while len(lines) < n and words and tries < 50 * n:
        tries += 1
        line = _salad(words, rng)
        if MIN_CHARS <= len(line) <= MAX_CHARS and line not in seen:
            seen.add(line)
            lines.append(line)
    if len(lines) < n:
        raise DataError(f"synthetic text: only {len(lines)} distinct usable lines, {n} needed")
    return lines


def make_lines(sentences: Sequence[str], n_train: int, n_val: int, seed: int) -> tuple[list[str], list[str]]:
    """Train and val line texts: sentences split (seeded) before cutting; no text in both."""
    rng = random.Random(f"hsbcala.synth.lines:{seed}")
    pool = sorted({unicodedata.normalize("NFC", s).strip() for s in sentences if s.strip()})
    if len(pool) < 2:
        raise DataError("synthetic text: need at least 2 distinct sentences to split into train and val")
    rng.shuffle(pool)
    k = min(len(pool) - 1, max(1, round(len(pool) * n_val / max(1, n_train + n_val))))
    val_sentences, train_sentences = pool[:k], pool[k:]
    train = _pool_lines(train_sentences, n_train, rng, set())
    val = _pool_lines(val_sentences, n_val, rng, set(train))
    return train, val


# --------------------------------------------------------------------------------------------- sets
@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive lock on *path* (parallel jobs of a sweep may build the same set)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _complete(face_dir: pathlib.Path, stamp: dict) -> bool:
    try:
        if json.loads((face_dir / STAMP_NAME).read_text(encoding="utf-8")) != stamp:
            return False
        for split, n in (("train", stamp["n_train"]), ("val", stamp["n_val"])):
            names = os.listdir(face_dir / split)
            if sum(x.endswith(".png") for x in names) != n or sum(x.endswith(".gt.txt") for x in names) != n:
                return False
    except (OSError, ValueError):
        return False
    return True


def _write_split(dirpath: pathlib.Path, face: str, split: str, lines: list[str], seed: int) -> None:
    dirpath.mkdir(parents=True)
    for i, line in enumerate(lines):
        stem = f"hsb_{face}_{split}_{i:05d}"
        img = render_line(line, face, seed=seed * 1_000_003 + (i if split == "train" else 500_000 + i))
        img.save(dirpath / f"{stem}.png", format="PNG")
        (dirpath / f"{stem}.gt.txt").write_bytes(unicodedata.normalize("NFC", line).encode("utf-8"))


def ensure_synthetic(
    root: pathlib.Path,
    face: str,
    *,
    n_train: int = 400,
    n_val: int = 60,
    seed: int = 50,
    text_file: pathlib.Path | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Create (once) root/<face>/train/*.png+.gt.txt and root/<face>/val/*.png+.gt.txt; return (train_dir, val_dir).

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
    }
    if _complete(face_dir, stamp):
        return train_dir, val_dir

    font_path(face)  # fail early, with the package name, before any file is written
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{face}.lock"):
        if _complete(face_dir, stamp):  # another process built it while we waited
            return train_dir, val_dir
        for stale in root.glob(f".{face}.tmp-*"):  # left by an interrupted run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(f".{face}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)

        train_lines, val_lines = make_lines(sentences, n_train, n_val, seed)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{face}.tmp-", dir=root))
        try:
            _write_split(tmp / "train", face, "train", train_lines, seed)
            _write_split(tmp / "val", face, "val", val_lines, seed)
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
def main(argv: Sequence[str] | None = None) -> int:
    from hsbcala.errors import clean_exit

    p = argparse.ArgumentParser(
        prog="python -m hsbcala.synth",
        description="Render synthetic Upper Sorbian line images + .gt.txt into OUTDIR/<face>/{train,val}.",
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


if __name__ == "__main__":
    sys.exit(main())
