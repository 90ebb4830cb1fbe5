"""Intervals for the book's claims: ratios of standard errors, slopes, means over seeds.

Each function returns a :class:`Interval` (estimate, lower, upper, level, method), so a
chapter can glue all three numbers and build its verdict from the interval rather than
from the point estimate::

    ci = sd_ratio_ci(haar_estimates, design_estimates, seed=0)
    verdict(ci.low >= 3)            # "the design cuts the SE at least 3x" holds only if the CI does

The bootstrap is ``scipy.stats.bootstrap`` (BCa); the slope interval is the usual
t interval of least squares (``scipy.stats.linregress``); the mean interval is the
t interval, which for two or three seeds is wide, as it should be.  A correlation
(:func:`correlation_ci`, Pearson or Spearman) comes as a :class:`Correlation` with its
Fisher-z interval and p-value.  Two correlated series (an observable along two
trajectories) are compared by :func:`block_test`: Welch's t test on their block means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .config import ParameterError

__all__ = ["Interval", "Correlation", "TwoSample", "sd_ratio_ci", "slope_ci", "mean_ci", "correlation_ci",
           "block_means", "block_test"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float
    method: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self, fmt: str = ".2f") -> str:
        """``"1.71 (95% CI 1.40-2.10)"``."""
        return (f"{self.estimate:{fmt}} ({100 * self.level:.0f}% CI "
                f"{self.low:{fmt}} to {self.high:{fmt}})")


def _finite_1d(x, name: str, min_size: int) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ParameterError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size < min_size:
        raise ParameterError(f"{name} needs at least {min_size} values, got {a.size}")
    if not np.isfinite(a).all():
        raise ParameterError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite values")
    return a


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ParameterError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def sd_ratio_ci(a, b, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """``sd(a) / sd(b)`` for two independent samples, with a BCa bootstrap interval.

    ``a`` and ``b`` are repeated estimates (one per independent repetition) of two
    estimators; the ratio of their spreads is the factor by which ``b`` is more
    precise than ``a``.  Each sample is resampled on its own (``paired=False``).
    """
    a, b = _finite_1d(a, "a", 3), _finite_1d(b, "b", 3)
    level = _check_level(level)
    if np.std(b) == 0:
        raise ParameterError("b has zero spread: the ratio is undefined")

    def ratio(x, y, axis=-1):
        return np.std(x, ddof=1, axis=axis) / np.std(y, ddof=1, axis=axis)

    res = stats.bootstrap((a, b), ratio, n_resamples=n_resamples, confidence_level=level, method="BCa",
                          vectorized=True, paired=False, rng=np.random.default_rng(seed))
    lo, hi = (float(v) for v in (res.confidence_interval.low, res.confidence_interval.high))
    return Interval(float(ratio(a, b)), lo, hi, level, "BCa bootstrap")


def slope_ci(x, y, *, level: float = 0.95) -> Interval:
    """Least-squares slope of ``y`` on ``x`` with its t interval (``n - 2`` degrees of freedom)."""
    x, y = _finite_1d(x, "x", 3), _finite_1d(y, "y", 3)
    if x.size != y.size:
        raise ParameterError(f"x and y differ in length: {x.size} vs {y.size}")
    if np.ptp(x) == 0:
        raise ParameterError("x is constant: no slope")
    level = _check_level(level)
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + level / 2, x.size - 2) * fit.stderr
    return Interval(float(fit.slope), float(fit.slope - half), float(fit.slope + half), level,
                    f"t interval, {x.size - 2} dof")


def mean_ci(x, *, level: float = 0.95) -> Interval:
    """Mean of ``x`` (e.g. one value per seed) with its t interval."""
    x = _finite_1d(x, "x", 2)
    level = _check_level(level)
    m, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * se
    return Interval(m, m - half, m + half, level, f"t interval, {x.size - 1} dof")


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient ``r`` with its interval (``interval.estimate == r``), ``n`` and p-value."""

    r: float
    interval: Interval
    n: int
    method: str
    p_value: float

    def text(self, fmt: str = ".2f") -> str:
        """``"0.75 (95% CI 0.41 to 0.91, n = 13)"``."""
        iv = self.interval
        return (f"{self.r:{fmt}} ({100 * iv.level:.0f}% CI {iv.low:{fmt}} to {iv.high:{fmt}}, n = {self.n})")


