"""What the records say about a claim: the five kinds of test (:func:`gain`, :func:`equivalent`,
:func:`collapse`, :func:`inverse_u`, :func:`interaction`), each an :class:`Outcome` of paired comparisons
(:class:`Comparison`); :func:`evaluate_claim`; the seeds a claim's pilot asks for (:func:`design`); and a claim
evaluated on both protocols (:func:`evaluate`, an :class:`Evaluated`). Writes nothing; imports the claim's plan
(ssl_bench.analysis.claims.planning), ssl_bench.analysis.report, configuration's errors and the records' folder."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.analysis.claims.planning import (
    METRICS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    Cell,
    claim_variants,
    load_cells,
    margin_of,
    primary_metric,
)
from ssl_bench.analysis.report import (
    BETTER,
    EQUIVALENT,
    UNDERPOWERED,
    WORSE,
    Decision,
    Paired,
    decide,
    display,
    num,
    paired,
    seeds_needed,
    with_holm,
)
from ssl_bench.config.compose import ConfigError
from ssl_bench.records.io import REFERENCE_DIR


@dataclass
class Comparison:
    """One paired comparison behind a verdict: its name, the test (Holm within the claim), the decision."""

    name: str
    test: Paired
    decision: Decision
    verdict: str  # what this comparison says about the claim
    p_report: float = math.nan  # Holm over every primary comparison of the report (filled by write)


@dataclass
class Outcome:
    verdict: str
    comparisons: list[Comparison]
    rows: list[list[str]] = field(default_factory=list)  # for tests that are not comparisons (collapse, curve)
    header: list[str] = field(default_factory=list)
    note: str = ""


def _need(cells: dict[tuple[str, str], Cell], names: list[str]) -> list[Cell]:
    out = [c for c in cells.values() if c.variant in names]
    known = sorted({c.variant for c in cells.values()})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"claims.yaml names variant '{unknown[0]}', not in the study; valid: {', '.join(known)}")
    return out


def _cell(cells: dict[tuple[str, str], Cell], variant: str, method: str) -> Cell:
    _need(cells, [variant])
    return cells[(variant, method)]


def _need_more(d: Decision) -> str:
    return f"{UNDERPOWERED} (n={d.n_needed if d.n_needed <= 999 else '>999'} would decide)"


def _combine(parts: list[str]) -> str:
    """A claim of several comparisons: one verdict when they agree, else the count of each."""
    done = [p for p in parts if p != NOT_RUN]
    if not done:
        return NOT_RUN
    if len(done) < len(parts):  # the comparisons that have their runs; the missing ones are named in the rows
        return f"{_combine(done)} on {len(done)} of {len(parts)} comparisons"
    kinds = list(dict.fromkeys(p.split(" (")[0] for p in parts))
    if len(kinds) == 1:
        return parts[0] if len(parts) == 1 else kinds[0]
    return ", ".join(f"{sum(p.startswith(k) for p in parts)} of {len(parts)} {k}" for k in kinds)


def _pairs(test: dict[str, Any], cells: dict[tuple[str, str], Cell]) -> list[tuple[Cell, Cell]]:
    methods = sorted({m for _, m in cells}, key=lambda m: [c.method for c in cells.values()].index(m))
    names = test.get("pairs") or [[test["baseline"], v] for v in test["variants"]]
    return [(_cell(cells, a, m), _cell(cells, b, m)) for a, b in names for m in methods]


def _row_name(a: Cell, b: Cell, multi_method: bool) -> str:
    return (f"{display(a.method)}: " if multi_method else "") + f"{b.variant} vs {a.variant}"


def _compare(pairs: list[tuple[str, dict[int, float], dict[int, float]]], margin: float) -> list[tuple[str, Decision]]:
    """Paired tests (b - a) with Holm over the list, each decided against ±margin."""
    tests = with_holm([paired(a, b) for _, a, b in pairs])
    return [(name, decide(t, margin)) for (name, _, _), t in zip(pairs, tests, strict=True)]


def _gain_verdict(d: Decision, expect: int) -> str:
    if d.test.n < 2:
        return NOT_RUN
    if d.word in (BETTER, WORSE):
        if (1 if d.word == BETTER else -1) != expect:
            return f"{NOT_REPRODUCED} (the other way)"
        # Significant in the paper's direction but inside ±margin: the effect is real and smaller than the margin.
        return f"{REPRODUCED} in direction only (within ±{d.margin:g})" if d.within else REPRODUCED
    if d.word == EQUIVALENT:
        return f"{NOT_REPRODUCED} (equivalent within ±{d.margin:g})"
    return _need_more(d)


def gain(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float) -> Outcome:
    """Reproduced: significantly in the expected direction; not reproduced: significantly the other way, or
    equivalent within ±margin (an effect of that size is ruled out); else underpowered."""
    expect = {"higher": 1, "lower": -1}[test["expect"]]
    pairs = _pairs(test, cells)
    multi = len({a.method for a, _ in pairs}) > 1
    ds = _compare([(_row_name(a, b, multi), a.values(metric), b.values(metric)) for a, b in pairs], margin)
    comps = [Comparison(n, d.test, d, _gain_verdict(d, expect)) for n, d in ds]
    return Outcome(_combine([c.verdict for c in comps]), comps)


def equivalent(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float) -> Outcome:
    """Reproduced: every variant equivalent to the baseline within ±margin (TOST); not reproduced: a significant
    difference; else underpowered."""
    margin = float(test.get("margin", margin))
    ds = _compare([(_row_name(a, b, False), a.values(metric), b.values(metric)) for a, b in _pairs(test, cells)],
                  margin)
    comps = []
    for name, d in ds:
        v = (NOT_RUN if d.test.n < 2 else REPRODUCED if d.word == EQUIVALENT else
             f"{NOT_REPRODUCED} ({d.word} by {d.test.diff.mean:+.1f})" if d.word in (BETTER, WORSE) else _need_more(d))
        comps.append(Comparison(name, d.test, d, v))
    return Outcome(_combine([c.verdict for c in comps]), comps)


def final_entropy(cell: Cell) -> dict[int, float]:
    out = {}
    for s, rows in cell.epochs.items():
        vals = [r["assign_entropy"] for r in rows if r.get("assign_entropy") is not None]
        if vals:
            out[s] = float(vals[-1])
    return out


def collapse(test: dict[str, Any], cells: dict[tuple[str, str], Cell], threshold: float) -> Outcome:
    """Reproduced: every variant run's final assignment entropy below the threshold while the baseline's runs are
    above it; not reproduced: no variant run collapsed; else (some did) undecided."""
    base = _need(cells, [test["baseline"]])
    rows, parts = [], []
    for cell in base + _need(cells, test["variants"]):
        ent = final_entropy(cell)
        n_low = sum(v < threshold for v in ent.values())
        rows.append([cell.variant, str(len(ent)), ", ".join(f"{v:.2f}" for _, v in sorted(ent.items())) or "—",
                     f"{n_low} of {len(ent)}"])
        if cell in base:
            continue
        if len(ent) < 2:
            parts.append(NOT_RUN)
        elif n_low == len(ent):
            parts.append(REPRODUCED)
        elif n_low == 0:
            parts.append(NOT_REPRODUCED)
        else:
            parts.append(f"{UNDERPOWERED} (collapsed in {n_low} of {len(ent)})")
    base_ok = all(v >= threshold for c in base for v in final_entropy(c).values())
    verdict = _combine(parts)
    if verdict == REPRODUCED and not base_ok:
        verdict = f"{NOT_REPRODUCED} (the baseline collapsed too)"
    return Outcome(verdict, [], rows, ["variant", "n", "final assignment entropy per seed",
                                       f"collapsed (< {threshold:g})"],
                   note="Assignment entropy: of the epoch's hard assignments over the prototypes, normalised so "
                        "that 1 is uniform and 0 is one prototype.")


def inverse_u(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float) -> Outcome:
    """(variants in increasing order) Reproduced: the best mean is an inner variant, better than both ends; not
    reproduced: the best is an end, better than the best inner one, or the curve is flat (both ends equivalent to
    the best within ±margin); else underpowered."""
    order = _need(cells, test["variants"])
    order.sort(key=lambda c: test["variants"].index(c.variant))
    stats = [c.stat(metric) for c in order]
    rows = [[c.variant, str(s.n), num(s.mean), f"{num(s.lo)}–{num(s.hi)}" if s.n > 1 else "—"]
            for c, s in zip(order, stats, strict=True)]
    header = ["variant", "n", f"mean {METRICS.get(metric, metric)}", "95% CI"]
    if any(s.n < 2 for s in stats):
        return Outcome(NOT_RUN, [], rows, header)
    best = max(range(len(order)), key=lambda i: stats[i].mean)
    inner = list(range(1, len(order) - 1))
    if best in inner:
        others = (0, len(order) - 1)
        ds = _compare([(f"{order[best].variant} vs {order[e].variant}", order[e].values(metric),
                        order[best].values(metric)) for e in others], margin)
        words = [d.word for _, d in ds]
        verdict = (REPRODUCED if all(w == BETTER for w in words) else
                   f"{NOT_REPRODUCED} (flat within ±{margin:g})" if all(w == EQUIVALENT for w in words) else
                   _need_more(max((d for _, d in ds), key=lambda d: d.n_needed)))
        note = f"Best: {order[best].variant} (inner); it must beat both ends."
    else:
        best_inner = max(inner, key=lambda i: stats[i].mean)
        ds = _compare([(f"{order[best].variant} vs {order[best_inner].variant}", order[best_inner].values(metric),
                        order[best].values(metric))], margin)
        d = ds[0][1]
        verdict = (f"{NOT_REPRODUCED} (best at an end)" if d.word == BETTER else
                   f"{NOT_REPRODUCED} (flat within ±{margin:g})" if d.word == EQUIVALENT else _need_more(d))
        note = f"Best: {order[best].variant} (an end); against the best inner one ({order[best_inner].variant})."
    comps = [Comparison(n, d.test, d, verdict) for n, d in ds]
    return Outcome(verdict, comps, rows, header, note)


def interaction(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float) -> Outcome:
    """Reproduced: the change at the small setting is worse (significant) and worse than at the large one (the
    per-seed difference of differences); not reproduced: better at the small setting, or no interaction beyond
    ±margin (the difference of differences equivalent); else underpowered."""
    (s_from, s_to), (l_from, l_to) = test["small"], test["large"]
    m = next(iter(cells))[1]
    v = {n: _cell(cells, n, m).values(metric) for n in (s_from, s_to, l_from, l_to)}
    d_small = {s: v[s_to][s] - v[s_from][s] for s in set(v[s_from]) & set(v[s_to])}
    d_large = {s: v[l_to][s] - v[l_from][s] for s in set(v[l_from]) & set(v[l_to])}
    ds = _compare([(f"{s_to} vs {s_from}", v[s_from], v[s_to]), (f"{l_to} vs {l_from}", v[l_from], v[l_to]),
                   ("difference of the two changes (small - large)", d_large, d_small)], margin)
    small, inter = ds[0][1], ds[2][1]
    if min(small.test.n, inter.test.n) < 2:
        verdict = NOT_RUN
    elif small.word == WORSE and inter.word == WORSE:
        verdict = REPRODUCED
    elif small.word == BETTER:
        verdict = f"{NOT_REPRODUCED} (better at the small setting)"
    elif inter.word == EQUIVALENT:
        verdict = f"{NOT_REPRODUCED} (no interaction beyond ±{margin:g})"
    else:
        verdict = _need_more(max((small, inter), key=lambda d: d.n_needed))
    return Outcome(verdict, [Comparison(n, d.test, d, verdict) for n, d in ds])


def evaluate_claim(claim: dict[str, Any], cells: dict[tuple[str, str], Cell], data: dict[str, Any],
                   metric: str | None = None) -> Outcome:
    """The claim's verdict on ``metric`` (default: its primary metric)."""
    test, metric = claim["test"], metric or primary_metric(claim, data)
    kind, margin = test["kind"], margin_of(claim, data)
    if kind == "gain":
        return gain(test, cells, metric, margin)
    if kind == "equivalent":
        return equivalent(test, cells, metric, margin)
    if kind == "collapse":
        return collapse(test, cells, float(data.get("collapse_entropy", 0.1)))
    if kind == "inverse_u":
        return inverse_u(test, cells, metric, margin)
    return interaction(test, cells, metric, margin)


