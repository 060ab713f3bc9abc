"""Decisions over families of paired comparisons, and how strong each one is (issue 30, items 1, 3, 5 and 6).

Pure functions on numbers: no records, no configuration, no files. A *comparison* is the per-seed paired
differences ``method - reference`` of one metric (the same seed gives both methods the same data order and crops);
a *family* is the comparisons of one table on one protocol. What this module provides:

- :func:`paired` pairs two per-seed mappings and lists the seeds it could not pair (every n visible).
- :func:`decide_family` decides every comparison of a family under one family-wise rule, :data:`RULE`.
- :func:`power_t`, :func:`power_tost`, :func:`mde` and :func:`seeds_needed` (with the range of n that the pilot's
  sd allows) are finite over the whole range: large effects, n = 2, sd = 0.
- :func:`fragile` recomputes a family's verdicts with each seed left out and names the seeds that flip a verdict.
- :func:`paired_images` and :func:`bootstrap_difference` add the test set's sampling noise to a comparison's
  interval (a bootstrap over seeds and test images) and split the variance into its seed and test-set shares.

References:

- [0] Student, The probable error of a mean, Biometrika 6:1-25, 1908 (paired t-test, t-interval).
- [1] Schuirmann, A comparison of the two one-sided tests procedure and the power approach for assessing the
  equivalence of average bioavailability, J. Pharmacokinet. Biopharm. 15:657-680, 1987 (TOST).
- [2] Holm, A simple sequentially rejective multiple test procedure, Scand. J. Statist. 6:65-70, 1979.
- [3] Marcus, Peritz & Gabriel, On closed testing procedures with special reference to ordered analysis of
  variance, Biometrika 63:655-660, 1976 (closed testing).
- [4] Shaffer, Modified sequentially rejective multiple test procedures, JASA 81:826-831, 1986 (Holm with
  logically related hypotheses).
- [5] Owen, A special case of a bivariate non-central t-distribution, Biometrika 52:437-446, 1965, and Phillips,
  Power of the two one-sided tests procedure in bioequivalence, J. Pharmacokinet. Biopharm. 18:137-144, 1990
  (exact TOST power).
- [6] Cohen, Statistical Power Analysis for the Behavioral Sciences, 2nd ed., 1988 (power of the t-test, MDE).
- [7] Owen, The pigeonhole bootstrap, Ann. Appl. Stat. 1:386-411, 2007 (bootstrap of a crossed design), and
  Davison & Hinkley, Bootstrap Methods and their Application, 1997, section 3.8 (multi-level resampling).
- [8] Searle, Casella & McCulloch, Variance Components, 1992 (two-way crossed ANOVA estimators).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import optimize
from scipy import stats as st

ALPHA = 0.05  # family-wise error rate of every family
POWER = 0.80  # the power that MDE and seeds-needed are computed for
CONFIDENCE = 0.95  # the headline interval; TOST's interval is 1 - 2 * ALPHA (90%)

BETTER, WORSE, EQUIVALENT, UNDERPOWERED = "better", "worse", "equivalent", "underpowered"

# The rule, in the one sentence every table prints under its verdicts.
RULE = (f"Each table's comparisons on one protocol form one family, decided at family-wise α = {ALPHA:g} by closed "
        "testing (Marcus, Peritz & Gabriel 1976) with Bonferroni local tests over all 2k hypotheses of its k "
        "comparisons together, k two-sided paired t-tests of no difference and k paired TOST tests of a difference "
        "beyond ±margin (Schuirmann 1987), which is Holm's step-down procedure (Holm 1979) using that a comparison's "
        "two null hypotheses cannot both hold (Shaffer 1986): better or worse when the difference's adjusted p is "
        f"below {ALPHA:g}, equivalent when the TOST's adjusted p is below {ALPHA:g}, otherwise underpowered.")

_TINY = 1e-17  # a tail probability below this is 0 to double precision next to 1


# -- pairing (item 3) ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pairing:
    """The paired differences ``method - reference`` of one comparison, on the seeds both sides have.

    ``seeds`` are the shared seeds used (ascending), ``differences`` the difference at each, in that order;
    ``only_reference`` and ``only_method`` the seeds that one side has and the other has not (a missing or
    non-finite value counts as not having the seed): listed, never dropped in silence.
    """

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    only_reference: tuple[int, ...] = ()
    only_method: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        """The number of pairs."""
        return len(self.seeds)

    def without(self, seed: int) -> Pairing:
        """The same comparison with ``seed`` left out (unchanged when it does not have the seed)."""
        keep = [i for i, s in enumerate(self.seeds) if s != seed]
        return replace(self, seeds=tuple(self.seeds[i] for i in keep),
                       differences=tuple(self.differences[i] for i in keep))

    def text(self) -> str:
        """'n = 3 pairs (seeds 0, 1, 2); unpaired: seed 3 (reference only), seed 4 (method only)'."""
        out = f"n = {self.n} pair{'' if self.n == 1 else 's'} (seeds {_seeds(self.seeds) or 'none'})"
        extra = [f"seed {s} (reference only)" for s in self.only_reference]
        extra += [f"seed {s} (method only)" for s in self.only_method]
        return out + (f"; unpaired: {', '.join(extra)}" if extra else "")


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def paired(reference: Mapping[int, float | None], method: Mapping[int, float | None]) -> Pairing:
    """Pair ``method`` with ``reference`` by seed: ``d_s = method[s] - reference[s]`` for every seed s where both
    values are finite; the seeds where only one side has a finite value are listed in the result."""
    ref = {int(s) for s, v in reference.items() if _finite(v)}
    met = {int(s) for s, v in method.items() if _finite(v)}
    shared = sorted(ref & met)
    diffs = tuple(float(method[s]) - float(reference[s]) for s in shared)  # type: ignore[arg-type]
    return Pairing(tuple(shared), diffs, tuple(sorted(ref - met)), tuple(sorted(met - ref)))


# -- the tests of one comparison ------------------------------------------------------------------------
def _mean_sd(d: Sequence[float]) -> tuple[float, float]:
    n = len(d)
    if n == 0:
        return math.nan, math.nan
    x = np.asarray(d, dtype=float)
    return float(x.mean()), (float(x.std(ddof=1)) if n >= 2 else math.nan)


def interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t-interval of the mean difference [0]: ``mean ± t_{(1+confidence)/2, n-1} * sd / sqrt(n)``.
    (NaN, NaN) below n = 2; zero width when every difference is the same (sd = 0)."""
    n = len(differences)
    mean, sd = _mean_sd(differences)
    if n < 2:
        return math.nan, math.nan
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def t_test(differences: Sequence[float]) -> float:
    """Two-sided paired t-test of no difference [0]: ``t = mean / (sd / sqrt(n))``, ``p = 2 * P(T_{n-1} > |t|)``.
    NaN below n = 2. At sd = 0 the test takes its limit: p = 0 when the (common) difference is not 0, else 1."""
    n = len(differences)
    mean, sd = _mean_sd(differences)
    if n < 2:
        return math.nan
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * st.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def tost(differences: Sequence[float], margin: float) -> float:
    """Paired TOST of equivalence within ±``margin`` [1]: the larger p of the one-sided t-tests of
    H0: mean <= -margin (``p = P(T_{n-1} > (mean + margin) / se)``) and H0: mean >= +margin
    (``p = P(T_{n-1} < (mean - margin) / se)``), ``se = sd / sqrt(n)``; p < α exactly when the 1 - 2α t-interval
    lies inside ±margin. NaN below n = 2; at sd = 0 the limit: 0 when |mean| < margin, else 1."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, not {margin}")
    n = len(differences)
    mean, sd = _mean_sd(differences)
    if n < 2:
        return math.nan
    if sd == 0:
        return 0.0 if abs(mean) < margin else 1.0
    se = sd / math.sqrt(n)
    lower = float(st.t.sf((mean + margin) / se, n - 1))
    upper = float(st.t.cdf((mean - margin) / se, n - 1))
    return max(lower, upper)


# -- one rule for the family (item 1) -------------------------------------------------------------------
def family_adjusted(p_difference: Sequence[float], p_tost: Sequence[float]) -> tuple[list[float], list[float]]:
    """Adjusted p of every hypothesis of a family under :data:`RULE`.

    Comparison j has two hypotheses, H_j^diff (no difference) and H_j^tost (|difference| >= margin); with a
    positive margin they cannot both hold. Closed testing [3] with Bonferroni local tests rejects H_h at α when
    every consistent intersection ``H_I`` (at most one hypothesis per comparison) that contains it has
    ``|I| * min_{i in I} p_i <= α``, so the adjusted p is ``max over consistent I containing h of
    min(1, |I| * min_{i in I} p_i)``. The worst I of size s adds the s - 1 other comparisons with the largest
    ``M_l = max(p_l^diff, p_l^tost)``, so with M_(1) >= M_(2) >= ... the other comparisons' sorted values,
    ``adj(h) = max_{s=1..k} min(1, s * min(p_h, M_(s-1)))`` (M_(0) = 1): Holm [2] with Shaffer's logical
    restriction [4]. Never above Holm over the 2k hypotheses, equal to the raw p for one comparison.
    Hypotheses with a NaN p (no test: n < 2) are not in the family and keep NaN.
    """
    if len(p_difference) != len(p_tost):
        raise ValueError("one difference p and one TOST p per comparison")
    ps = [[p for p in pair if math.isfinite(p)] for pair in zip(p_difference, p_tost, strict=True)]
    worst = [max(pair) if pair else math.nan for pair in ps]

    def adjust(j: int, p: float) -> float:
        if not math.isfinite(p):
            return math.nan
        others = sorted((m for i, m in enumerate(worst) if i != j and math.isfinite(m)), reverse=True)
        best, running = 0.0, p
        for s in range(1, len(others) + 2):
            if s > 1:
                running = min(running, others[s - 2])
            best = max(best, min(1.0, s * running))
        return best

    return ([adjust(j, p) for j, p in enumerate(p_difference)], [adjust(j, p) for j, p in enumerate(p_tost)])


@dataclass(frozen=True)
class Verdict:
    """One comparison decided under :data:`RULE` and the numbers behind it.

    ``word``: better / worse / equivalent / underpowered; ``p``: the adjusted p the word rests on (the
    difference's for better and worse, the TOST's for equivalent, the smaller of the two for underpowered: the
    nearer to a decision); ``within``: a better/worse difference that the family's TOST also puts inside ±margin;
    ``mean``, ``ci95``, ``ci90`` (TOST's interval) and ``sd`` of the n paired differences; ``mde``: the smallest
    true difference the paired t-test finds with 80% power at n and nominal α (:func:`mde`); ``reason``: why a
    comparison has no test or a degenerate one (n < 2, sd = 0), else empty.
    """

    word: str
    p: float
    n: int
    mean: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    mde: float
    margin: float
    sd: float
    p_difference: float
    p_tost: float
    p_difference_adjusted: float
    p_tost_adjusted: float
    within: bool = False
    reason: str = ""
    pairing: Pairing | None = field(default=None, compare=False)

    def text(self) -> str:
        """'better by +1.2 (n=5; adjusted p=0.004; MDE 0.8)', 'equivalent within ±0.5 (n=5; adjusted TOST
        p=0.01; MDE 0.4)', 'underpowered at ±0.5 (n=3; nearest adjusted p=0.2; MDE 1.1)', 'no test at n=1'."""
        if self.n < 2:
            return f"no test at n={self.n}"
        mde_ = f"MDE {self.mde:.1f}" if math.isfinite(self.mde) else "MDE —"
        if self.word in (BETTER, WORSE):
            within = f", within ±{self.margin:g}" if self.within else ""
            return f"{self.word} by {self.mean:+.1f}{within} (n={self.n}; adjusted p={self.p:.2g}; {mde_})"
        if self.word == EQUIVALENT:
            return f"equivalent within ±{self.margin:g} (n={self.n}; adjusted TOST p={self.p:.2g}; {mde_})"
        return f"underpowered at ±{self.margin:g} (n={self.n}; nearest adjusted p={self.p:.2g}; {mde_})"


