"""The papers' claims tested at small scale (``python -m ssl_bench.claims``): results/claims.md and one figure per
claim, from the shipped records; nothing is trained here (a claim's runs are a comparison's planned runs, trained by
ssl_bench.compare). This file re-exports the public names of the modules below, which import records,
configuration and ssl_bench.analysis (the comparison's plan and verdict words among it).

    planning  experiments/claims.yaml; a claim's settings and cells (its study's planned runs with their records)
    verdicts  the five kinds of test, a claim's verdict, the seeds its pilot asks for, a claim evaluated
    figure    one figure per claim
    writing   the report (results/claims.md), check=true and the command line
"""

from ssl_bench.analysis.claims.figure import claim_figure
from ssl_bench.analysis.claims.planning import (
    KINDS,
    METRICS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    ROOT,
    Cell,
    claim_variants,
    claims_file,
    load_cells,
    margin_of,
    primary_metric,
    read_claims,
    study_command,
)
from ssl_bench.analysis.claims.verdicts import (
    Comparison,
    Evaluated,
    Outcome,
    collapse,
    design,
    equivalent,
    evaluate,
    evaluate_claim,
    final_entropy,
    gain,
    interaction,
    inverse_u,
)
from ssl_bench.analysis.claims.writing import (
    COMMAND,
    FIGURES,
    OUT,
    check,
    claim_section,
    comparisons_table,
    main,
    numbers_table,
    write,
)

__all__ = ["COMMAND", "FIGURES", "KINDS", "METRICS", "NOT_REPRODUCED", "NOT_RUN", "OUT", "REPRODUCED", "ROOT", "Cell",
           "Comparison", "Evaluated", "Outcome", "check", "claim_figure", "claim_section", "claim_variants",
           "claims_file", "collapse", "comparisons_table", "design", "equivalent", "evaluate", "evaluate_claim",
           "final_entropy", "gain", "interaction", "inverse_u", "load_cells", "main", "margin_of", "numbers_table",
           "primary_metric", "read_claims", "study_command", "write"]
