"""The comparison written out: the table as Markdown (:func:`table_markdown`: the caption, one row per (variant,
method) in the suite's order, the verdicts in words, the gain over a baseline variant; :func:`verdict_words`,
which the claims report quotes too) and the files of <results>/compare/<name>/ (:func:`write_outputs`:
table.md, table.csv, runs.csv, comparison.json). Computes no statistic; imports the plan and the table's
columns (ssl_bench.analysis.compare.planning, .table), ssl_bench.analysis.report and the records' writers."""

from __future__ import annotations

import math

import pandas as pd

from ssl_bench.analysis.compare.planning import Plan
from ssl_bench.analysis.compare.table import ACCURACIES
from ssl_bench.analysis.report import (
    ALPHA,
    BETTER,
    EQUIVALENT,
    STATS,
    UNDERPOWERED,
    WORSE,
    Decision,
    Paired,
    Stat,
    budget_caption,
    display,
    fmt_delta,
    fmt_stat,
    linear_protocol,
    markdown_table,
    monitor_protocol,
    n_warning,
    num,
    protocol,
)
from ssl_bench.records.io import write_atomic, write_json


def _decision(r: pd.Series, prefix: str) -> Decision | None:
    t = _test(r, prefix)
    if t is None:
        return None
    return Decision(str(r.get(f"{prefix}_decision") or ""), t, float(r[f"{prefix}_margin"]),
                    float(r[f"{prefix}_p_tost"]), float(r[f"{prefix}_mde"]), int(r[f"{prefix}_n_needed"]))


def _test(r: pd.Series, prefix: str) -> Paired | None:
    if f"{prefix}_diff" not in r or pd.isna(r.get(f"{prefix}_n")):
        return None
    n = int(r[f"{prefix}_n"])
    return Paired(n, Stat(n, r[f"{prefix}_diff"], r[f"{prefix}_sd"], r[f"{prefix}_ci_lo"], r[f"{prefix}_ci_hi"]),
                  r[f"{prefix}_p"], r[f"{prefix}_p_holm"])


def _cell(r: pd.Series, col: str, digits: int = 1) -> str:
    n = r.get(f"{col}_n")
    if pd.isna(n):
        return "—"
    return fmt_stat(Stat(int(n), r[f"{col}_mean"], r[f"{col}_sd"], r[f"{col}_ci_lo"], r[f"{col}_ci_hi"]), digits)


def verdict_words(margin: float, family: str) -> str:
    """How the verdicts are reached, for captions (compare tables and the claims report)."""
    return (f"Verdicts: *better* / *worse* by Δ when the paired t-test is significant after Holm's correction over "
            f"{family} (α = {ALPHA}); else *equivalent within ±{margin:g}* when TOST puts the 90% CI of Δ inside "
            f"±{margin:g} points; else *underpowered*, with the number of seeds that would decide ±{margin:g} at "
            f"80% power given the observed sd of the paired differences. MDE: the smallest true difference the "
            f"t-test finds with 80% power at this n.")


def table_markdown(table: pd.DataFrame, runs: pd.DataFrame, plan: Plan, matched: str | None,
                   warnings: list[str]) -> str:
    """The comparison as Markdown: a caption naming protocol, budget, statistics and the reference, the table (in
    the suite's order: no ranking by noise), the verdicts in words and, with a baseline variant, the gain table."""
    accs = [c for c in ACCURACIES if f"{c}_mean" in table and table[f"{c}_mean"].notna().any()]
    rank = "final_rank_mean" in table and table["final_rank_mean"].notna().any()  # records with health only
    header, rows = _table_rows(table, plan, accs, matched, rank)
    out = _caption(table, runs, plan, accs, matched, warnings) + "\n\n" + markdown_table(header, rows) + "\n" \
        + _verdicts(table, plan, accs)
    if plan.baseline:
        out += "\n" + _baseline_table(table, plan, accs)
    return out


