"""Resolve the ``data.train`` / ``data.val`` globs and check the line ground truth before training starts.

A line is an image (``.png .jpg .jpeg .tif .tiff .bmp``) with its transcription beside it in a ``.gt.txt``
file named by Calamari's rule (:func:`gt_path`). :func:`load_lines` resolves both globs, refuses a validation
set that overlaps the training set, and checks every line, so that bad input fails with ONE line naming the
file or glob (a :class:`~hsbcala.core.errors.DataError`) before any model directory, run or job is created.

What Calamari itself does with bad lines (read from calamari_ocr 1.0.7 and 2.3.1)
-------------------------------------------------------------------------------
Calamari 2 (``--train.skip_invalid`` / ``--val.skip_invalid``, default true). ``--data.skip_invalid_gt`` is
declared in ``DataParams`` but read nowhere (only the checkpoint migrations rename it); the flag that acts
is the reader's ``skip_invalid``:

* ``FileDataGenerator`` (when the data set is built): an image or ``.gt.txt`` that does not exist, or image
  and text base names that differ, are skipped with a logged exception when ``skip_invalid``, else raised.
* Always, whatever the flag, while training/evaluating (``PrepareSample.is_valid_line``): a GT that is empty
  after the text pre-processing (bidi, ``strip()``, NFC, regularizer) is skipped ("Skipping empty line with
  empty GT"), so is a line wider than ``max_line_width`` (4096 px after scaling to the line height) and a
  line too short for a CTC path (``len(gt) + repeated chars > width // downscale``, e.g. a zero-width image).
* An image that does not decode: ``FileDataGenerator._load_line`` swallows the error and returns ``None``;
  the first image processor then fails and the sample is dropped with an "unknown error ... The line is
  skipped" warning and a traceback in the log.
* A ``.gt.txt`` that is not UTF-8: ``_load_gt_txt`` raises "Could not read ... as text file" and nothing
  catches it: the training crashes inside the input pipeline.

Calamari 1 (``--no_skip_invalid_gt`` turns skipping off): ``FileDataSet`` skips (prints "Invalid data: ...")
a missing image or ``.gt.txt`` or a base-name mismatch, else raises. The check for blank/undecodable images
(``DataSet.is_sample_valid``) exists but its call is commented out. The TensorFlow input generator always
drops, silently: an image whose ``load()`` failed, an empty GT (after ``strip()``), and a line with more
labels than ``width // downscale``. An image PIL cannot even identify (e.g. truncated header) and a non
UTF-8 ``.gt.txt`` raise in the loader process.

So both versions silently train on fewer lines than given (or crash mid-run), which is why this module
checks up front: a missing, unreadable, non-UTF-8, empty or whitespace-only ``.gt.txt`` and an image that
does not decode or has a zero dimension are reported by name. With ``skip_invalid`` they are returned in
:attr:`LineSet.skipped` (they are exactly lines Calamari would skip or choke on); without it, the first one
is raised. Not checked here (the training's data step does, :mod:`hsbcala.data.checks`: ``too_wide``,
``too_narrow``, ``too_small``): the size limits (line width > ``max_line_width``, too short for CTC).

:func:`resolve` expands ``**`` itself (:mod:`hsbcala.data.globbing`): Python's ``glob`` follows a symbolic link
back up the tree until the path is too long (every line ~40 times) and two such links for ever; there every
real directory is entered once and a loop is reported once and not followed; here a line reachable under
several names is returned once.

Speed, measured with :func:`check_lines` on 5,000 real fraktur lines (2 CPUs shared with other jobs, so
rough): GT only 0.1 s; GT + ``Image.open`` + ``verify()`` 0.25 s with the files in the page cache, 1.1-1.4 s
with them evicted from it; GT + a full ``load()`` 1.7 s (cached). PNGs are therefore checked with
``verify()``, which checks the CRC of every chunk after the header and thus catches truncated and
bit-flipped files without inflating the pixels; other formats get a full ``load()`` (Pillow's ``verify()``
is a no-op for them). A thread pool (2-16 threads) did not help reliably: cached, it was slower (0.3-0.7 s,
GIL contention); uncached, between 2x faster and no faster from run to run. So the checks run in one thread.
"""

