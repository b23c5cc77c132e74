"""Pair and content checks of the line ground truth, each with its own action: fail, warn or drop the line.

:func:`scan` reads every line once (GT bytes, image bytes; hashes both, decodes/verifies the image; image
facts come from :class:`~hsbcala.data.hashcache.HashCache` when the file is unchanged) and :func:`evaluate`
applies the checks with the actions of ``data.checks.*``:

============================ =================================================== ================ ===========
check                        finds                                               actions          default
============================ =================================================== ================ ===========
``missing_gt``               an image without its ``.gt.txt`` (or unreadable)    fail, drop       fail
``missing_image``            a ``.gt.txt`` without an image, beside the images   fail, warn, drop fail
``bad_encoding``             a ``.gt.txt`` that is not valid UTF-8               fail, drop       fail
``bad_image``                an image that does not decode, or is 0 px wide/high fail, drop       fail
``empty_gt``                 an empty or whitespace-only ``.gt.txt``             fail, drop       drop
``multi_line``               a ``.gt.txt`` with more than one line of text       fail, warn, drop warn
``too_narrow``               fewer than ``data.min_px_per_char`` px per char     fail, warn, drop warn
                             (or too narrow for the engines' own CTC rule)
``too_wide``                 wider than ``data.max_line_width`` at height 48     fail, warn, drop drop
``too_small``                less than ``data.min_image_px`` px wide or high     fail, warn, drop drop
``mixed_normalization``      lines not in NFC while others are (NFC/NFD mixed)   fail, warn, drop warn
``whitelist``                characters outside ``data.whitelist(_file)``        fail, warn, drop warn
``invisible_chars``          characters the engines delete before training and   fail, warn       warn
                             evaluation: a UTF-8 byte-order mark (U+FEFF), zero-
                             width (non-)joiners, soft hyphens … (bidi class BN)
============================ =================================================== ================ ===========

A line that cannot be trained on at all (the first five rows but ``missing_image``) cannot be kept with a
warning. A ``.gt.txt`` without image is no line the engines would see, so ``warn`` and ``drop`` both leave it out;
``drop`` says so as a drop does: counted in the console's "N dropped", in ``skipped_lines`` and listed in the
manifest's ``dropped`` (as ``{"gt", "check"}``), which is what a user reaches for with ref_AS's one orphan.
``train.skip_invalid=false`` turns every ``drop`` into ``fail``: nothing is left out silently.

``invisible_chars`` reports what both engines do silently: their bidi pre-processing deletes these characters
(:func:`hsbcala.engines.text.remove_invisible`, with the sources), so a BOM written by an editor costs nothing, but a
zero-width joiner or soft hyphen that a transcriber put in on purpose is never learnt. ``Line.text`` is the
text without them, as the engines see it (and as the manifest, the codec report and the CER count it).

``mixed_normalization`` reports the lines whose GT is not in NFC when other lines are
(lines of plain ASCII are both and count for neither side); the engines normalise to NFC themselves, so
this is a sign of inconsistent transcription tools rather than a training error.

The size checks (``too_small``, ``too_wide``, ``too_narrow``), with what the engines drop and why hsbcala checks
it, read in the installed engines' sources (file:line): :mod:`hsbcala.data.linesize`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsbcala.core.errors import ConfigError
from hsbcala.data import linesize
from hsbcala.data import resolve as data
from hsbcala.data.hashcache import HashCache
from hsbcala.engines import text as engine_text

MAX_IMAGE_BYTES = 128 << 20  # a line image larger than this is not read (a bomb, not a line)
MAX_GT_BYTES = 1 << 20  # a .gt.txt larger than this is not a line's text and is not read

# check -> (what it finds, allowed actions, default action)
CHECKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "missing_gt": ("image without .gt.txt", ("fail", "drop"), "fail"),
    "missing_image": (".gt.txt without image", ("fail", "warn", "drop"), "fail"),
    "bad_encoding": ("GT not valid UTF-8", ("fail", "drop"), "fail"),
    "bad_image": ("image does not decode / zero dimension", ("fail", "drop"), "fail"),
    "empty_gt": ("empty or whitespace-only GT", ("fail", "drop"), "drop"),
    "multi_line": ("multi-line GT", ("fail", "warn", "drop"), "warn"),
    "too_narrow": ("image too narrow for its text", ("fail", "warn", "drop"), "warn"),
    "too_wide": ("line wider than the engine's limit", ("fail", "warn", "drop"), "drop"),
    "too_small": ("image too small to show a line", ("fail", "warn", "drop"), "drop"),
    "mixed_normalization": ("GT not in NFC while other lines are", ("fail", "warn", "drop"), "warn"),
    "whitelist": ("characters outside the whitelist", ("fail", "warn", "drop"), "warn"),
    "invisible_chars": (
        "characters the engines delete (BOM, zero-width, soft hyphen)",
        ("fail", "warn"),
        "warn",
    ),
}
FIRST = 5  # offending paths kept per check in reports


@dataclass
class Line:
    """One line as read from disk (image + GT). ``problem`` is set when the line cannot be trained on."""

    image: Path
    gt: Path
    key: str  # data.train | data.val: where it came from
    text: str | None = (
        None  # GT decoded, invisible characters deleted and stripped (as the engines do), not NFC
    )
    invisible: tuple[str, ...] = ()  # the characters the engines delete (BOM, zero-width …), as found
    gt_sha256: str | None = None
    image_sha256: str | None = None
    image_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    problem: tuple[str, str] | None = None  # (check, reason)

    @property
    def nfc(self) -> str:
        return unicodedata.normalize("NFC", self.text or "")


def validate_config(cfg: Any) -> None:
    """The semantic checks of ``data.*`` a schema cannot express (called from :func:`hsbcala.config.schema.check`)."""
    d = cfg.data
    for name, (_, allowed, _) in CHECKS.items():
        action = d.checks[name]
        if action not in allowed:
            extra = (
                " (such a line cannot be trained on, so it cannot be kept with a warning)"
                if action == "warn"
                else ""
            )
            raise ConfigError(
                f"data.checks.{name}={str(action)!r} is not one of: {', '.join(allowed)}{extra}"
            )
    for name in (
        "min_px_per_char",
        "min_image_px",
        "max_line_width",
        "archive_max_bytes",
        "archive_max_ratio",
    ):
        if d[name] < 0:
            raise ConfigError(f"data.{name} must be >= 0 (0: no limit/check), got {d[name]}")
    s = d.split
    if not 0 < s.val_fraction < 1:
        raise ConfigError(
            f"data.split.val_fraction must be between 0 and 1 (exclusive), got {s.val_fraction}"
        )
    if s.by == "pattern":
        import re

        if not s.pattern:
            raise ConfigError(
                "data.split.pattern is required when data.split.by=pattern, e.g. "
                "data.split.pattern='^([^/]+)/' (the first directory below the data's common root)"
            )
        try:
            re.compile(s.pattern)
        except re.error as exc:
            raise ConfigError(
                f"data.split.pattern={s.pattern!r} is not a regular expression: {exc}"
            ) from None
    if d.whitelist_file and not Path(d.whitelist_file).is_file():
        raise ConfigError(f"data.whitelist_file: no such file {d.whitelist_file}")


def actions(cfg: Any) -> dict[str, str]:
    """The effective action per check: ``data.checks.*``, with ``drop`` → ``fail`` when not skip_invalid."""
    out = {name: str(cfg.data.checks[name]) for name in CHECKS}
    if not cfg.train.skip_invalid:
        out = {name: "fail" if a == "drop" else a for name, a in out.items()}
    return out


def whitelist(cfg: Any) -> frozenset[str] | None:
    """The allowed characters (NFC; space always allowed), or None when no whitelist is configured."""
    chars = cfg.data.whitelist or ""
    if cfg.data.whitelist_file:
        chars += Path(cfg.data.whitelist_file).read_text(encoding="utf-8").replace("\n", "").replace("\r", "")
    if not cfg.data.whitelist and not cfg.data.whitelist_file:
        return None
    return frozenset(unicodedata.normalize("NFC", chars)) | {" "}


# ------------------------------------------------------------------------------------------------- reading


def _read_gt(line: Line) -> None:
    try:
        with open(line.gt, "rb") as f:
            raw = f.read(MAX_GT_BYTES + 1)
    except FileNotFoundError:
        line.problem = ("missing_gt", f"no ground truth file {line.gt}")
        return
    except OSError as exc:
        line.problem = ("missing_gt", f"cannot read ground truth file {line.gt}: {exc.strerror or exc}")
        return
    if len(raw) > MAX_GT_BYTES:
        line.problem = (
            "missing_gt",
            f"ground truth file {line.gt} is over {MAX_GT_BYTES:,} bytes: not a line's text (not read)",
        )
        return
    line.gt_sha256 = hashlib.sha256(raw).hexdigest()
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = (
            f"ground truth file {line.gt} is not valid UTF-8 "
            f"(byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        )
        line.problem = ("bad_encoding", reason)
        return
    line.invisible = tuple(engine_text.invisible(decoded))
    line.text = engine_text.remove_invisible(decoded).strip() if line.invisible else decoded.strip()
    if not unicodedata.normalize("NFC", line.text).strip():
        line.problem = (
            "empty_gt",
            f"{'empty' if not decoded else 'whitespace-only'} ground truth file {line.gt}",
        )


def _read_image(line: Line, cache: HashCache) -> None:
    try:
        st = os.stat(line.image)
    except FileNotFoundError:
        line.problem = ("bad_image", "image file does not exist (broken link?)")
        return
    except OSError as exc:
        line.problem = ("bad_image", f"cannot read image: {exc.strerror or exc}")
        return
    if not stat.S_ISREG(st.st_mode):
        line.problem = ("bad_image", "not a regular file")
        return
    if st.st_size > MAX_IMAGE_BYTES:
        line.problem = (
            "bad_image",
            f"image file is {st.st_size:,} bytes, over the {MAX_IMAGE_BYTES:,} a line image can be (not read)",
        )
        return
    entry = cache.get(line.image, st)
    if entry is None:
        try:
            with open(line.image, "rb") as f:
                raw = f.read()
        except OSError as exc:
            line.problem = ("bad_image", f"cannot read image: {exc.strerror or exc}")
            return
        width, height, problem = data.probe_image(line.image, raw)
        entry = {"sha256": hashlib.sha256(raw).hexdigest(), "w": width, "h": height, "problem": problem}
        cache.put(line.image, st, entry)
    line.image_sha256, line.width, line.height = entry["sha256"], entry["w"], entry["h"]
    line.image_bytes = st.st_size
    if entry["problem"]:
        line.problem = ("bad_image", entry["problem"])


def _gt_path(image: Path) -> Path:
    """:func:`hsbcala.data.resolve.gt_path` (Calamari's rule: cut the name at its first dot), on strings: faster."""
    directory, name = os.path.split(os.fspath(image))
    return Path(os.path.join(directory, name.split(".", 1)[0] + data.GT_SUFFIX))


def scan(images: Iterable[Path], *, key: str, cache: HashCache) -> list[Line]:
    """Read and hash every line (sorted, absolute); GT problems first, then the image (as the engines do)."""
    lines = []
    for image in sorted(
        {p if isinstance(p, Path) and p.is_absolute() else Path(os.path.abspath(p)) for p in images},
        key=os.fspath,
    ):
        line = Line(image=image, gt=_gt_path(image), key=key)
        _read_gt(line)
        if line.problem is None:
            _read_image(line, cache)
        lines.append(line)
    return lines


def orphan_gts(images: Iterable[Path]) -> list[Path]:
    """``.gt.txt`` files without any image beside them, in the directories of ``images``."""
    orphans: list[Path] = []
    for directory in map(Path, sorted({os.path.dirname(os.fspath(p)) for p in images})):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        gts = {n for n in names if n.endswith(data.GT_SUFFIX)}
        has_image = {
            n.split(".", 1)[0] + data.GT_SUFFIX
            for n in names
            if os.path.splitext(n)[1].lower() in data.IMAGE_SUFFIXES
        }
        orphans += [directory / n for n in sorted(gts - has_image)]
    return orphans


# ---------------------------------------------------------------------------------------------- evaluating


@dataclass
class Finding:
    check: str
    action: str  # effective action (after train.skip_invalid)
    items: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, reason, key)

    def summary(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "count": len(self.items),
            "first": [{"path": str(p), "reason": r} for p, r, _ in self.items[:FIRST]],
        }


