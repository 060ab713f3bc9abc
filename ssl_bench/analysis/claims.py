"""Entry point: the papers' claims, tested at small scale, written to results/claims.md from the shipped records.

    python -m ssl_bench.claims                  # write results/claims.md and results/reference/figures/claims/
    python -m ssl_bench.claims check=true       # exit 1 if results/claims.md differs from the regenerated one

The claims, their studies and the verdict rules (with their dated revisions) are in experiments/claims.yaml. Each
claim's runs are the planned runs of its study (``ssl_bench.compare``, one configuration per variant, paired
by seed) at the seeds its pilot asks for (:func:`design`); nothing is trained here: a claim whose runs are missing
says so, with its command. Statistics come from ssl_bench.analysis.report (95% t-intervals, paired t-tests with Holm
within a
claim and over the report, TOST, MDE: better / worse / equivalent / underpowered).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ssl_bench.analysis import cells as cells_mod
from ssl_bench.analysis.report import (
    BETTER,
    DEFAULT_MARGIN,
    EQUIVALENT,
    UNDERPOWERED,
    WORSE,
    Decision,
    Paired,
    Stat,
    decide,
    display,
    fmt_delta,
    holm,
    interval90,
    markdown_table,
    num,
    paired,
    seeds_needed,
    t_interval,
    with_holm,
)
from ssl_bench.common.skipped import note as skipped_note
from ssl_bench.config.compose import ConfigError
from ssl_bench.config.overrides import Command, Key, help_requested
from ssl_bench.config.searchpath import EXPERIMENTS_DIR
from ssl_bench.records.io import REFERENCE_DIR, dig, read_metrics, read_summary, readable, save_figure, write_atomic
from ssl_bench.records.layout import ResultsLayout

ROOT = REFERENCE_DIR.parent.parent  # the checkout: records are named relative to it, claims.md is its results/claims.md
KINDS = ("gain", "equivalent", "collapse", "inverse_u", "interaction")
REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run yet"
# The verdict's metric keys (of the record's metrics) and their names; a claim's primary metric is its paper's protocol.
METRICS = {"knn_top1": "kNN top-1", "linear.top1": "linear top-1"}


def claims_file() -> Path:
    return EXPERIMENTS_DIR / "claims.yaml"


def read_claims(path: Path | None = None) -> dict[str, Any]:
    path = path or claims_file()
    if not path.exists():
        raise ConfigError(f"no {path}: no claims to test")
    data = yaml.safe_load(path.read_text()) or {}
    for c in data.get("claims") or []:
        kind = (c.get("test") or {}).get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{path}: claim {c.get('id')}: unknown test kind '{kind}'; valid: {', '.join(KINDS)}")
    return data


# -- the records of a claim -----------------------------------------------------------------------------
@dataclass
class Cell:
    """One configuration of a study (variant x method): its records by seed."""

    variant: str
    method: str
    seeds: list[int]
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)
    epochs: dict[int, list[dict]] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # stale records (ssl_bench.analysis.cells): the cell is left out

    def values(self, metric: str) -> dict[int, float]:
        out = {}
        for s, summary in self.summaries.items():
            v = dig(summary.get("metrics", {}), metric)
            if v is not None:
                out[s] = float(v)
        return out

    def stat(self, metric: str) -> Stat:
        return t_interval(self.values(metric).values())

    @property
    def missing(self) -> list[int]:
        return [s for s in self.seeds if s not in self.summaries]


def study_command(study: str, common: list[str], seeds: list[int] | None = None) -> str:
    # Runs go beside the other reference records; the compare tables to the user's results/compare (the
    # claims report is the shipped table).
    seeds_arg = f" seeds=[{','.join(map(str, seeds))}]" if seeds else ""
    return (f"python -m ssl_bench.compare study={study} {' '.join(common)}{seeds_arg} "
            f"output_dir=results/reference/runs")


def load_cells(study: str, common: list[str], ref: Path = REFERENCE_DIR, seeds: list[int] | None = None
               ) -> dict[tuple[str, str], Cell]:
    """Every (variant, method) of the study with the records that exist (relative to the checkout); each is one
    cell (ssl_bench.analysis.cells): a record today's code does not reproduce is left out and named in ``refused``."""
    from ssl_bench.analysis import compare as cmp

    rel = ref.relative_to(ROOT) if ref.is_relative_to(ROOT) else ref
    plan = cmp.plan(study=study, overrides=common, seeds=seeds or None, results=rel)
    dirs = [ROOT / r.run_dir if not r.run_dir.is_absolute() else r.run_dir for r in plan.runs]
    stale = cells_mod.stale_of(pd.Series([str(d) for d in dirs]))
    out: dict[tuple[str, str], Cell] = {}
    for r, d, why in zip(plan.runs, dirs, stale, strict=True):
        cell = out.setdefault((r.variant, r.method), Cell(r.variant, r.method, []))
        cell.seeds.append(r.seed)
        if why:
            cell.refused.append(d.name)
        elif (d / "summary.json").exists() and readable(d):  # a damaged record: a warning, and not run yet
            cell.summaries[r.seed] = read_summary(d)
            cell.epochs[r.seed] = read_metrics(d)
            cell.run_dirs[r.seed] = d
    for cell in out.values():  # a cell with a stale record is refused whole: its seeds would mix two programs
        if cell.refused:
            cell.summaries, cell.epochs, cell.run_dirs = {}, {}, {}
    return out


