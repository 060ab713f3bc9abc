"""The comparison written out: the table as Markdown (:func:`table_markdown`: the caption, one row per (variant,
method) in the suite's order, decisions.RULE, the verdicts and every count in words from the verdict objects,
the gain over a baseline variant) and the files of <results>/compare/<name>/ (:func:`write_outputs`: table.md,
table.csv, runs.csv, comparison.json). Computes no statistic; imports the plan, the table's columns and its verdicts
(ssl_bench.analysis.compare.planning, .table, .verdicts), ssl_bench.analysis.decisions and .report and the
records' writers."""

from __future__ import annotations

import math

import pandas as pd

from ssl_bench.analysis.compare.planning import Plan
from ssl_bench.analysis.compare.table import ACCURACIES, DONE
from ssl_bench.analysis.compare.verdicts import WORDS, Decided, counts, decided, has_predictions
from ssl_bench.analysis.decisions import ALPHA, BETTER, EQUIVALENT, RULE, UNDERPOWERED, WORSE
from ssl_bench.analysis.report import (
    STATS,
    Stat,
    budget_caption,
    display,
    fmt_stat,
    linear_protocol,
    markdown_table,
    monitor_protocol,
    n_warning,
    num,
    protocol,
)
from ssl_bench.records.io import write_atomic, write_json

SAY = {BETTER: "better than", WORSE: "worse than", EQUIVALENT: "equivalent to", UNDERPOWERED: "undecided against"}


def _decided(r: pd.Series, prefix: str) -> Decided | None:
    d = r.get("_decided")
    return d.get(prefix) if isinstance(d, dict) else None


def _cell(r: pd.Series, col: str, digits: int = 1) -> str:
    n = r.get(f"{col}_n")
    if pd.isna(n):
        return "—"
    return fmt_stat(Stat(int(n), r[f"{col}_mean"], r[f"{col}_sd"], r[f"{col}_ci_lo"], r[f"{col}_ci_hi"]), digits)


def _fewer(r: pd.Series, col: str, digits: int = 1) -> str:
    """A column's mean, with its n when it averages fewer records than the row has: '58.3 (n=3)'."""
    n = r.get(f"{col}_n")
    out = num(r.get(f"{col}_mean"), digits)
    return out + (f" (n={int(n)})" if pd.notna(n) and int(n) < int(r["n_seeds"]) else "")


def table_markdown(table: pd.DataFrame, runs: pd.DataFrame, plan: Plan, matched: str | None,
                   warnings: list[str]) -> str:
    """The comparison as Markdown: a caption naming protocol, budget, statistics, the rule and the reference, the
    table (in the suite's order: no ranking by noise), the verdicts in words and, with a baseline variant, the gain
    table. Every count and verdict sentence is computed from the verdicts (compare.verdicts.Decided)."""
    accs = [c for c in ACCURACIES if f"{c}_mean" in table and table[f"{c}_mean"].notna().any()]
    rank = "final_rank_mean" in table and table["final_rank_mean"].notna().any()  # records with health only
    header, rows = _table_rows(table, plan, accs, matched, rank)
    out = _caption(table, runs, plan, accs, matched, warnings) + "\n\n" + markdown_table(header, rows) + "\n" \
        + _verdicts(table, plan, accs)
    if plan.baseline:
        out += "\n" + _baseline_table(table, plan, accs)
    return out


def _delta_cells(d: Decided | None) -> list[str]:
    """Δ (n, seed-only 95% CI, unpaired seeds), the seed + test-set 95% CI, the verdict."""
    return [d.delta(), d.interval(), d.text()] if d else ["—", "—", "—"]


