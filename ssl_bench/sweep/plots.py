"""Tables and figures of a sweep (seaborn on the Agg backend) into results/figures/<study>/:

    trials.csv, trials.md          one row per trial: state, value, parameters, reason, record
    metric_vs_params.png           the objective against each parameter (pruned and failed trials marked)
    heatmap_<a>__<b>.png           mean value per cell over two parameters, n per cell (failed cells say why)
    importances.png                Optuna's parameter importances, only where they can be told from seed noise
    history.png                    value per trial
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ssl_bench.analysis import cells  # noqa: E402
from ssl_bench.analysis.report import STATS, THEME, t_interval  # noqa: E402
from ssl_bench.common import skipped  # noqa: E402
from ssl_bench.records.io import read_summary, readable, record_dirs, save_figure, write_atomic  # noqa: E402

METRIC_LABELS = {"knn_top1": "kNN top-1 (%)", "metrics.knn_top1": "kNN top-1 (%)",
                 "knn_top1_k20": "kNN top-1, k=20 (%)", "knn_top1_k200": "kNN top-1, k=200 (%)",
                 "monitor_knn_top1": "online kNN top-1 (%)", "linear.top1": "linear probe top-1 (%)",
                 "metrics.linear.top1": "linear probe top-1 (%)", "cost.wall_s": "wall time (s)"}
FAIL_LABELS = {"collapse": "collapsed", "nan": "NaN loss", "oom": "out of memory", "crash": "crashed",
               "config": "invalid", "interrupted": "interrupted", None: "failed"}
STATE_STYLE = {"complete": ("o", "tab:blue"), "pruned": ("X", "tab:orange"), "fail": ("v", "tab:red")}


def metric_label(meta: dict[str, Any]) -> str:
    name = meta.get("objective", "value")
    return METRIC_LABELS.get(name, name)


def context(meta: dict[str, Any], study: str) -> str:
    """Two lines: 'swav on fashion_mnist, demo budget, 3 epochs, batch 64' and 'study <name>'."""
    if not meta.get("method"):
        return f"study {study}"
    return (f"{meta['method']} on {meta['dataset']}, {meta['budget']} budget, {meta['epochs']} epochs, "
            f"batch {meta['batch_size']}\nstudy {study}")


def record_index(runs_dir: Path | None) -> dict[str, Path]:
    """The records under ``runs_dir`` by the run id they were written with (a record may have been moved or
    renamed since the study noted its path)."""
    if runs_dir is None or not runs_dir.is_dir():
        return {}
    # A damaged record is skipped with one warning (ssl_bench.common.skipped); its trial's row has no metrics.
    return {str(read_summary(d).get("run_id")): d for d in record_dirs(runs_dir) if readable(d)}


def record_metrics(path: str | None, run_id: str | None = None, index: dict[str, Path] | None = None
                   ) -> dict[str, Any]:
    """The headline metrics of a trial's run record (kNN at k=20, linear probe when run) and its folder."""
    p = Path(path) if path else None
    if (p is None or not p.exists()) and run_id and index and run_id in index:
        p = index[run_id] / "summary.json"
    if p is None or not p.exists() or not readable(p.parent):
        return {}
    summary = read_summary(p.parent)
    metrics = summary.get("metrics", {})
    out: dict[str, Any] = {"knn_top1": metrics.get("knn_top1")}
    if isinstance(metrics.get("linear"), dict) and "top1" in metrics["linear"]:
        out["linear_top1"] = metrics["linear"]["top1"]
    out = {k: v for k, v in out.items() if isinstance(v, int | float)}
    out["seed"] = summary.get("seed")
    out["record"] = p.parent.name
    return out


