"""Character error rate: text normalisation, Levenshtein alignment, confusions, sums over lines (pure Python).

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

:data:`RULES` names these two normalisations (``calamari2``, ``calamari1``); :data:`ENGINE_RULES` says which one
each version's calamari-eval uses. Bidi reordering is not applied here: it changes nothing in left-to-right
text (Latin, Fraktur), which is all this project evaluates.

The alignment is a full Levenshtein matrix over what remains after the common prefix and suffix are cut off
(that leaves the distance unchanged and makes good predictions cheap). A *confusion* is a maximal run of
consecutive edit operations between two matches, as one pair ``GT segment → predicted segment`` (``rn`` →
``m``, ``ſ`` → ``f``, ``e`` → ``""`` for a deletion), counted over all lines; Calamari's own confusion table
(``synchronize``) groups errors the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

_SPACES = (
    (re.compile(r"(?u)\s+"), " "),
    (re.compile(r"(?u)\n"), ""),
    (re.compile(r"(?u)^\s+"), ""),
    (re.compile(r"(?u)\s+$"), ""),
)
_CALAMARI1_VARIOUS = (("µ", "μ"), ("–", "-"), ("—", "-"))

#: normalisation name -> (plain replacements applied after NFC, before the whitespace rules)
RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "calamari2": (),
    "calamari1": _CALAMARI1_VARIOUS,
}
#: what each Calamari version's calamari-eval applies
ENGINE_RULES = {"cala1": "calamari1", "cala2": "calamari2"}

DESCRIPTION = {
    "calamari2": "NFC, whitespace runs to one space, stripped (as calamari-eval 2.3.1)",
    "calamari1": "NFC, µ→μ, en/em dash→-, whitespace runs to one space, stripped (as calamari-eval 1.0.7)",
}


def normalize(text: str, rules: str = "calamari2") -> str:
    """The text as calamari-eval compares it (see the module doc for each rule set)."""
    text = unicodedata.normalize("NFC", text.strip())
    for old, new in RULES[rules]:
        text = text.replace(old, new)
    for pattern, new in _SPACES:
        text = pattern.sub(new, text)
    return text


@dataclass(frozen=True)
class Alignment:
    """The edit operations turning a GT line into the prediction."""

    substitutions: int
    deletions: int
    insertions: int
    confusions: tuple[tuple[str, str], ...]  # (GT segment, predicted segment) per run of errors

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def align(gt: str, pred: str) -> Alignment:
    """Levenshtein alignment (unit costs) of two strings, with the confusions along one optimal path."""
    start = 0
    limit = min(len(gt), len(pred))
    while start < limit and gt[start] == pred[start]:
        start += 1
    end_gt, end_pred = len(gt), len(pred)
    while end_gt > start and end_pred > start and gt[end_gt - 1] == pred[end_pred - 1]:
        end_gt -= 1
        end_pred -= 1
    a, b = gt[start:end_gt], pred[start:end_pred]
    if not a and not b:
        return Alignment(0, 0, 0, ())
    if not a:
        return Alignment(0, 0, len(b), (("", b),))
    if not b:
        return Alignment(0, len(a), 0, ((a, ""),))

    m, n = len(a), len(b)
    rows = [list(range(n + 1))]
    for i in range(1, m + 1):
        prev = rows[-1]
        row = [i] + [0] * n
        ai = a[i - 1]
        for j in range(1, n + 1):
            sub = prev[j - 1] + (ai != b[j - 1])
            dele = prev[j] + 1
            ins = row[j - 1] + 1
            row[j] = sub if sub <= dele and sub <= ins else min(dele, ins)
        rows.append(row)

    # Walk back along one optimal path (diagonal first, then deletion, then insertion).
    subs = dels = inss = 0
    confusions: list[tuple[str, str]] = []
    run_gt: list[str] = []
    run_pred: list[str] = []

    def close_run() -> None:
        if run_gt or run_pred:
            confusions.append(("".join(reversed(run_gt)), "".join(reversed(run_pred))))
            run_gt.clear()
            run_pred.clear()

    i, j = m, n
    while i > 0 or j > 0:
        here = rows[i][j]
        if i > 0 and j > 0 and rows[i - 1][j - 1] + (a[i - 1] != b[j - 1]) == here:
            if a[i - 1] == b[j - 1]:
                close_run()
            else:
                subs += 1
                run_gt.append(a[i - 1])
                run_pred.append(b[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and rows[i - 1][j] + 1 == here:
            dels += 1
            run_gt.append(a[i - 1])
            i -= 1
        else:
            inss += 1
            run_pred.append(b[j - 1])
            j -= 1
    close_run()
    confusions.reverse()
    return Alignment(subs, dels, inss, tuple(confusions))


def distance(gt: str, pred: str) -> int:
    """The edit distance (S + D + I) of two strings."""
    return align(gt, pred).errors


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
        return {"lines": self.lines, "chars": self.chars, "errors": self.errors, "cer": self.cer,
                "substitutions": self.substitutions, "deletions": self.deletions, "insertions": self.insertions}


def score(pairs: Iterable[tuple[str, str]], rules: str = "calamari2") -> Score:
    """The summed score of (GT, prediction) pairs of raw texts, normalised with ``rules``."""
    s = Score()
    for gt, pred in pairs:
        g, p = normalize(gt, rules), normalize(pred, rules)
        s.add(g, align(g, p))
    return s