from __future__ import annotations

import glob
import io
import os
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hsbcala.core import console
from hsbcala.core.errors import DataError
from hsbcala.data import archives, globbing

GT_SUFFIX = ".gt.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class LineSet:
    """The valid lines of one data set (train or val), with what the check found out about them."""

    images: tuple[Path, ...]  # sorted, absolute, de-duplicated; valid lines only
    n_chars: int  # total GT characters (NFC, stripped as Calamari strips them)
    charset: frozenset[str]  # characters used by the GT (NFC)
    skipped: tuple[tuple[Path, str], ...] = ()  # (image, reason) of lines skipped when skip_invalid=True

    def __len__(self) -> int:
        return len(self.images)


def gt_path(image: Path) -> Path:
    """The ``.gt.txt`` of a line image, by Calamari's rule (``calamari_ocr.utils.split_all_ext``).

    The file name is cut at its FIRST dot, not its last: ``a/b.png`` -> ``a/b.gt.txt``, ``a/b.bin.png`` ->
    ``a/b.gt.txt``, and also ``a/p1.l02.png`` -> ``a/p1.gt.txt`` (Calamari 1 and 2 agree on this).
    """
    image = Path(image)
    name = image.name
    pos = name.find(".")
    stem = name if pos == -1 else name[:pos]
    return image.parent / (stem + GT_SUFFIX)