@dataclass
class Outcome:
    """The checks' verdict: the lines to train on, the dropped ones, every finding per check."""

    kept: list[Line]
    dropped: list[tuple[Line, str]]  # (line, check)
    findings: dict[str, Finding]
    dropped_gts: list[Path] = field(default_factory=list)  # .gt.txt files without image (missing_image=drop)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.action == "fail" and f.items]

    @property
    def warned(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.action in ("warn", "drop") and f.items]

    def error_message(self, skip_invalid: bool = True) -> str | None:
        """One line naming the first failing check's key, count and first file; None if nothing failed."""
        failed = self.failed
        if not failed:
            return None
        f = failed[0]
        path, reason, key = f.items[0]
        n = len(f.items)
        what = CHECKS[f.check][0]
        via = " with train.skip_invalid=false" if not skip_invalid else ""
        msg = f"{key}: {n} × {what} (data.checks.{f.check}=fail{via}); first: {path}: {reason}"
        more = sum(len(x.items) for x in failed[1:])
        if more:
            msg += (
                f"; and {more} more problem(s): "
                + ", ".join(f"{x.check} {len(x.items)}" for x in failed[1:])
                + " (python train.py … data_check_only=true lists them)"
            )
        return msg

    def report(self) -> dict[str, Any]:
        return {name: f.summary() for name, f in self.findings.items()}


