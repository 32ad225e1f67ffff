"""Statistics over seeds: a summary of one cell's figures and the difference between two cells.

For values x_1..x_n (n >= 2):
  mean      m = sum(x_i) / n
  std       s = sqrt(sum((x_i - m)^2) / (n - 1))           (the sample standard deviation)
  95% CI    m ± t(0.975, n - 1) · s / sqrt(n)                (Student's t interval of the mean)
For two cells a and b run on the same seeds (paired: seed i gives both the same initial weights and batches),
the per-seed differences d_i = a_i - b_i:
  d = mean(d_i),  95% CI  d ± t(0.975, n - 1) · std(d_i) / sqrt(n)          (paired t)
For two cells on different seeds (Welch's unequal-variance comparison of means):
  d = m_a - m_b,  se = sqrt(s_a^2 / n_a + s_b^2 / n_b)
  df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1))   (Welch–Satterthwaite)
  95% CI    d ± t(0.975, df) · se
Either way, a CI that contains 0 means "indistinguishable at these n". Pairing removes what the seeds share
(fit and loop of one seed start from the same weights): a constant per-seed difference is exact when paired,
but drowns in the seeds' spread under Welch.

For proportions — k of n runs did something (ended on two classes, hopped) — with z = 1.959964, the normal
0.975 quantile, and p = k / n:
  Wilson score 95% CI   (p + z^2/(2n)  ±  z · sqrt(p(1 - p)/n + z^2/(4n^2))) / (1 + z^2/n)
(the interval of the true proportion whose score test at 5% does not reject k/n; unlike the Wald interval
p ± z·sqrt(p(1 - p)/n) it stays inside [0, 1] and is not degenerate at k = 0 or k = n). For two proportions
p_1 = k_1/n_1 and p_2 = k_2/n_2 from independent runs, with Wilson intervals [l_i, u_i]:
  d = p_1 - p_2,  Newcombe's hybrid score 95% CI (his method 10, Statistics in Medicine 17:873, 1998)
  [d - sqrt((p_1 - l_1)^2 + (u_2 - p_2)^2),  d + sqrt((u_1 - p_1)^2 + (p_2 - l_2)^2)]
which keeps Wilson's good coverage at small counts, where the Wald difference interval is too narrow.

The t quantile is computed here (numerical integration of the t density, then bisection) rather than taken
from scipy, which is not a dependency of this project; it matches the printed tables to 6 digits, for the
non-integer degrees of freedom of Welch's test too.

    >>> round(t_quantile(0.975, 4), 4)
    2.7764
    >>> s = summarize([0.97, 0.96, 0.98])
    >>> s.n, round(s.mean, 4), round(s.std, 4), tuple(round(x, 4) for x in s.ci95)
    (3, 0.97, 0.01, (0.9452, 0.9948))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
CI_NAME = "95% CI (Student t)"
WELCH_NAME = "95% CI (Welch t)"
PAIRED_NAME = "95% CI (paired t)"
WILSON_NAME = "95% CI (Wilson score)"
NEWCOMBE_NAME = "95% CI (Newcombe hybrid score)"


@dataclasses.dataclass(frozen=True)
class Summary:
    """One cell's figures over seeds; ``std`` and ``ci95`` are None below two values."""

    n: int
    mean: float
    std: float | None
    ci95: tuple[float, float] | None
    min: float
    max: float


