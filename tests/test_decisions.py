"""ssl_bench.analysis.decisions: the family rule, power and seeds-needed over the whole range, every n visible,
fragile verdicts, and the test set's share of the noise. Synthetic numbers only; expected values are computed by
hand where a closed form exists (Student's t with 2 df: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2; chi-square with
2 df: F^-1(q) = -2 ln(1 - q))."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.power import TTestPower, ttest_power

from ssl_bench.analysis import decisions as D


def _sf2(t: float) -> float:
    """P(T_2 > t), Student's t with 2 degrees of freedom, in closed form."""
    return (1 - t / math.sqrt(t * t + 2)) / 2


# -- pairing: every n visible ------------------------------------------------------------------------------
def test_paired_lists_unshared_seeds():
    reference = {0: 80.0, 1: 81.0, 2: 82.0, 3: 83.0, 6: None}
    method = {0: 81.0, 1: 81.5, 2: None, 4: 85.0, 5: math.nan, 6: 86.0}
    c = D.paired(reference, method)
    assert c.seeds == (0, 1) and c.n == 2
    assert c.differences == (1.0, 0.5)
    assert c.only_reference == (2, 3)  # seed 2: the method's value is missing
    assert c.only_method == (4, 6)  # seed 5: NaN is not a value; seed 6: the reference's is missing
    assert c.text() == "n = 2 pairs (seeds 0, 1); unpaired: seed 2 (reference only), seed 3 (reference only), " \
                       "seed 4 (method only), seed 6 (method only)"
    assert c.without(0).seeds == (1,) and c.without(0).differences == (0.5,)
    assert c.without(9) == c


# -- the tests of one comparison, by hand ------------------------------------------------------------------
def test_t_test_tost_interval_by_hand():
    d = [1.0, 2.0, 3.0]  # mean 2, sd 1, se 1/sqrt(3), df 2
    t = 2 * math.sqrt(3)
    assert D.t_test(d) == pytest.approx(2 * _sf2(t), rel=1e-12)  # 0.0742
    # TOST within ±4: max(P(T > (2 + 4) sqrt 3), P(T < (2 - 4) sqrt 3)) = P(T > 2 sqrt 3)
    assert D.tost(d, 4.0) == pytest.approx(_sf2(t), rel=1e-12)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    lo, hi = D.interval(d)
    assert (lo, hi) == (pytest.approx(2 - half), pytest.approx(2 + half))
    half90 = 2.919985580355516 / math.sqrt(3)  # t_{0.95, 2}
    assert D.interval(d, 0.90)[1] == pytest.approx(2 + half90)


def test_degenerate_comparisons():
    assert math.isnan(D.t_test([1.0])) and math.isnan(D.tost([1.0], 0.5))
    assert all(math.isnan(x) for x in D.interval([1.0]))
    # sd = 0: the tests' limits, no division by zero
    assert D.t_test([0.3, 0.3]) == 0.0 and D.t_test([0.0, 0.0, 0.0]) == 1.0
    assert D.tost([0.3, 0.3], 0.5) == 0.0 and D.tost([0.7, 0.7], 0.5) == 1.0
    assert D.interval([0.3, 0.3]) == (0.3, 0.3)
    with pytest.raises(ValueError):
        D.tost([1.0, 2.0], 0.0)


# -- one rule for the family ---------------------------------------------------------------------------
def _closed_testing(p_diff: list[float], p_tost: list[float]) -> tuple[list[float], list[float]]:
    """The adjusted p by brute force: every consistent intersection (at most one hypothesis per comparison)."""
    k = len(p_diff)
    hyps = [(j, 0, p_diff[j]) for j in range(k)] + [(j, 1, p_tost[j]) for j in range(k)]
    adj = {(j, w): 0.0 for j, w, _ in hyps}
    for choice in itertools.product((None, 0, 1), repeat=k):
        members = [(j, w) for j, w in enumerate(choice) if w is not None]
        if not members:
            continue
        local = min(1.0, len(members) * min(p_diff[j] if w == 0 else p_tost[j] for j, w in members))
        for h in members:
            adj[h] = max(adj[h], local)
    return [adj[(j, 0)] for j in range(k)], [adj[(j, 1)] for j in range(k)]


