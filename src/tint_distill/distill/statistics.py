"""Confidence intervals and the variance of a few-shot accuracy estimate (numpy and math only).

Setting (see docs "Variance of the accuracy estimate"): E episodes, n_q query predictions per
episode, episode accuracies p_e with mean mu and between-episode variance s2, and query
outcomes Bernoulli(p_e) given the episode. The overall accuracy A (mean of all E * n_q
predictions, i.e. the mean of the episode accuracies) has

    Var(A) = s2 / E + (mu (1 - mu) - s2) / (E n_q).

Estimator of s2 (moment method). With p_hat_e = X_e / n_q and X_e | p_e ~ Binomial(n_q, p_e):

    Var(p_hat) = s2 + E[p (1 - p)] / n_q                          (law of total variance)
    E[p_hat (1 - p_hat) | p] = p (1 - p) (n_q - 1) / n_q           (binomial moments)

so E[p (1 - p)] / n_q = E[p_hat (1 - p_hat)] / (n_q - 1), and

    s2_hat = var(p_hat, ddof=1) - mean(p_hat (1 - p_hat)) / (n_q - 1)

is unbiased (both terms are). It can be negative by chance; the reported ``s2`` is clipped at
0 and the raw value is kept as ``s2_unclipped``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # standard normal 0.975 quantile
DEFAULT_TARGET_HALF_WIDTHS = (0.01, 0.02, 0.05)


# --- Student's t distribution (no scipy) -----------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        m2 = 2 * m
        # even step
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        result *= d * c
        # odd step
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        result *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return result


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t (inverse of :func:`t_cdf`), found by bisection to full precision."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


# --- Intervals ------------------------------------------------------------------------------

def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ValueError(f"{name}: no values")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (``t_{0.975, n-1} * sd / sqrt(n)``).

    With a single value the half-width is NaN (no spread can be estimated).
    """
    array = _as_1d(values, "mean_ci95")
    mean = float(array.mean())
    n = array.size
    if n < 2:
        return mean, math.nan
    half_width = t_quantile(0.975, n - 1) * float(array.std(ddof=1)) / math.sqrt(n)
    return mean, half_width


def binomial_ci95(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``successes / n`` (sound at small n and at 0 or n)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"binomial_ci95 needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p, z2 = successes / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half_width = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean of ``a - b`` over the same episodes, with its 95% t-interval.

    Returns ``mean``, ``half_width``, ``low``, ``high`` and ``n_episodes``.
    """
    a_arr, b_arr = _as_1d(a, "paired_difference a"), _as_1d(b, "paired_difference b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"paired_difference needs one value per episode in both lists; got {a_arr.size} and {b_arr.size}"
        )
    mean, half_width = mean_ci95(a_arr - b_arr)
    return {
        "mean": mean,
        "half_width": half_width,
        "low": mean - half_width,
        "high": mean + half_width,
        "n_episodes": int(a_arr.size),
    }


# --- Variance decomposition -----------------------------------------------------------------

def accuracy_variance(mu: float, s2: float, n_episodes: int, n_queries: int) -> float:
    """Var(A) = s2 / E + (mu (1 - mu) - s2) / (E n_q)."""
    if n_episodes < 1 or n_queries < 1:
        raise ValueError(f"need n_episodes >= 1 and n_queries >= 1, got {n_episodes} and {n_queries}")
    return s2 / n_episodes + (mu * (1.0 - mu) - s2) / (n_episodes * n_queries)


def episodes_needed(mu: float, s2: float, n_queries: int, half_width: float, z: float = Z95) -> int:
    """Smallest E with ``z * sqrt(Var(A)) <= half_width`` at ``n_queries`` queries per episode."""
    if half_width <= 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    per_episode = accuracy_variance(mu, s2, 1, n_queries)  # Var(A) * E
    if per_episode <= 0:
        return 1
    episodes = max(1, math.ceil(z * z * per_episode / (half_width * half_width)))
    # guard against rounding at the boundary
    while episodes > 1 and z * math.sqrt(per_episode / (episodes - 1)) <= half_width:
        episodes -= 1
    while z * math.sqrt(per_episode / episodes) > half_width:
        episodes += 1
    return episodes


def variance_decomposition(
    episode_accuracies: Sequence[float] | np.ndarray,
    n_queries: int,
    target_half_widths: Sequence[float] = DEFAULT_TARGET_HALF_WIDTHS,
) -> dict:
    """Estimate mu, s2 and Var(A) from per-episode accuracies (each over ``n_queries`` queries).

    Returns a dict with ``mu``, ``s2`` (clipped at 0), ``s2_unclipped``, ``var_A`` (the
    formula with the estimates plugged in), ``var_A_direct`` (``var(p_hat) / E``, the
    assumption-free estimate), ``ci95`` (``1.96 sqrt(var_A)``), ``n_episodes``,
    ``n_queries`` and ``episodes_needed``: a list of ``{"half_width", "episodes"}`` rows for
    the target half-widths at this ``n_queries``.
    """
    p_hat = _as_1d(episode_accuracies, "variance_decomposition")
    if np.any((p_hat < 0) | (p_hat > 1)):
        raise ValueError("episode accuracies must lie in [0, 1]")
    if int(n_queries) != n_queries or n_queries < 2:
        raise ValueError(f"n_queries must be an integer >= 2 (queries per episode), got {n_queries}")
    n_queries = int(n_queries)
    n_episodes = int(p_hat.size)
    mu = float(p_hat.mean())
    if n_episodes >= 2:
        var_p_hat = float(p_hat.var(ddof=1))
        s2_unclipped = var_p_hat - float(np.mean(p_hat * (1.0 - p_hat))) / (n_queries - 1)
    else:
        var_p_hat = math.nan
        s2_unclipped = math.nan
    s2 = max(0.0, s2_unclipped) if not math.isnan(s2_unclipped) else 0.0
    s2 = min(s2, mu * (1.0 - mu))  # a variance of values in [0, 1] cannot exceed mu (1 - mu)
    var_a = accuracy_variance(mu, s2, n_episodes, n_queries)
    return {
        "mu": mu,
        "s2": s2,
        "s2_unclipped": s2_unclipped,
        "var_A": var_a,
        "var_A_direct": var_p_hat / n_episodes,
        "ci95": Z95 * math.sqrt(var_a),
        "n_episodes": n_episodes,
        "n_queries": n_queries,
        "episodes_needed": [
            {"half_width": float(h), "episodes": episodes_needed(mu, s2, n_queries, float(h))}
            for h in target_half_widths
        ],
    }