def _table_rows(table: pd.DataFrame, plan: Plan, accs: list[str], matched: str | None, rank: bool
                ) -> tuple[list[str], list[list[str]]]:
    """The table's header and one row per (variant, method), variants in the study's order."""
    multi = len(plan.variants) > 1
    ref = display(plan.reference)
    header = (["variant"] if multi else []) + ["method"]
    for c in accs:
        header += [f"{ACCURACIES[c]} (%)", f"Δ {ACCURACIES[c]} vs {ref} (pt, paired; n; 95% CI over seeds)",
                   "Δ 95% CI over seeds + test images", "verdict"]
    header += ["matched kNN top-1 (%) (epoch)"] if matched else []
    header += ["random init kNN (%)"] + (["random init linear (%)"] if "linear_top1" in accs else [])
    header += ["crops", "wall (s)", "images/s", "peak mem (MB)", *(["final effective rank"] if rank else []), "seeds"]
    rows = []
    order = pd.concat([table[table["variant"] == v.name] for v in plan.variants])
    for _, r in order.iterrows():
        row = [r["variant"]] if multi else []
        name = r["method_name"] + (f" (refused: stale {r['refused']})" if r.get("refused") else
                                   f" (missing {r['missing']})" if r["missing"] else "") + (
            f" ({r['collapsed']} collapsed)" if r["collapsed"] else "") + (
            f" ({r['_below_floor']} of {r['n_seeds']} below their random-init floor)" if r.get("_below_floor") else "")
        row += [name]
        for c in accs:
            row += [_cell(r, c)]
            row += ["reference", "—", "—"] if r["method"] == plan.reference else _delta_cells(
                _decided(r, f"{c}_vs_ref"))
        if matched:
            row.append(f"{_cell(r, 'matched_top1')} ({r.get('matched_epoch_mean', math.nan):.3g})")
        row += [_fewer(r, "random_knn_top1")] + ([_fewer(r, "random_linear_top1")] if "linear_top1" in accs else [])
        row += [r["crops"], _fewer(r, "wall_s", 0), _fewer(r, "images_per_s", 0), _fewer(r, "peak_mem_mb", 0),
                *([_fewer(r, "final_rank", 1)] if rank else []), r["seeds"] or "—"]
        rows.append(row)
    return header, rows


def _families(table: pd.DataFrame, plan: Plan, accs: list[str]) -> list[tuple[str, list[tuple[pd.Series, Decided]]]]:
    """Every family of the table with its comparisons: against the reference per variant and protocol, then the
    gains over the baseline per protocol."""
    out = []
    for v in plan.variants:
        g = table[table["variant"] == v.name]
        for c in accs:
            ds = decided(g, f"{c}_vs_ref")
            if ds:
                out.append((ds[0][1].family, ds))
    for c in accs if plan.baseline else []:
        ds = decided(table, f"{c}_vs_baseline")
        if ds:
            out.append((ds[0][1].family, ds))
    return out


def _outcome(table: pd.DataFrame, plan: Plan, accs: list[str]) -> str:
    """The outcome counts, from the verdicts: against the reference, and the gains over the baseline."""
    parts = []
    for prefix, what in (("vs_ref", f"comparisons against {display(plan.reference)}"),
                         ("vs_baseline", f"gains over '{plan.baseline}'")):
        ds = [d for c in accs for _, d in decided(table, f"{c}_{prefix}")]
        if ds:
            parts.append(f"of the {len(ds)} {what}, {counts(ds)}")
    return (" **Outcome** (counted from the verdicts): " + "; ".join(parts) + ".") if parts else ""


def _noise(table: pd.DataFrame, runs: pd.DataFrame, accs: list[str]) -> str:
    """How many records keep predictions, and the test set's share of the variance of Δ where they do."""
    done = runs[runs["status"].isin(DONE)]
    kept = sum(has_predictions(p) for p in done["path"])
    out = (f" **Test set**: {kept} of {len(done)} records keep per-test-image predictions (predictions.npz); the "
           f"interval over seeds + test images (decisions.bootstrap_difference: seeds and the test images resampled, "
           f"one test set shared by every seed; rng seed fixed) is computed on the paired seeds where both records "
           f"keep them, with its own mean and n, and is — where fewer than 2 such seeds exist.")
    shares = []
    for c in accs:
        b = [d.boot for _, d in decided(table, f"{c}_vs_ref") + decided(table, f"{c}_vs_baseline")
             if d.boot is not None and math.isfinite(d.boot.share_test)]
        if b:
            lo, hi = min(x.share_test for x in b), max(x.share_test for x in b)
            span = f"{lo:.0%}" if round(lo, 2) == round(hi, 2) else f"{lo:.0%}–{hi:.0%}"
            shares.append(f"{ACCURACIES[c]}: test-set sampling {span} and seeds {1 - hi:.0%}"
                          + ("" if round(lo, 2) == round(hi, 2) else f"–{1 - lo:.0%}")
                          + f" of the variance of Δ over {len(b)} comparison{'s' if len(b) > 1 else ''}")
    if shares:
        out += " Variance split where predictions exist (decisions.variance_split): " + "; ".join(shares) + "."
    return out


