"""Which characters are read wrong: per-class CER, per-character recall and precision, the Sorbian letters, WER.

Pure. Built on the alignment :func:`hsbcala.evaluate.cer.align` already made for the CER (its rapidfuzz opcodes), after
the same normalisation, so nothing is aligned twice and the figures add up to the CER:

- a GT character is *read right* where the alignment matches it, otherwise it is substituted (read as the
  predicted character) or deleted (read as nothing, ``""``);
- **recall** of a character = its GT occurrences read right / its GT occurrences; **precision** = its predicted
  occurrences that match the same GT character / its predicted occurrences;
- **class CER** = (GT characters of the class not read right + inserted characters of the class) / GT
  characters of the class. Every substitution and deletion is counted in the class of its GT character and
  every insertion in the class of the inserted one, so the classes' errors sum to the set's errors and their
  CERs, weighted by GT characters, recombine to the overall CER.

Classes (the first that applies): ``sorbian`` (the configured letters, ``eval.sorbian_letters``; default
:data:`DEFAULT_SORBIAN`), ``letters`` (any other Unicode letter), ``digits`` (Unicode numbers),
``punctuation`` (Unicode punctuation and symbols), ``whitespace``, ``other`` (the rest: marks, controls).

The default Sorbian set is the Upper Sorbian alphabet's letters with caron, acute and stroke and their
capitals: ě č ć ř š ž ź ł ń ó (all ten occur in ``../shared/data/hsb-text/hsb_ud_sentences.txt``, ě being the
most frequent, 731 times in 644 sentences). Lower Sorbian's ŕ ś are not in it; add them with
``eval.sorbian_letters``.

**WER**: words are the normalised text split on whitespace; word errors are the Levenshtein distance of the
two word sequences (a word with any wrong character is one substitution), over the GT words.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

DEFAULT_SORBIAN = "ěčćřšžźłńóĚČĆŘŠŽŹŁŃÓ"
CLASSES = ("sorbian", "letters", "digits", "punctuation", "whitespace", "other")


def letters_of(spec: str | Sequence[str]) -> tuple[str, ...]:
    """The configured letters (a string, or a list of one-character strings), NFC, each once, in order.
    ValueError names a member that is not one character."""
    items = list(unicodedata.normalize("NFC", spec)) if isinstance(spec, str) else [str(x) for x in spec]
    out: dict[str, None] = {}
    for item in items:
        c = unicodedata.normalize("NFC", item)
        if len(c) != 1 or c.isspace():
            raise ValueError(f"{item!r} is not one character (after NFC)")
        out[c] = None
    return tuple(out)


def class_of(c: str, sorbian: frozenset[str] | set[str]) -> str:
    if c in sorbian:
        return "sorbian"
    if c.isspace():
        return "whitespace"
    cat = unicodedata.category(c)
    if cat[0] == "L":
        return "letters"
    if cat[0] == "N":
        return "digits"
    if cat[0] in "PS":
        return "punctuation"
    return "other"


def words(text: str) -> list[str]:
    return text.split()


def word_errors(gt: str, pred: str) -> tuple[int, int]:
    """(word edit distance, GT words) of two normalised lines."""
    g = words(gt)
    return Levenshtein.distance(g, words(pred)), len(g)


class CharStats:
    """Per-character counts over the aligned lines of a set (or group); figures on demand."""

    def __init__(self, sorbian: Iterable[str] = DEFAULT_SORBIAN) -> None:
        self.sorbian = tuple(sorbian)
        self._sorbian_set = frozenset(self.sorbian)
        self.gt = Counter()  # GT occurrences per character
        self.right = Counter()  # GT occurrences read right
        self.predicted = Counter()  # predicted occurrences
        self.inserted = Counter()  # predicted characters with no GT character
        self.misread: dict[str, Counter] = {}  # GT character -> what it was read as ("" = deleted)
        self.word_errors = 0
        self.words = 0

    def add(self, gt: str, pred: str, ops: Iterable[tuple[str, int, int, int, int]]) -> tuple[int, int]:
        """One line: normalised GT and prediction and their alignment (:attr:`hsbcala.evaluate.cer.Alignment.ops`);
        returns the line's (word errors, GT words)."""
        self.gt.update(gt)
        self.predicted.update(pred)
        for tag, g1, g2, p1, p2 in ops:
            if tag == "equal":
                self.right.update(gt[g1:g2])
            elif tag == "replace":
                for g, p in zip(gt[g1:g2], pred[p1:p2], strict=True):
                    self.misread.setdefault(g, Counter())[p] += 1
            elif tag == "delete":
                for g in gt[g1:g2]:
                    self.misread.setdefault(g, Counter())[""] += 1
            else:  # insert
                self.inserted.update(pred[p1:p2])
        we, nw = word_errors(gt, pred)
        self.word_errors += we
        self.words += nw
        return we, nw

    def recall(self, c: str) -> float | None:
        return self.right[c] / self.gt[c] if self.gt[c] else None

    def precision(self, c: str) -> float | None:
        return self.right[c] / self.predicted[c] if self.predicted[c] else None

    @property
    def wer(self) -> float | None:
        return self.word_errors / self.words if self.words else None

    def classes(self) -> dict[str, dict]:
        """Per class: GT characters, errors, CER, recall, predicted characters, precision (None: no number)."""
        acc = {k: Counter() for k in CLASSES}
        for counter, field in (
            (self.gt, "chars"),
            (self.right, "right"),
            (self.predicted, "predicted"),
            (self.inserted, "inserted"),
        ):
            for c, n in counter.items():
                acc[class_of(c, self._sorbian_set)][field] += n
        out = {}
        for k in CLASSES:
            a = acc[k]
            errors = a["chars"] - a["right"] + a["inserted"]
            out[k] = {
                "chars": a["chars"],
                "errors": errors,
                "cer": errors / a["chars"] if a["chars"] else None,
                "recall": a["right"] / a["chars"] if a["chars"] else None,
                "predicted": a["predicted"],
                "precision": a["right"] / a["predicted"] if a["predicted"] else None,
            }
        return out

    def row(self, c: str) -> dict:
        """One character's figures; ``misread``: its most frequent misreading (None: never misread)."""
        wrong = self.misread.get(c)
        top = wrong.most_common(1)[0] if wrong else None
        return {
            "char": c,
            "class": class_of(c, self._sorbian_set),
            "gt": self.gt[c],
            "right": self.right[c],
            "recall": self.recall(c),
            "predicted": self.predicted[c],
            "precision": self.precision(c),
            "misread": None if top is None else top[0],
            "misread_count": 0 if top is None else top[1],
        }

    def sorbian_letters(self) -> list[dict]:
        """The per-letter table of the configured Sorbian letters, in their configured order (also letters
        that do not occur: GT count 0, recall None)."""
        return [self.row(c) for c in self.sorbian]

    def characters(self) -> list[dict]:
        """Every character seen in GT or prediction, most frequent in GT first."""
        chars = set(self.gt) | set(self.predicted)
        return [self.row(c) for c in sorted(chars, key=lambda c: (-self.gt[c], -self.predicted[c], c))]

    def summary(self) -> dict:
        return {
            "classes": self.classes(),
            "sorbian_letters": self.sorbian_letters(),
            "wer": {"words": self.words, "errors": self.word_errors, "wer": self.wer},
        }