def _holm(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def test_family_adjusted_is_closed_testing_and_never_above_holm():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4):
        for _ in range(50):
            p_diff, p_tost = rng.uniform(0, 0.2, k).tolist(), rng.uniform(0, 1, k).tolist()
            got = D.family_adjusted(p_diff, p_tost)
            want = _closed_testing(p_diff, p_tost)
            assert got[0] == pytest.approx(want[0], abs=1e-15) and got[1] == pytest.approx(want[1], abs=1e-15)
            holm = _holm(p_diff + p_tost)
            assert all(a <= h + 1e-15 for a, h in zip(got[0] + got[1], holm, strict=True))


def test_family_adjusted_by_hand():
    # comparison 1: difference p .01, TOST p .6; comparison 2: difference p .5, TOST p .046
    adj_diff, adj_tost = D.family_adjusted([0.01, 0.5], [0.6, 0.046])
    assert adj_tost[1] == pytest.approx(2 * 0.046)  # max(.046, 2 * min(.046, max(.01, .6)))
    assert adj_diff[0] == pytest.approx(2 * 0.01)
    assert adj_diff[1] == 1.0  # max(.5, min(1, 2 * min(.5, max(.01, .6))))
    assert adj_tost[0] == 1.0  # max(.6, min(1, 2 * min(.6, max(.5, .046))))
    # one comparison: its own p (its two nulls cannot both hold)
    assert D.family_adjusted([0.03], [0.046]) == ([0.03], [0.046])
    # a comparison without a test stays out of the family
    assert D.family_adjusted([0.01, math.nan], [0.9, math.nan])[0][0] == 0.01


def test_tost_passing_uncorrected_is_not_equivalent_in_a_family():
    h = 0.283  # differences -h, 0, +h: TOST within ±0.5 has t = 0.5 sqrt(3) / h on 2 df
    p_uncorrected = _sf2(0.5 * math.sqrt(3) / h)
    assert 0.045 < p_uncorrected < 0.047  # the issue's p = .046
    close = D.paired({0: 80, 1: 80, 2: 80}, {0: 80 - h, 1: 80.0, 2: 80 + h})
    other = D.paired({0: 80, 1: 80, 2: 80}, {0: 79.0, 1: 80.5, 2: 82.0})
    alone = D.decide_family({"close": close}, 0.5)["close"]
    assert alone.word == D.EQUIVALENT and alone.p == pytest.approx(p_uncorrected)
    v = D.decide_family({"close": close, "other": other}, 0.5)
    assert v["close"].p_tost == pytest.approx(p_uncorrected)
    assert v["close"].p_tost_adjusted == pytest.approx(2 * p_uncorrected)
    assert v["close"].word == D.UNDERPOWERED and v["other"].word == D.UNDERPOWERED
    assert "underpowered at ±0.5 (n=3" in v["close"].text()
    assert "Holm" in D.RULE and "Schuirmann" in D.RULE and D.RULE.count(". ") == 0


def test_difference_passing_uncorrected_is_not_better_in_a_family():
    close = D.paired({0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.23, 1: 0.33, 2: 0.43})  # t = 0.33 sqrt(3) / 0.1 on 2 df
    p_uncorrected = 2 * _sf2(0.33 * math.sqrt(3) / 0.1)
    assert 0.025 < p_uncorrected < 0.035
    other = D.paired({0: 0.0, 1: 0.0, 2: 0.0}, {0: -1.0, 1: 0.5, 2: 2.0})
    assert D.decide_family({"close": close}, 0.5)["close"].word == D.BETTER
    v = D.decide_family({"close": close, "other": other}, 0.5)["close"]
    assert v.p_difference == pytest.approx(p_uncorrected) and v.word == D.UNDERPOWERED


