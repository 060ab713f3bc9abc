"""The per-epoch health figure (``health_<budget>``, drawn by ``python -m ssl_bench.plot``): effective rank of the
backbone and projection features, alignment, uniformity, std of the normalised projections and the online linear
probe (ssl_bench/training/health.py), one panel per quantity, one line per configuration (mean over seeds) with its 95%
confidence band; an x marks an epoch where a guardrail fired in some seed."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from ssl_bench.analysis.report import budget_caption, colour, method_order, t_interval

PANELS = {"health_rank_backbone": "effective rank, backbone features", "health_rank_projection":
          "effective rank, projections", "health_alignment": "alignment (lower: views agree)",
          "health_uniformity": "uniformity (lower: spread out)", "health_std": "std of normalised projections",
          "online_linear_top1": "online linear probe top-1 (%)"}
STYLES = ("-", "--", ":", "-.")


def health_curves(g: pd.DataFrame, ep: pd.DataFrame, out: Path, budget: str,
                  save: Callable[[plt.Figure, Path, str], list[Path]]) -> tuple[list[Path], str] | None:
    """The figure for the runs ``g`` of one budget and dataset from their per-epoch rows ``ep`` (plot.load_runs);
    None when no run recorded health. Returns (files, caption)."""
    ep = ep[ep["path"].isin(g["path"])] if not ep.empty else ep
    keys = [k for k in PANELS if k in ep and ep[k].notna().any()]
    if ep.empty or not keys:
        return None
    cols = min(len(keys), 3)
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(4.6 * cols + 2.4,
                             3.4 * math.ceil(len(keys) / cols) + 0.6), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(keys):]:
        ax.set_visible(False)
    order = method_order(ep["method"])
    cells = sorted(set(ep["cell"]), key=lambda c: (order.index(ep.loc[ep["cell"] == c, "method"].iloc[0]), c))
    seen: dict[str, int] = {}
    style = {}
    for c in cells:  # one style per configuration of a method, the method's colour
        m = ep.loc[ep["cell"] == c, "method"].iloc[0]
        style[c] = STYLES[seen.get(m, 0) % len(STYLES)]
        seen[m] = seen.get(m, 0) + 1
    for ax, key in zip(flat, keys, strict=False):
        for c in cells:
            e = ep[(ep["cell"] == c)].dropna(subset=[key])
            if e.empty:
                continue
            m, label = e["method"].iloc[0], e["group"].iloc[0]
            band = {x: t_interval(v) for x, v in e.groupby("epoch")[key]}
            xs = sorted(band)
            ax.plot(xs, [band[x].mean for x in xs], style[c], marker="o", markersize=3, color=colour(m), label=label)
            if all(band[x].n >= 2 for x in xs):
                ax.fill_between(xs, [band[x].lo for x in xs], [band[x].hi for x in xs], color=colour(m), alpha=0.12,
                                linewidth=0)
            if "guardrails" in e:
                fired = sorted({x for x, gr in zip(e["epoch"], e["guardrails"], strict=True)
                                if isinstance(gr, list) and gr})
                ax.plot(fired, [band[x].mean for x in fired], "x", color="black", markersize=7, linestyle="none")
        ax.set_title(PANELS[key], fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="configuration", loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8,
               frameon=False)
    fig.suptitle(f"Health per epoch, budget '{budget}', {g['dataset'].iloc[0]}", fontsize=11)
    fig.tight_layout()
    n = g.groupby("cell").size()
    cap = (f"One line per configuration (its method's colour, one line style per configuration of a method): mean "
           f"over seeds (n = {n.min()}{'' if n.min() == n.max() else f'-{n.max()}'}), band: 95% confidence interval "
           "(Student t; none with one seed); x: an epoch where a guardrail fired. Label-free health on a fixed sample "
           "of the pretraining images, two augmented views (health.samples): effective rank (RankMe), alignment and "
           "uniformity (Wang & Isola 2020), std of the normalised projections; online linear probe fitted each epoch "
           "on the kNN monitor's features. " + budget_caption(list(g["_cfg"]), budget))
    return save(fig, out, f"health_{budget}"), cap


# -- guardrail evidence -----------------------------------------------------------------------------------------------
def replay_guardrails(run: Path) -> list[dict]:
    """The guardrails today's default thresholds (schema.HealthConfig) fire on a finished run's per-epoch record,
    epoch by epoch as training would have fired them ([{"epoch", "check", "message"}]). A run recorded before
    health existed is replayed on the quantities it has (loss, prototypes in use)."""
    from omegaconf import OmegaConf

    from ssl_bench.config.schema import HealthConfig
    from ssl_bench.records.io import read_metrics
    from ssl_bench.training.health import check_guardrails

    cfg = OmegaConf.merge(OmegaConf.load(run / "config.yaml"), {"health": OmegaConf.structured(HealthConfig)})
    rows: list[dict] = []
    fired = []
    for row in read_metrics(run):
        rows.append(dict(row, guardrails=[]))
        rows[-1]["guardrails"] = check_guardrails(rows, cfg)
        fired += [{"epoch": row["epoch"], **g} for g in rows[-1]["guardrails"]]
    return fired


def _fired(gs: list[dict]) -> str:
    return ", ".join(f"{x['epoch'] + 1} {x['check']}" for x in gs)


def guardrail_table(runs_dirs: list[Path]) -> str:
    """A Markdown table: per configuration (ssl_bench.analysis.cells), its seeds, the guardrails today's thresholds
    fire in
    each (replayed on the record; epochs 1-based) and those training fired (runs trained with health on)."""
    from ssl_bench.analysis import cells
    from ssl_bench.analysis.report import display
    from ssl_bench.records.io import load

    frames = [load(d, sweeps=False) for d in runs_dirs]
    df = cells.assign(pd.concat([f for f in frames if not f.empty], ignore_index=True))
    lines = ["| configuration | seeds | runs with a guardrail | today's thresholds (seed: epoch check) | "
             "fired in training (seed: epoch check) |", "| --- | --- | --- | --- | --- |"]
    order = method_order(df["method"])
    for _, g in sorted(df.groupby("cell"), key=lambda kv: (order.index(kv[1]["method"].iloc[0]),
                                                           kv[1]["cell_label"].iloc[0])):
        fired, recorded = [], []
        for seed, path in sorted(zip(g["seed"], g["path"], strict=True)):
            if gs := replay_guardrails(Path(path)):
                fired.append(f"{seed}: {_fired(gs)}")
            rec = json.loads((Path(path) / "summary.json").read_text()).get("guardrails")
            if rec is not None:  # trained with guardrails (health era)
                recorded.append(f"{seed}: {_fired(rec) or 'none'}")
        label = g["cell_label"].iloc[0] or display(g["method"].iloc[0])
        lines.append(f"| {label} | {len(g)} | {len(fired)} of {len(g)} | {'; '.join(fired) or 'none'} | "
                     f"{'; '.join(recorded) or 'trained before health'} |")
    return "\n".join(lines) + "\n"
