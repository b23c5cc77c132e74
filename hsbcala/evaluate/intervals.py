"""Uncertainty of a CER: seeded bootstrap confidence intervals, for one model and for the difference of two.

Pure (numpy only). The CER is a ratio of sums, errors / GT characters over all lines of a set (:mod:`hsbcala.evaluate.cer`),
so its interval comes from resampling whole *units* with replacement and recomputing that ratio: a unit is a line,
or a document (book, page) when the lines carry one. Lines of one document share type, paper and hand, so their
errors are correlated; resampling documents keeps that correlation and gives the honest (wider) interval. Which
unit was used is part of every :class:`Interval`.

- :func:`bootstrap_cer`: the percentile interval of one model's CER;
- :func:`paired_difference`: the *paired* bootstrap of CER(A) − CER(B) of two models on the same lines: every
  resample takes the same units for both models, so the variation of the lines' difficulty, which both models
  share, cancels out. A model compared with itself gives exactly 0 with a zero-width interval.

The point estimate is always the CER of the full set, computed with Python integers exactly as
:attr:`hsbcala.evaluate.cer.Score.cer` does. With fewer than two units there is nothing to resample: the point estimate
is returned with no interval (``low``/``high`` None, shown as "n/a") and a warning, never a fake interval.

Vectorised: units' errors and characters are summed per unit once, each resample is a row of drawn unit
indices, and the resampled sums are one gather-and-sum per chunk of resamples (10,000 lines, 1,000 resamples:
well under a second). The per-unit sums are exact integers in float64, so the resampled ratios are exact up
to the one division.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

NA = "n/a"
_CHUNK_CELLS = 2_000_000  # resamples x units per chunk: bounds memory (16 MB of int64 indices)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (``low``/``high`` None: too few units, see ``warning``)."""

    point: float | None
    low: float | None
    high: float | None
    unit: str  # "lines" or "documents"
    n_units: int
    resamples: int
    level: float
    seed: int
    warning: str | None = None

    @property
    def available(self) -> bool:
        return self.low is not None and self.high is not None

    def excludes_zero(self) -> bool | None:
        """Whether the interval lies wholly above or below 0 (None when there is no interval)."""
        if not self.available:
            return None
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """``[low, high]`` in percent, or ``n/a``."""
        return bounds_text(self.as_dict())


def bounds_text(iv: dict | None, *, signed: bool = False, na: str = NA) -> str:
    """An interval's ``[low, high]`` in percent with two decimals (``signed``: ``[+0.50, +2.01]``, for
    differences), or ``na`` when there is none (too few lines or documents): the one format of every table,
    report and sentence."""
    if not iv or iv.get("low") is None or iv.get("high") is None:
        return na
    fmt = "+.2f" if signed else ".2f"
    return f"[{100 * iv['low']:{fmt}}, {100 * iv['high']:{fmt}}]"


def _units(n_lines: int, units: Sequence | None) -> tuple[np.ndarray, int, str]:
    """(unit index per line, number of units, unit name)."""
    if units is None:
        return np.arange(n_lines), n_lines, "lines"
    if len(units) != n_lines:
        raise ValueError(f"{len(units)} unit labels for {n_lines} lines")
    _, index = np.unique(np.asarray([str(u) for u in units]), return_inverse=True)
    return index, int(index.max()) + 1 if n_lines else 0, "documents"


def _per_unit(values: Sequence[int], index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(index, weights=np.asarray(values, dtype=np.float64), minlength=n)


def _resample_sums(per_unit: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """For each per-unit array, its sum over each of ``resamples`` bootstrap resamples of the units."""
    n = len(per_unit[0])
    rng = np.random.default_rng(seed)
    out = [np.empty(resamples) for _ in per_unit]
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(k, n))  # k resamples of n units, drawn with replacement
        for arr, res in zip(per_unit, out, strict=True):
            res[start : start + k] = arr[drawn].sum(axis=1)
    return out


def _too_few(point, unit, n_units, resamples, level, seed) -> Interval:
    return Interval(
        point,
        None,
        None,
        unit,
        n_units,
        resamples,
        level,
        seed,
        warning=f"{n_units} {unit[:-1] if n_units == 1 else unit}: too few to resample; "
        f"no confidence interval (n/a), the point estimate only",
    )


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")


def bootstrap_cer(
    errors: Sequence[int],
    chars: Sequence[int],
    units: Sequence | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """CER = sum(errors) / sum(chars) with its percentile bootstrap interval over lines (``units`` None) or
    over the documents named per line in ``units``. Resamples without any GT character are left out."""
    _check(resamples, level)
    if len(errors) != len(chars):
        raise ValueError(f"{len(errors)} error counts for {len(chars)} lines")
    total_e, total_c = int(sum(int(e) for e in errors)), int(sum(int(c) for c in chars))
    point = total_e / total_c if total_c else None
    index, n, unit = _units(len(errors), units)
    if n < 2 or point is None:
        return _too_few(point, unit, n, resamples, level, seed)
    e_sum, c_sum = _resample_sums([_per_unit(errors, index, n), _per_unit(chars, index, n)], resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = _percentiles(e_sum / c_sum, level)
    if total_e == 0:  # every resample is exactly 0; no rounding noise from the division
        low = high = 0.0
    return Interval(point, low, high, unit, n, resamples, level, seed)


def paired_difference(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    chars: Sequence[int],
    units: Sequence | None = None,
    *,
    chars_b: Sequence[int] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """CER(A) − CER(B) of two models on the same lines (same order), with the paired percentile bootstrap
    interval: each resample draws the same units for both models. ``chars_b``: B's GT characters per line
    when its normalisation counts them differently (default: the same as A's)."""
    _check(resamples, level)
    chars_b = chars if chars_b is None else chars_b
    if not len(errors_a) == len(errors_b) == len(chars) == len(chars_b):
        raise ValueError(
            f"paired lines differ: {len(errors_a)}, {len(errors_b)}, {len(chars)}, {len(chars_b)}"
        )
    ca, cb = int(sum(int(c) for c in chars)), int(sum(int(c) for c in chars_b))
    ea, eb = int(sum(int(e) for e in errors_a)), int(sum(int(e) for e in errors_b))
    point = ea / ca - eb / cb if ca and cb else None
    index, n, unit = _units(len(errors_a), units)
    if n < 2 or point is None:
        return _too_few(point, unit, n, resamples, level, seed)
    same_chars = chars_b is chars or list(chars_b) == list(chars)
    if same_chars and all(int(a) == int(b) for a, b in zip(errors_a, errors_b, strict=True)):
        return Interval(0.0, 0.0, 0.0, unit, n, resamples, level, seed)  # exactly 0, whatever is resampled
    arrays = [_per_unit(errors_a, index, n), _per_unit(chars, index, n), _per_unit(errors_b, index, n)]
    if not same_chars:
        arrays.append(_per_unit(chars_b, index, n))
    sums = _resample_sums(arrays, resamples, seed)
    cb_sum = sums[3] if not same_chars else sums[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = _percentiles(sums[0] / sums[1] - sums[2] / cb_sum, level)
    return Interval(point, low, high, unit, n, resamples, level, seed)