# -- verdicts ---------------------------------------------------------------------------------------------
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


def claim_variants(test: dict[str, Any]) -> set[str]:
    """The variants a claim's test reads (a study may hold more, for other claims)."""
    names = {test.get("baseline"), *(test.get("variants") or []), *(test.get("small") or []),
             *(test.get("large") or [])}
    names.update(v for pair in test.get("pairs") or [] for v in pair)
    return {str(n) for n in names if n is not None}


def primary_metric(claim: dict[str, Any], data: dict[str, Any]) -> str:
    """The claim's primary metric: its own ``metric`` (the paper's protocol), else the file's."""
    metric = str(claim.get("metric") or data.get("metric", "knn_top1"))
    if metric not in METRICS:
        raise ConfigError(f"claims.yaml: claim {claim.get('id')}: metric '{metric}'; valid: {', '.join(METRICS)}")
    return metric


def margin_of(claim: dict[str, Any], data: dict[str, Any]) -> float:
    return float(claim.get("margin", claim["test"].get("margin", data.get("margin", DEFAULT_MARGIN))))


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


# -- the report -----------------------------------------------------------------------------------------
def _last(cell: Cell, key: str) -> Stat:
    vals = []
    for rows in cell.epochs.values():
        xs = [r[key] for r in rows if r.get(key) is not None]
        if xs:
            vals.append(xs[-1])
    return t_interval(vals)


def _ci(s: Stat) -> str:
    if s.n == 0:
        return "—"
    if s.n == 1:
        return f"{s.mean:.1f} (n=1)"
    return f"{s.mean:.1f} ({s.lo:.1f}–{s.hi:.1f})"


def numbers_table(cells: dict[tuple[str, str], Cell]) -> str:
    multi = len({m for _, m in cells}) > 1
    rows = []
    for c in cells.values():
        ent, used, loss = _last(c, "assign_entropy"), _last(c, "prototypes_used"), _last(c, "loss")
        rows.append([(f"{display(c.method)}, " if multi else "") + c.variant, f"{len(c.summaries)} of {len(c.seeds)}",
                     _ci(c.stat("knn_top1")), _ci(c.stat("linear.top1")), num(loss.mean, 3),
                     num(ent.mean, 2), num(used.mean, 0)])
    return markdown_table(["configuration", "n (runs of seeds)", "kNN top-1 (95% CI)", "linear top-1 (95% CI)",
                           "final loss", "final assignment entropy", "prototypes in use"], rows)


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


def _p(p: float) -> str:
    return "—" if not math.isfinite(p) else f"{p:.2g}"


def comparisons_table(ev: Evaluated) -> str:
    """Every comparison behind the verdict, on both protocols: Δ with its 95% and 90% intervals, Holm within the
    claim and over the report, TOST, MDE and what it says."""
    rows = []
    for metric, out in ev.outcomes.items():
        for c in out.comparisons:
            lo90, hi90 = interval90(c.test)
            d = c.decision
            rows.append([METRICS[metric] + (" (primary)" if metric == ev.primary else ""), c.name, str(c.test.n),
                         fmt_delta(c.test), "—" if c.test.n < 2 else f"{lo90:+.1f} to {hi90:+.1f}", _p(c.test.p_holm),
                         _p(c.p_report) if metric == ev.primary else "—", f"{_p(d.p_tost)} (±{d.margin:g})",
                         num(d.mde), d.text() if c.test.n >= 2 else "—", c.verdict])
    if not rows:
        return ""
    return markdown_table(["protocol", "comparison", "n", "Δ (95% CI)", "90% CI", "Holm p (claim)",
                           "Holm p (report)", "TOST p", "MDE", "decision", "says"], rows)


