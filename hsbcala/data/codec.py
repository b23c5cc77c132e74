"""The codec report: the characters of the ground truth against the codec of the warm-start model.

Both engines compute the codec from the GT of the training AND validation lines (Calamari 2:
``Codec.from_input_dataset([train, val])``; Calamari 1: ``[dataset, validation_dataset]``), after their own
text processing (both normalise to NFC; Calamari 1's default regularisation also maps some quotes and dashes
to ASCII look-alikes, so its codec can be a little smaller than this report's). Loading the model they align
the two (``Codec.align``): characters shared with the model keep their output, new ones are appended, and
with ``train.codec=recompute`` (Calamari 2 ``--codec.keep_loaded False``, Calamari 1's default) the model's
characters the GT never uses are DROPPED: the fine-tuned model can no longer output them.
``train.codec=keep_loaded`` keeps them all.

Fine-tuning Upper Sorbian on a German Fraktur model, the report shows ě č ć ř ł ń ź … as additions. Their
output weights start from scratch (``train.new_chars_init=random``) or as a copy of their base letter's
(``base``: ě ← e, ł ← l; :mod:`hsbcala.train.newchars`); :func:`annotate` records which, per added character.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hsbcala.core import fsutil

FORMAT = "hsbcala-codec-report/1"
REPORT_JSON = "codec-report.json"
REPORT_TXT = "codec-report.txt"


def show(c: str) -> str:
    """A character as printable text: marks, spaces and controls as U+XXXX."""
    if c == " ":
        return "␣"
    if unicodedata.category(c)[0] in "MZC":
        return f"U+{ord(c):04X}"
    return c


def _entry(c: str, counts: Counter | None = None) -> dict[str, Any]:
    e = {"char": c, "codepoint": f"U+{ord(c):04X}", "name": unicodedata.name(c, "?")}
    if counts is not None:
        e["count"] = counts[c]
    return e


def count_chars(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for t in texts:
        counts.update(unicodedata.normalize("NFC", t))
    return counts


def report(
    counts: Counter, model_charset: Iterable[str], *, model: str, model_version: int, policy: str
) -> dict[str, Any]:
    """What the configured codec policy will do with the model's codec, given the GT's character counts."""
    model_chars = [c for c in model_charset if c]
    in_model = set(model_chars)
    added = sorted((c for c in counts if c not in in_model), key=lambda c: (-counts[c], c))
    unused = [c for c in model_chars if c not in counts]
    shared = [c for c in model_chars if c in counts]
    size = len(shared) + len(added) if policy == "recompute" else len(model_chars) + len(added)
    if policy == "recompute":
        effect = (
            f"keeps {len(shared)} shared characters, adds {len(added)}, drops {len(unused)} the GT never "
            f"uses: codec of {size} characters"
        )
    else:
        effect = (
            f"keeps all {len(model_chars)} characters of the model and adds {len(added)}: codec of {size}"
        )
    return {
        "format": FORMAT,
        "model": model,
        "model_version": model_version,
        "model_codec_size": len(model_chars),
        "gt_charset_size": len(counts),
        "gt_chars": sum(counts.values()),
        "policy": policy,
        "added": [_entry(c, counts) for c in added],
        "unused": [_entry(c) for c in unused],
        "dropped": [_entry(c) for c in unused] if policy == "recompute" else [],
        "shared": [_entry(c, counts) for c in shared],
        "codec_size": size,
        "effect": effect,
    }


def annotate(r: dict[str, Any], found: Iterable[Any], mode: str) -> None:
    """Record where each added character's output weights start (``found``: :class:`hsbcala.train.newchars.Origin`)."""
    by_char = {o.char: o for o in found}
    r["new_chars_init"] = mode
    for e in r["added"]:
        o = by_char.get(e["char"])
        if o is not None:
            e["weights"] = o.describe()
            e["base"] = o.base


def _origins_line(r: dict[str, Any], width: int) -> str | None:
    if "new_chars_init" not in r or not r["added"]:
        return None
    copied = [e for e in r["added"] if e.get("base")]
    random_ = [show(e["char"]) for e in r["added"] if not e.get("base")]
    shown = "  ".join(f"{show(e['char'])}←{show(e['base'])}" for e in copied[:width])
    more = f"  … (+{len(copied) - width})" if len(copied) > width else ""
    line = f"  rows train.new_chars_init={r['new_chars_init']}: "
    if r["new_chars_init"] == "random":
        return line + "all new characters start random (Calamari's own initialisation)"
    line += f"copied {len(copied)}: {shown or '-'}{more}"
    return line + (f"; random (no base in the model's codec): {' '.join(random_)}" if random_ else "")


def short_table(r: dict[str, Any], width: int = 12) -> list[str]:
    """A few lines for the console, before training."""

    def chars(entries: list[dict[str, Any]], counts: bool) -> str:
        shown = [f"{show(e['char'])} {e['count']:,}" if counts else show(e["char"]) for e in entries[:width]]
        more = len(entries) - width
        return "  ".join(shown) + (f"  … (+{more})" if more > 0 else "")

    head = (
        f"codec: GT {r['gt_charset_size']} characters vs warm-start model {r['model']} "
        f"(Calamari {r['model_version']}, {r['model_codec_size']} characters); train.codec={r['policy']}"
    )
    out = [head]
    out.append(f"  new  {len(r['added']):>4}  {chars(r['added'], True) if r['added'] else '-'}")
    origins = _origins_line(r, width)
    if origins:
        out.append(origins)
    verb = "drop" if r["policy"] == "recompute" else "keep"
    unused = chars(r["unused"], False) if r["unused"] else "-"
    out.append(f"  {verb} {len(r['unused']):>4}  unused by the GT: {unused}")
    out.append(f"  → {r['effect']}")
    if r.get("excluded_lines"):  # data.exclude: their characters are not counted above
        out.append(f"  (without the {r['excluded_lines']:,} lines left out by data.exclude)")
    return out


def full_text(r: dict[str, Any]) -> str:
    lines = short_table(r, width=8)
    added = (
        "added (new outputs; weights: see each line)"
        if r.get("new_chars_init") == "base"
        else "added (new outputs, trained from scratch)"
    )
    for title, key in (
        (added, "added"),
        (
            "in the model, unused by the GT" + (" (DROPPED)" if r["policy"] == "recompute" else " (kept)"),
            "unused",
        ),
        ("shared", "shared"),
    ):
        lines += ["", f"{title}: {len(r[key])}"]
        for e in r[key]:
            count = f"{e['count']:>9,}" if "count" in e else " " * 9
            weights = f"  weights: {e['weights']}" if "weights" in e else ""
            lines.append(f"  {show(e['char']):<8} {e['codepoint']:<9} {count}  {e['name']}{weights}")
    return "\n".join(lines) + "\n"


def write(r: dict[str, Any], directory: Path) -> list[Path]:
    directory = Path(directory)
    # atomic: evaluation reads the JSON back (the warm-start model it names: hsbcala.evaluate.baseline)
    fsutil.atomic_write_text(directory / REPORT_JSON, json.dumps(r, ensure_ascii=False, indent=1) + "\n")
    fsutil.atomic_write_text(directory / REPORT_TXT, full_text(r))
    return [directory / REPORT_JSON, directory / REPORT_TXT]
