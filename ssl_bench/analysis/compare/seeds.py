"""``seeds=auto``: :func:`with_seeds` puts every (variant, method) of a plan at more seeds (configs copied, the
seed changed) and :func:`auto_seeds` reads the pilot's table for the seeds that decide the margin with 80%
power (decisions.seeds_needed, from the variance of the paired differences only). Trains and writes nothing;
imports the plan and the table (ssl_bench.analysis.compare.planning, .table) and ssl_bench.analysis.decisions."""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd

from ssl_bench.analysis.compare.planning import Plan, PlannedRun
from ssl_bench.analysis.compare.table import ACCURACIES, DONE, cell_rows, run_rows, summarise
from ssl_bench.analysis.decisions import POWER, seeds_needed


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
    """From the pilot's records: the pairs that decide ±plan.margin with 80% power for every comparison of the
    table (decisions.seeds_needed on the sd of its paired differences and the pilot's n: the variance only, never
    the differences' mean, so the re-estimation does not peek at the effects), capped at plan.max_seeds; and the
    design in words. The design is planning: what the pilot asked for, not how the comparisons came out."""
    pilot_runs = run_rows(plan)
    if not pilot_runs["status"].isin(DONE).all():
        return len(plan.seeds), f"seeds=auto: the pilot of {len(plan.seeds)} seeds is not complete yet; n = pilot."
    table = summarise(cell_rows(pilot_runs), plan, images=False)
    needs = []
    for _, r in table.iterrows():
        for c in ACCURACIES:
            for prefix in (f"{c}_vs_ref", f"{c}_vs_baseline"):
                sd, n = r.get(f"{prefix}_sd"), r.get(f"{prefix}_n")
                if pd.notna(sd) and pd.notna(n) and n >= 2:
                    needs.append((seeds_needed(float(sd), int(n), plan.margin),
                                  f"{r['method_name']}{'' if len(plan.variants) == 1 else f' [{r.variant}]'} "
                                  f"{ACCURACIES[c]} {'vs the reference' if 'ref' in prefix else 'gain'}, sd "
                                  f"{float(sd):.2f} on {int(n)} pairs"))
    pilot = len(plan.seeds)
    if not needs:
        return pilot, f"seeds=auto: the pilot of {pilot} seeds has no paired differences yet; n = {pilot}."
    need, which = max(needs, key=lambda x: (x[0].n, x[0].hi, x[1]))
    n = max(pilot, min(need.n, plan.max_seeds))
    over = sum(k.n > plan.max_seeds for k, _ in needs)
    design = (f"seeds=auto (planning, before any outcome): a pilot of {pilot} seeds "
              f"({' '.join(map(str, plan.seeds))}); "
              f"from the sd of each comparison's paired differences (the variance only, not the differences "
              f"themselves) the pairs that decide ±{plan.margin:g} at {POWER:.0%} power (decisions.seeds_needed, with "
              f"the range the pilot sd's 95% CI allows): at most {need.text()} ({which}); capped at max_seeds = "
              f"{plan.max_seeds}: n = {n}." + (
                  f" At the pilot's sds, {over} of {len(needs)} comparisons were planned to need more than "
                  f"{plan.max_seeds} pairs; how they came out is counted from the verdicts." if over else ""))
    return n, design
