"""Entry point: result records -> figures (seaborn, PNG + SVG) and a Markdown report with the same numbers.

    python -m ssl_bench.plot [results=results] [study=<name>] [out=<dir>] [sweeps=false]

Loads every finished run under ``results`` with :func:`ssl_bench.records.io.load` (sweep trials only with
``sweeps=true``: they belong in their sweep's report; with ``study=<name>``: only the runs of the comparisons
written by ``python -m ssl_bench.compare study=<name>``, labelled by the study's variants). Every point, line
and interval is exactly one *configuration* (runs equal in everything but the seed, ssl_bench/records/identity.py),
labelled by the keys that differ from its budget as defined, in words. Per budget and dataset:

- ``accuracy_<budget>``: kNN top-1 (and the linear probe when recorded) per configuration, mean and 95% CI
  over seeds (Student t), the random-init backbone as a dashed line;
- ``accuracy_vs_epochs_<budget>`` / ``accuracy_vs_wall_<budget>``: the online kNN monitor after every epoch,
  mean over seeds with a 95% CI band;
- ``multicrop_<budget>``: configurations that differ only in crops.local.n, per method, with 95% CIs;
- ``accuracy_vs_train_epochs_<budget>``: configurations that differ only in train.epochs;
- ``health_<budget>``: effective rank, alignment, uniformity, std and the online linear probe after every epoch,
  one line per configuration with its 95% CI band (ssl_bench/analysis/health_plot.py);

into ``<results>/figures/`` (``<results>/figures/<study>/`` for a study), plus ``report.md`` there with the
tables behind every figure and the captions (protocol, budget, fingerprints). The images carry titles, axis
labels with units and legends, never hashes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ssl_bench.analysis import cells  # noqa: E402
from ssl_bench.analysis.health_plot import health_curves  # noqa: E402
from ssl_bench.analysis.report import (  # noqa: E402
    STATS,
    THEME,
    budget_caption,
    colour,
    crops_label,
    display,
    fmt_stat,
    linear_protocol,
    markdown_table,
    method_order,
    monitor_protocol,
    n_warning,
    num,
    protocol,
    t_interval,
)
from ssl_bench.analysis.report import label as config_label  # noqa: E402
from ssl_bench.common.skipped import note as skipped_note  # noqa: E402
from ssl_bench.config.compose import ConfigError  # noqa: E402
from ssl_bench.config.overrides import Command, Key, help_requested, writable_folder  # noqa: E402
from ssl_bench.records.io import (  # noqa: E402
    load,
    load_epochs,
    read_config,
    read_json,
    record_dirs,
    save_figure,
    write_atomic,
)
from ssl_bench.records.layout import ResultsLayout, records_folder, shipped_runs  # noqa: E402

ACC = {"metrics.knn_top1": "kNN top-1 accuracy (%)", "metrics.linear.top1": "linear probe top-1 accuracy (%)"}


# -- loading ------------------------------------------------------------------------------------------
def load_runs(results_dir: Path, study: str | None = None, sweeps: bool = False,
              compare_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, epochs): one row per finished run with its configuration label (``group``), and the per-epoch
    rows of those runs (with ``study``: the runs of its comparisons in ``compare_dir``, default
    ``<results_dir>/compare``)."""
    layout = ResultsLayout(results_dir)
    runs_dir = source(results_dir)
    df = cells.assign(load(runs_dir, sweeps=sweeps))
    df["_cfg"] = [read_config(p) for p in df["path"]]
    df["crops"] = [crops_label(c) for c in df["_cfg"]]
    df["local_n"] = [c["crops"]["local"]["n"] for c in df["_cfg"]]
    df["train_epochs"] = [c["train"]["epochs"] for c in df["_cfg"]]
    df["group"] = df["cell_label"]
    df["variant"] = [config_label(m, d, with_method=False)
                     for m, d in zip(df["method"], df["differences"], strict=True)]
    if study:
        df = _study_variants(df, compare_dir or layout.compare(), study)
    if df.empty:
        raise ConfigError(f"no run records to plot under {results_dir}" + ("" if sweeps else
                                                                          " (sweep trials need sweeps=true)"))
    df = df.sort_values(["budget", "dataset", "method", "group", "seed"],
                        key=lambda c: c.map(method_order(df["method"]).index) if c.name == "method" else c,
                        kind="stable").reset_index(drop=True)
    epochs = load_epochs(runs_dir)
    if not epochs.empty:
        epochs = epochs[epochs["path"].isin(df["path"])]
        epochs = epochs.merge(df[["path", "group", "variant", "cell"]], on="path", how="left")
        epochs["epoch"] = epochs["epoch"] + 1  # 1-based: "after epoch 1"
    return df, epochs


