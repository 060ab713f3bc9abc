"""A comparison of methods under one identical budget (``python -m ssl_bench.compare``): every run an ordinary run
with its own record, the table written from the records. This file re-exports the public names of the modules
below, which import records, configuration, the run pipeline and ssl_bench.analysis's statistics, never the claims.

    planning  the command line and the study file -> a validated Plan (every run's composed config); the budget check
    table     the planned runs' records -> rows, cells and the comparison table's statistics (pandas)
    verdicts  every family of the table decided by ssl_bench.analysis.decisions: rule, fragility, seeds, bootstrap
    seeds     seeds=auto: the plan at more seeds, and how many seeds the pilot's variance asks for
    writing   the table as Markdown (caption, verdicts, gains over a baseline variant), CSV and comparison.json
    jobs      cluster=slurm: one sbatch job per run without a record, every run's state from its folder and squeue/sacct
    running   training what is missing (reused, resumed or trained), then the table: compare() and main()
"""

from ssl_bench.analysis.compare.planning import (
    COMMAND,
    DEFAULT_REFERENCE,
    MATCHES,
    MAX_SEEDS,
    OWN_KEYS,
    STUDY_DIR,
    Plan,
    PlannedRun,
    Variant,
    all_methods,
    arguments,
    check_budgets,
    load_study,
    parse,
    plan,
    plan_arguments,
    split_arguments,
)
from ssl_bench.analysis.compare.running import compare, execute, main
from ssl_bench.analysis.compare.seeds import auto_seeds, with_seeds
from ssl_bench.analysis.compare.table import (
    ACCURACIES,
    DONE,
    add_matched,
    cell_rows,
    refusal_lines,
    run_rows,
    summarise,
)
from ssl_bench.analysis.compare.writing import table_markdown, write_outputs

__all__ = ["ACCURACIES", "COMMAND", "DEFAULT_REFERENCE", "DONE", "MATCHES", "MAX_SEEDS", "OWN_KEYS", "STUDY_DIR",
           "Plan", "PlannedRun", "Variant", "add_matched", "all_methods", "arguments", "auto_seeds", "cell_rows",
           "check_budgets", "compare", "execute", "load_study", "main", "parse", "plan", "plan_arguments",
           "refusal_lines", "run_rows", "split_arguments", "summarise", "table_markdown", "with_seeds", "write_outputs"]
