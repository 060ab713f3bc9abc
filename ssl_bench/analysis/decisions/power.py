"""How strong a comparison can be: the power of the paired t-test (:func:`power_t`) and of the TOST
(:func:`power_tost`), the minimum detectable effect (:func:`mde`) and the pairs that decide a margin
(:func:`seeds_needed`, with the range the pilot sd's confidence interval allows), finite over the whole range:
large effects, n = 2, sd = 0. Pure functions on numbers; imports numpy, scipy and the shared settings
(ssl_bench.analysis.decisions.comparison)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as st

from ssl_bench.analysis.decisions.comparison import ALPHA, CONFIDENCE, POWER

# References (the [n] of the docstrings):
# [5] Owen, A special case of a bivariate non-central t-distribution, Biometrika 52:437-446, 1965, and Phillips,
#     Power of the two one-sided tests procedure in bioequivalence, J. Pharmacokinet. Biopharm. 18:137-144, 1990
#     (exact TOST power).
# [6] Cohen, Statistical Power Analysis for the Behavioral Sciences, 2nd ed., 1988 (power of the t-test, MDE).

_TINY = 1e-17  # a tail probability below this is 0 to double precision next to 1


def _upper_tail(c: float, df: int, nc: float) -> float:
    """P(T > c) for the noncentral t with ``df`` and noncentrality ``nc`` >= 0, finite everywhere: where
    ``P(T <= c) <= Phi(-nc/2) + P(chi2_df >= df * (nc / 2c)^2)`` (T <= c needs Z <= -nc/2 or a large
    chi-square) is below 1e-17 the tail is 1; elsewhere scipy's nct.sf, which is finite at moderate nc."""
    bound = float(st.norm.cdf(-nc / 2)) + float(st.chi2.sf(df * (nc / (2 * c)) ** 2, df)) if c > 0 else 1.0
    if bound < _TINY:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.clip(st.nct.sf(c, df, nc), 0.0, 1.0))


def _lower_tail(c: float, df: int, nc: float) -> float:
    """P(T < -c) for the noncentral t with ``nc`` >= 0 and c > 0, as P(T' > c) for noncentrality -nc (the
    reflection T(nc) = -T(-nc)); 0 where its bound Phi(-nc) (T < -c < 0 needs Z + nc < 0) is below 1e-17.
    (scipy's nct.cdf(-c, df, nc), and statsmodels' ttest_power with it, return NaN at large nc.)"""
    if float(st.norm.cdf(-nc)) < _TINY:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.clip(st.nct.sf(c, df, -nc), 0.0, 1.0))


