"""Entry point: result records -> figures (seaborn, PNG + SVG) and a Markdown report with the same numbers.

    python -m ssl_bench.plot [results=results] [study=<name>] [out=<dir>]

Loads every finished run under ``results`` with :func:`ssl_bench.results.load` (with ``study=<name>``: only
the runs of the comparisons written by ``python -m ssl_bench.compare study=<name>``, labelled by the study's
variants) and draws, per budget:

- ``heatmap_<budget>``: method x dataset kNN top-1, each cell mean ± std over seeds (n seeds);
- ``accuracy_vs_epochs_<budget>``: the online kNN monitor after every epoch, mean ± sd band over seeds;
- ``accuracy_vs_train_epochs_<budget>``: final kNN of runs that differ only in train.epochs (epochs study);
- ``accuracy_vs_wall_<budget>``: the online kNN monitor against wall-clock seconds, ± sd over seeds;
- ``multicrop_<budget>``: final kNN with 2 global crops vs 2 global + local crops (runs that differ only in
  crops.local.n), bars = mean over seeds, error bars = sd;

into ``<results>/figures/`` (``<results>/figures/<study>/`` for a study), plus ``report.md`` there with the
tables behind every figure. Runs whose budget differs from the most common one of their dataset and budget
name are labelled by the keys that differ (e.g. ``crops.local.n=0``), so different budgets never share a
cell, a line or a bar unlabelled.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402

from ssl_bench.budget import budget_diff, budget_fingerprint, budget_items  # noqa: E402
from ssl_bench.cli import guarded  # noqa: E402
from ssl_bench.compare import (  # noqa: E402
    ALL_METHODS,
    budget_caption,
    crops_label,
    linear_protocol,
    markdown_table,
    monitor_protocol,
    pm,
    protocol,
)
from ssl_bench.config import ConfigError, compose  # noqa: E402
from ssl_bench.results import load, load_epochs, read_json, write_atomic  # noqa: E402

OWN_KEYS = ("results", "study", "out")
REFERENCE = "budget as defined"


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list) else str(v)


def label_diff(diff: dict[str, tuple[Any, Any]]) -> str:
    """'crops.local.n=0, train.epochs=2' from a budget diff (reference -> this run)."""
    return ", ".join(f"{k}={_fmt(b)}" for k, (_, b) in diff.items())


# -- loading ------------------------------------------------------------------------------------------
def load_runs(results_dir: Path, study: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, epochs): one row per finished run with its budget fingerprint, crops and variant label, and the
    per-epoch rows of those runs."""
    df = load(results_dir)
    if df.empty:
        raise ConfigError(f"no run records (summary.json) under {results_dir}; run ssl_bench.run or ssl_bench.compare")
    cfgs = [yaml.safe_load((Path(p) / "config.yaml").read_text()) for p in df["path"]]
    df["_cfg"] = cfgs
    df["_items"] = [budget_items(c) for c in cfgs]
    df["budget_fp"] = [budget_fingerprint(c) for c in cfgs]
    df["crops"] = [crops_label(c) for c in cfgs]
    df["local_n"] = [c["crops"]["local"]["n"] for c in cfgs]
    df["train_epochs"] = [c["train"]["epochs"] for c in cfgs]
    if study:
        df = _study_variants(df, results_dir, study)
    else:
        df["variant"] = ""
        for (dataset, budget), g in df.groupby([df["_cfg"].map(lambda c: c["choices"]["dataset"]), "budget"],
                                               sort=False):
            ref = _reference(dataset, budget, g)
            for i in g.index:
                # Keys the schema gained after a record was written are not a difference of that run's budget.
                diff = budget_diff(ref, df.at[i, "_items"], ignore_missing=True)
                df.at[i, "variant"] = label_diff(diff) if diff else REFERENCE
    epochs = load_epochs(results_dir)
    if not epochs.empty:
        epochs = epochs[epochs["run_id"].isin(df["run_id"])]
        epochs = epochs.merge(df[["run_id", "variant", "budget_fp"]], on="run_id", how="left")
        epochs["epoch"] = epochs["epoch"] + 1  # 1-based: "after epoch 1"
    return df.reset_index(drop=True), epochs