def test_verdict_words_and_numbers():
    ref = {s: 80.0 for s in range(5)}
    better = D.paired(ref, {s: 80.0 + x for s, x in enumerate([1.0, 1.1, 0.9, 1.05, 0.95])})
    worse = D.paired(ref, {s: 80.0 - x for s, x in enumerate([1.0, 1.1, 0.9, 1.05, 0.95])})
    small = D.paired(ref, {s: 80.0 + x for s, x in enumerate([0.10, 0.12, 0.08, 0.11, 0.09])})
    v = D.decide_family({"b": better, "w": worse, "s": small}, 0.5)
    assert v["b"].word == D.BETTER and v["w"].word == D.WORSE
    assert v["s"].word == D.BETTER and v["s"].within  # real, and inside ±0.5: both said
    assert v["b"].n == 5 and v["b"].mean == pytest.approx(1.0)
    assert v["b"].ci95 == pytest.approx(D.interval(better.differences))
    assert v["b"].ci90 == pytest.approx(D.interval(better.differences, 0.90))
    assert v["b"].p == v["b"].p_difference_adjusted < 0.05
    assert v["b"].mde == pytest.approx(D.mde(v["b"].sd, 5))
    assert v["s"].text().startswith("better by +0.1, within ±0.5 (n=5; adjusted p=")


def test_n2_and_zero_variance_families():
    ref = {0: 80.0, 1: 80.0, 2: 80.0}
    two = D.paired({0: 80.0, 1: 80.0}, {0: 81.0, 1: 81.1})  # n = 2: a t-test on 1 df
    one = D.paired({0: 80.0}, {0: 81.0})
    flat = D.paired(ref, {0: 80.0, 1: 80.0, 2: 80.0})  # sd = 0, mean 0
    shifted = D.paired(ref, {0: 80.7, 1: 80.7, 2: 80.7})  # sd = 0, mean 0.7
    v = D.decide_family({"two": two, "one": one, "flat": flat, "shifted": shifted}, 0.5)
    assert v["two"].n == 2 and math.isfinite(v["two"].p_difference) and math.isfinite(v["two"].mde)
    # mean 1.05, sd 0.1 / sqrt(2), se = sd / sqrt(2) = 0.05, t = 21 on 1 df: p = 1 - 2 atan(t) / pi
    assert v["two"].p_difference == pytest.approx(1 - 2 * math.atan(21) / math.pi)
    assert v["one"].word == D.UNDERPOWERED and math.isnan(v["one"].p) and "n = 1" in v["one"].reason
    assert v["one"].text() == "no test at n=1"
    assert v["flat"].word == D.EQUIVALENT and "sd = 0" in v["flat"].reason and v["flat"].mde == 0.0
    assert v["shifted"].word == D.BETTER and not v["shifted"].within and "sd = 0" in v["shifted"].reason
    # the untested comparison is not in the family: the others' adjusted p are those of a family of three
    three = D.decide_family({"two": two, "flat": flat, "shifted": shifted}, 0.5)
    assert three["two"].p_difference_adjusted == v["two"].p_difference_adjusted


# -- power, MDE and seeds needed ----------------------------------------------------------------------
def test_power_t_agrees_with_statsmodels_and_is_finite_at_large_effects():
    assert D.power_t(40.0, 1.0, 5) == 1.0  # effect/sd = 40 at n = 5
    assert D.power_t(62660.30164073 / math.sqrt(79), 1.0, 79) == 1.0  # scipy 1.17's nct.sf is NaN at this nc
    assert D.power_t(0.0, 1.0, 5) == pytest.approx(0.05)  # no effect: the size of the test
    assert D.power_t(1.0, 1.0, 2) == pytest.approx(TTestPower().power(1.0, 2, 0.05))
    for n in (2, 3, 5, 10, 50):
        for es in np.geomspace(1e-3, 1e5, 60):
            ours = D.power_t(float(es), 1.0, n)
            assert 0.0 <= ours <= 1.0, (n, es, ours)
            ref = ttest_power(es, n, 0.05)
            if math.isfinite(ref):  # statsmodels (via scipy's nct) is NaN at some large effects
                assert ours == pytest.approx(ref, abs=1e-9), (n, es)
    assert D.power_t(0.5, 0.0, 3) == 1.0 and D.power_t(0.0, 0.0, 3) == 0.05  # sd = 0: the limits
    assert math.isnan(D.power_t(1.0, 1.0, 1))


def test_mde_agrees_with_statsmodels():
    for n in (2, 3, 5, 10, 30):
        want = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert D.mde(1.0, n) == pytest.approx(want, rel=1e-5)
        assert D.mde(0.4, n) == pytest.approx(0.4 * want, rel=1e-5)
    assert D.mde(0.0, 3) == 0.0 and math.isnan(D.mde(1.0, 1)) and math.isnan(D.mde(math.nan, 3))


