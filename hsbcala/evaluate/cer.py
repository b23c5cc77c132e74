"""Character error rate: text normalisation, Levenshtein alignment (rapidfuzz), confusions, sums over lines.

CER = (substitutions + deletions + insertions) / number of GT characters, both summed over all lines of a set
(not an average of per-line rates), after the same normalisation of GT and prediction. This is the figure
``calamari-eval`` prints as "mean normalized label error rate" (read from calamari_ocr 1.0.7 and 2.3.1,
``ocr/evaluator.py``): it sums the edit distances of the ``edit_distance`` package (unit costs) and divides by
the summed GT lengths, both taken after the engine's default text pre-processing of GT *and* prediction:

- Calamari 2 (``default_text_pre_processors``): bidi reordering, ``strip()``, Unicode NFC, then the ``spaces``
  rule set: every run of whitespace becomes one space, line breaks are removed, leading/trailing whitespace
  is dropped.
- Calamari 1 (``DefaultTextPreprocessor``): the same, plus its "simple" regulariser rules applied before the
  whitespace rules: ``µ``→``μ`` (micro sign to Greek mu), ``–`` and ``—`` (en/em dash) → ``-``.

:data:`RULES` names these two normalisations (``calamari2``, ``calamari1``); each engine's ``eval_rules`` says which one
each version's calamari-eval uses. Bidi reordering is not applied here: it changes no order in left-to-right
text (Latin, Fraktur), which is all this project evaluates. But it does DELETE characters, and that is applied
(:func:`remove_invisible`): python-bidi (0.4.2 in Calamari 2's environment, 0.6.12 in Calamari 1's) drops, by
rule X9 of the Unicode bidi algorithm, every character of bidi class BN (the byte-order mark U+FEFF, zero-width
space U+200B, zero-width (non-)joiner U+200C/U+200D, soft hyphen U+00AD, C0/C1 controls other than tab and line
breaks) and the embedding controls LRE, RLE, LRO, RLO, PDF (checked: all 186 such code points, ``"a" + c + "b"``
→ ``"ab"`` in both environments). Both engines read a ``.gt.txt`` with ``codecs.open(path, "r", "utf-8")``
(calamari_ocr 2.3.1 ``ocr/dataset/datareader/file.py:186``, 1.0.7 ``ocr/datasets/file_dataset.py:40``), which keeps
a leading BOM as U+FEFF; the bidi step removes it before ``strip()``. So a GT starting with a BOM costs no error in
calamari-eval (0 / 10 for ``\ufeffHač na puć`` against ``Hač na puć``) and, since the training pre-processing is
the same, the engines never train on it either. The isolates (LRI, RLI, FSI, PDI) make python-bidi fail with an
assertion in both versions; they are left as they are.

The alignment is rapidfuzz's ``Levenshtein.opcodes`` (C; common prefix and suffix cut off, then Hyyrö's
bit-parallel algorithm, O(⌈m/64⌉·n)): unit costs, so the distance, hence every error count and CER, is exactly
that of a full Levenshtein matrix.

A *confusion* is a pair ``GT segment → predicted segment`` (``rn`` → ``m``, ``ſ`` → ``f``, ``e`` → ``""`` for a
deletion), counted over all lines, grouped exactly as ``calamari-eval`` groups them (1.0.7 and 2.3.1 alike,
``ocr/evaluator.py`` → ``text_synchronizer.synchronize``): not along the Levenshtein path, but by splitting both
texts recursively at their longest common substring (the earliest in GT, then in the prediction, on ties) and
taking what is left unmatched between two such anchors as one confusion. That is what ``difflib.SequenceMatcher``
(without its junk heuristic) computes: on 20,000 random pairs its non-equal opcodes were identical to
Calamari's ``synchronize`` (checked in Calamari 2.3.1's environment). Before this, confusions were the runs of
edits along the Levenshtein path, which split the same errors differently: on one tiny model's predictions
``n`` → ``""`` counted 301 there against calamari-eval's 154, because a path cuts long garbled stretches into
many single-character runs where the longest-common-substring split keeps them whole (the CER agreed exactly:
only the grouping differed). The per-character figures of :mod:`hsbcala.evaluate.charclasses` (what a GT character was
read as) still follow the Levenshtein path, one character against one.

Where several optimal Levenshtein paths exist, which one is reported is a matter of tie-breaking, and it
changed with rapidfuzz. The pure-Python matrix used before (up to commit 7ef4640) walked back from the end
preferring the diagonal (match or substitution), then deletion, then insertion; rapidfuzz walks back preferring
deletion, then insertion, then the diagonal. So on ties the split of the same total into substitutions /
deletions / insertions can differ: a transposition ``ab`` → ``ba`` was 2 substitutions; now it is an insertion
and a deletion around the matched ``a``. On 3,000 real GT lines with about 7 % random edits (tests/test_cer.py,
bench/cer_speed.py) the split changed on 66 lines: substitutions 4,611 → 4,477, deletions 2,953 → 3,020,
insertions 2,771 → 2,838; the 10,335 errors are the same, line by line.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

# The engines' text pre-processing (hsbcala.engines.text), used by every CER here; names kept for callers
from hsbcala.engines.text import (  # noqa: F401
    DESCRIPTION,
    INVISIBLE_BIDI_CLASSES,
    RULES,
    invisible,
    normalize,
    remove_invisible,
)


@dataclass(frozen=True)
class Alignment:
    """The edit operations turning a GT line into the prediction."""

    substitutions: int
    deletions: int
    insertions: int
    confusions: tuple[tuple[str, str], ...]  # (GT segment, predicted segment), grouped as calamari-eval does
    #: the alignment itself, rapidfuzz's opcodes (tag, gt start, gt end, pred start, pred end), for the
    #: per-character figures of :mod:`hsbcala.evaluate.charclasses`
    ops: tuple[tuple[str, int, int, int, int], ...] = ()

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def align(gt: str, pred: str) -> Alignment:
    """Levenshtein alignment (unit costs) of two strings, with the confusions along one optimal path."""
    subs = dels = inss = 0
    ops = tuple(tuple(op) for op in Levenshtein.opcodes(gt, pred))
    # Ties among optimal paths are broken rapidfuzz's way (deletion, insertion, then diagonal), not the
    # old DP's (diagonal first): same total, but the S/D/I split may differ (see the module doc).
    for tag, g1, g2, p1, p2 in ops:
        if tag == "replace":
            subs += g2 - g1
        elif tag == "delete":
            dels += g2 - g1
        elif tag == "insert":
            inss += p2 - p1
    return Alignment(subs, dels, inss, confusions(gt, pred) if ops and gt != pred else (), ops)


def confusions(gt: str, pred: str) -> tuple[tuple[str, str], ...]:
    """The confusions of one line as calamari-eval groups them (its ``synchronize``: recursive longest common
    substring, earliest first); see the module doc."""
    sm = difflib.SequenceMatcher(None, gt, pred, autojunk=False)
    return tuple((gt[i1:i2], pred[j1:j2]) for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag != "equal")


def distance(gt: str, pred: str) -> int:
    """The edit distance (S + D + I) of two strings."""
    return Levenshtein.distance(gt, pred)


@dataclass
class Score:
    """Summed errors over lines; :attr:`cer` = errors / GT characters."""

    lines: int = 0
    chars: int = 0
    errors: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    confusions: Counter = field(default_factory=Counter)

    def add(self, gt: str, al: Alignment) -> None:
        self.lines += 1
        self.chars += len(gt)
        self.errors += al.errors
        self.substitutions += al.substitutions
        self.deletions += al.deletions
        self.insertions += al.insertions
        self.confusions.update(al.confusions)

    @property
    def cer(self) -> float | None:
        """None when there are no GT characters (no rate can be given)."""
        return self.errors / self.chars if self.chars else None

    def summary(self) -> dict:
        return {
            "lines": self.lines,
            "chars": self.chars,
            "errors": self.errors,
            "cer": self.cer,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
        }


def score(pairs: Iterable[tuple[str, str]], rules: str = "calamari2") -> Score:
    """The summed score of (GT, prediction) pairs of raw texts, normalised with ``rules``."""
    s = Score()
    for gt, pred in pairs:
        g, p = normalize(gt, rules), normalize(pred, rules)
        s.add(g, align(g, p))
    return s