def _whitelist_reason(text: str, allowed: frozenset[str]) -> str | None:
    bad = sorted(set(text) - allowed)
    if not bad:
        return None
    shown = " ".join(f"{c!r} (U+{ord(c):04X})" for c in bad[:8])
    return f"characters outside the whitelist: {shown}{' …' if len(bad) > 8 else ''}"


def evaluate(
    lines: Sequence[Line],
    orphans: Sequence[tuple[Path, str]],
    *,
    actions: dict[str, str],
    min_px_per_char: float,
    allowed: frozenset[str] | None,
    max_line_width: int = 4096,
    min_image_px: int = 8,
) -> Outcome:
    """Apply every check to the scanned lines; dropped lines leave ``kept``; nothing raises here.

    ``max_line_width``: Calamari 2's limit on the padded width at line height 48 (0: no check);
    ``min_image_px``: the smallest width and height of a line image (0: no check)."""
    findings = {name: Finding(name, actions[name]) for name in CHECKS}
    for gt, key in orphans:
        findings["missing_image"].items.append((gt, f"{gt.name} has no image beside it", key))
    usable = []
    for line in lines:
        if line.problem is not None:
            check, reason = line.problem
            findings[check].items.append((line.image, reason, line.key))
        else:
            usable.append(line)

    soft: dict[int, list[str]] = {}  # id(line) -> soft checks it failed

    def hit(check: str, line: Line, reason: str) -> None:
        findings[check].items.append((line.image, reason, line.key))
        soft.setdefault(id(line), []).append(check)

    composed = 0
    not_nfc: list[Line] = []
    for line in usable:
        text = line.text or ""
        if line.invisible:
            shown = " ".join(f"U+{ord(c):04X}" for c in sorted(set(line.invisible)))
            hit(
                "invisible_chars",
                line,
                f"ground truth file {line.gt} holds {len(line.invisible)} character(s) the engines delete "
                f"({shown}{', a UTF-8 byte-order mark' if chr(0xFEFF) in line.invisible else ''})",
            )
        if "\n" in text or "\r" in text:
            n = len(text.splitlines())
            hit("multi_line", line, f"ground truth file {line.gt} has {n} lines of text")
        nfc = line.nfc
        if nfc != text:
            not_nfc.append(line)
        elif unicodedata.normalize("NFD", text) != text:
            composed += 1
        if line.width and line.height:
            for check, reason in linesize.problems(
                line.width, line.height, nfc, min_px_per_char, max_line_width, min_image_px
            ):
                hit(check, line, reason)
        if allowed is not None:
            reason = _whitelist_reason(nfc, allowed)
            if reason:
                hit("whitelist", line, reason)
    if not_nfc and composed:
        for line in not_nfc:
            hit(
                "mixed_normalization",
                line,
                f"ground truth file {line.gt} is not in NFC (NFD or mixed), "
                f"while {composed} other lines are NFC",
            )

    kept: list[Line] = []
    dropped: list[tuple[Line, str]] = []
    for line in lines:
        if line.problem is not None:
            if actions[line.problem[0]] == "drop":
                dropped.append((line, line.problem[0]))
            continue
        drop = next((c for c in soft.get(id(line), []) if actions[c] == "drop"), None)
        if drop:
            dropped.append((line, drop))
        else:
            kept.append(line)
    for f in findings.values():
        f.items.sort(key=lambda item: str(item[0]))
    dropped_gts = (
        [gt for gt, _, _ in findings["missing_image"].items] if actions["missing_image"] == "drop" else []
    )
    return Outcome(kept=kept, dropped=dropped, findings=findings, dropped_gts=dropped_gts)