def _caption(table: pd.DataFrame, runs: pd.DataFrame, plan: Plan, accs: list[str], matched: str | None,
             warnings: list[str]) -> str:
    """What the table shows: protocol, budget, statistics, the rule, the reference, the seeds' design (planning),
    the outcome counted from the verdicts and every caveat."""
    cfg = runs["_cfg"].iloc[0]
    multi = len(plan.variants) > 1
    d = plan.description or f"{len(plan.methods)} methods under one budget"
    ns = [int(r[f"{c}_n"]) for _, r in table.iterrows() for c in accs if pd.notna(r.get(f"{c}_n"))]
    uneven = [f"{r['method_name']}" + (f" [{r['variant']}]" if multi else "") + ": "
              + ", ".join(f"{ACCURACIES[c]} n={int(r[f'{c}_n'])}" for c in accs if pd.notna(r.get(f"{c}_n")))
              for _, r in table.iterrows()
              if len({int(r[f"{c}_n"]) for c in accs if pd.notna(r.get(f"{c}_n"))}) > 1]
    families = _families(table, plan, accs)
    caption = (f"**{plan.name}**: {d}\n\n{budget_caption(list(runs['_cfg']), runs['budget'].iloc[0])} "
               f"Accuracy: {protocol(cfg)}" + (f"; linear: {linear_protocol(cfg)}" if "linear_top1" in accs else "")
               + f". {STATS} Δ: each method minus {display(plan.reference)} on the same seeds (same seed = same data "
               f"order and crops), mean and 95% CI of the per-seed differences over its n pairs; seeds only one side "
               f"has are listed beside it, never dropped in silence. **Rule** (ssl_bench.analysis.decisions.RULE, "
               f"margin ±{plan.margin:g} points): {RULE} Families here: "
               + "; ".join(f"{name} ({len(ds)} comparison{'s' if len(ds) > 1 else ''})" for name, ds in families)
               + f". Underpowered: the pairs that would decide ±{plan.margin:g} with 80% power at the observed sd "
               f"(decisions.seeds_needed; its range from the sd's 95% CI). MDE: the smallest true difference the "
               f"t-test finds with 80% power at this n (α = {ALPHA:g}). Fragile: leaving out one seed and deciding "
               f"the family again changes the verdict (decisions.fragile). Rows are in the suite's order, not "
               f"ranked." + n_warning(ns))
    if plan.design:
        caption += f" **Seeds**: {plan.design}"
    caption += _outcome(table, plan, accs) + _noise(table, runs, accs)
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
    """The comparisons in words, one line per family, from its verdicts."""
    lines = []
    for name, ds in _families(table, plan, accs):
        against = display(plan.reference) if " vs " in name else f"'{plan.baseline}'"
        parts = []
        for word in WORDS:
            these = [(r, d) for r, d in ds if d.word == word]
            if these:
                parts.append(f"{SAY[word]} {against}: " + ", ".join(
                    f"{r['method_name']}" + (f" [{r['variant']}]" if " vs " not in name else "")
                    + f" ({d.delta()}" + (f"; {d.needed.text()} would decide" if d.needed else "")
                    + (f"; {d.fragility.text()}" if d.fragility.fragile else "") + ")" for r, d in these))
        n = "/".join(map(str, sorted({d.verdict.n for _, d in ds})))
        lines.append(f"- {name}, n={n}, margin ±{plan.margin:g}: " + "; ".join(parts)
                     + f" ({counts([d for _, d in ds])}).")
    return "\n".join(lines) + "\n" if lines else ""


def _baseline_table(table: pd.DataFrame, plan: Plan, accs: list[str]) -> str:
    """Per method: the baseline variant, each other variant, and the paired gain over the baseline."""
    others = [v.name for v in plan.variants if v.name != plan.baseline]
    header = ["method"]
    for c in accs:
        header += [f"{ACCURACIES[c]}: {plan.baseline}"]
        for o in others:
            header += [f"{ACCURACIES[c]}: {o}", "gain (pt, paired; n; 95% CI over seeds)",
                       "gain 95% CI over seeds + test images", "verdict"]
    rows = []
    for m in plan.methods:
        g = table[table["method"] == m].set_index("variant")
        row = [display(m)]
        for c in accs:
            row.append(_cell(g.loc[plan.baseline], c))
            for o in others:
                row += [_cell(g.loc[o], c), *_delta_cells(_decided(g.loc[o], f"{c}_vs_baseline"))]
        rows.append(row)
    return (f"Gain over the baseline variant '{plan.baseline}', per method, paired by seed; each protocol's "
            f"{len(plan.methods) * len(others)} gains are one family under the rule above (margin ±{plan.margin:g})."
            "\n\n" + markdown_table(header, rows))


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
        "budget_fingerprints": sorted(set(runs["budget_fp"])), "rule": RULE, "margin": plan.margin,
        "verdicts": [{"variant": r["variant"], "method": r["method"], "against": prefix.split("_vs_")[1],
                      "protocol": prefix.split("_vs_")[0], **d.record()}
                     for prefix in sorted({k for x in table.get("_decided", []) for k in x})
                     for r, d in decided(table, prefix)]})