@pytest.mark.parametrize(("n", "sd", "margin", "delta"), [(2, 1.0, 3.0, 0.0), (3, 1.0, 1.5, 0.0),
                                                         (5, 1.0, 1.0, 0.3), (10, 2.0, 1.5, 0.5)])
def test_power_tost_agrees_with_a_simulation(n, sd, margin, delta):
    rng = np.random.default_rng(n)
    reps = 200_000
    x = rng.normal(delta, sd, size=(reps, n))
    mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)
    c = st.t.isf(0.05, n - 1)
    simulated = float(((mean - c * se > -margin) & (mean + c * se < margin)).mean())
    exact = D.power_tost(margin, sd, n, difference=delta)
    assert exact == pytest.approx(simulated, abs=4 * math.sqrt(0.25 / reps))
    # the noncentral-t approximation is a lower bound (it is 0 at n = 2 here)
    approx = 1 - st.nct.cdf(c, n - 1, (margin + delta) * math.sqrt(n) / sd) \
        - st.nct.sf(-c, n - 1, (delta - margin) * math.sqrt(n) / sd)
    assert exact >= approx - 1e-9


def test_power_tost_over_the_whole_range():
    assert D.power_tost(0.5, 1e-6, 5) == pytest.approx(1.0, abs=1e-12)  # margin/sd = 5e5
    assert D.power_tost(0.5, 0.0, 2) == 1.0 and D.power_tost(0.5, 0.0, 2, difference=0.6) == 0.0
    # margin << sd at n = 2: a = 0.5 sqrt(2) / 100, the interval is open only for v < a / c (v half-normal), where
    # the integrand is about 2 phi(0) (a - c v): power = (2 / pi) a^2 / (2 c) to first order
    a, c = 0.5 * math.sqrt(2) / 100, st.t.isf(0.05, 1)
    assert D.power_tost(0.5, 100.0, 2) == pytest.approx(2 / math.pi * a * a / (2 * c), rel=1e-3)
    assert math.isnan(D.power_tost(0.5, 1.0, 1))
    assert D.power_tost(0.5, 1.0, 1000) == pytest.approx(2 * st.norm.cdf(0.5 * math.sqrt(1000)
                                                                        - st.norm.isf(0.05)) - 1, abs=2e-3)


def test_seeds_needed_at_the_issues_cases():
    # claim 10's kNN rows (pilot n = 3): report.seeds_needed said 7 for the first (NaN power walked past it)
    got = [D.seeds_needed(sd, 3, 0.5) for sd in (0.0751, 0.2307, 0.2919)]
    assert [g.n for g in got] == [3, 4, 5] and max(g.n for g in got) == 5  # "5 decides it"
    assert D.seeds_needed(0.02, 3, 0.5).n == 2  # claim 4's kNN: "2 does"
    for g in got:
        assert g.lo <= g.n <= g.hi
        # n is the smallest that decides: at n both tests have 80% power, at n - 1 one of them has not
        assert D.power_t(0.5, g.sd, g.n) >= 0.8 and D.power_tost(0.5, g.sd, g.n) >= 0.8
        if g.n > 2:
            assert min(D.power_t(0.5, g.sd, g.n - 1), D.power_tost(0.5, g.sd, g.n - 1)) < 0.8
    pilot = D.seeds_needed(0.68, 3, 0.5)  # claim 10's linear pilot: "the plausible range is 7-640"
    assert (pilot.n, pilot.lo, pilot.hi) == (18, 7, 627)
    assert pilot.text() == "n = 18 (95% range 7–627)"


def test_sd_interval_by_hand_and_the_edges_of_seeds_needed():
    lo, hi = D.sd_interval(1.0, 2)  # chi2 on 2 df: F^-1(q) = -2 ln(1 - q)
    assert lo == pytest.approx(math.sqrt(2 / (-2 * math.log(0.025))))
    assert hi == pytest.approx(math.sqrt(2 / (-2 * math.log(0.975))))
    zero = D.seeds_needed(0.0, 3, 0.5)
    assert (zero.n, zero.lo, zero.hi) == (2, 2, 2)
    big = D.seeds_needed(50.0, 3, 0.5, cap=100)
    assert big.n == 101 and big.text() == "n > 100 (95% range >100–>100)"
    with pytest.raises(ValueError):
        D.seeds_needed(0.5, 1, 0.5)


