"""One figure per claim (:func:`claim_figure`): each configuration's primary metric (every seed a dot, mean and
95% CI), the paired differences the verdict rests on inside the ±margin band and, with ``curves``, the
training curves; each configuration has one colour, line style and marker in every panel. Imports the plan
and the verdicts (ssl_bench.analysis.claims.planning, .verdicts), ssl_bench.analysis.report and the records'
figure writer; matplotlib and seaborn lazily."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ssl_bench.analysis.claims.planning import METRICS, Cell
from ssl_bench.analysis.claims.verdicts import Comparison, Evaluated
from ssl_bench.analysis.report import display, t_interval
from ssl_bench.records.io import save_figure

_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "<")


def _styles(done: list[Cell]) -> dict[tuple[str, str], dict[str, Any]]:
    """One colour, line style and marker per configuration, the same in every panel: by method when the claim
    compares methods (the variant then sets style and marker), else one palette colour per variant."""
    from ssl_bench.analysis.report import colour

    multi = len({c.method for c in done}) > 1
    variants = list(dict.fromkeys(c.variant for c in done))
    palette = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
    out = {}
    for i, c in enumerate(done):
        k = variants.index(c.variant) if multi else i
        out[(c.variant, c.method)] = {"color": colour(c.method) if multi else palette[i % len(palette)],
                                      "ls": _STYLES[k % len(_STYLES)], "marker": _MARKERS[k % len(_MARKERS)]}
    return out


def claim_figure(ev: Evaluated, out_dir: Path) -> Path | None:
    """Per configuration the primary metric (mean and 95% CI, every seed a dot); the paired differences the verdict
    rests on (every seed a dot, mean and 95% CI, the ±margin band); with ``curves`` the training loss, the
    assignment entropy and the prototypes in use per epoch (mean over seeds). Each configuration has one colour,
    line style and marker in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ssl_bench.analysis.report import THEME

    sns.set_theme(**THEME)
    claim, metric = ev.claim, ev.primary
    done = [c for c in ev.cells.values() if c.summaries]
    if not done:
        return None
    style = _styles(done)
    comps = [c for c in ev.outcomes[metric].comparisons if c.n >= 1]
    curves = bool(claim.get("curves"))
    panels = 1 + bool(comps) + (3 if curves else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels + 1.5, 0.35 * max(len(done), len(comps)) + 2.6),
                             squeeze=False)
    axes = list(axes[0])
    multi = len({c.method for c in done}) > 1
    names = [(f"{display(c.method)}, " if multi else "") + c.variant for c in done]
    _metric_panel(axes.pop(0), done, names, style, metric)
    if comps:
        _differences_panel(axes.pop(0), comps, metric)
    if curves:
        _curve_panels(axes, done, names, style)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"claim_{claim['id']}.png"
    save_figure(fig, path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _metric_panel(ax: Any, done: list[Cell], names: list[str], style: dict[tuple[str, str], dict[str, Any]],
                  metric: str) -> None:
    """Each configuration's seeds (dots), mean and 95% CI, over the random-init floor."""
    for i, c in enumerate(done):
        st_ = style[(c.variant, c.method)]
        vals = list(c.values(metric).values())
        s = t_interval(vals)
        ax.scatter(vals, [i] * len(vals), s=12, color=st_["color"], alpha=0.45, marker=st_["marker"])
        if s.n >= 2:
            ax.errorbar(s.mean, i, xerr=[[s.mean - s.lo], [s.hi - s.mean]], fmt=st_["marker"], color=st_["color"],
                        capsize=3)
    floor_key = "random_knn_top1" if metric == "knn_top1" else "random.linear.top1"
    rand = t_interval(v for c in done for v in c.values(floor_key).values())
    if rand.n:  # the floor: a collapsed backbone scores about what a random one does
        ax.axvline(rand.mean, color="grey", ls=":", lw=1)
        ax.annotate("random init", (rand.mean, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="grey",
                    ha="left", va="bottom")
    ax.set_yticks(range(len(done)), [textwrap.fill(n, 30) for n in names], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"{METRICS[metric]} accuracy (%),\nseeds, mean and 95% CI")


def _differences_panel(ax: Any, comps: list[Comparison], metric: str) -> None:
    """The paired differences the verdict rests on, mean and 95% CI, inside the ±margin band."""
    margin = comps[0].decision.margin
    ax.axvspan(-margin, margin, color="0.85", alpha=0.6, lw=0)
    ax.axvline(0, color="0.3", lw=0.8)
    for i, c in enumerate(comps):
        d = c.decision
        ax.errorbar(d.mean, i, xerr=None if d.n < 2 else [[d.mean - d.ci95[0]], [d.ci95[1] - d.mean]],
                    fmt="o", color="0.15", capsize=3)
    ax.set_yticks(range(len(comps)), [textwrap.fill(c.name, 28) for c in comps], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"paired difference, {METRICS[metric]} (points),\nmean and 95% CI; grey: ±{margin:g} margin")


def _curve_panels(axes: list[Any], done: list[Cell], names: list[str],
                  style: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Training loss, assignment entropy and prototypes in use per epoch, mean over seeds."""
    for key, a, label in (("loss", axes[0], "training loss"),
                          ("assign_entropy", axes[1], "assignment entropy\n(1 = uniform)"),
                          ("prototypes_used", axes[2], "prototypes in use")):
        for c, name in zip(done, names, strict=True):
            per_epoch: dict[int, list[float]] = {}
            for rows in c.epochs.values():
                for r in rows:
                    if r.get(key) is not None:
                        per_epoch.setdefault(int(r["epoch"]) + 1, []).append(float(r[key]))
            if per_epoch:
                xs = sorted(per_epoch)
                st_ = style[(c.variant, c.method)]
                a.plot(xs, [sum(per_epoch[x]) / len(per_epoch[x]) for x in xs], linestyle=st_["ls"],
                       marker=st_["marker"], color=st_["color"], ms=3, label=name)
        a.set_xlabel("epoch")
        a.set_ylabel(f"{label}, mean over seeds")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
