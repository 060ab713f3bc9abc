"""One rule for a family of comparisons (the comparisons of one table on one protocol): :data:`RULE`, the
adjusted p of every hypothesis (:func:`family_adjusted`), every comparison decided into a :class:`Verdict`
(:func:`decide_family`), and leave-one-seed-out fragility (:func:`fragile`: the seeds whose removal flips a
verdict, the whole family decided again). Pure functions on numbers; imports only the modules of
ssl_bench.analysis.decisions below it (comparison, power)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ssl_bench.analysis.decisions.comparison import ALPHA, Pairing, _mean_sd, interval, t_test, tost
from ssl_bench.analysis.decisions.power import mde

# References (the [n] of the docstrings):
# [2] Holm, A simple sequentially rejective multiple test procedure, Scand. J. Statist. 6:65-70, 1979.
# [3] Marcus, Peritz & Gabriel, On closed testing procedures with special reference to ordered analysis of
#     variance, Biometrika 63:655-660, 1976 (closed testing).
# [4] Shaffer, Modified sequentially rejective multiple test procedures, JASA 81:826-831, 1986 (Holm with
#     logically related hypotheses).

BETTER, WORSE, EQUIVALENT, UNDERPOWERED = "better", "worse", "equivalent", "underpowered"

# The rule, in the one sentence every table prints under its verdicts.
RULE = (f"Each table's comparisons on one protocol form one family, decided at family-wise α = {ALPHA:g} by closed "
        "testing (Marcus, Peritz & Gabriel 1976) with Bonferroni local tests over all 2k hypotheses of its k "
        "comparisons together, k two-sided paired t-tests of no difference and k paired TOST tests of a difference "
        "beyond ±margin (Schuirmann 1987), which is Holm's step-down procedure (Holm 1979) using that a comparison's "
        "two null hypotheses cannot both hold (Shaffer 1986): better or worse when the difference's adjusted p is "
        f"below {ALPHA:g}, equivalent when the TOST's adjusted p is below {ALPHA:g}, otherwise underpowered.")


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