def _margins(names: Sequence[str], margin: float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(margin, Mapping):
        return {k: float(margin[k]) for k in names}
    return {k: float(margin) for k in names}


def _words(family: Mapping[str, Pairing], margins: Mapping[str, float], alpha: float
           ) -> dict[str, tuple[str, bool, float, float, float, float]]:
    """Per comparison: (word, within, p_diff, p_tost, adjusted p_diff, adjusted p_tost) under the rule."""
    names = list(family)
    p_diff = [t_test(family[k].differences) for k in names]
    p_eq = [tost(family[k].differences, margins[k]) for k in names]
    adj_diff, adj_eq = family_adjusted(p_diff, p_eq)
    out = {}
    for k, pd_, pe, qd, qe in zip(names, p_diff, p_eq, adj_diff, adj_eq, strict=True):
        significant, equivalent = qd < alpha, qe < alpha  # NaN compares False: no test decides nothing
        mean = _mean_sd(family[k].differences)[0]
        word = (BETTER if mean > 0 else WORSE) if significant else EQUIVALENT if equivalent else UNDERPOWERED
        out[k] = (word, significant and equivalent, pd_, pe, qd, qe)
    return out


def decide_family(family: Mapping[str, Pairing], margin: float | Mapping[str, float], alpha: float = ALPHA
                  ) -> dict[str, Verdict]:
    """Decide every comparison of ``family`` (name -> :class:`Pairing`) under :data:`RULE` at family-wise
    ``alpha``; ``margin`` is the equivalence margin (points), one for all or one per comparison name.

    better / worse: the difference's adjusted p < alpha (the sign of the mean difference, method - reference,
    says which); equivalent: not that, and the TOST's adjusted p < alpha; otherwise underpowered. A comparison
    with fewer than 2 pairs has no test, stays out of the family and is underpowered with its reason; one whose
    differences are all equal (sd = 0) is decided by the tests' limits and says so in ``reason``.
    """
    margins = _margins(list(family), margin)
    words = _words(family, margins, alpha)
    out = {}
    for k, c in family.items():
        word, within, pd_, pe, qd, qe = words[k]
        mean, sd = _mean_sd(c.differences)
        if c.n < 2:
            reason = f"no test at n = {c.n}: a paired t-test needs 2 pairs"
        elif sd == 0:
            reason = (f"sd = 0: all {c.n} differences equal {mean:+g}, so the tests take their limits (p = 0 or 1); "
                      "check that the seeds vary what they should")
        else:
            reason = ""
        if word in (BETTER, WORSE):
            p = qd
        elif word == EQUIVALENT:
            p = qe
        else:
            p = min((q for q in (qd, qe) if math.isfinite(q)), default=math.nan)
        out[k] = Verdict(word, p, c.n, mean, interval(c.differences), interval(c.differences, 1 - 2 * ALPHA),
                         mde(sd, c.n), margins[k], sd, pd_, pe, qd, qe, within, reason, c)
    return out


# -- power, MDE, seeds needed (item 1) ------------------------------------------------------------------
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


# -- fragile verdicts (item 5) --------------------------------------------------------------------------
@dataclass(frozen=True)
class Fragility:
    """Leave-one-seed-out: ``flips`` maps each seed whose removal changes the verdict to the word it then gets."""

    word: str
    flips: dict[int, str]

    @property
    def fragile(self) -> bool:
        return bool(self.flips)

    def text(self) -> str:
        """'robust to leaving out any one seed' / 'fragile: without seed 3 it is equivalent'."""
        if not self.flips:
            return "robust to leaving out any one seed"
        return "fragile: " + "; ".join(f"without seed {s} it is {w}" for s, w in sorted(self.flips.items()))


def fragile(family: Mapping[str, Pairing], margin: float | Mapping[str, float], alpha: float = ALPHA
            ) -> dict[str, Fragility]:
    """Leave-one-seed-out verdicts: for every seed of the family, leave it out of every comparison that has it,
    decide the whole family again under :data:`RULE` (the family's correction changes too) and record each
    comparison whose word changes. A verdict with any flip is fragile: one seed decides it."""
    margins = _margins(list(family), margin)
    base = {k: v[0] for k, v in _words(family, margins, alpha).items()}
    flips: dict[str, dict[int, str]] = {k: {} for k in family}
    for seed in sorted({s for c in family.values() for s in c.seeds}):
        without = {k: c.without(seed) for k, c in family.items()}
        for k, v in _words(without, margins, alpha).items():
            if v[0] != base[k]:
                flips[k][seed] = v[0]
    return {k: Fragility(base[k], flips[k]) for k in family}


# -- the test set's share of the noise (item 6) ---------------------------------------------------------
def image_correctness(predictions: Mapping[str, np.ndarray], protocol: str = "knn"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """From a record's predictions (:func:`ssl_bench.results.read_predictions`: ``index``, ``labels`` and one
    array per protocol, one row per evaluation seed): the test images' positions (ascending) and, per image, the
    share of evaluation rows that classify it right (``pred == label``; 0 or 1 with one row). Every row must hold
    the same images."""
    if protocol not in predictions:
        raise KeyError(f"no '{protocol}' predictions in this record (it has: {', '.join(sorted(predictions))})")
    index = np.atleast_2d(np.asarray(predictions["index"]))
    right = np.atleast_2d(np.asarray(predictions[protocol]) == np.asarray(predictions["labels"]))
    order = np.argsort(index, axis=1, kind="stable")
    index, right = np.take_along_axis(index, order, 1), np.take_along_axis(right, order, 1)
    if not (index == index[0]).all():
        raise ValueError("the evaluation rows hold different test images; compare one row at a time")
    return index[0].astype(np.int64), right.mean(axis=0)


@dataclass(frozen=True)
class ImagePairing:
    """Per shared seed, the per-image correctness of reference and method over the same test images (``index``),
    and the seeds that only one side has (or has without predictions)."""

    index: np.ndarray
    correct: dict[int, tuple[np.ndarray, np.ndarray]]
    only_reference: tuple[int, ...] = ()
    only_method: tuple[int, ...] = ()

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.correct))


