"""What the records say about a claim: the five kinds of test (:func:`gain`, :func:`equivalent`,
:func:`collapse`, :func:`inverse_u`, :func:`interaction`), each an :class:`Outcome` of paired comparisons
(:class:`Comparison`), one family per claim and protocol decided by ssl_bench.analysis.decisions (:func:`decide`)
and read against the paper's effect (:func:`against_paper`); :func:`evaluate_claim`; the seeds a claim's pilot asks
for (:func:`design`); and a claim evaluated on both protocols (:func:`evaluate`, an :class:`Evaluated`). Writes
nothing; imports the claim's plan (ssl_bench.analysis.claims.planning), ssl_bench.analysis.decisions and .report,
configuration's errors and the records' folder."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.analysis import decisions as dc
from ssl_bench.analysis.claims.planning import (
    DIRECTION,
    METRICS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    UNDERPOWERED_HERE,
    Cell,
    claim_variants,
    effect_text,
    load_cells,
    margin_of,
    paper_effect,
    primary_metric,
)
from ssl_bench.analysis.decisions import BETTER, EQUIVALENT, WORSE
from ssl_bench.analysis.report import display, num
from ssl_bench.config.compose import ConfigError
from ssl_bench.records.io import REFERENCE_DIR

Effect = tuple[float, float] | None  # the paper's effect (low, high) in points, or None (planning.paper_effect)


@dataclass
class Comparison:
    """One paired comparison behind a verdict: its name, its decision under decisions.RULE (its family: the
    claim's comparisons on one protocol), what this row says about the claim, and its leave-one-seed-out
    fragility (the family decided again without each seed)."""

    name: str
    decision: dc.Verdict
    says: str
    fragility: dc.Fragility = field(default_factory=lambda: dc.Fragility("", {}))

    @property
    def pairing(self) -> dc.Pairing:
        return self.decision.pairing or dc.Pairing((), ())

    @property
    def n(self) -> int:
        return self.decision.n


@dataclass
class Outcome:
    verdict: str
    comparisons: list[Comparison]
    rows: list[list[str]] = field(default_factory=list)  # for tests that are not comparisons (collapse, curve)
    header: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def fragile(self) -> list[Comparison]:
        """The comparisons whose verdict one seed decides."""
        return [c for c in self.comparisons if c.fragility.fragile]


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


def need_more(v: dc.Verdict) -> str:
    """'underpowered at this scale: n = 8 (95% range 4–31) would decide ±0.5' (decisions.seeds_needed from the
    comparison's sd, with the range its chi-square interval allows)."""
    if v.n < 2 or not math.isfinite(v.sd):
        return NOT_RUN
    return f"{UNDERPOWERED_HERE}: {dc.seeds_needed(v.sd, v.n, v.margin).text()} would decide ±{v.margin:g}"


def _kind(part: str) -> str:
    return re.split(r" \(|: |, ", part, maxsplit=1)[0]


def _combine(parts: list[str]) -> str:
    """A claim of several comparisons: one verdict when they agree, else the count of each."""
    done = [p for p in parts if p != NOT_RUN]
    if not done:
        return NOT_RUN
    if len(done) < len(parts):  # the comparisons that have their runs; the missing ones are named in the rows
        return f"{_combine(done)} on {len(done)} of {len(parts)} comparisons"
    if len(set(done)) == 1:
        return done[0]
    kinds = list(dict.fromkeys(_kind(p) for p in parts))
    if len(kinds) == 1:
        return kinds[0]
    return ", ".join(f"{sum(_kind(p) == k for p in parts)} of {len(parts)} {k}" for k in kinds)


def _pairs(test: dict[str, Any], cells: dict[tuple[str, str], Cell]) -> list[tuple[Cell, Cell]]:
    methods = sorted({m for _, m in cells}, key=lambda m: [c.method for c in cells.values()].index(m))
    names = test.get("pairs") or [[test["baseline"], v] for v in test["variants"]]
    return [(_cell(cells, a, m), _cell(cells, b, m)) for a, b in names for m in methods]


def _row_name(a: Cell, b: Cell, multi_method: bool) -> str:
    return (f"{display(a.method)}: " if multi_method else "") + f"{b.variant} vs {a.variant}"


def decide(rows: list[tuple[str, dict[int, float], dict[int, float]]], margin: float
           ) -> list[tuple[str, dc.Verdict, dc.Fragility]]:
    """One family (the claim's comparisons on one protocol): each row paired by seed (b - a), decided together
    by decisions.decide_family, with decisions.fragile's leave-one-seed-out verdicts."""
    family = {name: dc.paired(a, b) for name, a, b in rows}
    if len(family) < len(rows):
        raise ValueError("the comparisons of one family need distinct names")
    verdicts, frail = dc.decide_family(family, margin), dc.fragile(family, margin)
    return [(name, verdicts[name], frail[name]) for name, _, _ in rows]


def against_paper(v: dc.Verdict, paper: Effect, expect: int) -> str:
    """A difference significant in the paper's direction, read against the paper's effect: reproduced when the
    95% interval reaches the paper's effect (number or range); else direction only, smaller or larger than it."""
    if paper is None:
        return f"{DIRECTION} (the paper gives no number to compare)"
    lo, hi = sorted(expect * x for x in v.ci95)
    p_lo, p_hi = sorted(expect * x for x in paper)
    if hi < p_lo:
        return f"{DIRECTION}, smaller than the paper's {effect_text(paper)}"
    if lo > p_hi:
        return f"{DIRECTION}, larger than the paper's {effect_text(paper)}"
    return REPRODUCED


def _gain_says(v: dc.Verdict, expect: int, paper: Effect) -> str:
    if v.n < 2:
        return NOT_RUN
    if v.word in (BETTER, WORSE):
        if (1 if v.word == BETTER else -1) != expect:
            return f"{NOT_REPRODUCED} (the other way)"
        return against_paper(v, paper, expect)
    if v.word == EQUIVALENT:
        return f"{NOT_REPRODUCED} (equivalent within ±{v.margin:g})"
    return need_more(v)


def gain(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float,
         paper: Effect = None) -> Outcome:
    """Reproduced: significantly in the expected direction with a 95% interval that reaches the paper's effect
    (else direction only, smaller or larger than the paper's); not reproduced: significantly the other way, or
    equivalent within ±margin (an effect of the paper's size is ruled out); else underpowered."""
    expect = {"higher": 1, "lower": -1}[test["expect"]]
    pairs = _pairs(test, cells)
    multi = len({a.method for a, _ in pairs}) > 1
    ds = decide([(_row_name(a, b, multi), a.values(metric), b.values(metric)) for a, b in pairs], margin)
    comps = [Comparison(n, v, _gain_says(v, expect, paper), f) for n, v, f in ds]
    return Outcome(_combine([c.says for c in comps]), comps)


def equivalent(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float,
               paper: Effect = None) -> Outcome:
    """Reproduced: every variant equivalent to the baseline within ±margin (TOST; the margin is below the paper's
    effect, checked when claims.yaml is read); not reproduced: a significant difference; else underpowered."""
    margin = float(test.get("margin", margin))
    ds = decide([(_row_name(a, b, False), a.values(metric), b.values(metric)) for a, b in _pairs(test, cells)],
                margin)
    comps = []
    for name, v, f in ds:
        says = (NOT_RUN if v.n < 2 else REPRODUCED if v.word == EQUIVALENT else
                f"{NOT_REPRODUCED} ({v.word} by {v.mean:+.1f})" if v.word in (BETTER, WORSE) else need_more(v))
        comps.append(Comparison(name, v, says, f))
    return Outcome(_combine([c.says for c in comps]), comps)


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
            parts.append(f"{UNDERPOWERED_HERE} (collapsed in {n_low} of {len(ent)})")
    base_ok = all(v >= threshold for c in base for v in final_entropy(c).values())
    verdict = _combine(parts)
    if verdict == REPRODUCED and not base_ok:
        verdict = f"{NOT_REPRODUCED} (the baseline collapsed too)"
    return Outcome(verdict, [], rows, ["variant", "n", "final assignment entropy per seed",
                                       f"collapsed (< {threshold:g})"],
                   note="Assignment entropy: of the epoch's hard assignments over the prototypes, normalised so "
                        "that 1 is uniform and 0 is one prototype.")


def inverse_u(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float,
              paper: Effect = None) -> Outcome:
    """(variants in increasing order) Reproduced: the best mean is an inner variant, better than both ends (with
    the paper's numbers, by a 95% interval that reaches them; without, the shape only); not reproduced: the best
    is an end, better than the best inner one, or the curve is flat (both ends equivalent to the best within
    ±margin); else underpowered."""
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
        ds = decide([(f"{order[best].variant} vs {order[e].variant}", order[e].values(metric),
                      order[best].values(metric)) for e in (0, len(order) - 1)], margin)
        says = {n: (against_paper(v, paper, 1).replace(DIRECTION, "beats this end at this scale")
                    if v.word == BETTER else f"flat against this end (equivalent within ±{v.margin:g})"
                    if v.word == EQUIVALENT else need_more(v)) for n, v, _ in ds}
        words = [v.word for _, v, _ in ds]
        read = [against_paper(v, paper, 1) for _, v, _ in ds]  # both ends' intervals must reach the paper's
        verdict = (next((r for r in read if r != REPRODUCED), REPRODUCED) if all(w == BETTER for w in words) else
                   f"{NOT_REPRODUCED} (flat within ±{margin:g})" if all(w == EQUIVALENT for w in words) else
                   need_more(max((v for _, v, _ in ds if v.word != BETTER), key=lambda v: v.sd)))
        note = f"Best: {order[best].variant} (inner); it must beat both ends."
    else:
        best_inner = max(inner, key=lambda i: stats[i].mean)
        ds = decide([(f"{order[best].variant} vs {order[best_inner].variant}", order[best_inner].values(metric),
                      order[best].values(metric))], margin)
        v = ds[0][1]
        verdict = (f"{NOT_REPRODUCED} (best at an end)" if v.word == BETTER else
                   f"{NOT_REPRODUCED} (flat within ±{margin:g})" if v.word == EQUIVALENT else need_more(v))
        says = {ds[0][0]: verdict}
        note = f"Best: {order[best].variant} (an end); against the best inner one ({order[best_inner].variant})."
    comps = [Comparison(n, v, says[n], f) for n, v, f in ds]
    return Outcome(verdict, comps, rows, header, note)


def _interaction_says(role: str, v: dc.Verdict, paper: Effect) -> str:
    """What one row of an interaction says: the change at the small setting (the paper: worse), at the large one
    (the paper: little change), and their difference (the paper: negative, of the paper's size)."""
    if v.n < 2:
        return NOT_RUN
    if role == "large":
        return (f"{v.word} by {v.mean:+.1f} at the large setting" if v.word in (BETTER, WORSE) else
                f"equivalent within ±{v.margin:g} at the large setting" if v.word == EQUIVALENT else need_more(v))
    if v.word == WORSE:
        return ("worse at the small setting, as the paper's" if role == "small" else against_paper(v, paper, -1))
    if v.word == BETTER:
        return f"{NOT_REPRODUCED} (better " + ("at the small setting)" if role == "small" else "than at the large)")
    if v.word == EQUIVALENT:
        return f"{NOT_REPRODUCED} (" + (f"equivalent within ±{v.margin:g} at the small setting)" if role == "small"
                                        else f"no interaction beyond ±{v.margin:g})")
    return need_more(v)


def interaction(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str, margin: float,
                paper: Effect = None) -> Outcome:
    """Reproduced: the change at the small setting is worse (significant) and worse than at the large one (the
    per-seed difference of differences), by an interval that reaches the paper's difference (else direction only);
    not reproduced: better at the small setting, or no interaction beyond ±margin (the difference of differences
    equivalent); else underpowered."""
    (s_from, s_to), (l_from, l_to) = test["small"], test["large"]
    m = next(iter(cells))[1]
    v = {n: _cell(cells, n, m).values(metric) for n in (s_from, s_to, l_from, l_to)}
    d_small = {s: v[s_to][s] - v[s_from][s] for s in set(v[s_from]) & set(v[s_to])}
    d_large = {s: v[l_to][s] - v[l_from][s] for s in set(v[l_from]) & set(v[l_to])}
    ds = decide([(f"{s_to} vs {s_from}", v[s_from], v[s_to]), (f"{l_to} vs {l_from}", v[l_from], v[l_to]),
                 ("difference of the two changes (small - large)", d_large, d_small)], margin)
    small, inter = ds[0][1], ds[2][1]
    if min(small.n, inter.n) < 2:
        verdict = NOT_RUN
    elif small.word == WORSE and inter.word == WORSE:
        verdict = against_paper(inter, paper, -1)
    elif small.word == BETTER:
        verdict = f"{NOT_REPRODUCED} (better at the small setting)"
    elif inter.word == EQUIVALENT:
        verdict = f"{NOT_REPRODUCED} (no interaction beyond ±{margin:g})"
    else:
        verdict = need_more(max((d for d in (small, inter) if d.word not in (BETTER, WORSE)), key=lambda d: d.sd,
                                default=inter))
    return Outcome(verdict, [Comparison(n, d, _interaction_says(role, d, paper), f)
                             for role, (n, d, f) in zip(("small", "large", "interaction"), ds, strict=True)])


def evaluate_claim(claim: dict[str, Any], cells: dict[tuple[str, str], Cell], data: dict[str, Any],
                   metric: str | None = None) -> Outcome:
    """The claim's verdict on ``metric`` (default: its primary metric)."""
    test, metric = claim["test"], metric or primary_metric(claim, data)
    kind, margin, paper = test["kind"], margin_of(claim, data), paper_effect(claim)
    if kind == "gain":
        return gain(test, cells, metric, margin, paper)
    if kind == "equivalent":
        return equivalent(test, cells, metric, margin, paper)
    if kind == "collapse":
        return collapse(test, cells, float(data.get("collapse_entropy", 0.1)))
    if kind == "inverse_u":
        return inverse_u(test, cells, metric, margin, paper)
    return interaction(test, cells, metric, margin, paper)


def design(claim: dict[str, Any], data: dict[str, Any], ref: Path = REFERENCE_DIR) -> tuple[list[int], str]:
    """The claim's seeds (seeds=auto): its study's seeds are the pilot; the sd of each comparison's paired differences
    at the pilot (the variance only, not the differences) gives the seeds that decide ±margin with 80% power on the
    primary metric (decisions.seeds_needed, with the range the sd's 95% interval allows); the most any comparison
    needs, capped at ``max_seeds``. Fixed by the pilot's records alone, so later seeds never change the design."""
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
    done = [c.decision for c in out.comparisons if c.n >= 2 and math.isfinite(c.decision.sd)]
    if not done:
        return pilot, f"n = {len(pilot)}: no paired differences at the pilot"
    worst = max(done, key=lambda v: v.sd)
    need = dc.seeds_needed(worst.sd, worst.n, margin)
    n = max(len(pilot), min(need.n, cap))
    seeds = pilot + [s for s in range(max(pilot) + 1, max(pilot) + 1 + n - len(pilot))]
    return seeds, (f"pilot of {len(pilot)} seeds; the largest sd of the paired differences there, "
                   f"{worst.sd:.2f} points on {need.df} degrees of freedom, asks for {need.text()} to decide "
                   f"±{margin:g} at 80% power (the range: the sd's 95% interval); cap {cap}: n = {n}")


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