def _reference(dataset: str, budget: str, g: pd.DataFrame) -> dict[str, Any]:
    """The budget as defined in experiments/budget/<budget>.yaml for this dataset (runs are labelled by how
    they differ from it); the most common budget of the runs if it cannot be composed any more."""
    try:
        return budget_items(compose([f"budget={budget}", f"dataset={dataset}"]))
    except ConfigError:
        counts = Counter(g["budget_fp"])
        return g.loc[g["budget_fp"] == counts.most_common(1)[0][0], "_items"].iloc[0]


def _study_variants(df: pd.DataFrame, results_dir: Path, study: str) -> pd.DataFrame:
    """Keep the runs of the comparisons of ``study`` and label them with the study's variant names."""
    comps = [p.parent for p in sorted((results_dir / "compare").glob("*/comparison.json"))
             if read_json(p).get("study") == study]
    if not comps:
        found = sorted({read_json(p).get("study") or "-" for p in (results_dir / "compare").glob("*/comparison.json")})
        raise ConfigError(f"no comparison of study '{study}' under {results_dir}/compare; found: "
                          f"{', '.join(found) or 'none'} (run python -m ssl_bench.compare study={study} first)")
    variant: dict[str, str] = {}
    order: list[str] = []
    for c in comps:
        runs = pd.read_csv(c / "runs.csv")
        for rid, v in zip(runs["run_id"], runs["variant"], strict=True):
            variant[rid] = str(v)
            if str(v) not in order:
                order.append(str(v))
    df = df[df["run_id"].isin(variant)].copy()
    df["variant"] = [variant[r] for r in df["run_id"]]
    return df.sort_values("variant", key=lambda v: v.map(order.index), kind="stable")


# -- figure helpers -----------------------------------------------------------------------------------
def _method_order(methods: Any) -> list[str]:
    present = list(dict.fromkeys(methods))
    return [m for m in ALL_METHODS if m in present] + [m for m in present if m not in ALL_METHODS]


def save(fig: plt.Figure, out: Path, stem: str, caption: str) -> list[Path]:
    """Add a wrapped caption under the axes and write <stem>.png and <stem>.svg."""
    lines = textwrap.wrap(caption, width=int(fig.get_figwidth() * 15))
    h = fig.get_figheight()
    pad = (0.2 + 0.16 * len(lines)) / h
    fig.text(0.01, 0.01, "\n".join(lines), ha="left", va="bottom", fontsize=8, color="0.25")
    fig.tight_layout(rect=(0, pad, 1, 1))
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _facets(n: int, width: float = 5.2, height: float = 3.9) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.5, height * rows + 1.0), squeeze=False,
                             sharey=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _variants(g: pd.DataFrame) -> list[str]:
    order = list(dict.fromkeys(g["variant"]))
    return ([REFERENCE] if REFERENCE in order else []) + [v for v in order if v != REFERENCE]


def _wrap(title: str, fig: plt.Figure) -> str:
    """Wrap a title to the figure's width (about 7 characters per inch at the title's size)."""
    return textwrap.fill(title, width=max(30, int(fig.get_figwidth() * 7)))


def _only_variant(g: pd.DataFrame) -> str:
    """' (train.epochs=3)' when every run of ``g`` has the same variant other than the budget as defined."""
    v = set(g["variant"]) - {REFERENCE, "default"}  # 'default': the variant of a study without variants
    return f" ({v.pop()})" if len(v) == 1 and len(set(g["variant"])) == 1 else ""


def _random_init(g: pd.DataFrame) -> str:
    """'Random-init backbone: 76.2%.' (same protocol), for captions."""
    if "metrics.random_knn_top1" not in g or g["metrics.random_knn_top1"].isna().all():
        return ""
    return f" Random-init backbone, same protocol: {g['metrics.random_knn_top1'].mean():.1f}%."


def _count(n: pd.Series) -> str:
    """'2' or '1-3': how many seeds per line, bar or point."""
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"


def _palette(methods: list[str]) -> dict[str, Any]:
    return dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))


