"""Tables, labels, statistics and captions shared by compare, plot and the sweep report.

Statistics over seeds: mean, sample standard deviation, n and a 95% confidence interval from Student's t
(n - 1 degrees of freedom). Comparisons are paired by seed (the same seed gives the same data order and crops
to every method): a paired t-test on the per-seed differences, Holm's step-down correction over the family of
comparisons of one table, at ``ALPHA``. Where the corrected p is not below ``ALPHA`` a table says "no
significant difference at n=…", never a ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as _st

from ssl_bench.config.schema import KNN_K
from ssl_bench.records.budget import budget_diff, budget_fingerprint, budget_items

ALPHA = 0.05
CONFIDENCE = 0.95

# The order of methods in tables and figures (the registry, methods/, is the list of methods; any method not
# named here comes after, alphabetically). One colour per method in every figure (Okabe-Ito, colour-blind safe),
# by its place in this order.
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
# The seaborn theme of every figure (plot, sweep report, claims), set by each before it draws: a figure must not
# depend on which other figures the same process drew first.
THEME = {"style": "whitegrid", "context": "notebook"}


def colour(method: str) -> str:
    """The method's colour, the same in every figure (methods outside METHOD_ORDER take the next ones)."""
    from ssl_bench.methods import registry

    names = method_order(registry())
    i = names.index(method) if method in names else len(names)
    return _COLOURS[i % len(_COLOURS)]


from ssl_bench.records.labels import (  # noqa: E402,F401  (re-exported: the reporting vocabulary)
    METHOD_ORDER,
    PHRASES,
    crops_label,
    display,
    label,
    method_order,
    phrase,
)


# -- statistics ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """Mean, sample sd, n and the 95% t-interval of a set of per-seed values."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