def claim_section(ev: Evaluated, data: dict[str, Any], figures: Path | None) -> str:
    claim, cells = ev.claim, ev.cells
    common = [str(x) for x in data.get("common") or []]
    used = [c for c in cells.values() if c.variant in claim_variants(claim["test"])]
    missing = sum(len(c.missing) for c in used)
    planned = sum(len(c.seeds) for c in used)
    refused = [r for c in used for r in c.refused]
    verdict = ev.verdict if not missing or ev.verdict == NOT_RUN else (
        f"{ev.verdict} so far: {missing} of {planned} planned runs missing")
    other = [m for m in ev.outcomes if m != ev.primary]
    earlier = claim.get("earlier") or {}
    lines = [f"## Claim {claim['id']}: {claim['title']}", "",
             f"**{claim['paper']}, {claim['where']}**: \"{claim['statement']}\"", "",
             f"Paper's numbers: {claim['paper_numbers']}.", ""]
    if claim.get("added_after"):
        lines += [f"**Added after the runs began**: {claim['added_after']}", ""]
    lines += [f"Our command: `{study_command(claim['study'], common, ev.seeds)}`", "",
              f"Seeds: {ev.design}.", "",
              f"**Verdict ({ev.measure}" + (", the paper's protocol" if ev.claim["test"]["kind"] != "collapse" else "")
              + f"): {verdict}.**"
              + (" The command trains the missing runs." if missing else "")
              + "".join(f" On {METRICS[m]}: {ev.outcomes[m].verdict}." for m in other)
              + (f" Earlier ({earlier.get('rules')}): {earlier.get('verdict')}." if earlier else ""), ""]
    if refused:
        lines += [f"**Refused** (today's code does not reproduce them; `python -m ssl_bench.reference verify`): "
                  f"{', '.join(refused)}.", ""]
    lines += [numbers_table(cells)]
    table = comparisons_table(ev)
    if table:
        lines += [table]
    out = ev.outcomes[ev.primary]
    if out.rows:
        lines += [markdown_table(out.header, out.rows)]
    if out.note:
        lines += [out.note, ""]
    lines += [f"Why the scale may matter: {claim['scale']}", ""]
    if any(c.summaries for c in cells.values()):  # the link does not depend on drawing (check=true draws nothing)
        if figures is not None:
            claim_figure(ev, figures)
        lines += [f"![claim {claim['id']}]({FIGURES.relative_to(ROOT)}/claim_{claim['id']}.png)", ""]
    return "\n".join(lines)


_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "<")


def _styles(done: list[Cell]) -> dict[tuple[str, str], dict[str, Any]]:
    """One colour, line style and marker per configuration, the same in every panel: by method when the claim
    compares methods (the variant then sets style and marker), else one palette colour per variant."""
    from ssl_bench.analysis.report import colour

    multi = len({c.method for c in done}) > 1
    variants = list(dict.fromkeys(c.variant for c in done))
    palette = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
    out = {}
    for i, c in enumerate(done):
        k = variants.index(c.variant) if multi else i
        out[(c.variant, c.method)] = {"color": colour(c.method) if multi else palette[i % len(palette)],
                                      "ls": _STYLES[k % len(_STYLES)], "marker": _MARKERS[k % len(_MARKERS)]}
    return out