def power_t(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at ``n`` pairs against a true mean difference ``effect`` [6]:
    ``P(T > c) + P(T < -c)`` with ``T ~ t'(n - 1, nc)``, ``nc = |effect| * sqrt(n) / sd``,
    ``c = t_{1 - alpha/2, n-1}``. Equal to statsmodels' ``TTestPower().power(|effect| / sd, n, alpha)`` wherever
    that is finite, and finite where it is not (large effects). NaN below n = 2; at sd = 0 the limit: 1 for a
    non-zero effect, alpha for none."""
    if n < 2:
        return math.nan
    if not sd > 0:
        return 1.0 if effect != 0 else alpha
    nc = abs(effect) * math.sqrt(n) / sd
    if not math.isfinite(nc):
        return 1.0
    c = float(st.t.isf(alpha / 2, n - 1))
    return float(np.clip(_upper_tail(c, n - 1, nc) + _lower_tail(c, n - 1, nc), 0.0, 1.0))


def power_tost(margin: float, sd: float, n: int, alpha: float = ALPHA, difference: float = 0.0) -> float:
    """Exact power of the paired TOST within ±``margin`` at ``n`` pairs when the true mean difference is
    ``difference`` [5]: both one-sided tests reject when ``-m + c * se < mean < m - c * se`` with
    ``se = s / sqrt(n)``, ``c = t_{1 - alpha, n-1}``; mean ~ N(difference, sd^2 / n) is independent of
    ``v = s / sd``, which is chi-distributed (``(n - 1) v^2 ~ chi2_{n-1}``), so

        power = integral over v in (0, a / c) of [Phi(a - c v - delta) - Phi(-a + c v - delta)] f(v) dv,
        a = margin * sqrt(n) / sd,  delta = difference * sqrt(n) / sd,

    with f the density of v (beyond a / c the acceptance interval is empty). Computed by composite
    Gauss-Legendre quadrature over the part of (0, a / c) where f holds all but 1e-16 of its mass: a bounded,
    smooth integrand, finite everywhere (agrees with a simulation of the test, and approaches the noncentral-t
    approximation ``1 - P(T(a - delta) < c) - P(T(-a - delta) > -c)`` from above). NaN below n = 2; at sd = 0
    the limit: 1 when |difference| < margin, else 0."""
    if n < 2:
        return math.nan
    if not sd > 0:
        return 1.0 if abs(difference) < margin else 0.0
    df = n - 1
    c = float(st.t.isf(alpha, df))
    a, delta = margin * math.sqrt(n) / sd, difference * math.sqrt(n) / sd
    if not (math.isfinite(a) and math.isfinite(delta)):
        return 1.0 if abs(difference) < margin else 0.0
    lo = math.sqrt(float(st.chi2.ppf(1e-16, df)) / df)
    hi = min(a / c, math.sqrt(float(st.chi2.isf(1e-16, df)) / df))
    if hi <= lo:
        return 0.0
    v, w = _nodes(lo, hi)
    inside = st.norm.cdf(a - c * v - delta) - st.norm.cdf(-a + c * v - delta)
    density = st.chi.pdf(v, df, scale=1 / math.sqrt(df))
    return float(min(1.0, max(0.0, float(np.sum(w * inside * density)))))


_GL = np.polynomial.legendre.leggauss(32)


def _nodes(lo: float, hi: float, panels: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of composite 32-point Gauss-Legendre quadrature on [lo, hi] with ``panels`` panels."""
    x, w = _GL
    edges = np.linspace(lo, hi, panels + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    mid = (edges[1:] + edges[:-1])[:, None] / 2
    return (mid + half * x[None, :]).ravel(), (half * w[None, :]).ravel()


def mde(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The minimum detectable effect [6]: the true paired difference that the two-sided t-test at ``alpha`` finds
    with probability ``power`` at ``n`` pairs, ``sd * e`` with ``power_t(e, 1, n) = power`` (solved by Brent's
    method; agrees with statsmodels' ``TTestPower().solve_power``). NaN below n = 2 or for a NaN sd; 0 at
    sd = 0."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    hi = 1.0
    while power_t(hi, 1.0, n, alpha) < power:
        hi *= 2
    return sd * float(optimize.brentq(lambda e: power_t(e, 1.0, n, alpha) - power, 0.0, hi, xtol=1e-12))


def sd_interval(sd: float, df: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The chi-square confidence interval of a standard deviation from a sample sd on ``df`` degrees of freedom:
    ``(sd * sqrt(df / chi2_{(1+confidence)/2, df}), sd * sqrt(df / chi2_{(1-confidence)/2, df}))``."""
    if df < 1 or not math.isfinite(sd):
        return math.nan, math.nan
    lo_q, hi_q = st.chi2.ppf([0.5 + confidence / 2, 0.5 - confidence / 2], df)
    return sd * math.sqrt(df / float(lo_q)), sd * math.sqrt(df / float(hi_q))


def _needed(sd: float, margin: float, power: float, alpha: float, cap: int) -> int:
    """The smallest n in [2, cap] with power_t(margin) >= power and power_tost(margin) >= power (both increase
    with n: bisection), or cap + 1."""
    def enough(n: int) -> bool:
        return power_t(margin, sd, n, alpha) >= power and power_tost(margin, sd, n, alpha) >= power

    if enough(2):
        return 2
    if not enough(cap):
        return cap + 1
    lo, hi = 2, cap  # enough(lo) is False, enough(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class SeedsNeeded:
    """Pairs needed to decide ±margin with the given power: ``n`` at the pilot sd, and ``lo``-``hi``, the n at
    the ends of the sd's chi-square confidence interval (df = pilot n - 1). A value of cap + 1 means more than
    ``cap``."""

    n: int
    lo: int
    hi: int
    sd: float
    sd_lo: float
    sd_hi: float
    df: int
    cap: int

    def text(self) -> str:
        """'n = 8 (95% range 4–31)'; beyond the cap: 'n > 1000'."""
        def fmt(v: int) -> str:
            return f">{self.cap}" if v > self.cap else str(v)

        return f"n = {fmt(self.n)} ({CONFIDENCE:.0%} range {fmt(self.lo)}–{fmt(self.hi)})".replace("= >", "> ")


def seeds_needed(sd: float, n_pilot: int, margin: float, power: float = POWER, alpha: float = ALPHA,
                 cap: int = 1000) -> SeedsNeeded:
    """The pairs that decide ±``margin`` with ``power``: the smallest n where the two-sided t-test finds a true
    difference of ``margin`` and the TOST shows equivalence within ±margin when there is none, both with
    ``power`` at ``alpha`` (:func:`power_t`, :func:`power_tost`); at the pilot ``sd`` and at both ends of its
    chi-square confidence interval on ``n_pilot - 1`` degrees of freedom (:func:`sd_interval`). A pilot sd of
    0 gives 2 (2–2): the pilot cannot tell its sd from 0."""
    if n_pilot < 2 or not math.isfinite(sd) or sd < 0:
        raise ValueError(f"seeds_needed needs a finite pilot sd on at least 2 pairs (sd={sd}, n={n_pilot})")
    sd_lo, sd_hi = sd_interval(sd, n_pilot - 1)
    n, lo, hi = (_needed(s, margin, power, alpha, cap) for s in (sd, sd_lo, sd_hi))
    return SeedsNeeded(n, lo, hi, sd, sd_lo, sd_hi, n_pilot - 1, cap)