def _clean(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


def t_interval(values: Iterable[Any]) -> Stat:
    """Mean and 95% Student-t interval; sd and the interval are NaN for fewer than 2 values."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Stat(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(x) / n
    if n < 2:
        return Stat(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = float(_st.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return Stat(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    """A paired comparison (``b - a`` per shared seed): the mean difference, its interval and the t-test."""

    n: int
    diff: Stat
    p: float
    p_holm: float = math.nan

    @property
    def significant(self) -> bool:
        return self.n >= 2 and math.isfinite(self.p_holm) and self.p_holm < ALPHA


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """Compare ``b`` with ``a`` on the seeds both have (same seed = same data order and crops)."""
    seeds = sorted(s for s in set(a) & set(b) if _clean([a[s], b[s]]) and len(_clean([a[s], b[s]])) == 2)
    d = [float(b[s]) - float(a[s]) for s in seeds]
    diff = t_interval(d)
    if len(d) < 2:
        return Paired(len(d), diff, math.nan)
    if diff.sd == 0:  # identical differences: the test is degenerate; all equal zero means no difference at all
        return Paired(len(d), diff, 1.0 if diff.mean == 0 else 0.0)
    return Paired(len(d), diff, float(_st.ttest_rel(d, [0.0] * len(d)).pvalue))


STATS = ("Cells: mean ± sample sd over seeds (n seeds; 95% CI from Student's t). An interval covers what changes with "
         "the seed: the initialisation, the data order and the crops; the pretraining subset and the test set are "
         "fixed.")


# -- equivalence and power ---------------------------------------------------------------------------------
POWER = 0.80
# The equivalence margin (points of accuracy) when a study or claim declares none.
DEFAULT_MARGIN = 0.5


def tost(c: Paired, margin: float) -> float:
    """Two one-sided paired t-tests of |difference| < ``margin``: the larger of the two p-values (equivalence at
    ALPHA exactly when the 90% interval of the difference lies inside ±margin). NaN below n = 2."""
    if c.n < 2 or not math.isfinite(c.diff.sd):
        return math.nan
    if c.diff.sd == 0:
        return 0.0 if abs(c.diff.mean) < margin else 1.0
    se = c.diff.sd / math.sqrt(c.n)
    lower = float(_st.t.sf((c.diff.mean + margin) / se, c.n - 1))  # H0: diff <= -margin
    upper = float(_st.t.cdf((c.diff.mean - margin) / se, c.n - 1))  # H0: diff >= +margin
    return max(lower, upper)


def interval90(c: Paired) -> tuple[float, float]:
    """The 90% t-interval of the paired difference: TOST's equivalence interval."""
    if c.n < 2 or not math.isfinite(c.diff.sd):
        return math.nan, math.nan
    half = float(_st.t.ppf(0.95, c.n - 1)) * c.diff.sd / math.sqrt(c.n)
    return c.diff.mean - half, c.diff.mean + half


def power_t(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at ``n`` pairs against a true difference ``effect`` (noncentral t)."""
    if n < 2 or not sd > 0:
        return math.nan
    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd
    crit = float(_st.t.ppf(1 - alpha / 2, df))
    return float(_st.nct.sf(crit, df, nc) + _st.nct.cdf(-crit, df, nc))


def power_tost(margin: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of TOST at ``n`` pairs when the true difference is 0 (the standard noncentral-t approximation:
    both one-sided tests must reject)."""
    if n < 2 or not sd > 0:
        return math.nan
    df, nc = n - 1, margin * math.sqrt(n) / sd
    crit = float(_st.t.ppf(1 - alpha, df))
    return max(0.0, 1 - 2 * float(_st.nct.cdf(crit, df, nc)))


def mde(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The minimum detectable effect: the smallest true paired difference the t-test finds with ``power`` at n."""
    if n < 2 or not sd > 0:
        return math.nan
    lo, hi = 0.0, sd
    while power_t(hi, sd, n, alpha) < power:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_t(mid, sd, n, alpha) < power else (lo, mid)
    return hi


def seeds_needed(sd: float, margin: float, power: float = POWER, cap: int = 1000) -> int:
    """Pairs needed to decide ±``margin`` with ``power``: the t-test finds a difference of ``margin`` and TOST
    shows equivalence within ±margin when there is none; the larger of the two (``cap`` + 1 if beyond ``cap``)."""
    if not sd > 0:
        return 2
    for n in range(2, cap + 1):
        if power_t(margin, sd, n) >= power and power_tost(margin, sd, n) >= power:
            return n
    return cap + 1


BETTER, WORSE, EQUIVALENT, UNDERPOWERED = "better", "worse", "equivalent", "underpowered"


@dataclass(frozen=True)
class Decision:
    """A comparison decided: ``word`` (better / worse / equivalent / underpowered) and the numbers behind it."""

    word: str
    test: Paired
    margin: float
    p_tost: float
    mde: float
    n_needed: int

    @property
    def within(self) -> bool:
        """TOST also puts the difference inside ±margin (with significance: real, but smaller than the margin)."""
        return math.isfinite(self.p_tost) and self.p_tost < ALPHA

    def text(self, better: str = BETTER, worse: str = WORSE) -> str:
        """'better by +1.2 (Holm p=0.004; MDE 0.8)' / 'equivalent within ±0.5 (TOST p=0.01; MDE 0.4)' /
        'underpowered: n=12 would decide ±0.5 (MDE at n=3: 0.9)'."""
        c = self.test
        if c.n < 2:
            return f"no test at n={c.n}"
        mde_ = f"MDE {self.mde:.1f}" if math.isfinite(self.mde) else "MDE —"
        if self.word in (BETTER, WORSE):
            word = better if self.word == BETTER else worse
            if self.within:  # a real difference, and smaller than the margin: say both
                return (f"{word} by {c.diff.mean:+.{_digits(c)}f}, within ±{self.margin:g} (Holm p={c.p_holm:.2g}; "
                        f"TOST p={self.p_tost:.2g}; {mde_})")
            return f"{word} by {c.diff.mean:+.{_digits(c)}f} (Holm p={c.p_holm:.2g}; {mde_})"
        if self.word == EQUIVALENT:
            return f"equivalent within ±{self.margin:g} (TOST p={self.p_tost:.2g}; {mde_})"
        need = f"n={self.n_needed}" if self.n_needed <= 999 else "n>999"
        return f"underpowered: {need} would decide ±{self.margin:g} ({mde_} at n={c.n})"


def _digits(c: Paired) -> int:
    return 1 if abs(c.diff.mean) >= 0.05 else 2


def decide(c: Paired, margin: float = DEFAULT_MARGIN) -> Decision:
    """The verdict of a paired comparison (``c`` with its Holm p): better / worse when the Holm-corrected t-test is
    significant; else equivalent when TOST puts the 90% interval inside ±margin; else underpowered, with the n
    that would decide the margin at 80% power given the observed sd of the differences."""
    p_eq = tost(c, margin)
    sd = c.diff.sd if math.isfinite(c.diff.sd) else math.nan
    need = seeds_needed(sd, margin) if math.isfinite(sd) else 0
    m = mde(sd, c.n) if math.isfinite(sd) else math.nan
    if c.significant:
        word = BETTER if c.diff.mean > 0 else WORSE
    elif math.isfinite(p_eq) and p_eq < ALPHA:
        word = EQUIVALENT
    else:
        word = UNDERPOWERED
        need = max(need, c.n + 1)  # the observed sd says n suffices, yet n did not decide: at least one more
    return Decision(word, c, margin, p_eq, m, need)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    idx = sorted((i for i, p in enumerate(ps) if math.isfinite(p)), key=lambda i: ps[i])
    m = len(idx)
    out = [math.nan] * len(ps)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def with_holm(comparisons: Sequence[Paired]) -> list[Paired]:
    adjusted = holm([c.p for c in comparisons])
    return [Paired(c.n, c.diff, c.p, q) for c, q in zip(comparisons, adjusted, strict=True)]


# -- formatting ------------------------------------------------------------------------------------
def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: Any, digits: int = 1) -> str:
    return "—" if _nan(x) else f"{x:.{digits}f}"


def fmt_stat(s: Stat, digits: int = 1) -> str:
    """'80.6 ± 0.3 (n=3; 95% CI 79.9–81.3)'; one value: '80.6 (n=1)'; none: '—'."""
    if s.n == 0:
        return "—"
    if s.n == 1:
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} ± {s.sd:.{digits}f} (n={s.n}; 95% CI {s.lo:.{digits}f}–{s.hi:.{digits}f})"


def fmt_delta(c: Paired, digits: int = 1) -> str:
    """'+1.2 (95% CI +0.4 to +2.0)' for a paired difference."""
    if c.n == 0:
        return "—"
    if c.n == 1:
        return f"{c.diff.mean:+.{digits}f} (n=1)"
    return f"{c.diff.mean:+.{digits}f} (95% CI {c.diff.lo:+.{digits}f} to {c.diff.hi:+.{digits}f})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def n_warning(ns: Iterable[int]) -> str:
    """A sentence when any cell has fewer than 3 seeds (a t-interval on 2 seeds is very wide)."""
    small = sorted({n for n in ns if n < 3})
    if not small:
        return ""
    return (f" **Warning: n < 3** for some cells (n = {', '.join(map(str, small))}): intervals are wide and tests "
            f"weak; run more seeds (seeds=[0,1,2]).")


# -- captions --------------------------------------------------------------------------------------
CAPTION_FIELDS = (("backbone", ("backbone.",)), ("batch", ("data.batch_size",)),
                  ("pretraining images", ("data.train_subset", "data.subset_seed")), ("optimiser", ("optim.",)),
                  ("crops", ("crops.",)), ("epochs", ("train.epochs",)))


def protocol(cfg: Mapping[str, Any]) -> str:
    """The evaluation protocol in words, for captions."""
    e, d = cfg["eval"], cfg["dataset"]
    sub = lambda n, split: f"{n} {split}" if n else f"all {split}"  # noqa: E731
    return (f"weighted kNN (k={KNN_K}, T={e['knn_temperature']}) on frozen backbone features, "
            f"{sub(e['knn_train_subset'], 'train')} / {sub(e['knn_test_subset'], 'test')} images of {d['name']}")


def monitor_protocol(cfg: Mapping[str, Any]) -> str:
    e = cfg["eval"]
    return (f"online kNN monitor (k={min(20, e['monitor_train_subset'])}) on {e['monitor_train_subset']} train / "
            f"{e['monitor_test_subset']} test images after each epoch")


def linear_protocol(cfg: Mapping[str, Any]) -> str:
    """The linear probe in words, for captions."""
    e = cfg["eval"]
    return (f"linear probe on frozen features ({e.get('linear_mode', '?')} mode, {e.get('linear_epochs', '?')} epochs, "
            f"same images as the kNN)")


def budget_caption(cfgs: list[dict], budget: str) -> str:
    """Budget and protocol in words; budget keys that differ between ``cfgs`` are named as varying."""
    items = [budget_items(c) for c in cfgs]
    c = cfgs[0]
    varying = sorted({k for it in items for k in budget_diff(items[0], it)})
    values = {"backbone": f"{c['backbone']['name']} backbone", "batch": f"batch {c['data']['batch_size']}",
              "pretraining images": f"{c['data']['train_subset'] or 'all'} pretraining images of "
                                    f"{c['dataset']['name']}",
              "optimiser": f"{c['optim']['name']} lr {c['optim']['lr']}", "crops": f"crops {crops_label(c)}",
              "epochs": f"{c['train']['epochs']} epochs"}
    parts, covered = [], set()
    for name, prefixes in CAPTION_FIELDS:
        keys = [k for k in varying if k.startswith(prefixes)]
        covered.update(keys)
        parts.append(f"{name} varies ({', '.join(keys)})" if keys else values[name])
    rest = [k for k in varying if k not in covered]
    fps = ", ".join(sorted({budget_fingerprint(x) for x in cfgs}))
    return (f"Budget '{budget}' (fingerprint{'s' if ',' in fps else ''} {fps}): " + ", ".join(parts)
            + (f"; also varying: {', '.join(rest)}" if rest else "") + ".")
