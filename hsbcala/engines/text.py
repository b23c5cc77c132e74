"""What the engines do to a line's text before they train on it or compare it: the bidi step's deletions, NFC,
each version's replacements and whitespace rules (its calamari-eval normalisation).

The data step counts characters with it (the codec report), the checks report the characters it deletes, and
the CER compares GT and prediction after it; the sources it follows are cited in :mod:`hsbcala.evaluate.cer`.
It lives with the engines because it is their behaviour, read from their code: a third version brings its own
rules through its Engine (``eval_rules``, ``eval_replacements``).
"""

from __future__ import annotations

import re
import unicodedata

from hsbcala import engines

_SPACES = (
    (re.compile(r"(?u)\s+"), " "),
    (re.compile(r"(?u)\n"), ""),
    (re.compile(r"(?u)^\s+"), ""),
    (re.compile(r"(?u)\s+$"), ""),
)
#: normalisation name -> (plain replacements applied after NFC, before the whitespace rules): each engine's
#: calamari-eval rules (Engine.eval_rules, .eval_replacements), and their description
RULES: dict[str, tuple[tuple[str, str], ...]] = {e.eval_rules: e.eval_replacements for e in engines.ALL}
DESCRIPTION = {e.eval_rules: e.eval_description for e in engines.ALL}


#: the bidi classes python-bidi deletes (rule X9; see the module doc)
INVISIBLE_BIDI_CLASSES = frozenset({"BN", "LRE", "RLE", "LRO", "RLO", "PDF"})


def invisible(text: str) -> list[str]:
    """The characters of ``text`` the engines' bidi step deletes (BOM, zero-width, soft hyphen …), in order."""
    return [c for c in text if unicodedata.bidirectional(c) in INVISIBLE_BIDI_CLASSES]


def remove_invisible(text: str) -> str:
    """``text`` without the characters the engines' bidi step deletes (first step of their pre-processing)."""
    if text.isascii() and text.isprintable():  # the common case, and no ASCII printable character is BN
        return text
    return "".join(c for c in text if unicodedata.bidirectional(c) not in INVISIBLE_BIDI_CLASSES)


def normalize(text: str, rules: str = "calamari2") -> str:
    """The text as calamari-eval compares it (see the module doc for each rule set)."""
    text = unicodedata.normalize("NFC", remove_invisible(text).strip())
    for old, new in RULES[rules]:
        text = text.replace(old, new)
    for pattern, new in _SPACES:
        text = pattern.sub(new, text)
    return text
