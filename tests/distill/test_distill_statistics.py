"""Confidence intervals and the episode/query variance decomposition, checked by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tint_distill.distill.statistics import (
    accuracy_variance,
    episodes_needed,
    mean_ci95,
    paired_difference,
    t_cdf,
    t_quantile,
    variance_decomposition,
)


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (4, 2.776), (9, 2.262), (29, 2.045), (100, 1.984)])
def test_t_quantile_matches_table_values(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_matches_exact_small_df_forms():
    # df = 1 is Cauchy: q = tan(pi (p - 1/2)); df = 2: q = (2p - 1) sqrt(2 / (4 p (1 - p)))
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-9)
    assert t_quantile(0.025, 9) == pytest.approx(-t_quantile(0.975, 9))
    assert t_cdf(t_quantile(0.95, 7), 7) == pytest.approx(0.95, abs=1e-12)
    # large df approaches the normal quantile
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)


def test_t_quantile_agrees_with_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 14, 49, 599, 5000):
        for p in (0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


def test_mean_ci95_by_hand():
    mean, half_width = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5), se = sqrt(2.5 / 5) = sqrt(0.5), t_{0.975,4} = 2.7764451
    assert mean == pytest.approx(3.0)
    assert half_width == pytest.approx(2.7764451 * math.sqrt(0.5), rel=1e-6)
    assert math.isnan(mean_ci95([0.7])[1])
    with pytest.raises(ValueError):
        mean_ci95([])


def test_paired_difference_uses_the_per_episode_differences():
    a = [0.80, 0.70, 0.90, 0.60]
    b = [0.75, 0.60, 0.85, 0.58]  # differences 0.05, 0.10, 0.05, 0.02
    result = paired_difference(a, b)
    diffs = np.array([0.05, 0.10, 0.05, 0.02])
    half = 3.1824463 * diffs.std(ddof=1) / 2
    assert result["mean"] == pytest.approx(0.055)
    assert result["half_width"] == pytest.approx(half, rel=1e-6)
    assert result["low"] == pytest.approx(0.055 - half) and result["high"] == pytest.approx(0.055 + half)
    assert result["low"] > 0  # b is below a in every episode: pairing detects it
    with pytest.raises(ValueError, match="one value per episode"):
        paired_difference([0.1, 0.2], [0.1])


def simulate(rng, mu, s2, n_episodes, n_queries, replications):
    """Episode accuracies p_e ~ Beta(mean mu, variance s2), X_e ~ Binomial(n_q, p_e)."""
    strength = mu * (1 - mu) / s2 - 1  # alpha + beta
    p = rng.beta(mu * strength, (1 - mu) * strength, size=(replications, n_episodes))
    return rng.binomial(n_queries, p) / n_queries


def test_variance_decomposition_against_simulation():
    rng = np.random.default_rng(20240605)
    mu, s2, n_episodes, n_queries, replications = 0.7, 0.01, 50, 75, 2000
    p_hat = simulate(rng, mu, s2, n_episodes, n_queries, replications)
    results = [variance_decomposition(row, n_queries) for row in p_hat]
    s2_hats = np.array([r["s2_unclipped"] for r in results])
    accuracies = p_hat.mean(axis=1)  # A of each replication

    # the s2 estimator is unbiased: mean over replications within ~4 standard errors (SE ~6e-5)
    assert s2_hats.mean() == pytest.approx(s2, abs=3e-4)
    # the formula with the true parameters predicts the spread of A across replications
    predicted = accuracy_variance(mu, s2, n_episodes, n_queries)  # 2.533e-4
    empirical = accuracies.var(ddof=1)  # relative SE ~ sqrt(2 / 1999) = 3.2 %
    assert empirical == pytest.approx(predicted, rel=0.12)
    # ... and the per-replication estimate does on average
    assert np.mean([r["var_A"] for r in results]) == pytest.approx(empirical, rel=0.12)
    # the naive binomial variance (all predictions independent) is far too small here
    assert mu * (1 - mu) / (n_episodes * n_queries) < 0.3 * empirical
    # the reported 95% interval covers the true mean about 95% of the time (SE of coverage ~0.5 %)
    coverage = np.mean([abs(r["mu"] - mu) <= r["ci95"] for r in results])
    assert 0.93 <= coverage <= 0.97


def test_variance_decomposition_without_between_episode_variance():
    rng = np.random.default_rng(7)
    n_queries = 20
    p_hat = rng.binomial(n_queries, 0.6, size=(3000, 30)) / n_queries  # every episode has p = 0.6
    s2_hats = np.array([variance_decomposition(row, n_queries)["s2_unclipped"] for row in p_hat])
    assert abs(s2_hats.mean()) < 2e-4  # unbiased around 0 (SE ~3e-5)
    result = variance_decomposition(p_hat[0], n_queries)
    assert result["s2"] >= 0.0  # clipped
    assert set(result) >= {"mu", "s2", "var_A", "ci95", "n_episodes", "n_queries", "episodes_needed"}
    assert [row["half_width"] for row in result["episodes_needed"]] == [0.01, 0.02, 0.05]


def test_episodes_needed_is_the_smallest_sufficient_number():
    mu, s2, n_queries = 0.7, 0.01, 75
    for half_width in (0.01, 0.02, 0.05):
        episodes = episodes_needed(mu, s2, n_queries, half_width)
        assert 1.959964 * math.sqrt(accuracy_variance(mu, s2, episodes, n_queries)) <= half_width
        if episodes > 1:
            assert 1.959964 * math.sqrt(accuracy_variance(mu, s2, episodes - 1, n_queries)) > half_width
    # by hand: Var per episode = 0.01 + 0.20 / 75 = 0.0126667; E = ceil(1.96^2 * 0.0126667 / 0.02^2) = 122
    assert episodes_needed(mu, s2, n_queries, 0.02) == 122
    # more queries per episode never needs more episodes; s2 sets a floor
    assert episodes_needed(mu, s2, 1000, 0.02) <= episodes_needed(mu, s2, 75, 0.02)
    assert episodes_needed(mu, s2, 10**9, 0.02) == math.ceil(1.959964**2 * s2 / 0.02**2)