def paired_images(reference: Mapping[int, Mapping[str, np.ndarray] | None],
                  method: Mapping[int, Mapping[str, np.ndarray] | None], protocol: str = "knn") -> ImagePairing:
    """Pair two sides' per-seed predictions (seed -> read_predictions dict, or None for a record without them)
    on their shared seeds, image by image. The bootstrap resamples one test set shared by all seeds and both
    sides, so every record must hold the same test images; a ValueError says which does not."""
    ref = {int(s): p for s, p in reference.items() if p is not None}
    met = {int(s): p for s, p in method.items() if p is not None}
    shared = sorted(set(ref) & set(met))
    index: np.ndarray | None = None
    correct = {}
    for s in shared:
        (i_r, c_r), (i_m, c_m) = image_correctness(ref[s], protocol), image_correctness(met[s], protocol)
        for side, i in (("reference", i_r), ("method", i_m)):
            if index is None:
                index = i
            if i.shape != index.shape or not (i == index).all():
                raise ValueError(f"seed {s} ({side}) holds other test images than seed {shared[0]}: the "
                                 "bootstrap needs one test set")
        correct[s] = (c_r, c_m)
    return ImagePairing(index if index is not None else np.zeros(0, np.int64), correct,
                        tuple(sorted(set(ref) - set(met))), tuple(sorted(set(met) - set(ref))))


