"""Tables, labels, statistics and captions shared by compare, plot and the sweep report.

Statistics over seeds: mean, sample standard deviation, n and a 95% confidence interval from Student's t
(n - 1 degrees of freedom). Comparisons and their verdicts are ssl_bench.analysis.decisions' (one family-wise
rule, power from a tested noncentral t).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as _st

from ssl_bench.config.schema import KNN_K
from ssl_bench.records.budget import budget_diff, budget_fingerprint, budget_items

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


STATS = ("Cells: mean ± sample sd over seeds (n seeds; 95% CI from Student's t). An interval covers what changes with "
         "the seed: the initialisation, the data order and the crops; the pretraining subset and the test set are "
         "fixed.")


# The equivalence margin (points of accuracy) when a study or claim declares none.
DEFAULT_MARGIN = 0.5


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