# -- figures ------------------------------------------------------------------------------------------
def heatmap(g: pd.DataFrame, out: Path, budget: str) -> tuple[list[Path], str]:
    variants = _variants(g)
    g = g.assign(column=[d if len(variants) == 1 else f"{d}\n{v}" for d, v in zip(g["dataset"], g["variant"],
                                                                                 strict=True)])
    columns = list(dict.fromkeys(f"{d}\n{v}" if len(variants) > 1 else d
                                 for d in dict.fromkeys(g["dataset"]) for v in variants
                                 if ((g["dataset"] == d) & (g["variant"] == v)).any()))
    methods = _method_order(g["method"])
    stats = g.groupby(["method", "column"])["metrics.knn_top1"].agg(["mean", "std", "count"])
    mean = stats["mean"].unstack().reindex(index=methods, columns=columns)
    text = mean.copy().astype(object)
    for m in methods:
        for c in columns:
            if (m, c) in stats.index:
                s = stats.loc[(m, c)]
                text.loc[m, c] = f"{pm(s['mean'], s['std'])}\n(n={int(s['count'])})"
            else:
                text.loc[m, c] = ""
    fig, ax = plt.subplots(figsize=(max(6.4, 2.3 * len(columns) + 2.5), 1.0 + 0.75 * len(methods) + 1.6))
    # The colour scale starts at the random-init backbone's accuracy (when recorded), so colour shows the gain.
    floor = g["metrics.random_knn_top1"].mean() if "metrics.random_knn_top1" in g else math.nan
    vmin = min(floor, np.nanmin(mean.values)) if not math.isnan(floor) else None
    sns.heatmap(mean.astype(float), annot=text.values, fmt="", cmap="viridis", ax=ax, linewidths=0.5, vmin=vmin,
                cbar_kws={"label": "kNN top-1 accuracy (%)"}, annot_kws={"fontsize": 9})
    ax.set_xlabel("dataset" + (" / variant" if len(variants) > 1 else ""))
    ax.set_ylabel("method")
    ax.set_title(_wrap(f"kNN top-1 accuracy (%), budget '{budget}'{_only_variant(g)}", fig))
    ax.tick_params(axis="y", rotation=0)
    caption = ("Cells: mean ± std over seeds (n seeds)" + ("; the colour scale starts at the random-init accuracy"
                                                              if vmin is not None else "")
               + f". Protocol: {protocol(g['_cfg'].iloc[0])}." + _random_init(g) + " " + budget_caption(g))
    return save(fig, out, f"heatmap_{budget}", caption), caption


def _band_lines(ax: plt.Axes, data: pd.DataFrame, x: str, methods: list[str], palette: dict) -> None:
    """Mean line per method over seeds with a ± sd band in y (and ± sd error bars in x when x varies)."""
    agg = data.groupby(["method", "epoch"]).agg(x=(x, "mean"), xs=(x, "std"), y=("monitor_knn_top1", "mean"),
                                               ys=("monitor_knn_top1", "std")).reset_index()
    sns.lineplot(data=agg, x="x", y="y", hue="method", hue_order=[m for m in methods if m in set(agg["method"])],
                 palette=palette, marker="o", ax=ax, errorbar=None)
    for m, a in agg.groupby("method"):
        ys = a["ys"].fillna(0).to_numpy()
        ax.fill_between(a["x"], a["y"] - ys, a["y"] + ys, color=palette[m], alpha=0.18, linewidth=0)
        if x != "epoch" and a["xs"].notna().any():  # the spread of the run's total time, at its last epoch
            last = a.sort_values("epoch").tail(1)
            ax.errorbar(last["x"], last["y"], xerr=last["xs"].fillna(0), fmt="none", ecolor=palette[m], alpha=0.8,
                        elinewidth=1.5, capsize=3)