def claim_figure(ev: Evaluated, out_dir: Path) -> Path | None:
    """Per configuration the primary metric (mean and 95% CI, every seed a dot); the paired differences the verdict
    rests on (every seed a dot, mean and 95% CI, the ±margin band); with ``curves`` the training loss, the
    assignment entropy and the prototypes in use per epoch (mean over seeds). Each configuration has one colour,
    line style and marker in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ssl_bench.analysis.report import THEME

    sns.set_theme(**THEME)
    claim, metric = ev.claim, ev.primary
    done = [c for c in ev.cells.values() if c.summaries]
    if not done:
        return None
    style = _styles(done)
    comps = [c for c in ev.outcomes[metric].comparisons if c.test.n >= 1]
    curves = bool(claim.get("curves"))
    panels = 1 + bool(comps) + (3 if curves else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels + 1.5, 0.35 * max(len(done), len(comps)) + 2.6),
                             squeeze=False)
    axes = list(axes[0])
    multi = len({c.method for c in done}) > 1
    names = [(f"{display(c.method)}, " if multi else "") + c.variant for c in done]
    _metric_panel(axes.pop(0), done, names, style, metric)
    if comps:
        _differences_panel(axes.pop(0), comps, metric)
    if curves:
        _curve_panels(axes, done, names, style)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"claim_{claim['id']}.png"
    save_figure(fig, path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _metric_panel(ax: Any, done: list[Cell], names: list[str], style: dict[tuple[str, str], dict[str, Any]],
                  metric: str) -> None:
    """Each configuration's seeds (dots), mean and 95% CI, over the random-init floor."""
    for i, c in enumerate(done):
        st_ = style[(c.variant, c.method)]
        vals = list(c.values(metric).values())
        s = t_interval(vals)
        ax.scatter(vals, [i] * len(vals), s=12, color=st_["color"], alpha=0.45, marker=st_["marker"])
        if s.n >= 2:
            ax.errorbar(s.mean, i, xerr=[[s.mean - s.lo], [s.hi - s.mean]], fmt=st_["marker"], color=st_["color"],
                        capsize=3)
    floor_key = "random_knn_top1" if metric == "knn_top1" else "random.linear.top1"
    rand = t_interval(v for c in done for v in c.values(floor_key).values())
    if rand.n:  # the floor: a collapsed backbone scores about what a random one does
        ax.axvline(rand.mean, color="grey", ls=":", lw=1)
        ax.annotate("random init", (rand.mean, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="grey",
                    ha="left", va="bottom")
    ax.set_yticks(range(len(done)), [textwrap.fill(n, 30) for n in names], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"{METRICS[metric]} accuracy (%),\nseeds, mean and 95% CI")


def _differences_panel(ax: Any, comps: list[Comparison], metric: str) -> None:
    """The paired differences the verdict rests on, mean and 95% CI, inside the ±margin band."""
    margin = comps[0].decision.margin
    ax.axvspan(-margin, margin, color="0.85", alpha=0.6, lw=0)
    ax.axvline(0, color="0.3", lw=0.8)
    for i, c in enumerate(comps):
        ax.errorbar(c.test.diff.mean, i, xerr=None if c.test.n < 2 else
                    [[c.test.diff.mean - c.test.diff.lo], [c.test.diff.hi - c.test.diff.mean]],
                    fmt="o", color="0.15", capsize=3)
    ax.set_yticks(range(len(comps)), [textwrap.fill(c.name, 28) for c in comps], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"paired difference, {METRICS[metric]} (points),\nmean and 95% CI; grey: ±{margin:g} margin")


def _curve_panels(axes: list[Any], done: list[Cell], names: list[str],
                  style: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Training loss, assignment entropy and prototypes in use per epoch, mean over seeds."""
    for key, a, label in (("loss", axes[0], "training loss"),
                          ("assign_entropy", axes[1], "assignment entropy\n(1 = uniform)"),
                          ("prototypes_used", axes[2], "prototypes in use")):
        for c, name in zip(done, names, strict=True):
            per_epoch: dict[int, list[float]] = {}
            for rows in c.epochs.values():
                for r in rows:
                    if r.get(key) is not None:
                        per_epoch.setdefault(int(r["epoch"]) + 1, []).append(float(r[key]))
            if per_epoch:
                xs = sorted(per_epoch)
                st_ = style[(c.variant, c.method)]
                a.plot(xs, [sum(per_epoch[x]) / len(per_epoch[x]) for x in xs], linestyle=st_["ls"],
                       marker=st_["marker"], color=st_["color"], ms=3, label=name)
        a.set_xlabel("epoch")
        a.set_ylabel(f"{label}, mean over seeds")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)


def write(out: Path, ref: Path = REFERENCE_DIR, figures: Path | None = None, data: dict | None = None) -> str:
    """Write the claims report to ``out`` (and figures to ``figures``); returns its text."""
    from ssl_bench.analysis.compare import verdict_words
    from ssl_bench.analysis.report import STATS

    data = data or read_claims()
    evs = [evaluate(claim, data, ref) for claim in data.get("claims") or []]
    # Holm over every primary comparison of the report, beside each claim's own.
    every = [c for ev in evs for c in ev.outcomes[ev.primary].comparisons if c.test.n >= 2]
    for c, q in zip(every, holm([c.test.p for c in every]), strict=True):
        c.p_report = q
    sections = [claim_section(ev, data, figures) for ev in evs]
    verdicts = [[str(ev.claim["id"]), ev.claim["paper"], ev.claim["title"], ev.measure,
                 str(len(ev.seeds)), ev.verdict,
                 "; ".join(f"{METRICS[m]}: {o.verdict}" for m, o in ev.outcomes.items() if m != ev.primary) or "—",
                 (ev.claim.get("earlier") or {}).get("verdict", "—")] for ev in evs]
    rev = data.get("revisions") or []
    head = ["# The papers' claims, tested at small scale", "",
            "Generated by `python -m ssl_bench.claims` from the shipped records in results/reference/runs (the "
            "claims, their studies and the verdict rules are in experiments/claims.yaml). Demo budget on "
            "Fashion-MNIST: small convnet, 4096 pretraining images, batch 64, 10 epochs, crops 2x28+4x14, AdamW; "
            "kNN top-1 (k=20) and a linear probe (cached features, 100 epochs) on frozen backbone features, "
            "10000 train / 10000 test images. n is the number of seeds. " + STATS + " Comparisons are paired by "
            "seed. Each claim's verdict reads its primary metric, the protocol its paper quotes; the other protocol "
            "is tested the same way and shown beside it. " + verdict_words(
                float(data.get("margin", DEFAULT_MARGIN)), "the comparisons of one claim and protocol (each "
                "claim's own margin; the report-wide Holm over every primary comparison is shown beside it)"),
            "", "What a verdict says: *reproduced* (significant in the paper's direction; *in direction only* when "
            "TOST also puts the difference inside the margin: real, but smaller than the margin); *not reproduced* "
            "(significant the other way, or equivalent within the margin: an effect of that size is ruled out); "
            "*underpowered* (neither: the n that would decide it is given; seeds are capped at "
            f"{data.get('max_seeds', 8)}); *not run yet*.", ""]
    for r in rev:
        head += [f"**Revision {r['date']}**: {r['what']} The verdicts before it are kept in the column "
                 f"\"earlier\" ({r.get('earlier', 'kNN, n = 3')}).", ""]
    disclosed = [ev.claim for ev in evs if ev.claim.get("added_after")]
    if disclosed or data.get("disclosure"):
        head += ["**Not all of the design came before the runs**: " + " ".join(
            [str(data.get("disclosure", ""))] + [f"Claim {c['id']}: {c['added_after']}" for c in disclosed]).strip(),
            ""]
    head += [markdown_table(["claim", "paper", "statement", "verdict reads", "seeds planned", "verdict",
                             "other protocol", "earlier"], verdicts)]
    text = "\n".join(head + sections) + skipped_note()
    write_atomic(out, text)
    return text


OUT = ROOT / "results" / "claims.md"
FIGURES = ResultsLayout(REFERENCE_DIR).figures("claims")
COMMAND = Command(
    "ssl_bench.claims", __doc__.split("\n\nThe claims")[0],
    (Key("check", "bool", False, "regenerate into a temporary file and compare with results/claims.md; exit 1 if "
         "it differs"),
     Key("out", "str", None, "where to write the report (null: results/claims.md)"),
     Key("figures", "bool", True, "also draw one figure per claim (results/reference/figures/claims/)")),
    footer=__doc__.split("\n\n", 2)[2])


def check() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        new = write(Path(tmp) / "claims.md")
    return OUT.exists() and OUT.read_text() == new


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    own, _, _ = COMMAND.parse(argv)
    if own["check"]:
        same = check()
        print("results/claims.md: " + ("equal to the regenerated report" if same else "differs from the records; "
                                       "run python -m ssl_bench.claims"))
        return 0 if same else 1
    out = Path(own["out"]) if own["out"] else OUT
    write(out, figures=FIGURES if own["figures"] else None)
    print(out)
    return 0