def _table_rows(table: pd.DataFrame, plan: Plan, accs: list[str], matched: str | None, rank: bool
                ) -> tuple[list[str], list[list[str]]]:
    """The table's header and one row per (variant, method), variants in the study's order."""
    multi = len(plan.variants) > 1
    ref = display(plan.reference)
    header = (["variant"] if multi else []) + ["method"]
    for c in accs:
        header += [f"{ACCURACIES[c]} (%)", f"Δ {ACCURACIES[c]} vs {ref} (pt, paired, 95% CI)", "verdict"]
    header += ["matched kNN top-1 (%) (epoch)"] if matched else []
    header += ["random init kNN (%)"] + (["random init linear (%)"] if "linear_top1" in accs else [])
    header += ["crops", "wall (s)", "images/s", "peak mem (MB)", *(["final effective rank"] if rank else []), "seeds"]
    rows = []
    order = pd.concat([table[table["variant"] == v.name] for v in plan.variants])
    for _, r in order.iterrows():
        row = [r["variant"]] if multi else []
        name = r["method_name"] + (f" (refused: stale {r['refused']})" if r.get("refused") else
                                   f" (missing {r['missing']})" if r["missing"] else "") + (
            f" ({r['collapsed']} collapsed)" if r["collapsed"] else "")
        row += [name]
        for c in accs:
            d = _decision(r, f"{c}_vs_ref")
            row += [_cell(r, c)]
            row += ["reference", "—"] if r["method"] == plan.reference else (
                [fmt_delta(d.test), d.text()] if d else ["—", "—"])
        if matched:
            row.append(f"{_cell(r, 'matched_top1')} ({r.get('matched_epoch_mean', math.nan):.3g})")
        row += [num(r.get("random_knn_top1_mean"))] + ([num(r.get("random_linear_top1_mean"))]
                                                         if "linear_top1" in accs else [])
        row += [r["crops"], num(r.get("wall_s_mean"), 0), num(r.get("images_per_s_mean"), 0),
                num(r.get("peak_mem_mb_mean"), 0), *([num(r.get("final_rank_mean"), 1)] if rank else []),
                r["seeds"] or "—"]
        rows.append(row)
    return header, rows


def _caption(table: pd.DataFrame, runs: pd.DataFrame, plan: Plan, accs: list[str], matched: str | None,
             warnings: list[str]) -> str:
    """What the table shows: protocol, budget, statistics, the reference, the seeds' design and every caveat."""
    cfg = runs["_cfg"].iloc[0]
    multi = len(plan.variants) > 1
    d = plan.description or f"{len(plan.methods)} methods under one budget"
    ns = [int(r[f"{c}_n"]) for _, r in table.iterrows() for c in accs if pd.notna(r.get(f"{c}_n"))]
    uneven = [f"{r['method_name']}" + (f" [{r['variant']}]" if multi else "") + ": "
              + ", ".join(f"{ACCURACIES[c]} n={int(r[f'{c}_n'])}" for c in accs if pd.notna(r.get(f"{c}_n")))
              for _, r in table.iterrows()
              if len({int(r[f"{c}_n"]) for c in accs if pd.notna(r.get(f"{c}_n"))}) > 1]
    caption = (f"**{plan.name}**: {d}\n\n{budget_caption(list(runs['_cfg']), runs['budget'].iloc[0])} "
               f"Accuracy: {protocol(cfg)}" + (f"; linear: {linear_protocol(cfg)}" if "linear_top1" in accs else "")
               + f". {STATS} Δ: each method minus {display(plan.reference)} on the same seeds (same seed = same data "
               f"order and crops), mean and 95% CI of the per-seed differences. "
               + verdict_words(plan.margin, f"the {max(0, len(plan.methods) - 1)} comparisons of each protocol and "
                                            f"variant") + " Rows are in the suite's order, not ranked."
               + n_warning(ns))
    if plan.design:
        caption += f" **Seeds**: {plan.design}"
    if uneven:
        caption += " **Protocols with different n**: " + "; ".join(uneven) + "."
    refused = [r for _, r in table.iterrows() if r.get("refused")]
    if refused:
        caption += (" **Refused cells** (records today's code does not reproduce; `python -m ssl_bench.reference "
                    "verify`, then retrain them): " + "; ".join(f"{r['method_name']}: {r['refused']}" for r in refused)
                    + ".")
    if matched:
        caption += (f" Matched: {monitor_protocol(cfg)}, read {matched} at the last epoch every run reached "
                    f"(mean epoch in brackets).")
    if plan.allow_mixed and warnings:
        caption += " **Mixed budgets** (allow_mixed_budgets=true): " + "; ".join(warnings) + "."
    return caption