def lines(g: pd.DataFrame, ep: pd.DataFrame, out: Path, budget: str, x: str) -> tuple[list[Path], str] | None:
    """accuracy_vs_epochs (x='epoch') or accuracy_vs_wall (x='wall_s'), one panel per variant."""
    ep = ep[ep["run_id"].isin(g["run_id"])]
    if ep.empty or "monitor_knn_top1" not in ep or ep["monitor_knn_top1"].isna().all():
        return None
    ep = ep.dropna(subset=["monitor_knn_top1"])
    methods = _method_order(g["method"])
    palette = _palette(methods)
    variants = [v for v in _variants(g) if (ep["variant"] == v).any()]
    fig, axes = _facets(len(variants))
    for ax, v in zip(axes, variants, strict=True):
        _band_lines(ax, ep[ep["variant"] == v], x, methods, palette)
        if len(variants) > 1:
            ax.set_title(v, fontsize=11)
        ax.set_xlabel("epoch" if x == "epoch" else "wall-clock time (s)")
        ax.set_ylabel("kNN top-1 accuracy (%), online monitor")
        if x == "epoch":
            ticks = sorted(set(ep.loc[ep["variant"] == v, "epoch"]))
            if len(ticks) <= 15:
                ax.set_xticks(ticks)
            else:
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        legend = ax.get_legend()
        if legend is not None and ax is not axes[-1]:
            legend.remove()
        elif legend is not None:
            legend.set_title("method")
    what = "epochs" if x == "epoch" else "wall-clock time"
    fig.suptitle(_wrap(f"Accuracy vs {what}, budget '{budget}'{_only_variant(g)}", fig))
    cap = (f"Lines: mean over seeds ({_count(g.groupby(['variant', 'method']).size())} per method), shaded band "
           f"± sd over seeds"
           + (", horizontal bar at the last epoch ± sd of the wall time over seeds" if x != "epoch" else "")
           + f". Protocol: {monitor_protocol(g['_cfg'].iloc[0])}. " + budget_caption(g)
           + (" Wall time includes the monitor's evaluation and depends on the machine's load." if x != "epoch"
              else ""))
    stem = "accuracy_vs_epochs" if x == "epoch" else "accuracy_vs_wall"
    return save(fig, out, f"{stem}_{budget}", cap), cap


def _groups_varying(g: pd.DataFrame, key: str) -> list[pd.DataFrame]:
    """Groups of runs whose budgets are equal except for ``key``, with at least two values of it."""
    sig = [json.dumps({k: v for k, v in items.items() if k != key}, sort_keys=True, default=str)
           for items in g["_items"]]
    g = g.assign(_sig=sig)
    return [s for _, s in g.groupby("_sig", sort=False)
            if s["_items"].map(lambda it: json.dumps(it.get(key))).nunique() > 1]


