"""The comparison table as data (pandas): one row per planned run from its record (:func:`run_rows`), the runs
grouped into cells with a stale record refusing its cell (:func:`cell_rows`, :func:`refusal_lines`), the
matched-budget column (:func:`add_matched`) and, per (variant, method), the statistics and verdicts of
:func:`summarise`. Reads records and writes nothing; imports the plan (ssl_bench.analysis.compare.planning),
ssl_bench.analysis.cells and .report, the verdicts (.verdicts), records and configuration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from ssl_bench.analysis import cells
from ssl_bench.analysis.compare.planning import Plan
from ssl_bench.analysis.compare.verdicts import decide_table
from ssl_bench.analysis.report import crops_label, display, t_interval
from ssl_bench.config.compose import ConfigError
from ssl_bench.records.budget import budget_fingerprint, budget_items
from ssl_bench.records.identity import configuration_id
from ssl_bench.records.io import below_floor, dig, read_config, read_metrics, read_summary, readable

DONE = ("reused", "trained", "resumed", "complete")
# Accuracy columns of the table: record column -> words.
ACCURACIES = {"knn_top1": "kNN top-1", "linear_top1": "linear top-1"}


def run_rows(plan: Plan, status: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per planned run from its record (summary.json, config.yaml, metrics.jsonl)."""
    status = status or {}
    rows = []
    for r in plan.runs:
        d = r.run_dir
        row: dict[str, Any] = {"variant": r.variant, "method": r.method, "seed": r.seed, "run_id": r.run_id,
                               "path": str(d)}
        ok = readable(d)  # a damaged record: one warning, and the run counts as unreadable (ssl_bench.common.skipped)
        cfg = read_config(d) if ok and (d / "config.yaml").exists() else OmegaConf.to_container(r.cfg)
        row.update(budget_fp=budget_fingerprint(cfg), configuration_id=configuration_id(cfg), crops=crops_label(cfg),
                   _items=budget_items(cfg), _cfg=cfg, _epochs=read_metrics(d) if ok else [])
        if ok and (d / "summary.json").exists():
            s = read_summary(d)
            m, c = s.get("metrics", {}), s.get("cost", {})
            row.update(status=status.get(r.run_id, "complete"), dataset=s.get("dataset"), budget=s.get("budget"),
                       epochs=s.get("epochs"), batch_size=s.get("batch_size"), knn_top1=m.get("knn_top1"),
                       random_knn_top1=m.get("random_knn_top1"), monitor_knn_top1=m.get("monitor_knn_top1"),
                       linear_top1=dig(m, "linear.top1"), random_linear_top1=dig(m, "random.linear.top1"),
                       wall_s=c.get("wall_s"), images_per_s=c.get("images_per_s"), peak_mem_mb=c.get("peak_mem_mb"),
                       images_seen=c.get("images_seen"), collapsed=bool(s.get("collapsed", False)),
                       _below_floor=bool(below_floor(m)))
            if m.get("final_health_rank_backbone") is not None:  # ssl_bench/training/health.py; older records have none
                row["final_rank"] = m["final_health_rank_backbone"]
            row["versions.git"] = (s.get("versions") or {}).get("git")
        else:
            row.update(status=status.get(r.run_id, "missing" if ok else "unreadable"), dataset=cfg["dataset"]["name"],
                       budget=r.cfg.choices.budget, epochs=cfg["train"]["epochs"],
                       batch_size=cfg["data"]["batch_size"])
        rows.append(row)
    return pd.DataFrame(rows)


def add_matched(runs: pd.DataFrame, match: str) -> str | None:
    """Add matched_top1 / matched_epoch columns (monitor kNN at the common images seen or wall-clock);
    returns a caption like 'at 40960 images seen' (None for match=epochs)."""
    if match == "epochs":
        return None
    done = runs[runs["status"].isin(DONE)]
    done = done[[bool(e) for e in done["_epochs"]]]
    if done.empty:
        return None
    if match == "images":
        per_epoch = {i: r["images_seen"] / max(1, r["epochs"]) for i, r in done.iterrows()}
        common = min(r["images_seen"] for _, r in done.iterrows())
        pos = {i: [(e["epoch"] + 1) * per_epoch[i] for e in runs.at[i, "_epochs"]] for i in done.index}
        caption = f"at {common:.0f} images seen (the fewest any run saw)"
    else:
        pos = {i: [e.get("wall_s", math.inf) for e in runs.at[i, "_epochs"]] for i in done.index}
        common = min(p[-1] for p in pos.values() if p)
        caption = f"at {common:.0f} s wall-clock (the shortest run)"
    runs["matched_top1"] = math.nan
    runs["matched_epoch"] = math.nan
    for i, p in pos.items():
        ok = [j for j, x in enumerate(p) if x <= common * (1 + 1e-9) and "monitor_knn_top1" in runs.at[i, "_epochs"][j]]
        if ok:
            runs.at[i, "matched_top1"] = runs.at[i, "_epochs"][ok[-1]]["monitor_knn_top1"]
            runs.at[i, "matched_epoch"] = ok[-1] + 1
    return caption


