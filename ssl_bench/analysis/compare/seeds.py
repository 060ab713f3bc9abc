"""``seeds=auto``: :func:`with_seeds` puts every (variant, method) of a plan at more seeds (configs copied, the
seed changed) and :func:`auto_seeds` reads the pilot's table for the seeds that decide the margin with 80%
power (from the variance of the paired differences only). Trains and writes nothing; imports the plan and the
table (ssl_bench.analysis.compare.planning, .table) and ssl_bench.analysis.report."""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd

from ssl_bench.analysis.compare.planning import Plan, PlannedRun
from ssl_bench.analysis.compare.table import ACCURACIES, DONE, cell_rows, run_rows, summarise
from ssl_bench.analysis.report import seeds_needed


def with_seeds(plan: Plan, seeds: list[int]) -> Plan:
    """The plan with every (variant, method) at ``seeds`` (configs copied from its first run, the seed changed)."""
    first: dict[tuple[str, str], PlannedRun] = {}
    for r in plan.runs:
        first.setdefault((r.variant, r.method), r)
    runs = []
    for (v, m), r0 in first.items():
        for s in seeds:
            cfg = copy.deepcopy(r0.cfg)
            cfg.seed = s
            cfg.overrides = [o if not o.startswith("seed=") else f"seed={s}" for o in r0.cfg.overrides]
            runs.append(PlannedRun(v, m, s, cfg))
    return dataclasses.replace(plan, seeds=list(seeds), runs=runs)


def auto_seeds(plan: Plan) -> tuple[int, str]:
    """From the pilot's records: the seeds that decide ±plan.margin with 80% power for every comparison of the
    table (report.seeds_needed on the sd of its paired differences: the variance only, never the differences'
    mean, so the re-estimation does not peek at the effects), capped at plan.max_seeds; and the design in words."""
    pilot_runs = run_rows(plan)
    if not pilot_runs["status"].isin(DONE).all():
        return len(plan.seeds), f"seeds=auto: the pilot of {len(plan.seeds)} seeds is not complete yet; n = pilot."
    table = summarise(cell_rows(pilot_runs), plan)
    needs = []
    for _, r in table.iterrows():
        for c in ACCURACIES:
            for prefix in (f"{c}_vs_ref", f"{c}_vs_baseline"):
                if pd.notna(r.get(f"{prefix}_sd")) and r.get(f"{prefix}_n", 0) >= 2:
                    needs.append((seeds_needed(float(r[f"{prefix}_sd"]), plan.margin),
                                  f"{r['method_name']}{'' if len(plan.variants) == 1 else f' [{r.variant}]'} "
                                  f"{ACCURACIES[c]} {'vs the reference' if 'ref' in prefix else 'gain'}, sd "
                                  f"{r[f'{prefix}_sd']:.2f}"))
    pilot = len(plan.seeds)
    if not needs:
        return pilot, f"seeds=auto: the pilot of {pilot} seeds has no paired differences yet; n = {pilot}."
    need, which = max(needs)
    n = max(pilot, min(need, plan.max_seeds))
    over = sum(k > plan.max_seeds for k, _ in needs)
    design = (f"seeds=auto: a pilot of {pilot} seeds ({' '.join(map(str, plan.seeds))}); from the sd of each "
              f"comparison's paired differences (the variance only, not the differences themselves) the seeds that "
              f"decide ±{plan.margin:g} at 80% power: at most {need if need <= 999 else '>999'} ({which}); capped at "
              f"max_seeds = {plan.max_seeds}: n = {n}." + (
                  f" {over} of {len(needs)} comparisons would need more than {plan.max_seeds} and are reported as "
                  f"underpowered with the n they need." if over else ""))
    return n, design