def source(results_dir: Path) -> Path:
    """The runs to plot: ``results_dir``'s own (ssl_bench.records.layout.records_folder); on a fresh clone, where there
    are
    none yet, the shipped reference records beside them, said in one line."""
    runs_dir = records_folder(results_dir)
    shipped = shipped_runs(results_dir)
    if shipped is not None and runs_dir != shipped and not record_dirs(runs_dir):
        print(f"no runs of yours under {runs_dir} yet (ssl_bench.run and ssl_bench.compare write them there): "
              f"plotting the shipped reference records in {shipped}", file=sys.stderr)
        return shipped
    return runs_dir


def _study_variants(df: pd.DataFrame, compare_dir: Path, study: str) -> pd.DataFrame:
    """Keep the runs of the comparisons of ``study`` and label them '<method>, <variant>' with the study's names."""
    comps = [p.parent for p in sorted(compare_dir.glob("*/comparison.json")) if read_json(p).get("study") == study]
    if not comps:
        found = sorted({read_json(p).get("study") or "-" for p in compare_dir.glob("*/comparison.json")})
        raise ConfigError(f"no comparison of study '{study}' under {compare_dir}; found: "
                          f"{', '.join(found) or 'none'} (run python -m ssl_bench.compare study={study} first)")
    variant: dict[str, str] = {}
    for c in comps:
        runs = pd.read_csv(c / "runs.csv")
        variants = runs["variant"].astype(str)
        for path, v in zip(runs["path"], variants, strict=True):
            variant[Path(path).name] = "" if variants.nunique() == 1 else v
    names = df["path"].map(lambda p: Path(p).name)
    df = df[names.isin(variant)].copy()
    df["group"] = [display(m) + (f", {variant[Path(p).name]}" if variant[Path(p).name] else "")
                   for m, p in zip(df["method"], df["path"], strict=True)]
    shared = df.groupby("group")["cell"].transform("nunique") > 1  # one label, two cells: name the cell
    df.loc[shared, "group"] = df.loc[shared, "group"] + " [" + df.loc[shared, "cell"] + "]"
    df["variant"] = [variant[Path(p).name] or "budget as defined" for p in df["path"]]
    return df