def _mean_squares(d: np.ndarray) -> tuple[float, float]:
    """MS_image and MS_error of the two-way crossed layout ``d`` [S, N] (MS_error = 0 at S = 1)."""
    s, n = d.shape
    r, c, g = d.mean(axis=1), d.mean(axis=0), float(d.mean())
    ms_image = s * float(((c - g) ** 2).sum()) / (n - 1) if n > 1 else 0.0
    ms_error = float(((d - r[:, None] - c[None, :] + g) ** 2).sum()) / ((s - 1) * (n - 1)) if s > 1 and n > 1 else 0.0
    return ms_image, ms_error


def variance_split(d: np.ndarray) -> tuple[float, float]:
    """The variance of the mean difference split into its seed and test-set parts, from the per-seed, per-image
    differences ``d`` [S seeds, N images] (crossed: every seed sees the same test images), with the model
    ``d_si = g + a_s + b_i + e_si`` and the two-way ANOVA estimators [8] (r_s, c_i, g: seed, image, grand means):

        seed part = sum_s (r_s - g)^2 / ((S - 1) S)        estimates (var a + var e / N) / S: what the seed-only
                                                            t-interval covers (0 at S = 1)
        test part = max(0, MS_image - MS_error) / (S N)     estimates var b / N: the fixed test set's share, which
                                                            the seed-only interval misses
        MS_image = S sum_i (c_i - g)^2 / (N - 1),  MS_error = sum_si (d_si - r_s - c_i + g)^2 / ((S - 1)(N - 1))

    Their sum estimates the variance of the mean difference; the seed-by-image interaction e is counted once, in
    the seed part. At S = 1, MS_error = 0 and the test part is the per-image variance / N (McNemar's). In the units
    of ``d``, squared."""
    d = np.asarray(d, dtype=float)
    s, n = d.shape
    r = d.mean(axis=1)
    seed = float(((r - r.mean()) ** 2).sum() / (s - 1) / s) if s > 1 else 0.0
    ms_image, ms_error = _mean_squares(d)
    return seed, max(0.0, ms_image - ms_error) / (s * n)


