"""Intervals: coverage by simulation, known answers, loud errors."""
import numpy as np
import pytest

from equivlib.config import ParameterError
from equivlib.stats import (Correlation, Interval, block_means, block_test, correlation_ci, mean_ci, sd_ratio_ci,
                            slope_ci)


def test_slope_ci_covers_the_true_slope_at_its_level():
    rng = np.random.default_rng(0)
    x = np.log([16, 48, 160, 480, 1600])
    hits = 0
    for _ in range(1000):
        y = 0.3 * x + 1.0 + rng.normal(0, 0.2, x.size)
        hits += slope_ci(x, y, level=0.9).contains(0.3)
    assert 0.87 <= hits / 1000 <= 0.93  # binomial SE of the coverage is about 0.01


def test_mean_ci_covers_at_its_level_with_three_values():
    rng = np.random.default_rng(1)
    hits = sum(mean_ci(rng.normal(5.0, 2.0, 3)).contains(5.0) for _ in range(2000))
    assert 0.93 <= hits / 2000 <= 0.97


def test_sd_ratio_ci_brackets_a_known_ratio():
    rng = np.random.default_rng(2)
    hits = 0
    for s in range(60):
        a, b = rng.normal(0, 3.0, 120), rng.normal(0, 1.0, 120)
        ci = sd_ratio_ci(a, b, seed=s, n_resamples=999)
        assert ci.low < ci.estimate < ci.high
        hits += ci.contains(3.0)
    assert hits >= 51  # 95 % nominal; BCa at n=120 is close to it (at least 85 % here)
    wide = sd_ratio_ci(rng.normal(0, 3.0, 8), rng.normal(0, 1.0, 8), seed=0)
    narrow = sd_ratio_ci(rng.normal(0, 3.0, 400), rng.normal(0, 1.0, 400), seed=0)
    assert wide.high - wide.low > narrow.high - narrow.low


def test_same_seed_same_interval_and_text():
    a, b = np.arange(10.0) ** 1.5, np.arange(10.0)
    assert sd_ratio_ci(a, b, seed=4) == sd_ratio_ci(a, b, seed=4)
    t = Interval(1.5, 1.2, 1.9, 0.95, "x").text()
    assert t == "1.50 (95% CI 1.20 to 1.90)"


@pytest.mark.parametrize("method, rho", [("pearson", 0.5), ("spearman", 6 / np.pi * np.arcsin(0.25))])
def test_correlation_ci_covers_the_true_correlation(method, rho):
    # bivariate normal with correlation 0.5; Spearman's population value is (6/π) asin(ρ/2)
    rng = np.random.default_rng(5)
    cov = [[1.0, 0.5], [0.5, 1.0]]
    hits = 0
    for _ in range(400):
        x, y = rng.multivariate_normal([0, 0], cov, 30).T
        c = correlation_ci(x, y, method=method)
        assert c.interval.low < c.r < c.interval.high and c.n == 30
        hits += c.interval.contains(rho)
    assert 0.9 <= hits / 400 <= 0.99


def test_correlation_ci_perfect_independent_and_log_data():
    x = np.arange(1.0, 14.0)
    for method in ("pearson", "spearman"):
        c = correlation_ci(x, 2 * x + 1, method=method)
        assert 1 - 1e-12 < c.interval.low <= c.r <= c.interval.high <= 1.0  # no inf from atanh(1)
    assert correlation_ci(x, np.exp(x), method="spearman").interval.low == 1.0  # exactly 1: the interval is [1, 1]
    assert correlation_ci(x, -x ** 3, method="spearman").r == -1.0
    rng = np.random.default_rng(6)
    c = correlation_ci(rng.normal(size=40), rng.normal(size=40), method="spearman")
    assert c.interval.contains(0.0) and c.p_value > 0.05
    # a power law is a straight line in log-log: Pearson r = 1 only with log=True
    assert correlation_ci(x, x ** 3, log=True).r == pytest.approx(1.0)
    assert correlation_ci(x, x ** 3).r < 0.99
    c = Correlation(0.75, Interval(0.75, 0.41, 0.91, 0.95, "x"), 13, "pearson", 0.003)
    assert c.text() == "0.75 (95% CI 0.41 to 0.91, n = 13)"


@pytest.mark.parametrize("call, match", [
    (lambda: correlation_ci([1, 2, 3], [1, 2, 3]), "at least 4"),
    (lambda: correlation_ci([1, 2, 3, 4], [1, 2, 3, 4, 5]), "differ in length"),
    (lambda: correlation_ci([1, 2, 3, np.inf], [1, 2, 3, 4]), "non-finite"),
    (lambda: correlation_ci([1, 2, 3, 4], [1, 1, 1, 1]), "y is constant"),
    (lambda: correlation_ci([1, 2, 3, 0], [1, 2, 3, 4], log=True), "log=True needs positive values; x"),
    (lambda: correlation_ci([1, 2, 3, 4], [1, 2, 3, 5], method="kendall"), "method"),
    (lambda: correlation_ci([1, 2, 3, 4], [1, 2, 3, 5], level=1.0), "level"),

    (lambda: slope_ci([1, 2], [1, 2]), "at least 3"),
    (lambda: slope_ci([1, 1, 1], [1, 2, 3]), "constant"),
    (lambda: slope_ci([1, 2, 3], [1, 2, 3, 4]), "differ in length"),
    (lambda: mean_ci([1.0, float("nan")]), "non-finite"),
    (lambda: mean_ci([[1.0, 2.0]]), "one-dimensional"),
    (lambda: mean_ci([1.0, 2.0], level=95), "level"),
    (lambda: sd_ratio_ci([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]), "zero spread"),
    (lambda: block_means([1.0, 2.0, 3.0], 1), "n_blocks"),
    (lambda: block_means([1.0, 2.0], 3), "at least 3"),
    (lambda: block_test([1.0] * 10, [2.0] * 10, n_blocks=2), "constant block means"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def _ar1(rng, n, phi, size):
    """``size`` AR(1) series of length ``n`` (stationary start, unit marginal variance)."""
    x = np.empty((size, n))
    x[:, 0] = rng.normal(size=size)
    eps = rng.normal(scale=np.sqrt(1 - phi ** 2), size=(size, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + eps[:, t]
    return x


def test_block_means_drop_the_start_when_the_length_does_not_divide():
    np.testing.assert_allclose(block_means(np.arange(7.0), 3), [1.5, 3.5, 5.5])


def test_block_test_keeps_its_level_on_correlated_series_where_the_naive_test_does_not():
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = _ar1(rng, 600, 0.9, 300), _ar1(rng, 600, 0.9, 300)  # correlation time about 19 steps
    p_block = np.array([block_test(x, y, n_blocks=5).p_value for x, y in zip(a, b)])
    p_naive = stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue
    assert (p_block < 0.05).mean() <= 0.10      # about its level (binomial SE 0.013)
    assert (p_naive < 0.05).mean() >= 0.30      # the values themselves are far from independent
    # and it has power: a shift of one marginal standard deviation is found
    p_shift = np.array([block_test(x + 1.0, y, n_blocks=5).p_value for x, y in zip(a[:50], b[:50])])
    assert (p_shift < 0.05).mean() >= 0.8


def test_block_test_interval_is_for_a_minus_b():
    rng = np.random.default_rng(2)
    res = block_test(rng.normal(3.0, 1.0, 500), rng.normal(1.0, 1.0, 500), n_blocks=5)
    assert res.difference.contains(2.0) and res.difference.estimate > 1.5 and res.p_value < 1e-4
    assert "p = " in res.text()
