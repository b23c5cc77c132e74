"""hsbcala.evaluate.intervals: bootstrap intervals of a CER and of the paired difference of two models (quick tests)."""

from __future__ import annotations

import random
import time

import pytest

from hsbcala.evaluate import cer, intervals


def _lines(n: int, seed: int = 1, rate: float = 0.05) -> tuple[list[int], list[int]]:
    """(errors, chars) of ``n`` lines with about ``rate`` errors per character."""
    rng = random.Random(seed)
    chars = [rng.randint(20, 80) for _ in range(n)]
    errors = [sum(rng.random() < rate for _ in range(c)) for c in chars]
    return errors, chars


def test_a_set_without_errors_has_the_interval_zero_zero():
    iv = intervals.bootstrap_cer([0] * 50, [30] * 50)
    assert (iv.point, iv.low, iv.high) == (0.0, 0.0, 0.0) and iv.unit == "lines" and iv.n_units == 50


def test_point_estimate_is_exactly_the_summed_cer_of_real_alignments():
    rng = random.Random(7)
    pairs = []
    for _ in range(300):
        gt = "".join(rng.choice("abcěčřšžł ") for _ in range(rng.randint(1, 40)))
        pred = "".join(c if rng.random() > 0.1 else rng.choice("eclrsz") for c in gt)
        pairs.append((gt, pred))
    score = cer.score(pairs)
    als = [cer.align(cer.normalize(g), cer.normalize(p)) for g, p in pairs]
    errors, chars = [a.errors for a in als], [len(cer.normalize(g)) for g, _ in pairs]
    iv = intervals.bootstrap_cer(errors, chars)
    assert iv.point == score.cer  # exactly, not approximately
    assert iv.low < iv.point < iv.high


def test_a_model_against_itself_differs_by_exactly_zero():
    errors, chars = _lines(200)
    d = intervals.paired_difference(errors, errors, chars)
    assert (d.point, d.low, d.high) == (0.0, 0.0, 0.0) and d.excludes_zero() is False


def test_paired_difference_sees_a_consistent_improvement_that_unpaired_intervals_hide():
    errors_b, chars = _lines(300, seed=2, rate=0.08)
    rng = random.Random(3)
    errors_a = [max(0, e - (rng.random() < 0.3)) for e in errors_b]  # A fixes an error on ~30 % of lines
    d = intervals.paired_difference(errors_a, errors_b, chars)
    a, b = intervals.bootstrap_cer(errors_a, chars), intervals.bootstrap_cer(errors_b, chars)
    assert d.point == pytest.approx(a.point - b.point, abs=1e-15) and d.point < 0
    assert d.excludes_zero() and d.high < 0
    assert a.high > b.low  # the two separate intervals overlap: only the pairing shows the difference


def test_intervals_shrink_as_lines_are_added():
    errors, chars = _lines(4000, seed=5)
    widths = []
    for n in (50, 400, 4000):
        iv = intervals.bootstrap_cer(errors[:n], chars[:n])
        widths.append(iv.high - iv.low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_same_seed_same_interval_other_seed_other_interval():
    errors, chars = _lines(300)
    a = intervals.bootstrap_cer(errors, chars, seed=11)
    b = intervals.bootstrap_cer(errors, chars, seed=11)
    c = intervals.bootstrap_cer(errors, chars, seed=12)
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)


def test_documents_are_resampled_whole_and_give_a_wider_interval_when_they_differ():
    errors, chars = _lines(400, seed=9, rate=0.02)
    docs = [f"book{i // 40}" for i in range(400)]
    errors = [e + (8 if d in ("book1", "book6") else 0) for e, d in zip(errors, docs, strict=True)]
    by_line = intervals.bootstrap_cer(errors, chars)
    by_doc = intervals.bootstrap_cer(errors, chars, docs)
    assert by_doc.unit == "documents" and by_doc.n_units == 10 and by_doc.point == by_line.point
    assert by_doc.high - by_doc.low > 2 * (by_line.high - by_line.low)


def test_too_few_lines_or_documents_give_no_interval_and_say_so():
    one = intervals.bootstrap_cer([3], [40])
    assert one.point == 3 / 40 and one.low is None and one.high is None and one.text() == "n/a"
    assert "1 line: too few to resample" in one.warning
    doc = intervals.bootstrap_cer([1, 2, 0], [10, 10, 10], ["b", "b", "b"])
    assert doc.low is None and "1 document:" in doc.warning and doc.point == 0.1
    d = intervals.paired_difference([1], [2], [10])
    assert d.point == pytest.approx(-0.1) and d.excludes_zero() is None
    assert intervals.bootstrap_cer([], []).point is None


def test_ten_thousand_lines_with_a_thousand_resamples_in_well_under_five_seconds():
    errors, chars = _lines(10_000, seed=4)
    docs = [i // 25 for i in range(10_000)]
    t0 = time.perf_counter()
    intervals.bootstrap_cer(errors, chars, resamples=1000)
    intervals.bootstrap_cer(errors, chars, docs, resamples=1000)
    intervals.paired_difference(errors, [e + 1 for e in errors], chars, resamples=1000)
    assert time.perf_counter() - t0 < 2.5