@dataclass(frozen=True)
class Bootstrap:
    """A comparison's mean accuracy difference (points, method - reference) with the test set's noise in it.

    ``ci``: the interval to print beside ``seed_ci``, ``mean ± max(t_nu * sqrt(var_seed + var_test),
    t_{S-1} * sqrt(var_seed))`` with Welch-Satterthwaite's ``nu = (v_s + v_t)^2 / (v_s^2 / (S - 1) +
    v_t^2 / (N - 1))`` (Satterthwaite, Biometrics Bull. 2:110-114, 1946): it contains ``seed_ci``, equals it as
    the test part vanishes (many images) and covers 94-98% in a simulation of S = 2-8 seeds at any test share
    (Satterthwaite's df alone can make it narrower than ``seed_ci`` and cover 92.5% at S = 3); NaN at S = 1.
    ``ci_percentile``: the percentile interval of the hierarchical paired bootstrap over seeds and test images
    (:func:`bootstrap_difference`); with few seeds it is narrower than both (S - 1 df, few distinct resamples).
    ``seed_ci``: the seed-only t-interval of the per-seed differences (what tables show today);
    ``var_seed`` / ``var_test``: :func:`variance_split` (points^2), ``share_test`` the test set's share of their
    sum; ``n_seeds``, ``n_images``; ``resamples`` and ``rng_seed`` reproduce ``ci_percentile``."""

    mean: float
    ci: tuple[float, float]
    ci_percentile: tuple[float, float]
    seed_ci: tuple[float, float]
    var_seed: float
    var_test: float
    share_test: float
    n_seeds: int
    n_images: int
    resamples: int
    rng_seed: int