# -- fragile verdicts ---------------------------------------------------------------------------------
def test_leave_one_out_marks_a_fragile_verdict_and_not_a_robust_one():
    ref = {s: 80.0 for s in range(5)}
    robust = D.paired(ref, {s: 80.0 + x for s, x in enumerate([1.0, 1.1, 0.9, 1.05, 0.95])})
    # seed 4 alone carries the apparent +0.3: without it the method is within ±0.5 of the reference
    carried = D.paired(ref, {s: 80.0 + x for s, x in enumerate([0.02, -0.03, 0.01, 0.0, 1.6])})
    family = {"robust": robust, "carried": carried}
    verdicts = D.decide_family(family, 0.5)
    assert verdicts["robust"].word == D.BETTER and verdicts["carried"].word == D.UNDERPOWERED
    f = D.fragile(family, 0.5)
    assert not f["robust"].fragile and f["robust"].text() == "robust to leaving out any one seed"
    assert f["carried"].fragile and f["carried"].flips == {4: D.EQUIVALENT}
    assert f["carried"].text() == "fragile: without seed 4 it is equivalent"


def test_leave_one_out_by_hand_at_n3():
    # [1.0, 1.05, 1.9]: t = 4.51 on 2 df, p = .046 (better); without seed 0 or 1, n = 2 and p = .18 (t on 1 df)
    c = D.paired({0: 0.0, 1: 0.0, 2: 0.0}, {0: 1.0, 1: 1.05, 2: 1.9})
    mean, sd = 3.95 / 3, float(np.std([1.0, 1.05, 1.9], ddof=1))
    assert D.t_test(c.differences) == pytest.approx(2 * _sf2(mean / (sd / math.sqrt(3))))
    assert D.decide_family({"c": c}, 0.5)["c"].word == D.BETTER
    assert D.fragile({"c": c}, 0.5)["c"].flips == {0: D.UNDERPOWERED, 1: D.UNDERPOWERED}