def design(claim: dict[str, Any], data: dict[str, Any], ref: Path = REFERENCE_DIR) -> tuple[list[int], str]:
    """The claim's seeds (seeds=auto): its study's seeds are the pilot; the sd of each comparison's paired differences
    at the pilot (the variance only, not the differences) gives the seeds that decide ±margin with 80% power on the
    primary metric; the most any comparison needs, capped at ``max_seeds``. Fixed by the pilot's records alone, so
    later seeds never change the design."""
    common = [str(x) for x in data.get("common") or []]
    pilot_cells = load_cells(claim["study"], common, ref)
    pilot = next(iter(pilot_cells.values())).seeds
    cap = int(data.get("max_seeds", 8))
    if claim["test"]["kind"] == "collapse":
        return pilot, f"n = {len(pilot)}: the pilot (collapse is read per run, not from a paired difference)"
    margin = margin_of(claim, data)
    used = [c for c in pilot_cells.values() if c.variant in claim_variants(claim["test"])]
    if any(c.missing or c.refused for c in used):
        return pilot, f"n = {len(pilot)} for now: the pilot is not complete (the design needs all {len(pilot)} seeds)"
    out = evaluate_claim(claim, pilot_cells, data)
    sds = [c.test.diff.sd for c in out.comparisons if c.test.n >= 2 and math.isfinite(c.test.diff.sd)]
    if not sds:
        return pilot, f"n = {len(pilot)}: no paired differences at the pilot"
    need = max(seeds_needed(sd, margin) for sd in sds)
    n = max(len(pilot), min(need, cap))
    seeds = pilot + [s for s in range(max(pilot) + 1, max(pilot) + 1 + n - len(pilot))]
    return seeds, (f"pilot of {len(pilot)} seeds; the largest sd of the paired differences there, "
                   f"{max(sds):.2f} points, asks for n = {need if need <= 999 else '>999'} to decide ±{margin:g} "
                   f"at 80% power; cap {cap}: n = {n}")


@dataclass
class Evaluated:
    """A claim with its cells, design and outcomes on the primary and the other protocol."""

    claim: dict[str, Any]
    cells: dict[tuple[str, str], Cell]
    seeds: list[int]
    design: str
    primary: str
    outcomes: dict[str, Outcome]

    @property
    def verdict(self) -> str:
        return self.outcomes[self.primary].verdict

    @property
    def measure(self) -> str:
        """What the verdict reads, in words."""
        return ("final assignment entropy" if self.claim["test"]["kind"] == "collapse"
                else METRICS.get(self.primary, self.primary))


def evaluate(claim: dict[str, Any], data: dict[str, Any], ref: Path) -> Evaluated:
    seeds, said = design(claim, data, ref)
    common = [str(x) for x in data.get("common") or []]
    cells = load_cells(claim["study"], common, ref, seeds)
    primary = primary_metric(claim, data)
    metrics = [primary] if claim["test"]["kind"] == "collapse" else [primary, *[m for m in METRICS if m != primary]]
    return Evaluated(claim, cells, seeds, said, primary, {m: evaluate_claim(claim, cells, data, m) for m in metrics})