def _file_key(path: str) -> tuple[int, int] | str:
    """(device, inode) of a file through every link; a missing file: its path with every link resolved."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return st.st_dev, st.st_ino


def _line_identity(image: str) -> tuple:
    """A line's identity: its image file and its ``.gt.txt`` file (through every link, hard ones included).
    Strings, not :class:`Path`: this runs for every line of a data set."""
    directory, name = os.path.split(image)
    return _file_key(image), _file_key(os.path.join(directory, name.split(".", 1)[0] + GT_SUFFIX))


def _dedupe(paths: set[str], key: str, say) -> tuple[Path, ...]:
    """One path per line (:func:`_line_identity`): a line reached through a symbolic link, a linked directory
    or a hard link is used once, named by its own path when one of the spellings has no link in it."""
    by_line: dict[tuple, list[str]] = {}
    for p in paths:
        by_line.setdefault(_line_identity(p), []).append(p)
    kept, extra = [], []
    for spellings in by_line.values():
        if len(spellings) == 1:
            kept.append(spellings[0])
            continue
        best = min(spellings, key=lambda p: (os.path.realpath(p) != p, p.count(os.sep), p))
        kept.append(best)
        extra += [(p, best) for p in spellings if p != best]
    if extra and say is not None:
        extra.sort()
        say(
            f"{key}: {len(extra)} path(s) name a line already matched under another name (symbolic or hard "
            f"links); each line is used once; first: {extra[0][0]} = {extra[0][1]}"
        )
    return tuple(sorted(Path(p) for p in kept))


def resolve(
    patterns: Sequence[str],
    *,
    key: str,
    base: Path,
    archive_root: Path | str | None = None,
    cache=None,
    limits: archives.Limits | None = None,
    say: Callable[[str], None] | None = console.say,
) -> tuple[Path, ...]:
    """Expand glob patterns (``**`` recursive, relative ones below ``base``) to sorted absolute image paths.

    Every pattern must match at least one image file; ``key`` (e.g. ``"data.train"``) names the config key
    in the error messages. A GT archive in a pattern (``set.tar.gz``, ``set.zip/book/*.png``) stands for its
    unpacked directory (:mod:`hsbcala.data.archives`, unpacked once under ``archive_root``, default
    ``~/.cache/hsbcala``, within ``limits``; ``cache``: a :class:`hsbcala.data.hashcache.HashCache` for the
    archive's hash).

    Symbolic links are resolved for identity: ``**`` enters each real directory once (a link loop is not
    followed but reported once), and a line reachable under several names (linked directories, symbolic or
    hard links, overlapping patterns) is returned once. Paths keep their spelling (not ``realpath``): the
    engines look for the ``.gt.txt`` beside the path they are given, and documents are the path's folders.
    ``say`` (default :func:`hsbcala.core.console.say`) reports loops and duplicates; ``say=None`` keeps quiet.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    if not patterns:
        raise DataError(f"{key}: no patterns given")
    base = Path(os.path.abspath(os.path.expanduser(base)))
    found: set[str] = set()
    loops: list[tuple[str, str, str]] = []  # (pattern, link, target)
    linked: list[tuple[str, str, str]] = []
    for raw in patterns:
        pattern = os.path.expanduser(str(raw))
        relative = not os.path.isabs(pattern)
        # The base dir is literal: escape it so that a '[' in it is not taken as a glob character.
        full = os.path.join(glob.escape(str(base)), pattern) if relative else pattern
        where = f" (relative to {base})" if relative else ""
        if archives.is_archive(pattern) or any(archives.is_archive(part) for part in Path(pattern).parts):
            plain = pattern if not relative else os.path.join(str(base), pattern)
            globs = archives.expand_pattern(plain, key=key, root=archive_root, cache=cache, limits=limits)
        else:
            globs = [full]
        matches = []
        for g in globs:
            m, lo, al = globbing._glob(g)
            matches += m
            loops += [(raw, *x) for x in lo]
            linked += [(raw, *x) for x in al]
        if not matches:
            raise DataError(f"{key}: pattern '{raw}' matches no file{where}")
        files = [m for m in matches if not os.path.isdir(m)]
        if not files:
            raise DataError(
                f"{key}: pattern '{raw}' matches only directories{where}; "
                f"match the images, e.g. '{os.path.join(str(raw), '**', '*.png')}'"
            )
        images = [f for f in files if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        if not images:
            raise DataError(
                f"{key}: pattern '{raw}' matches {len(files)} file(s) but no image "
                f"({' '.join(IMAGE_SUFFIXES)}){where}; first: {min(files)}"
            )
        found.update(os.path.abspath(f) for f in images)
    if say is not None:
        globbing._report_links(key, loops, linked, say)
    return _dedupe(found, key, say)


def _png_zero_dimension(image: Path, head: bytes | None = None) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR if one of them is 0 (Pillow refuses to identify such a file)."""
    if head is None:
        try:
            with open(image, "rb") as f:
                head = f.read(24)
        except OSError:
            return None
    head = head[:24]
    if len(head) == 24 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if width == 0 or height == 0:
            return width, height
    return None


def probe_image(image: Path, raw: bytes | None = None) -> tuple[int | None, int | None, str | None]:
    """(width, height, problem) of a line image; problem is None when it can be used as a line.

    PNG: header + chunk CRCs (``verify()``); other formats: a full decode. ``raw``: the file's bytes when the
    caller has read them already (e.g. to hash them), so the file is not read twice.
    """
    width = height = None
    try:
        with Image.open(io.BytesIO(raw) if raw is not None else image) as im:
            width, height = im.size
            if width == 0 or height == 0:
                return width, height, f"image has a zero dimension ({width}x{height})"
            if im.format == "PNG":
                im.verify()
            else:
                im.load()
    except FileNotFoundError:
        return None, None, "image file does not exist (broken link?)"
    except UnidentifiedImageError:
        size = _png_zero_dimension(image, raw)
        if size is not None:
            return size[0], size[1], f"image has a zero dimension ({size[0]}x{size[1]})"
        return None, None, "image does not decode (not a readable image file)"
    except OSError as exc:
        if exc.filename is not None and exc.strerror:  # an OS-level read error, not a decoder error
            return width, height, f"cannot read image: {exc.strerror}"
        return width, height, f"image does not decode ({exc})"
    except Exception as exc:  # noqa: BLE001 - Pillow also raises SyntaxError, ValueError, zlib.error
        return width, height, f"image does not decode ({type(exc).__name__}: {exc})"
    return width, height, None


def _image_problem(image: Path) -> str | None:
    """Why the image cannot be used as a line, or None. PNG: header + chunk CRCs; other formats: decode."""
    return probe_image(image)[2]


def _check_line(image: Path, check_images: bool) -> tuple[str | None, str | None]:
    """(normalized GT, None) for a valid line, (None, reason) for an invalid one."""
    gt = gt_path(image)
    try:
        raw = gt.read_bytes()
    except FileNotFoundError:
        return None, f"no ground truth file {gt}"
    except OSError as exc:
        return None, f"cannot read ground truth file {gt}: {exc.strerror or exc}"
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (
            f"ground truth file {gt} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        )
    text = unicodedata.normalize("NFC", decoded).strip()
    if not text:
        what = "empty" if not decoded else "whitespace-only"
        return None, f"{what} ground truth file {gt}"
    if check_images:
        problem = _image_problem(image)
        if problem is not None:
            return None, problem
    return text, None


def check_lines(
    images: Sequence[Path], *, key: str, skip_invalid: bool, check_images: bool = True
) -> LineSet:
    """Check every line: its ``.gt.txt`` exists, is UTF-8 and not empty/whitespace-only; its image decodes.

    ``skip_invalid=False``: raise :class:`DataError` naming the first invalid line (in sorted order), its
    problem and how many more there are. ``skip_invalid=True``: return the invalid lines in
    :attr:`LineSet.skipped`; raise only if no valid line remains. ``check_images=False`` checks the GT only.
    """
    paths = sorted({Path(os.path.abspath(p)) for p in images})
    if not paths:
        raise DataError(f"{key}: no lines given")
    valid: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    n_chars = 0
    charset: set[str] = set()
    for image in paths:
        text, reason = _check_line(image, check_images)
        if reason is not None:
            skipped.append((image, reason))
            continue
        valid.append(image)
        n_chars += len(text)
        charset.update(text)
    if skipped and not skip_invalid:
        first, reason = skipped[0]
        n = len(skipped)
        raise DataError(f"{key}: {n} invalid line{'s' if n > 1 else ''}; first: {first}: {reason}")
    if not valid:
        first, reason = skipped[0]
        raise DataError(
            f"{key}: no valid line: all {len(skipped)} lines are invalid; first: {first}: {reason}"
        )
    return LineSet(images=tuple(valid), n_chars=n_chars, charset=frozenset(charset), skipped=tuple(skipped))


def _identity(path: Path) -> tuple[int, int] | str:
    """The file's (device, inode): a symlink or hard link to a file is that file; else its absolute path."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return st.st_dev, st.st_ino


def _overlap(train: Sequence[Path], val: Sequence[Path]) -> str | None:
    """A message naming the first validation line that is also a training line, or None.

    Compared by file identity (a symlink or hard link to a training image is that image) and by
    ground-truth file (``a.bin.png`` and ``a.nrm.png`` share ``a.gt.txt``: they are the same line).
    """
    train_images = {_identity(p): p for p in train}
    train_gts = {_identity(gt_path(p)): p for p in train}
    for image in val:
        other = train_images.get(_identity(image))
        if other is not None:
            also = "" if other == image else f" (as {other})"
            return f"data.val: {image} is also in data.train{also}; validation lines must be held out"
        gt = gt_path(image)
        other = train_gts.get(_identity(gt))
        if other is not None:
            return (
                f"data.val: {image} has the same ground truth {gt} as {other} in data.train; "
                f"validation lines must be held out"
            )
    return None


def load_lines(
    train: Sequence[str], val: Sequence[str], *, base: Path, skip_invalid: bool
) -> tuple[LineSet, LineSet]:
    """Resolve and check ``data.train`` and ``data.val``; they must not share a line.

    The overlap is checked on the resolved paths before any image is read, so it fails fast.
    """
    train_images = resolve(train, key="data.train", base=base)
    val_images = resolve(val, key="data.val", base=base)
    message = _overlap(train_images, val_images)
    if message is not None:
        raise DataError(message)
    return (
        check_lines(train_images, key="data.train", skip_invalid=skip_invalid),
        check_lines(val_images, key="data.val", skip_invalid=skip_invalid),
    )
