"""One comparison: the per-seed paired differences of two sides (:class:`Pairing`, :func:`paired`, which lists
the seeds it could not pair), their t-interval (:func:`interval`), paired t-test (:func:`t_test`) and TOST
(:func:`tost`), and the settings every decision shares (:data:`ALPHA`, :data:`POWER`, :data:`CONFIDENCE`).
Pure functions on numbers; imports numpy and scipy only."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as st

# References (the [n] of the docstrings):
# [0] Student, The probable error of a mean, Biometrika 6:1-25, 1908 (paired t-test, t-interval).
# [1] Schuirmann, A comparison of the two one-sided tests procedure and the power approach for assessing the
#     equivalence of average bioavailability, J. Pharmacokinet. Biopharm. 15:657-680, 1987 (TOST).

ALPHA = 0.05  # family-wise error rate of every family
POWER = 0.80  # the power that MDE and seeds-needed are computed for
CONFIDENCE = 0.95  # the headline interval; TOST's interval is 1 - 2 * ALPHA (90%)


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