def _image_draws(effects: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Per resample, the mean of ``effects`` over N test images drawn with replacement, [B]. Images with the same
    effect are interchangeable, so the draw is a multinomial over the distinct values with their counts
    (``np.unique``; at most 2S + 1 values for right/wrong answers): the same distribution as drawing N indices."""
    values, counts = np.unique(effects, return_counts=True)
    drawn = rng.multinomial(effects.size, counts / counts.sum(), size=resamples)  # [B, K]
    return drawn @ values / effects.size


def _seed_and_test_interval(mean: float, v_seed: float, v_test: float, s: int, n: int, confidence: float
                            ) -> tuple[float, float]:
    """``Bootstrap.ci``: Satterthwaite's t-interval of the summed variance, never narrower than the seed-only one."""
    if s < 2:
        return math.nan, math.nan
    total = v_seed + v_test
    if total == 0:
        return mean, mean
    q = 0.5 + confidence / 2
    nu = total**2 / (v_seed**2 / (s - 1) + (v_test**2 / (n - 1) if n > 1 else 0.0))
    half = max(float(st.t.ppf(q, nu)) * math.sqrt(total), float(st.t.ppf(q, s - 1)) * math.sqrt(v_seed))
    return mean - half, mean + half


def bootstrap_difference(correct: Mapping[int, tuple[np.ndarray, np.ndarray]], resamples: int = 2000,
                         rng_seed: int = 0, confidence: float = CONFIDENCE) -> Bootstrap:
    """Interval of a comparison's mean accuracy difference over seeds and test images.

    ``correct``: per shared seed, (reference, method) correctness per test image (bool, or a share of evaluation
    rows), over the same N images for every seed (:func:`paired_images`); ``d_si = m_si - r_si`` and the estimate
    is ``100 * mean_si d_si``. Each resample [7] draws S seeds with replacement (their per-seed mean differences
    ``r_s``, paired) and one set of N test images with replacement, the same for every seed and both methods (the
    test set is one draw that every seed sees, so more seeds never average its noise away), and adds the drawn
    images' mean image effect ``lambda * (c_i - g)`` (c_i: image i's difference averaged over seeds):

        theta* = 100 * (mean_j r_{s*_j} + mean_j lambda (c_{i*_j} - g)),
        lambda = sqrt(max(0, 1 - MS_error / MS_image))

    Resampling raw cells at both levels would count the seed-by-image interaction e (already in every r_s) up to
    three times [7] (with the suite's 10,000 images and few seeds that is most of its variance); lambda shrinks
    the image effects to the image component alone, so the bootstrap variance matches :func:`variance_split`
    (variance-component rescaling, Carpenter, Goldstein & Rasbash, JRSS C 52:431-443, 2003). ``ci_percentile``
    is the percentile interval of ``theta*``; with few seeds it is too narrow (the seed stage has S - 1 df and few
    distinct resamples), so tables print ``ci`` (see :class:`Bootstrap`), the t-interval of the same two variance
    parts. Deterministic: ``np.random.default_rng(rng_seed)``.
    """
    seeds = sorted(correct)
    if not seeds:
        raise ValueError("no shared seeds to bootstrap")
    ref = np.stack([np.asarray(correct[s][0], dtype=float) for s in seeds])
    met = np.stack([np.asarray(correct[s][1], dtype=float) for s in seeds])
    if ref.shape != met.shape or ref.shape[1] == 0:
        raise ValueError(f"every seed needs both sides over the same test images (shapes {ref.shape}, {met.shape})")
    d = met - ref  # [S, N]
    s, n = d.shape
    ms_image, ms_error = _mean_squares(d)
    shrink = math.sqrt(max(0.0, 1 - ms_error / ms_image)) if ms_image > 0 else 0.0
    rng = np.random.default_rng(rng_seed)
    per_seed = d.mean(axis=1)
    seed_part = per_seed[rng.integers(0, s, size=(resamples, s))].mean(axis=1)
    image_part = _image_draws(shrink * (d.mean(axis=0) - d.mean()), resamples, rng)
    theta = 100 * (seed_part + image_part)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(theta, [tail, 1 - tail])
    mean = float(100 * d.mean())
    var_seed, var_test = (100**2 * v for v in variance_split(d))
    total = var_seed + var_test
    return Bootstrap(mean, _seed_and_test_interval(mean, var_seed, var_test, s, n, confidence), (float(lo), float(hi)),
                     interval((100 * per_seed).tolist(), confidence), var_seed, var_test,
                     var_test / total if total > 0 else math.nan, s, n, resamples, rng_seed)