def correlation_ci(x, y, *, method: str = "pearson", level: float = 0.95, log: bool = False) -> Correlation:
    """Pearson or Spearman correlation of ``x`` and ``y`` with a Fisher-z interval.

    The estimate and its (two-sided, no-correlation null) p-value are
    ``scipy.stats.pearsonr`` / ``scipy.stats.spearmanr``; the interval is
    ``tanh(atanh(r) ± z_q · SE)`` with ``SE = 1/sqrt(n - 3)`` (Pearson) or the
    Bonett–Wright ``SE = sqrt((1 + r²/2) / (n - 3))`` (Spearman; Bonett & Wright 2000,
    Psychometrika 65:23).  ``log=True`` correlates ``log10`` of both (all values must
    be positive).  For ``|r| = 1`` the Fisher interval degenerates to ``[r, r]``.
    Needs ``n >= 4`` finite pairs and non-constant ``x`` and ``y``.
    """
    if method not in ("pearson", "spearman"):
        raise ParameterError(f"method must be 'pearson' or 'spearman', got {method!r}")
    x, y = _finite_1d(x, "x", 4), _finite_1d(y, "y", 4)
    if x.size != y.size:
        raise ParameterError(f"x and y differ in length: {x.size} vs {y.size}")
    level = _check_level(level)
    if log:
        for name, a in (("x", x), ("y", y)):
            if (a <= 0).any():
                raise ParameterError(f"log=True needs positive values; {name} has {int((a <= 0).sum())} "
                                     f"values <= 0 (smallest {a.min():.3g})")
        x, y = np.log10(x), np.log10(y)
    for name, a in (("x", x), ("y", y)):
        if np.ptp(a) == 0:
            raise ParameterError(f"{name} is constant: no correlation")
    n = int(x.size)
    res = stats.pearsonr(x, y) if method == "pearson" else stats.spearmanr(x, y)
    r, p = float(res.statistic), float(res.pvalue)
    r = min(1.0, max(-1.0, r))  # rounding can leave |r| a hair above 1
    if method == "pearson":
        se, how = 1 / math.sqrt(n - 3), "Fisher z, SE 1/sqrt(n-3)"
    else:
        se, how = math.sqrt((1 + r * r / 2) / (n - 3)), "Fisher z, Bonett-Wright SE"
    if abs(r) == 1.0:
        lo = hi = r
    else:
        z, half = math.atanh(r), stats.norm.ppf(0.5 + level / 2) * se
        lo, hi = math.tanh(z - half), math.tanh(z + half)
    return Correlation(r, Interval(r, float(lo), float(hi), level, how), n, method, p)


@dataclass(frozen=True)
class TwoSample:
    """A two-sample comparison: ``difference`` (mean of ``a`` minus mean of ``b``, with its interval) and p-value."""

    difference: Interval
    p_value: float
    n_blocks: int
    method: str

    def text(self, fmt: str = ".3g") -> str:
        """``"0.0012 (95% CI -0.003 to 0.005), p = 0.61"``."""
        return f"{self.difference.text(fmt)}, p = {self.p_value:.2g}"


def block_means(x, n_blocks: int) -> np.ndarray:
    """Means of ``n_blocks`` contiguous, equally long blocks of the series ``x``.

    When ``len(x)`` is not a multiple of ``n_blocks`` the first ``len(x) % n_blocks``
    values are dropped (the start of a trajectory is the least equilibrated part).
    """
    if not isinstance(n_blocks, int) or isinstance(n_blocks, bool) or n_blocks < 2:
        raise ParameterError(f"n_blocks must be an integer >= 2, got {n_blocks!r}")
    x = _finite_1d(x, "x", n_blocks)
    size = x.size // n_blocks
    return x[x.size - size * n_blocks:].reshape(n_blocks, size).mean(axis=1)


def block_test(a, b, *, n_blocks: int = 5, level: float = 0.95) -> TwoSample:
    """Do two correlated series have the same mean?  Welch's t test on their block means.

    Successive values of a trajectory are correlated, so a test on the values themselves
    would count far too many independent samples and reject too often.  Means of blocks
    much longer than the correlation time are nearly independent and nearly normal, and
    Welch's test (``scipy.stats.ttest_ind(equal_var=False)``) on ``n_blocks`` of them per
    series is then valid; blocks shorter than the correlation time make it liberal.  The
    interval is Welch's for ``mean(a) - mean(b)``.
    """
    level = _check_level(level)
    ma, mb = block_means(a, n_blocks), block_means(b, n_blocks)
    if np.ptp(ma) == 0 and np.ptp(mb) == 0:
        raise ParameterError("both series have constant block means: the test is undefined")
    res = stats.ttest_ind(ma, mb, equal_var=False)
    ci = res.confidence_interval(confidence_level=level)
    diff = float(ma.mean() - mb.mean())
    return TwoSample(Interval(diff, float(ci.low), float(ci.high), level, f"Welch t on {n_blocks} block means each"),
                     float(res.pvalue), n_blocks, "Welch t test on block means")