def multicrop(g: pd.DataFrame, out: Path, budget: str) -> list[tuple[list[Path], str, pd.DataFrame]]:
    made = []
    for i, s in enumerate(x for x in _groups_varying(g, "crops.local.n") if (x["local_n"] == 0).any()):
        methods = _method_order(s["method"])
        crops = sorted(set(s["crops"]), key=lambda c: (c.count("+"), c))
        fig, ax = plt.subplots(figsize=(1.7 * len(methods) + 2.5, 4.6))
        palette = dict(zip(crops, sns.color_palette("colorblind", len(crops) + 2)[2:], strict=True))
        sns.barplot(data=s, x="method", y="metrics.knn_top1", hue="crops", order=methods, hue_order=crops,
                    errorbar="sd", capsize=0.12, err_kws={"linewidth": 1.2}, palette=palette, ax=ax)
        stats = s.groupby(["method", "crops"])["metrics.knn_top1"].agg(["mean", "std", "count"])
        lo = (stats["mean"] - stats["std"].fillna(0)).min()
        hi = (stats["mean"] + stats["std"].fillna(0)).max()
        rand = s["metrics.random_knn_top1"].mean() if "metrics.random_knn_top1" in s else math.nan
        if not math.isnan(rand):
            lo = min(lo, rand)
            ax.axhline(rand, ls="--", lw=1.2, color="0.35", label="random init")
        ax.set_ylim(max(0.0, math.floor((lo - (hi - lo) * 0.6 - 1) / 5) * 5), hi + (hi - lo) * 0.35 + 1.5)
        for j, m in enumerate(methods):
            means = [stats["mean"].get((m, c), math.nan) for c in crops]
            if len(crops) == 2 and not any(map(math.isnan, means)):
                ax.text(j, hi + (hi - lo) * 0.12 + 0.4, f"{means[1] - means[0]:+.1f} pt", ha="center",
                        fontsize=9, fontweight="bold")
        ax.set_xlabel("method")
        ax.set_ylabel("kNN top-1 accuracy (%)")
        ax.set_title(f"Multi-crop ablation, budget '{budget}'")
        ax.legend(title="crops (count x px)", loc="lower right", fontsize=8, title_fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        cap = (f"Bars: mean over seeds ({_count(s.groupby(['method', 'crops']).size())} per bar), error bars ± sd "
               f"over seeds; numbers: gain of the local crops in points; dashed: the random-init backbone "
               f"({rand:.1f}%); the y axis starts at {ax.get_ylim()[0]:.0f}%. "
               f"Protocol: {protocol(s['_cfg'].iloc[0])}. "
               + budget_caption(s))
        stem = f"multicrop_{budget}" + (f"_{i + 1}" if i else "")
        made.append((save(fig, out, stem, cap), cap, stats.reset_index()))
    return made


def train_epochs(g: pd.DataFrame, out: Path, budget: str) -> list[tuple[list[Path], str, pd.DataFrame]]:
    made = []
    for i, s in enumerate(_groups_varying(g, "train.epochs")):
        methods = _method_order(s["method"])
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        sns.lineplot(data=s, x="train_epochs", y="metrics.knn_top1", hue="method", hue_order=methods,
                     palette=_palette(methods), marker="o", errorbar="sd", err_style="bars", ax=ax)
        ax.set_xlabel("training length (epochs; separate runs, each with its own schedule)")
        ax.set_ylabel("kNN top-1 accuracy (%)")
        ax.set_xticks(sorted(set(s["train_epochs"])))
        ax.set_title(f"Accuracy vs training length, budget '{budget}'")
        ax.grid(alpha=0.3)
        ax.legend(title="method")
        cap = (f"Points: mean over seeds ({_count(s.groupby(['method', 'train_epochs']).size())} per point), error "
               f"bars ± sd. Protocol: "
               f"{protocol(s['_cfg'].iloc[0])}. " + budget_caption(s))
        stem = f"accuracy_vs_train_epochs_{budget}" + (f"_{i + 1}" if i else "")
        stats = s.groupby(["method", "train_epochs"])["metrics.knn_top1"].agg(["mean", "std", "count"])
        made.append((save(fig, out, stem, cap), cap, stats.reset_index()))
    return made


# -- the report ---------------------------------------------------------------------------------------
def _img(paths: list[Path], out: Path) -> str:
    png, svg = paths
    return f"![{png.stem}]({png.relative_to(out)})\n\n[SVG]({svg.relative_to(out)})\n"


def _summary_table(g: pd.DataFrame) -> str:
    linear = "metrics.linear.top1" in g and g["metrics.linear.top1"].notna().any()
    rows = []
    for v in _variants(g):
        for m in _method_order(g["method"]):
            s = g[(g["variant"] == v) & (g["method"] == m)]
            if s.empty:
                continue
            c = {k: (s[k] if k in s else pd.Series([math.nan])) for k in (
                "metrics.knn_top1", "metrics.random_knn_top1", "metrics.monitor_knn_top1", "cost.wall_s",
                "cost.images_per_s", "cost.peak_mem_mb", "cost.images_seen", "metrics.linear.top1",
                "metrics.random.linear.top1")}
            lin = [pm(c["metrics.linear.top1"].mean(), c["metrics.linear.top1"].std()),
                   pm(c["metrics.random.linear.top1"].mean(), math.nan)] if linear else []
            rows.append([s["dataset"].iloc[0], v, m, pm(c["metrics.knn_top1"].mean(), c["metrics.knn_top1"].std()),
                         *lin, pm(c["metrics.random_knn_top1"].mean(), math.nan),
                         pm(c["metrics.monitor_knn_top1"].mean(), c["metrics.monitor_knn_top1"].std()),
                         pm(c["cost.wall_s"].mean(), c["cost.wall_s"].std(), 0),
                         pm(c["cost.images_per_s"].mean(), math.nan, 0), pm(c["cost.peak_mem_mb"].mean(), math.nan, 0),
                         f"{c['cost.images_seen'].mean():.0f}", s["crops"].iloc[0], int(s["train_epochs"].iloc[0]),
                         " ".join(str(x) for x in sorted(s["seed"])), ", ".join(sorted(set(s["budget_fp"])))])
    return markdown_table(["dataset", "variant", "method", "kNN top-1 (%)",
                           *(["linear top-1 (%)", "random init linear (%)"] if linear else []),
                           "random init kNN (%)", "last monitor (%)",
                           "wall (s)", "images/s", "peak mem (MB)", "images seen", "crops", "epochs", "seeds",
                           "budget fp"], rows)


def _stats_table(stats: pd.DataFrame, key: str, label: str) -> str:
    wide = stats.assign(v=[pm(a, b) for a, b in zip(stats["mean"], stats["std"], strict=True)])
    piv = wide.pivot(index="method", columns=key, values="v")
    piv = piv.reindex(_method_order(piv.index))
    cols = list(piv.columns)
    rows = [[m, *[piv.at[m, c] if isinstance(piv.at[m, c], str) else "—" for c in cols]] for m in piv.index]
    if key == "crops" and len(cols) == 2:
        means = stats.pivot(index="method", columns=key, values="mean").reindex(piv.index)
        for r, m in zip(rows, piv.index, strict=True):
            r.append(f"{means.at[m, cols[1]] - means.at[m, cols[0]]:+.1f}")
        cols.append("gain (pt)")
    return markdown_table(["method", *[f"{label} {c}" for c in cols]], rows)


def plot(results_dir: Path, study: str | None = None, out: Path | None = None) -> list[Path]:
    """Draw every figure and write the report; returns the files written."""
    runs, epochs = load_runs(results_dir, study)
    out = out or (results_dir / "figures" / (study or ""))
    sns.set_theme(style="whitegrid", context="notebook")
    written: list[Path] = []
    title = f"study '{study}'" if study else f"all runs under {results_dir}"
    report = [f"# Results: {title}\n",
              "Drawn by `python -m ssl_bench.plot` from the run records (summary.json, config.yaml, metrics.jsonl)"
              + (f" of the comparisons of study `{study}`, labelled by the study's variants" if study else "")
              + ". Accuracy is kNN top-1 (%) of the frozen backbone; ± is the sample standard deviation over seeds."
              + ("" if study else " A run whose budget differs from its budget as defined in experiments/budget/ "
                 "(for its dataset) is labelled by the keys that differ.") + "\n"]
    for budget, g in runs.groupby("budget", sort=False):
        report.append(f"## Budget `{budget}`\n\n{budget_caption(g)}\n\n"
                      f"All runs (accuracy: {protocol(g['_cfg'].iloc[0])}"
                      + (f"; linear: {linear_protocol(g['_cfg'].iloc[0])}" if "metrics.linear.top1" in g else "")
                      + "; last monitor: "
                      f"{monitor_protocol(g['_cfg'].iloc[0])}):\n\n{_summary_table(g)}")
        paths, cap = heatmap(g, out, budget)
        written += paths
        report.append(f"### Method x dataset\n\n{_img(paths, out)}\n{cap}\n")
        for x, name in (("epoch", "Accuracy vs epochs"), ("wall_s", "Accuracy vs wall-clock")):
            made = lines(g, epochs, out, budget, x)
            if made:
                written += made[0]
                ep = epochs[epochs["run_id"].isin(g["run_id"])].dropna(subset=["monitor_knn_top1"])
                last = ep.sort_values("epoch").groupby(["variant", "method", "seed"]).tail(1)
                st = last.groupby(["variant", "method"]).agg(mean=("monitor_knn_top1", "mean"),
                                                            std=("monitor_knn_top1", "std"),
                                                            wall=("wall_s", "mean"), epoch=("epoch", "max"))
                rows = [[v, m, int(st.at[(v, m), "epoch"]), f"{st.at[(v, m), 'wall']:.0f}",
                         pm(st.at[(v, m), "mean"], st.at[(v, m), "std"])]
                        for v in _variants(g) for m in _method_order(g["method"]) if (v, m) in st.index]
                tab = markdown_table(["variant", "method", "epochs", "wall (s)", "monitor kNN top-1 (%) at the end"],
                                     rows)
                report.append(f"### {name}\n\n{_img(made[0], out)}\n{made[1]}\n\n{tab}")
        for paths, cap, stats in multicrop(g, out, budget):
            written += paths
            report.append(f"### Multi-crop ablation\n\n{_img(paths, out)}\n{cap}\n\n"
                          f"{_stats_table(stats, 'crops', 'crops')}")
        for paths, cap, stats in train_epochs(g, out, budget):
            written += paths
            report.append(f"### Accuracy vs training length\n\n{_img(paths, out)}\n{cap}\n\n"
                          f"{_stats_table(stats, 'train_epochs', 'epochs')}")
    write_atomic(out / "report.md", "\n".join(report))
    written.append(out / "report.md")
    return written


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    own: dict[str, str] = {}
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq or key not in OWN_KEYS:
            raise ConfigError(f"cannot read '{a}'; valid keys: {', '.join(k + '=' for k in OWN_KEYS)}")
        own[key] = value
    written = plot(Path(own.get("results", "results")), own.get("study") or None,
                   Path(own["out"]) if own.get("out") else None)
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(guarded(main))