# -- figure helpers -----------------------------------------------------------------------------------
def save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    """Write <stem>.png and <stem>.svg (the caption goes to report.md, not into the image)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    save_figure(fig, paths[0], dpi=130, bbox_inches="tight")  # atomic: a full disk leaves no half figure
    # A fixed salt for the SVG's clip-path ids (random by default), so regenerating a figure rewrites the same bytes.
    with plt.rc_context({"svg.hashsalt": "ssl_bench"}):
        save_figure(fig, paths[1], bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return paths


def _groups(g: pd.DataFrame) -> list[tuple[str, str]]:
    """(group label, method) in display order: by method, then label; each label is one cell
    (ssl_bench.analysis.cells)."""
    pairs = [(s["group"].iloc[0], s["method"].iloc[0]) for _, s in cells.split(g)]
    order = method_order(g["method"])
    return sorted(pairs, key=lambda p: (order.index(p[1]), p[0]))


def _floor(g: pd.DataFrame, col: str) -> float:
    rand = {"metrics.knn_top1": "metrics.random_knn_top1", "metrics.linear.top1": "metrics.random.linear.top1"}[col]
    return float(g[rand].mean()) if rand in g and g[rand].notna().any() else math.nan


def _has(g: pd.DataFrame, col: str) -> bool:
    return col in g and g[col].notna().any()


# -- figures ------------------------------------------------------------------------------------------
def accuracy(g: pd.DataFrame, out: Path, budget: str) -> tuple[list[Path], str]:
    """Dot and 95% CI per configuration, one panel per protocol."""
    cols = [c for c in ACC if _has(g, c)]
    groups = _groups(g)
    fig, axes = plt.subplots(1, len(cols), figsize=(5.6 * len(cols) + 1.0, 0.42 * len(groups) + 1.6),
                             squeeze=False, sharey=True)
    for ax, col in zip(axes[0], cols, strict=True):
        for y, (label, m) in enumerate(groups):
            st = t_interval(g.loc[(g["group"] == label) & (g["method"] == m), col])
            if st.n >= 2:
                ax.errorbar(st.mean, y, xerr=[[st.mean - st.lo], [st.hi - st.mean]], fmt="o", color=colour(m),
                            capsize=3, markersize=6, elinewidth=1.6)
            elif st.n == 1:
                ax.plot(st.mean, y, "o", color=colour(m), markersize=6, markerfacecolor="white")
            ax.text(1.01, y, f"n={st.n}", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                    color="0.35")
        floor = _floor(g, col)
        if math.isfinite(floor):
            ax.axvline(floor, ls="--", lw=1.1, color="0.4")
            ax.text(floor, -0.9, " random init", fontsize=8, color="0.35", va="bottom")
        ax.set_yticks(range(len(groups)), [label for label, _ in groups])
        ax.set_ylim(len(groups) - 0.4, -1.0)
        ax.set_xlabel(ACC[col])
        ax.grid(axis="x", alpha=0.35)
    fig.suptitle(f"Accuracy per configuration, budget '{budget}', {g['dataset'].iloc[0]}", fontsize=11)
    fig.tight_layout()
    cap = (f"Points: mean over seeds; bars: 95% confidence interval (Student t over seeds); hollow point: one seed "
           f"(no interval); n per row at the right; dashed: the random-init backbone. Protocol: "
           f"{protocol(g['_cfg'].iloc[0])}" + (f"; linear: {linear_protocol(g['_cfg'].iloc[0])}"
                                               if "metrics.linear.top1" in cols else "") + ". "
           + budget_caption(list(g["_cfg"]), budget))
    return save(fig, out, f"accuracy_{budget}"), cap


def lines(g: pd.DataFrame, ep: pd.DataFrame, out: Path, budget: str, x: str) -> tuple[list[Path], str] | None:
    """accuracy_vs_epochs (x='epoch') or accuracy_vs_wall (x='wall_s'): one panel per variant (the keys that
    differ from the budget), one line per method in it: each line is one configuration."""
    ep = ep[ep["path"].isin(g["path"])]
    if ep.empty or "monitor_knn_top1" not in ep or ep["monitor_knn_top1"].isna().all():
        return None
    ep = ep.dropna(subset=["monitor_knn_top1"])
    variants = sorted(set(ep["variant"]), key=lambda v: (v != "budget as defined", v))
    cols = min(len(variants), 3)
    rows_n = math.ceil(len(variants) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols + 1.8, 3.9 * rows_n + 0.6), squeeze=False,
                             sharey=True)
    flat = list(axes.flat)
    for ax in flat[len(variants):]:
        ax.set_visible(False)
    for ax, v in zip(flat, variants, strict=False):
        panel = ep[ep["variant"] == v]
        for key in sorted(set(panel["cell"]), key=lambda k: (method_order(ep["method"]).index(
                panel.loc[panel["cell"] == k, "method"].iloc[0]), k)):
            e = panel[panel["cell"] == key]  # one line is one cell
            m = e["method"].iloc[0]
            agg = e.groupby("epoch").agg(x=(x, "mean"), n=("monitor_knn_top1", "size"))
            band = [t_interval(vals) for _, vals in e.groupby("epoch")["monitor_knn_top1"]]
            ax.plot(agg["x"], [b.mean for b in band], "-", marker="o", markersize=3.5, color=colour(m),
                    label=display(m))
            if (agg["n"] >= 2).all():
                ax.fill_between(agg["x"], [b.lo for b in band], [b.hi for b in band], color=colour(m), alpha=0.12,
                                linewidth=0)
        ax.set_title(v, fontsize=10)
        ax.set_xlabel("epoch" if x == "epoch" else "wall-clock time (s)")
        ax.set_ylabel("online kNN top-1 accuracy (%)")
        if x == "epoch":
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="method", loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=9,
               frameon=False)
    what = "epochs" if x == "epoch" else "wall-clock time"
    fig.suptitle(f"Online kNN vs {what}, budget '{budget}', {g['dataset'].iloc[0]}", fontsize=11)
    fig.tight_layout()
    n = g.groupby("cell").size()
    cap = (f"One panel per variant (the keys that differ from the budget as defined), one line per method: each "
           f"line is one configuration. Lines: mean over seeds (n = {n.min()}"
           f"{'' if n.min() == n.max() else f'-{n.max()}'} per configuration); band: 95% confidence interval over "
           f"seeds (Student t; none with one seed). Protocol: {monitor_protocol(g['_cfg'].iloc[0])}. "
           + budget_caption(list(g["_cfg"]), budget)
           + (" Wall time includes the monitor's evaluation and depends on the machine and its load."
              if x != "epoch" else ""))
    stem = "accuracy_vs_epochs" if x == "epoch" else "accuracy_vs_wall"
    return save(fig, out, f"{stem}_{budget}"), cap


MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def by_value(g: pd.DataFrame, out: Path, budget: str, key: str, stem: str, xlabel: str, title: str,
             value: Any) -> list[tuple[list[Path], str, pd.DataFrame]]:
    """Per method (x, in its colour), the accuracy at each value of ``key`` (marker), mean and 95% CI; one
    figure per set of configurations equal but for ``key`` and the method."""
    made = []
    for i, s in enumerate(cells.varying(g, key)):
        s = s.assign(_x=[value(c) for c in s["_cfg"]])
        xs = sorted(set(s["_x"]), key=lambda v: (isinstance(v, str), v))
        methods = method_order(s["method"])
        fig, ax = plt.subplots(figsize=(1.5 * len(methods) + 3.5, 4.4))
        width = 0.6 / max(1, len(xs) - 1) if len(xs) > 1 else 0.0
        rows = []
        for j, m in enumerate(methods):
            pts = []
            for k, xv in enumerate(xs):
                st = t_interval(s.loc[(s["method"] == m) & (s["_x"] == xv), "metrics.knn_top1"])
                if st.n == 0:
                    continue
                pos = j + (k - (len(xs) - 1) / 2) * width
                pts.append((pos, st.mean))
                err = [[st.mean - st.lo], [st.hi - st.mean]] if st.n >= 2 else None
                ax.errorbar(pos, st.mean, yerr=err, fmt=MARKERS[k % len(MARKERS)], color=colour(m), capsize=3,
                            markersize=7, markerfacecolor=colour(m) if st.n >= 2 else "white")
                rows.append({"method": m, "value": xv, "stat": st})
            if len(pts) > 1:
                ax.plot(*zip(*pts, strict=True), "-", color=colour(m), alpha=0.45, lw=1)
        for k, xv in enumerate(xs):  # legend: which marker is which value
            ax.plot([], [], MARKERS[k % len(MARKERS)], color="0.3", label=f"{xv}")
        floor = _floor(s, "metrics.knn_top1")
        if math.isfinite(floor):
            ax.axhline(floor, ls="--", lw=1.1, color="0.4", label="random init")
        ax.set_xticks(range(len(methods)), [display(m) for m in methods])
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_xlabel("method")
        ax.set_ylabel("kNN top-1 accuracy (%)")
        ax.set_title(f"{title}, budget '{budget}'", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title=xlabel, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9,
                  frameon=False)
        fig.tight_layout()
        ns = [r["stat"].n for r in rows]
        cap = (f"Per method (colour), one marker per {xlabel}: mean over seeds (n = {min(ns)}"
               f"{'' if min(ns) == max(ns) else f'-{max(ns)}'} per point), bars: 95% confidence interval (Student "
               f"t over seeds; hollow: one seed); dashed: the random-init backbone. Protocol: "
               f"{protocol(s['_cfg'].iloc[0])}. " + budget_caption(list(s["_cfg"]), budget))
        made.append((save(fig, out, f"{stem}_{budget}" + (f"_{i + 1}" if i else "")), cap, pd.DataFrame(rows)))
    return made


# -- the report ---------------------------------------------------------------------------------------
def _img(paths: list[Path], out: Path) -> str:
    png, svg = paths
    return f"![{png.stem}]({png.relative_to(out)})\n\n[SVG]({svg.relative_to(out)})\n"


def _summary_table(g: pd.DataFrame) -> str:
    linear = _has(g, "metrics.linear.top1")
    rows, ns = [], []
    for label, m in _groups(g):
        s = g[(g["group"] == label) & (g["method"] == m)]
        knn = t_interval(s["metrics.knn_top1"])
        lin = t_interval(s["metrics.linear.top1"]) if linear else None
        ns += [knn.n] + ([lin.n] if lin else [])
        col = lambda k, s=s: s[k] if k in s else pd.Series([math.nan])  # noqa: E731
        rows.append([label, fmt_stat(knn), *([fmt_stat(lin)] if lin else []),
                     num(col("metrics.random_knn_top1").mean()),
                     *([num(col("metrics.random.linear.top1").mean())] if lin else []),
                     fmt_stat(t_interval(col("metrics.monitor_knn_top1"))),
                     num(col("cost.wall_s").mean(), 0), num(col("cost.images_per_s").mean(), 0),
                     num(col("cost.peak_mem_mb").mean(), 0), s["crops"].iloc[0], int(s["train_epochs"].iloc[0]),
                     " ".join(str(x) for x in sorted(s["seed"])), ", ".join(sorted(set(s["configuration_id"])))])
    header = ["configuration", "kNN top-1 (%)", *(["linear top-1 (%)"] if linear else []), "random init kNN (%)",
              *(["random init linear (%)"] if linear else []), "last online kNN (%)", "wall (s)", "images/s",
              "peak mem (MB)", "crops", "epochs", "seeds", "configuration id"]
    return markdown_table(header, rows) + n_warning(ns).strip() + "\n"


def _value_table(rows: pd.DataFrame, name: str) -> str:
    values = list(dict.fromkeys(rows["value"]))
    body = []
    for m in method_order(rows["method"]):
        r = rows[rows["method"] == m].set_index("value")["stat"]
        body.append([display(m), *[fmt_stat(r[v]) if v in r.index else "—" for v in values]])
    return markdown_table(["method", *[f"{name} {v}" for v in values]], body)


def plot(results_dir: Path, study: str | None = None, out: Path | None = None, sweeps: bool = False,
         compare_dir: Path | None = None) -> list[Path]:
    """Draw every figure and write the report; returns the files written."""
    runs, epochs = load_runs(results_dir, study, sweeps, compare_dir)
    runs, refusals = cells.usable(runs)
    for line in refusals:
        print(line, file=sys.stderr)
    if runs.empty:
        raise ConfigError(f"every cell under {results_dir} is refused: {refusals[0]}")
    out = out or ResultsLayout(results_dir).figures(study)
    sns.set_theme(**THEME)
    written: list[Path] = []
    title = f"study '{study}'" if study else "every configuration"
    report = [f"# Results: {title}\n",
              "Drawn by `python -m ssl_bench.plot` from the run records (summary.json, config.yaml, metrics.jsonl)"
              + (f" of the comparisons of study `{study}`" if study else "")
              + ". One row, point or line is one configuration (runs equal in everything but the seed); its label "
              "names the keys that differ from its budget as defined, and a cell holding a record today's code no "
              "longer reproduces is refused (ssl_bench.analysis.cells). " + STATS
              + ("" if sweeps or study else " Sweep trials are left out (see their sweep reports; sweeps=true "
                                            "includes them).") + "\n"]
    report += [f"**{line}**\n" for line in refusals]
    for (budget, dataset), g in runs.groupby(["budget", "dataset"], sort=False):
        cfg = g["_cfg"].iloc[0]
        report.append(f"## Budget `{budget}`, {dataset}\n\n{budget_caption(list(g['_cfg']), budget)}\n\n"
                      f"Accuracy: {protocol(cfg)}"
                      + (f"; linear: {linear_protocol(cfg)}" if _has(g, "metrics.linear.top1") else "")
                      + f"; last online kNN: {monitor_protocol(cfg)}.\n\n{_summary_table(g)}")
        paths, cap = accuracy(g, out, budget)
        written += paths
        report.append(f"### Accuracy per configuration\n\n{_img(paths, out)}\n{cap}\n")
        for x, name in (("epoch", "Online kNN vs epochs"), ("wall_s", "Online kNN vs wall-clock")):
            made = lines(g, epochs, out, budget, x)
            if made:
                written += made[0]
                report.append(f"### {name}\n\n{_img(made[0], out)}\n{made[1]}\n")
        made = health_curves(g, epochs, out, budget, save)  # ssl_bench/analysis/health_plot.py
        if made:
            written += made[0]
            report.append(f"### Health per epoch\n\n{_img(made[0], out)}\n{made[1]}\n")
        for paths, cap, rows in by_value(g, out, budget, "crops.local.n", "multicrop", "crops (count x px)",
                                         "Multi-crop ablation", crops_label):
            written += paths
            report.append(f"### Multi-crop ablation\n\n{_img(paths, out)}\n{cap}\n\n{_value_table(rows, 'crops')}")
        for paths, cap, rows in by_value(g, out, budget, "train.epochs", "accuracy_vs_train_epochs",
                                         "training length (epochs; separate runs, each with its own schedule)",
                                         "Accuracy vs training length", lambda c: c["train"]["epochs"]):
            written += paths
            report.append(f"### Accuracy vs training length\n\n{_img(paths, out)}\n{cap}\n\n"
                          f"{_value_table(rows, 'epochs')}")
    write_atomic(out / "report.md", "\n".join(report) + skipped_note())
    written.append(out / "report.md")
    return written


COMMAND = Command(
    "ssl_bench.plot", "Figures and a Markdown report from the run records.\n\n"
    "    python -m ssl_bench.plot [results=results] [study=<name>] [out=<dir>] [sweeps=false]",
    (Key("results", "str", "results", "the results folder: its runs/ are read, figures go to its figures/"),
     Key("study", "str", None, "only the runs of the comparisons of this study, labelled by its variants"),
     Key("out", "str", None, "the output folder (null: <results>/figures[/<study>])"),
     Key("sweeps", "bool", False, "include sweep trials (they belong in their sweep's report)")),
    footer=__doc__.split("\n\n", 2)[2])


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    own, _, _ = COMMAND.parse(argv)
    writable_folder(own["out"] or ResultsLayout(own["results"]).figures(), "out")
    written = plot(Path(own["results"]), own["study"] or None, Path(own["out"]) if own["out"] else None,
                   own["sweeps"])
    print("\n".join(str(p) for p in written))
    return 0


