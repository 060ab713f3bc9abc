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
    DIRECTION,
    KINDS,
    MARGIN_KINDS,
    METRICS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    ROOT,
    UNDERPOWERED_HERE,
    Cell,
    check_margin,
    claim_variants,
    claims_file,
    effect_text,
    load_cells,
    margin_of,
    paper_effect,
    primary_metric,
    read_claims,
    scale_of,
    study_command,
)
from ssl_bench.analysis.claims.verdicts import (
    Comparison,
    Evaluated,
    Outcome,
    against_paper,
    collapse,
    decide,
    design,
    equivalent,
    evaluate,
    evaluate_claim,
    final_entropy,
    gain,
    interaction,
    inverse_u,
    need_more,
)
from ssl_bench.analysis.claims.writing import (
    COMMAND,
    FAMILY,
    FIGURES,
    OUT,
    check,
    claim_section,
    comparisons_table,
    evaluate_all,
    fragile_note,
    main,
    numbers_table,
    revision_outcome,
    write,
)

__all__ = ["COMMAND", "DIRECTION", "FAMILY", "FIGURES", "KINDS", "MARGIN_KINDS", "METRICS", "NOT_REPRODUCED",
           "NOT_RUN", "OUT", "REPRODUCED", "ROOT", "UNDERPOWERED_HERE", "Cell", "Comparison", "Evaluated", "Outcome",
           "against_paper", "check", "check_margin", "claim_figure", "claim_section", "claim_variants", "claims_file",
           "collapse", "comparisons_table", "decide", "design", "effect_text", "equivalent", "evaluate",
           "evaluate_all", "evaluate_claim", "final_entropy", "fragile_note", "gain", "interaction", "inverse_u",
           "load_cells", "main", "margin_of", "need_more", "numbers_table", "paper_effect", "primary_metric",
           "read_claims", "revision_outcome", "scale_of", "study_command", "write"]