@dataclasses.dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with a 95% CI named by ``method``; ``ci95`` and ``df`` are None unless both sides
    have n >= 2 (``df`` is inf when nothing varies: the difference is exact)."""

    method: str
    estimate: float
    ci95: tuple[float, float] | None
    df: float | None
    n_a: int
    n_b: int

    @property
    def distinguishable(self) -> bool | None:
        """True when the interval excludes 0, False when it contains 0, None without an interval."""
        if self.ci95 is None:
            return None
        return not self.ci95[0] <= 0.0 <= self.ci95[1]


def summarize(values: Sequence[float]) -> Summary | None:
    """Mean, sample std, Student-t 95% CI of the mean, min and max of ``values`` (None when empty)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size < 2:
        return Summary(1, mean, None, None, mean, mean)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + CONFIDENCE / 2, x.size - 1) * std / math.sqrt(x.size)
    return Summary(int(x.size), mean, std, (mean - half, mean + half), float(x.min()), float(x.max()))


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    """``mean(a) - mean(b)`` with its Welch 95% CI (module docstring); None when either side is empty."""
    sa, sb = summarize(a), summarize(b)
    if sa is None or sb is None:
        return None
    estimate = sa.mean - sb.mean
    if sa.std is None or sb.std is None:
        return Difference(WELCH_NAME, estimate, None, None, sa.n, sb.n)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    if va + vb == 0.0:  # no spread on either side (e.g. bit-identical seeds): the difference is exact
        return Difference(WELCH_NAME, estimate, (estimate, estimate), math.inf, sa.n, sb.n)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(va + vb)
    return Difference(WELCH_NAME, estimate, (estimate - half, estimate + half), df, sa.n, sb.n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    """``mean(a - b)`` over pairs (a_i, b_i) of one seed each, with its paired-t 95% CI (module docstring);
    None when empty. ``a`` and ``b`` must be the same length, in the same seed order."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs one value per seed on each side, got {len(a)} and {len(b)}")
    d = summarize(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if d is None:
        return None
    if d.std is None:
        return Difference(PAIRED_NAME, d.mean, None, None, d.n, d.n)
    df = math.inf if d.std == 0.0 else float(d.n - 1)  # a constant per-seed difference is exact
    return Difference(PAIRED_NAME, d.mean, d.ci95, df, d.n, d.n)


@dataclasses.dataclass(frozen=True)
class Proportion:
    """``successes`` of ``n``, their share and its Wilson 95% CI (module docstring)."""

    successes: int
    n: int
    estimate: float
    ci95: tuple[float, float]


def wilson_interval(successes: int, n: int) -> Proportion:
    """``successes / n`` with its Wilson score 95% CI (module docstring); ``n`` must be positive."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = t_quantile(0.5 + CONFIDENCE / 2, math.inf)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # k = 0 and k = n put a bound exactly on 0 or 1; keep rounding from leaving [0, 1].
    return Proportion(successes, n, p, (max(0.0, centre - half), min(1.0, centre + half)))


def proportion_difference(successes_a: int, n_a: int, successes_b: int, n_b: int) -> Difference:
    """``p_a - p_b`` with Newcombe's hybrid score 95% CI from the two Wilson intervals (module docstring); ``df``
    is None (no t distribution is involved)."""
    a, b = wilson_interval(successes_a, n_a), wilson_interval(successes_b, n_b)
    d = a.estimate - b.estimate
    low = d - math.hypot(a.estimate - a.ci95[0], b.ci95[1] - b.estimate)
    high = d + math.hypot(a.ci95[1] - a.estimate, b.estimate - b.ci95[0])
    return Difference(NEWCOMBE_NAME, d, (low, high), None, n_a, n_b)


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` (> 0, any real) degrees of freedom, for 0.5 <= p < 1.

    Solves P(0 <= T <= t) = p - 1/2 by bisection, the probability being Simpson's rule over the density
    f(u) = Γ((df+1)/2) / (sqrt(df·π) Γ(df/2)) · (1 + u²/df)^(-(df+1)/2).
    """
    if not 0.5 <= p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")

    def density(u: np.ndarray) -> np.ndarray:
        if df > 1e7:  # the normal limit (the Gamma ratio below loses precision there)
            return np.exp(-u * u / 2) / math.sqrt(2 * math.pi)
        log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        return np.exp(log_norm - (df + 1) / 2 * np.log1p(u * u / df))

    def mass(t: float) -> float:  # P(0 <= T <= t), Simpson's rule on 2000 intervals
        f = density(np.linspace(0.0, t, 2001))
        return float((f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()) * (t / 2000) / 3)

    target, low, high = p - 0.5, 0.0, 1.0
    while mass(high) < target:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mass(mid) < target else (low, mid)
    return (low + high) / 2