def trials_frame(study: optuna.Study, index: dict[str, Path] | None = None) -> pd.DataFrame:
    """One row per finished trial: number, state, value, parameters, reason, last online kNN, record."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or t.user_attrs.get("fail_kind") == "idle":  # idle: a grid trial never run
            continue
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        state = t.state.name.lower()
        rows.append({"trial": t.number, "state": state, "value": t.value if state == "complete" else None,
                     **{f"params.{k}": v for k, v in t.params.items()},
                     **record_metrics(t.user_attrs.get("record"), t.user_attrs.get("run_id"), index),
                     "fail_kind": t.user_attrs.get("fail_kind") if state != "complete" else None,
                     "reason": t.user_attrs.get("reason", "") if state != "complete" else "",
                     "objective_value": t.user_attrs.get("objective_value"),
                     "last_online_knn": last, "epochs_reported": len(t.intermediate_values),
                     "duration_s": t.duration.total_seconds() if t.duration else None,
                     "run_id": t.user_attrs.get("run_id", ""), "reused_record": t.user_attrs.get("reused")})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/")

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _param_spec(meta: dict[str, Any], name: str, values: pd.Series) -> dict[str, Any]:
    spec = dict(meta.get("params", {}).get(name) or {})
    if not spec:  # a study without our metadata: infer
        numeric = pd.api.types.is_numeric_dtype(values.dropna())
        spec = {"type": "float" if numeric else "categorical", "log": False,
                "choices": sorted(values.dropna().unique().tolist(), key=str) if not numeric else []}
    return spec


def _categories(spec: dict[str, Any], values: pd.Series) -> list:
    present = list(values.dropna().unique())
    order = [c for c in spec.get("choices", []) if c in present] if spec.get("choices") else []
    rest = [c for c in present if c not in order]
    try:
        rest = sorted(rest)
    except TypeError:
        rest = sorted(rest, key=str)
    return order + rest


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def plot_metric_vs_params(df: pd.DataFrame, meta: dict[str, Any], study: str, path: Path) -> Path:
    params = [c[len("params."):] for c in df.columns if c.startswith("params.")]
    fig, axes = plt.subplots(1, len(params), figsize=(4.8 * len(params), 4.4), squeeze=False)
    label = metric_label(meta)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], params, strict=True):
        col = df[f"params.{name}"]
        spec = _param_spec(meta, name, col)
        categorical = spec.get("type") == "categorical"
        if categorical:
            cats = _categories(spec, col)
            pos = {c: i for i, c in enumerate(cats)}
            x = col.map(lambda v, pos=pos: pos.get(v, np.nan)).astype(float)
            x = x + rng.uniform(-0.12, 0.12, len(x))
            ax.set_xticks(range(len(cats)), [_short(c) for c in cats])
            ax.set_xlim(-0.5, len(cats) - 0.5)
        else:
            x = col.astype(float)
            if spec.get("log"):
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        done = df["state"] == "complete"
        marker, color = STATE_STYLE["complete"]
        ax.scatter(x[done], df.loc[done, "value"], marker=marker, color=color, s=40, label="complete", zorder=3)
        pruned = (df["state"] == "pruned") & df["last_online_knn"].notna()
        if pruned.any():
            marker, color = STATE_STYLE["pruned"]
            ax.scatter(x[pruned], df.loc[pruned, "last_online_knn"], marker=marker, color=color, s=50,
                       label="pruned (last online kNN)", zorder=3)
        failed = df["state"] == "fail"
        if failed.any():
            marker, color = STATE_STYLE["fail"]
            ax.scatter(x[failed], np.full(int(failed.sum()), 0.04), marker=marker, color=color, s=50,
                       transform=ax.get_xaxis_transform(), label="failed (see table)", zorder=3, clip_on=False)
        ax.set_xlabel(name + (" (log scale)" if spec.get("log") and not categorical else ""))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{label} vs each parameter\n{context(meta, study)}", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _axis(df: pd.DataFrame, meta: dict[str, Any], name: str) -> tuple[pd.Series, list, bool]:
    """Cell labels of one heatmap axis: the values themselves, or about 5 bins of a wide numeric range."""
    col = df[f"params.{name}"]
    spec = _param_spec(meta, name, col)
    if spec.get("type") == "categorical" or col.nunique() <= 1:
        cats = _categories(spec, col)
        return col.map(_short), [_short(c) for c in cats], False
    lo, hi = float(col.min()), float(col.max())
    n = min(5, col.nunique())
    edges = np.geomspace(lo, hi, n + 1) if spec.get("log") and lo > 0 else np.linspace(lo, hi, n + 1)
    labels = [f"{_short(float(a))}-{_short(float(b))}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    binned = pd.cut(col.astype(float), edges, labels=labels, include_lowest=True).astype(str)
    return binned, labels, True


def plot_heatmap(df: pd.DataFrame, meta: dict[str, Any], study: str, x: str, y: str, path: Path) -> Path:
    """Mean complete value per (x, y) cell with its n (and 95% CI with n >= 2); cells without a complete trial
    name what happened to their trials. No cell is marked best: one trial per cell cannot tell seed noise apart."""
    xs, xcats, xbinned = _axis(df, meta, x)
    ys, ycats, ybinned = _axis(df, meta, y)
    df = df.assign(_cell=cells.trial_cells(df))  # a trial's configuration: every swept parameter
    values = np.full((len(ycats), len(xcats)), np.nan)
    notes = np.full((len(ycats), len(xcats)), "", dtype=object)
    for i, yc in enumerate(ycats):
        for j, xc in enumerate(xcats):
            cell = df[(xs == xc) & (ys == yc)]
            done = cell[cell["state"] == "complete"]
            if len(done):
                st = t_interval(done["value"])
                values[i, j] = st.mean
                k = done["_cell"].nunique()  # a binned square or a third parameter: several configurations
                notes[i, j] = f"{st.mean:.1f}" + (f" ± {st.half:.1f}" if st.n >= 2 and k == 1 else "") + (
                    f"\n(n={st.n})" if k == 1 else f"\n({k} configs,\n{st.n} trials)")
            elif len(cell):
                last = cell.iloc[-1]
                if last["state"] == "pruned":
                    knn = last["last_online_knn"]
                    notes[i, j] = "pruned" + (f"\n(online {knn:.1f})" if pd.notna(knn) else "")
                else:
                    kind = last["fail_kind"] if isinstance(last["fail_kind"], str) else None
                    notes[i, j] = FAIL_LABELS.get(kind, kind or "failed")
                    if pd.notna(last["objective_value"]):
                        notes[i, j] += f"\n({last['objective_value']:.1f})"
    label = metric_label(meta)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.5 * len(xcats) + 3.0), 1.0 * len(ycats) + 2.6))
    ax.set_facecolor("#e8e8e8")
    finite = values[np.isfinite(values)]
    sns.heatmap(pd.DataFrame(values, index=ycats, columns=xcats), ax=ax, annot=False, cmap="viridis",
                vmin=finite.min() if finite.size else None, vmax=finite.max() if finite.size else None,
                linewidths=1, linecolor="white", cbar_kws={"label": f"mean {label}"})
    span = (finite.max() - finite.min()) if finite.size else 0.0
    for i in range(len(ycats)):
        for j in range(len(xcats)):
            if not notes[i, j]:
                continue
            v = values[i, j]
            dark = np.isfinite(v) and span > 0 and (v - finite.min()) / span < 0.6
            ax.text(j + 0.5, i + 0.5, notes[i, j], ha="center", va="center", fontsize=10,
                    color="white" if dark else ("black" if np.isfinite(v) else "#b00000"),
                    fontweight="bold" if np.isfinite(v) else "normal")
    ax.grid(False)
    ax.set_xlabel(x + (" (binned)" if xbinned else ""))
    ax.set_ylabel(y + (" (binned)" if ybinned else ""))
    ax.tick_params(axis="y", labelrotation=0)
    grey = "\ngrey: no complete trial (why, and its value if any)" if (notes != "").sum() > finite.size else ""
    ax.set_title(f"{label}: mean per cell, n = trials (± 95% CI where n ≥ 2)\n"
                 f"{context(meta, study)}{grey}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_importances(study: optuna.Study, meta: dict[str, Any], path: Path) -> tuple[Path | None, str]:
    """Optuna's parameter importances, only where the differences can be told from seed noise: every point
    (parameter combination) needs at least 2 complete trials, and the spread of the point means must exceed the
    largest 95% CI half-width of a point."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    points: dict[str, list[float]] = {}
    for t in complete:
        points.setdefault(json.dumps(t.params, sort_keys=True, default=str), []).append(float(t.value))
    stats = [t_interval(v) for v in points.values()]
    if not stats or min(st.n for st in stats) < 2:
        return None, ("parameter importances not drawn: one trial per point, so differences cannot be told from "
                      "seed noise (repeat points with several seeds)")
    spread = max(st.mean for st in stats) - min(st.mean for st in stats)
    if spread <= max(st.half for st in stats):
        return None, (f"parameter importances not drawn: the point means differ by {spread:.2f}, within the 95% CI "
                      f"of a point (±{max(st.half for st in stats):.2f})")
    if len(complete) < 3:
        return None, f"parameter importances need at least 3 complete trials, the study has {len(complete)}"
    try:
        imp = optuna.importance.get_param_importances(study)
    except Exception as exc:  # too little variation, a single distinct value, ...
        return None, f"parameter importances not computed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    if not imp:
        return None, "parameter importances: no parameter varies among the complete trials"
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.6 * len(imp)))
    sns.barplot(x=list(imp.values()), y=list(imp.keys()), ax=ax, color="tab:blue", orient="h")
    for i, v in enumerate(imp.values()):
        ax.text(v, i, f" {v:.2f}", va="center")
    ax.set_xlim(0, max(1.0, max(imp.values()) * 1.15))
    ax.set_xlabel(f"importance for {metric_label(meta)} (normalised to sum 1)")
    ax.set_title(f"Parameter importances (optuna.importance), {len(complete)} complete trials\n"
                 f"{context(meta, study.study_name)}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path, ""


def plot_history(df: pd.DataFrame, meta: dict[str, Any], study: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    label = metric_label(meta)
    for state, (marker, color) in STATE_STYLE.items():
        part = df[df["state"] == state]
        if not len(part):
            continue
        if state == "complete":
            ax.scatter(part["trial"], part["value"], marker=marker, color=color, label=state, zorder=3)
        elif state == "pruned":
            ax.scatter(part["trial"], part["last_online_knn"], marker=marker, color=color,
                       label="pruned (last online kNN)", zorder=3)
        else:
            ax.scatter(part["trial"], np.full(len(part), 0.04), marker=marker, color=color, label="failed",
                       transform=ax.get_xaxis_transform(), zorder=3, clip_on=False)
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{label} per trial\n{context(meta, study)}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def write_report(study: optuna.Study, meta: dict[str, Any], out_dir: Path,
                 plot_params: list[str] | None = None, runs_dir: Path | None = None) -> dict[str, Path | str]:
    """Write the table and figures of ``study`` (trial records looked up in ``runs_dir`` when they have moved);
    returns what was written (and notes on what was not)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study, record_index(runs_dir))
    out: dict[str, Path | str] = {}
    if df.empty:
        return {"note": "no finished trial yet"}
    write_atomic(out_dir / "trials.csv", df.to_csv(index=False))
    write_atomic(out_dir / "trials.md", markdown(df) + "\nOne trial is one configuration at one seed; a heatmap square "
                 "holding several configurations (binned values, or a third parameter) says so. " + STATS + "\n"
                 + skipped.note())
    out["table"] = out_dir / "trials.md"
    sns.set_theme(**THEME)
    params = [c[len("params."):] for c in df.columns if c.startswith("params.")]
    if params:
        out["metric vs parameters"] = plot_metric_vs_params(df, meta, study.study_name,
                                                            out_dir / "metric_vs_params.png")
    pair = [p for p in (plot_params or meta.get("plot_params") or params[:2]) if p in params]
    if len(pair) == 2:
        x, y = pair
        name = f"heatmap_{x.split('.')[-1]}__{y.split('.')[-1]}.png"
        out["heatmap"] = plot_heatmap(df, meta, study.study_name, x, y, out_dir / name)
    path, note = plot_importances(study, meta, out_dir / "importances.png")
    out["importances"] = path if path else note
    out["history"] = plot_history(df, meta, study.study_name, out_dir / "history.png")
    return out