def _verdicts(table: pd.DataFrame, plan: Plan, accs: list[str]) -> str:
    """The comparisons in words, per protocol: which are better / worse, equivalent, underpowered."""
    lines = []
    ref = display(plan.reference)
    for v in plan.variants:
        g = table[(table["variant"] == v.name) & (table["method"] != plan.reference)]
        where = f" [{v.name}]" if len(plan.variants) > 1 else ""
        for c in accs:
            ds = [(r, _decision(r, f"{c}_vs_ref")) for _, r in g.iterrows()]
            ds = [(r, d) for r, d in ds if d is not None and d.test.n >= 2]
            if not ds:
                continue
            parts = []
            for word, say in ((BETTER, "better than"), (WORSE, "worse than"), (EQUIVALENT, "equivalent to"),
                              (UNDERPOWERED, "undecided against")):
                these = [(r, d) for r, d in ds if d.word == word]
                if these:
                    parts.append(f"{say} {ref}: " + ", ".join(
                        f"{r['method_name']} ({fmt_delta(d.test)}" + (
                            f"; n={d.n_needed if d.n_needed <= 999 else '>999'} would decide)"
                            if word == UNDERPOWERED else ")") for r, d in these))
            n = "/".join(map(str, sorted({d.test.n for _, d in ds})))
            lines.append(f"- {ACCURACIES[c]}{where}, n={n}, margin ±{plan.margin:g}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n" if lines else ""


def _baseline_table(table: pd.DataFrame, plan: Plan, accs: list[str]) -> str:
    """Per method: the baseline variant, each other variant, and the paired gain over the baseline."""
    others = [v.name for v in plan.variants if v.name != plan.baseline]
    header = ["method"]
    for c in accs:
        header += [f"{ACCURACIES[c]}: {plan.baseline}"]
        for o in others:
            header += [f"{ACCURACIES[c]}: {o}", "gain (pt, paired, 95% CI)", "verdict"]
    rows = []
    for m in plan.methods:
        g = table[table["method"] == m].set_index("variant")
        row = [display(m)]
        for c in accs:
            row.append(_cell(g.loc[plan.baseline], c))
            for o in others:
                d = _decision(g.loc[o], f"{c}_vs_baseline")
                row += [_cell(g.loc[o], c), fmt_delta(d.test) if d else "—", d.text() if d else "—"]
        rows.append(row)
    return (f"Gain over the baseline variant '{plan.baseline}', per method, paired by seed; Holm-corrected over the "
            f"{len(plan.methods) * len(others)} comparisons of each protocol; TOST against ±{plan.margin:g}.\n\n"
            + markdown_table(header, rows))


def write_outputs(plan: Plan, runs: pd.DataFrame, table: pd.DataFrame, md: str, matched: str | None,
                  warnings: list[str]) -> None:
    out = plan.out_dir
    public = runs[[c for c in runs.columns if not c.startswith("_")]]
    write_atomic(out / "runs.csv", public.to_csv(index=False))
    public_table = table[[c for c in table.columns if not c.startswith("_")]]
    write_atomic(out / "table.csv", public_table.to_csv(index=False, float_format="%.4f"))
    write_atomic(out / "table.md", md)
    write_json(out / "comparison.json", {
        "name": plan.name, "study": plan.study, "description": plan.description, "methods": plan.methods,
        "seeds": plan.seeds, "variants": [{"name": v.name, "overrides": v.overrides} for v in plan.variants],
        "baseline": plan.baseline, "reference": plan.reference, "match": plan.match, "matched": matched,
        "overrides": plan.overrides,
        "allow_mixed_budgets": plan.allow_mixed, "budget_warnings": warnings,
        "budget_fingerprints": sorted(set(runs["budget_fp"]))})
