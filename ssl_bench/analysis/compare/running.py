"""Running a comparison: :func:`execute` trains what is missing, one run after another (a complete record
reused, an interrupted one resumed, a diverged one left out), :func:`compare` goes from a plan to the written
table (with seeds=auto, the pilot first) and :func:`main` is the command line (with cluster=slurm, jobs instead:
ssl_bench.analysis.compare.jobs). The one module of the
comparison that trains: imports the run pipeline and the other modules of ssl_bench.analysis.compare."""

from __future__ import annotations

import dataclasses
import shlex
import sys

import pandas as pd

from ssl_bench.analysis.against_reference import reference_lines
from ssl_bench.analysis.compare.jobs import submit
from ssl_bench.analysis.compare.planning import COMMAND, Plan, check_budgets, plan, split_arguments
from ssl_bench.analysis.compare.seeds import auto_seeds, with_seeds
from ssl_bench.analysis.compare.table import add_matched, cell_rows, refusal_lines, run_rows, summarise
from ssl_bench.analysis.compare.writing import table_markdown, write_outputs
from ssl_bench.common.skipped import note as skipped_note
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.overrides import help_requested
from ssl_bench.errors import TrainingStopped
from ssl_bench.pipeline.experiment import run_experiment


def execute(plan: Plan, train: bool = True, require_all: bool = True) -> dict[str, str]:
    """Run the planned runs one after another; returns run_id -> 'reused' | 'trained' | 'resumed' | 'diverged'.
    With ``train=False`` every record must exist already (tables from records only), unless ``require_all`` is
    false: then a missing one is reported as 'not trained yet' (the seeds a design added after its pilot)."""
    states = [r.state() for r in plan.runs]
    n = len(plan.runs)
    if not train and require_all and states.count("complete") < n:
        missing = [r.run_id for r, st in zip(plan.runs, states, strict=True) if st != "complete"]
        raise ConfigError(f"comparison {plan.name}: {len(missing)} of {n} records missing under "
                          f"{plan.runs[0].cfg.output_dir} (first: {missing[0]}); train them with ssl_bench.compare")
    print(f"comparison {plan.name}: {n} runs ({len(plan.variants)} variant(s) x {len(plan.methods)} methods x "
          f"{len(plan.seeds)} seeds): {states.count('complete')} complete (reused), "
          f"{states.count('interrupted')} interrupted (resumed), {states.count('new')} to train")
    status: dict[str, str] = {}
    for i, (run, state) in enumerate(zip(plan.runs, states, strict=True), 1):
        variant = f"[{run.variant}] " if len(plan.variants) > 1 else ""
        print(f"[{i}/{n}] {variant}{run.method} seed {run.seed}: {run.run_id} ({state})", flush=True)
        cfg = run.cfg
        if state == "complete":
            status[run.run_id] = "reused"
            continue
        if not train:
            status[run.run_id] = "not trained yet"
            continue
        if state == "interrupted" and not cfg.resume:
            cfg = compose([*list(cfg.overrides), "resume=true"])
        try:
            run_experiment(cfg, beside=reference_lines)
        except TrainingStopped as exc:
            if exc.exit_code != 1:  # interrupted by the user: stop the comparison too
                raise
            print(f"  {run.method} seed {run.seed} diverged; the comparison goes on without it: {exc}")
            status[run.run_id] = "diverged"
            continue
        status[run.run_id] = "resumed" if state == "interrupted" else "trained"
    return status


def compare(plan: Plan, train: bool = True, verbose: bool = True, require_all: bool = True) -> pd.DataFrame:
    """Run (or reuse) every run of the plan, check the budgets of the records and write the table. With
    ``seeds=auto`` the pilot runs first, then the seeds it asks for (:func:`auto_seeds`). ``train=False`` trains
    nothing: every record must exist, or with ``require_all=False`` the table is written from those that do and the
    others are named as not trained yet."""
    status = execute(plan, train, require_all)
    if plan.auto:
        n, design = auto_seeds(plan)
        print(design)
        more = plan.seeds + [s for s in range(max(plan.seeds) + 1, 10**6) if s not in plan.seeds][:n - len(plan.seeds)]
        plan = dataclasses.replace(with_seeds(plan, more), design=design)
        status.update(execute(plan, train, require_all=False))
    runs = run_rows(plan, status)
    # The records are the truth: check their saved configs again, not only what was composed.
    warnings = check_budgets([(r["variant"], f"{r['method']} s{r['seed']}", r["_items"]) for _, r in runs.iterrows()],
                             plan)
    runs = cell_rows(runs)
    for line in refusal_lines(runs):
        print(line, file=sys.stderr)
    matched = add_matched(runs, plan.match)
    table = summarise(runs, plan)
    md = table_markdown(table, runs, plan, matched, warnings) + skipped_note([str(r.run_dir) for r in plan.runs])
    write_outputs(plan, runs, table, md, matched, warnings)
    if verbose:
        print(md)
    print(f"table: {plan.out_dir}/table.md (and table.csv, runs.csv)")
    return table


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    args, train, cluster = split_arguments(argv)
    defaults = {k.name: k.default for k in COMMAND.keys}
    stray = [f"{k}={v}" for k, v in cluster.items() if k != "cluster" and v != defaults[k]]
    if cluster["cluster"] != "slurm" and stray:
        raise ConfigError(f"{stray[0]} is a key of cluster=slurm (jobs on a cluster): add cluster=slurm or leave it "
                          "out")
    planned = plan(**args)
    if cluster["cluster"] == "slurm":  # jobs instead of training here; the table once every run is done
        found = submit(planned, cluster, "python -m ssl_bench.compare " + shlex.join(argv), send=train)
        if train and any(s.state != "done" for s in found):
            return 0
        train = False
    compare(planned, train=train, require_all=False)
    return 0