def cell_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The planned runs with their cells (ssl_bench.analysis.cells): a cell holding a stale record is refused (its runs'
    status becomes 'refused'); a (variant, method) whose records are of two configurations is an error."""
    runs = cells.assign(runs)
    for (v, m), g in runs.groupby(["variant", "method"], sort=False):
        if g["cell"].nunique() > 1:
            raise ConfigError(f"variant '{v}', method {m}: its records are of {g['cell'].nunique()} configurations "
                              f"({', '.join(sorted(set(g['cell'])))}); a cell pools one configuration")
    bad = set(runs.loc[runs["stale"] != "", "cell"])
    runs.loc[runs["cell"].isin(bad) & runs["status"].isin(DONE), "status"] = "refused"
    return runs


def refusal_lines(runs: pd.DataFrame) -> list[str]:
    """One line per refused cell (a stale record in it), naming its runs."""
    out = []
    for (v, m), g in runs[runs["stale"] != ""].groupby(["variant", "method"], sort=False):
        out.append(f"refused: {display(m)} [{v}]: today's code does not reproduce "
                   f"{', '.join(Path(p).name for p in g['path'])} (python -m ssl_bench.reference verify; retrain them)")
    return out


def summarise(runs: pd.DataFrame, plan: Plan, images: bool = True) -> pd.DataFrame:
    """The comparison table: one row per (variant, method) = one cell (one configuration, analysis.cells); for every
    accuracy its mean, sd, n and 95% t-interval over seeds, the paired difference to the reference method of the
    same variant (and, with a study baseline, to the baseline variant of the same method), each family decided under
    ssl_bench.analysis.decisions.RULE with fragility, seeds needed and the seed + test-set interval
    (compare.verdicts.decide_table; ``images=False`` skips that interval)."""
    if "cell" not in runs:
        runs = cell_rows(runs)
    done = runs[runs["status"].isin(DONE)]
    rows = []
    for v in plan.variants:
        for m in plan.methods:
            every = runs[(runs["variant"] == v.name) & (runs["method"] == m)]
            g = done[done["cell"].isin(set(every["cell"]))]
            g = g[g["path"].isin(set(every["path"]))]
            row: dict[str, Any] = {"variant": v.name, "method": m, "method_name": display(m),
                                   "configuration_id": "/".join(sorted(set(every["configuration_id"]))),
                                   "n_seeds": len(g), "seeds": " ".join(str(s) for s in g["seed"]),
                                   "budget": every["budget"].iloc[0],
                                   "budget_fp": "/".join(sorted(set(every["budget_fp"]))),
                                   "crops": every["crops"].iloc[0], "epochs": every["epochs"].iloc[0],
                                   "batch_size": every["batch_size"].iloc[0],
                                   "commits": " ".join(sorted(set(g["commit"])))}
            for col in (*ACCURACIES, "random_knn_top1", "random_linear_top1", "matched_top1", "wall_s",
                        "images_per_s", "peak_mem_mb", "final_rank"):
                st = t_interval(g[col] if col in g else [])
                if st.n:
                    row.update({f"{col}_mean": st.mean, f"{col}_sd": st.sd, f"{col}_n": st.n,
                                f"{col}_ci_lo": st.lo, f"{col}_ci_hi": st.hi})
            if "matched_epoch" in g:
                row["matched_epoch_mean"] = g["matched_epoch"].mean() if len(g) else math.nan
            row["images_seen"] = g["images_seen"].mean() if len(g) else math.nan
            bad = every[~every["status"].isin(DONE)]
            row["missing"] = " ".join(f"s{s}:{st}" for s, st in zip(bad["seed"], bad["status"], strict=True))
            row["refused"] = " ".join(Path(p).name for p, why in zip(every["path"], every["stale"], strict=True)
                                      if why)
            row["collapsed"] = int(g["collapsed"].sum()) if "collapsed" in g else 0
            # Records below their own random-init floor (records.io.below_floor): a mark in the row, not a column.
            row["_below_floor"] = int(g["_below_floor"].fillna(False).astype(bool).sum()) if "_below_floor" in g else 0
            row["run_ids"] = " ".join(every["run_id"])
            row["_seeds"] = {col: cells.per_seed(g, col) for col in ACCURACIES}
            row["_paths"] = {int(s): str(p) for s, p in zip(g["seed"], g["path"], strict=True)}
            rows.append(row)
    table = pd.DataFrame(rows)
    decide_table(table, plan, ACCURACIES, images)
    return table
