"""Intervals for the book's claims: ratios of standard errors, slopes, means over seeds.

Each function returns a :class:`Interval` (estimate, lower, upper, level, method), so a
chapter can glue all three numbers and build its verdict from the interval rather than
from the point estimate::

    ci = sd_ratio_ci(haar_estimates, design_estimates, seed=0)
    verdict(ci.low >= 3)            # "the design cuts the SE at least 3x" holds only if the CI does

The bootstrap is :func:`scipy.stats.bootstrap` (BCa); the slope interval is the usual
t interval of least squares (:func:`scipy.stats.linregress`); the mean interval is the
t interval, which for two or three seeds is wide, as it should be.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .config import ParameterError

__all__ = ["Interval", "sd_ratio_ci", "slope_ci", "mean_ci"]


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