# -- the test set's share of the noise ---------------------------------------------------------------------
def _constant(n_images: int, seeds: int = 5) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Every seed gives the same answers: the reference right on 30/40 of the images, the method on 32/40 of
    them (2/40 lost, 4/40 gained), so each per-seed difference is exactly +5 points."""
    k = n_images // 40
    ref, met = np.zeros(n_images, bool), np.zeros(n_images, bool)
    ref[: 30 * k], met[2 * k: 34 * k] = True, True
    return {s: (ref, met) for s in range(seeds)}


def test_bootstrap_widens_a_test_set_noisy_comparison():
    b = D.bootstrap_difference(_constant(40))
    assert b.mean == 5.0 and b.seed_ci == (5.0, 5.0)  # the seed-only interval has zero width
    # per-image differences: two -1, four +1, 34 zeros; sample variance 5.9/39; the mean's variance / 40
    assert b.var_seed == 0.0 and b.var_test == pytest.approx(1e4 * 5.9 / 39 / 40) and b.share_test == 1.0
    half = st.t.ppf(0.975, 39) * math.sqrt(b.var_test)  # Satterthwaite: nu = N - 1 when all of it is images
    assert b.ci == (pytest.approx(5 - half), pytest.approx(5 + half))
    lo, hi = b.ci_percentile
    assert lo < 5 < hi and (hi - lo) / (2 * 1.96 * math.sqrt(b.var_test)) == pytest.approx(1, abs=0.15)


def test_bootstrap_equals_the_seed_interval_in_the_limit_of_many_images():
    few, many = D.bootstrap_difference(_constant(40)), D.bootstrap_difference(_constant(400_000))
    assert many.mean == 5.0 and many.seed_ci == (5.0, 5.0)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    # 4 in 40 images +1, 2 in 40 -1: sample variance 0.1475 N / (N - 1), so var_test = 1e4 * 0.1475 / (N - 1)
    n = 400_000
    assert many.var_test == pytest.approx(1e4 * 0.1475 / (n - 1))
    assert width(many.ci) == pytest.approx(2 * st.t.ppf(0.975, n - 1) * 100 * math.sqrt(0.1475 / (n - 1)))
    assert width(many.ci) < 0.25 and width(few.ci) > 20  # 0.24 points at 400,000 images, 24.9 at 40
    assert width(few.ci_percentile) / width(many.ci_percentile) == pytest.approx(100, rel=0.15)
    # per-seed differences that vary, no image effect: the interval is the seed-only one
    rng = np.random.default_rng(3)
    base = rng.random(200_000) < 0.8
    correct = {}
    for s, rate in enumerate([0.004, 0.006, 0.009, 0.005]):
        met = base.copy()
        flip = rng.random(base.size) < rate
        met[flip] = ~met[flip]
        correct[s] = (base, met)
    b = D.bootstrap_difference(correct)
    assert b.share_test < 0.01 and width(b.ci) / width(b.seed_ci) == pytest.approx(1, abs=0.01)
    assert b.ci[0] <= b.seed_ci[0] and b.ci[1] >= b.seed_ci[1]  # never narrower


def test_bootstrap_is_deterministic_and_fast():
    rng = np.random.default_rng(0)
    p = rng.beta(8, 2, size=10_000)
    correct = {s: (rng.random(p.size) < p, rng.random(p.size) < np.clip(p + 0.004, 0, 1)) for s in range(8)}
    start = time.perf_counter()
    b = D.bootstrap_difference(correct, resamples=2000, rng_seed=7)
    assert time.perf_counter() - start < 5
    assert D.bootstrap_difference(correct, resamples=2000, rng_seed=7) == b
    assert D.bootstrap_difference(correct, resamples=2000, rng_seed=8).ci_percentile != b.ci_percentile
    assert b.n_seeds == 8 and b.n_images == 10_000
    # independent answers per seed: no image effect, only the seed-by-image interaction, which every per-seed
    # difference already holds; the bootstrap must not count it again (resampling raw cells would widen the
    # percentile interval about 1.7-fold here)
    assert b.var_test == 0.0
    width = b.ci_percentile[1] - b.ci_percentile[0]
    assert width < 1.1 * 2 * 1.96 * math.sqrt(b.var_seed)


def test_variance_split_by_hand():
    # r = (2/3, 1/3), c = (1, 0, 1/2), g = 1/2: seed part (1/18) / (1 * 2); MS_image = 1/2, MS_error = 1/6
    seed, test = D.variance_split(np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert seed == pytest.approx(1 / 36) and test == pytest.approx((1 / 2 - 1 / 6) / 6)
    # no image effect beyond the interaction: MS_image (1/6) < MS_error (1/2), the test part is 0
    assert D.variance_split(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])) == (0.0, 0.0)
    # one seed: the per-image variance / N (McNemar's)
    assert D.variance_split(np.array([[1.0, 0.0, -1.0, 0.0]]))[1] == pytest.approx((2 / 3) / 4)


def _predictions(index: list[int], labels: list[int], knn: list[int]) -> dict[str, np.ndarray]:
    return {"seeds": np.array([0]), "index": np.array([index]), "labels": np.array([labels]),
            "knn": np.array([knn]), "knn_k": np.array(20)}


def test_image_correctness_and_paired_images():
    pred = _predictions([2, 0, 1], [5, 5, 5], [5, 4, 5])  # image 2 right, image 0 wrong, image 1 right
    index, right = D.image_correctness(pred)
    assert index.tolist() == [0, 1, 2] and right.tolist() == [0.0, 1.0, 1.0]
    two_rows = {k: (np.vstack([v, v]) if v.ndim == 2 else v) for k, v in pred.items()}
    two_rows["knn"] = np.array([[5, 4, 5], [5, 5, 5]])  # the second row gets image 0 right too
    assert D.image_correctness(two_rows)[1].tolist() == [0.5, 1.0, 1.0]
    with pytest.raises(KeyError, match="linear"):
        D.image_correctness(pred, "linear")
    ref = {0: pred, 1: pred, 2: None}
    met = {0: _predictions([0, 1, 2], [5, 5, 5], [5, 5, 5]), 3: pred}
    pairs = D.paired_images(ref, met)
    assert pairs.seeds == (0,) and pairs.only_reference == (1,) and pairs.only_method == (3,)
    assert pairs.correct[0][0].tolist() == [0.0, 1.0, 1.0] and pairs.correct[0][1].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="other test images"):
        D.paired_images({0: pred}, {0: _predictions([0, 1, 3], [5, 5, 5], [5, 5, 5])})
