"""Entry point: the papers' claims, tested at small scale, written to results/claims.md from the shipped records.

    python -m ssl_bench.claims                  # write results/claims.md and results/reference/figures/claims/
    python -m ssl_bench.claims check=true       # exit 1 if results/claims.md differs from the regenerated one

The claims, their studies and the verdict rules (fixed before the runs) are in experiments/claims.yaml. Each
claim's runs are the planned runs of its study (``ssl_bench.compare``, one configuration per variant, paired
by seed); nothing is trained here: a claim whose runs are missing is reported as "not run yet" with its
command. Statistics come from ssl_bench.report (95% t-intervals, paired t-tests, Holm within a claim).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssl_bench.cli import guarded
from ssl_bench.config import EXPERIMENTS_DIR, ConfigError
from ssl_bench.overrides import Command, Key, help_requested
from ssl_bench.report import (
    Paired,
    Stat,
    display,
    fmt_delta,
    markdown_table,
    num,
    paired,
    t_interval,
    with_holm,
)
from ssl_bench.results import REFERENCE_DIR, _get, read_metrics, read_summary

ROOT = REFERENCE_DIR.parent.parent
KINDS = ("gain", "equivalent", "collapse", "inverse_u", "interaction")
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = (
    "reproduced", "not reproduced at this scale", "inconclusive", "not run yet")


def claims_file() -> Path:
    return EXPERIMENTS_DIR / "claims.yaml"


def read_claims(path: Path | None = None) -> dict[str, Any]:
    path = path or claims_file()
    if not path.exists():
        raise ConfigError(f"no {path}: no claims to test")
    data = yaml.safe_load(path.read_text()) or {}
    for c in data.get("claims") or []:
        kind = (c.get("test") or {}).get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{path}: claim {c.get('id')}: unknown test kind '{kind}'; valid: {', '.join(KINDS)}")
    return data


# -- the records of a claim -----------------------------------------------------------------------------
@dataclass
class Cell:
    """One configuration of a study (variant x method): its records by seed."""

    variant: str
    method: str
    seeds: list[int]
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)
    epochs: dict[int, list[dict]] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)

    def values(self, metric: str) -> dict[int, float]:
        out = {}
        for s, summary in self.summaries.items():
            v = _get(summary.get("metrics", {}), metric)
            if v is not None:
                out[s] = float(v)
        return out

    def stat(self, metric: str) -> Stat:
        return t_interval(self.values(metric).values())

    @property
    def missing(self) -> list[int]:
        return [s for s in self.seeds if s not in self.summaries]


def study_command(study: str, common: list[str]) -> str:
    # Runs go beside the other reference records; the compare tables to the user's results/compare (the
    # claims report is the shipped table).
    return f"python -m ssl_bench.compare study={study} {' '.join(common)} output_dir=results/reference/runs"


def load_cells(study: str, common: list[str], ref: Path = REFERENCE_DIR) -> dict[tuple[str, str], Cell]:
    """Every (variant, method) of the study with the records that exist (relative to the checkout)."""
    from ssl_bench import compare as cmp

    rel = ref.relative_to(ROOT) if ref.is_relative_to(ROOT) else ref
    plan = cmp.parse([f"study={study}", *common, f"results={rel}"])
    cells: dict[tuple[str, str], Cell] = {}
    for r in plan.runs:
        cell = cells.setdefault((r.variant, r.method), Cell(r.variant, r.method, []))
        cell.seeds.append(r.seed)
        d = ROOT / r.run_dir if not r.run_dir.is_absolute() else r.run_dir
        if (d / "summary.json").exists():
            cell.summaries[r.seed] = read_summary(d)
            cell.epochs[r.seed] = read_metrics(d)
            cell.run_dirs[r.seed] = d
    return cells


# -- verdicts ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    verdict: str
    rows: list[list[str]]  # the comparisons behind the verdict
    header: list[str]
    note: str = ""


def _need(cells: dict[tuple[str, str], Cell], names: list[str]) -> list[Cell]:
    out = [c for c in cells.values() if c.variant in names]
    known = sorted({c.variant for c in cells.values()})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"claims.yaml names variant '{unknown[0]}', not in the study; valid: {', '.join(known)}")
    return out


def _cell(cells: dict[tuple[str, str], Cell], variant: str, method: str) -> Cell:
    _need(cells, [variant])
    return cells[(variant, method)]


def _direction(c: Paired) -> int:
    """+1 / -1 when the paired difference is significant (Holm) in that direction, 0 otherwise."""
    return 0 if not c.significant else (1 if c.diff.mean > 0 else -1)


def _combine(parts: list[str]) -> str:
    done = [p for p in parts if p != NOT_RUN]
    if not done:
        return NOT_RUN
    if len(done) < len(parts):  # the comparisons that have their runs; the missing ones are named in the rows
        return f"{_combine(done)} on {len(done)} of {len(parts)} comparisons"
    if all(p == REPRODUCED for p in parts):
        return REPRODUCED
    if any(p == NOT_REPRODUCED for p in parts):
        return NOT_REPRODUCED
    k = sum(p == REPRODUCED for p in parts)
    return f"{INCONCLUSIVE} ({k} of {len(parts)} reproduced)" if len(parts) > 1 else INCONCLUSIVE


def _pairs(test: dict[str, Any], cells: dict[tuple[str, str], Cell]) -> list[tuple[Cell, Cell]]:
    methods = sorted({m for _, m in cells}, key=lambda m: [c.method for c in cells.values()].index(m))
    names = test.get("pairs") or [[test["baseline"], v] for v in test["variants"]]
    return [(_cell(cells, a, m), _cell(cells, b, m)) for a, b in names for m in methods]


def _row_name(a: Cell, b: Cell, multi_method: bool) -> str:
    return (f"{display(a.method)}: " if multi_method else "") + f"{b.variant} vs {a.variant}"


def gain(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str) -> Outcome:
    expect = {"higher": 1, "lower": -1}[test["expect"]]
    pairs = _pairs(test, cells)
    comps = with_holm([paired(a.values(metric), b.values(metric)) for a, b in pairs])
    multi = len({a.method for a, _ in pairs}) > 1
    rows, parts = [], []
    for (a, b), c in zip(pairs, comps, strict=True):
        if c.n < 2:
            part = NOT_RUN
        else:
            d = _direction(c)
            part = REPRODUCED if d == expect else NOT_REPRODUCED if d == -expect else INCONCLUSIVE
        parts.append(part)
        rows.append([_row_name(a, b, multi), str(c.n), fmt_delta(c), _p(c), part])
    return Outcome(_combine(parts), rows, ["comparison", "n", "Δ (95% CI)", "Holm p", "verdict"])


def _p(c: Paired) -> str:
    return "—" if not math.isfinite(c.p_holm) else f"{c.p_holm:.3g}"


def equivalent(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str) -> Outcome:
    margin = float(test["margin"])
    pairs = _pairs(test, cells)
    comps = with_holm([paired(a.values(metric), b.values(metric)) for a, b in pairs])
    rows, parts = [], []
    for (a, b), c in zip(pairs, comps, strict=True):
        if c.n < 2:
            part = NOT_RUN
        elif -margin < c.diff.lo and c.diff.hi < margin:
            part = REPRODUCED
        elif c.significant and abs(c.diff.mean) >= margin:
            part = NOT_REPRODUCED
        else:
            part = INCONCLUSIVE
        parts.append(part)
        rows.append([_row_name(a, b, False), str(c.n), fmt_delta(c), _p(c), f"±{margin:g}", part])
    return Outcome(_combine(parts), rows, ["comparison", "n", "Δ (95% CI)", "Holm p", "margin", "verdict"],
                   note=f"Equivalence: the whole 95% CI of the paired difference inside ±{margin:g} points.")


def final_entropy(cell: Cell) -> dict[int, float]:
    out = {}
    for s, rows in cell.epochs.items():
        vals = [r["assign_entropy"] for r in rows if r.get("assign_entropy") is not None]
        if vals:
            out[s] = float(vals[-1])
    return out


def collapse(test: dict[str, Any], cells: dict[tuple[str, str], Cell], threshold: float) -> Outcome:
    base = _need(cells, [test["baseline"]])
    rows, parts = [], []
    for cell in base + _need(cells, test["variants"]):
        ent = final_entropy(cell)
        n_low = sum(v < threshold for v in ent.values())
        rows.append([cell.variant, str(len(ent)), ", ".join(f"{v:.2f}" for _, v in sorted(ent.items())) or "—",
                     f"{n_low} of {len(ent)}"])
        if cell in base:
            continue
        if len(ent) < 2:
            parts.append(NOT_RUN)
        elif n_low == len(ent):
            parts.append(REPRODUCED)
        elif n_low == 0:
            parts.append(NOT_REPRODUCED)
        else:
            parts.append(INCONCLUSIVE)
    base_ok = all(v >= threshold for c in base for v in final_entropy(c).values())
    verdict = _combine(parts)
    if verdict == REPRODUCED and not base_ok:
        verdict = INCONCLUSIVE  # the baseline collapsed too: collapse is not the variant's doing
    return Outcome(verdict, rows, ["variant", "n", "final assignment entropy per seed", f"collapsed (< {threshold:g})"],
                   note="Assignment entropy: of the epoch's hard assignments over the prototypes, normalised so "
                        "that 1 is uniform and 0 is one prototype.")


def inverse_u(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str) -> Outcome:
    order = _need(cells, test["variants"])
    order.sort(key=lambda c: test["variants"].index(c.variant))
    stats = [c.stat(metric) for c in order]
    rows = [[c.variant, str(s.n), num(s.mean), f"{num(s.lo)}–{num(s.hi)}" if s.n > 1 else "—"]
            for c, s in zip(order, stats, strict=True)]
    header = ["variant", "n", "mean", "95% CI"]
    if any(s.n < 2 for s in stats):
        return Outcome(NOT_RUN, rows, header)
    best = max(range(len(order)), key=lambda i: stats[i].mean)
    inner = list(range(1, len(order) - 1))
    if best in inner:
        ends = with_holm([paired(order[e].values(metric), order[best].values(metric)) for e in (0, len(order) - 1)])
        verdict = REPRODUCED if all(_direction(c) == 1 for c in ends) else INCONCLUSIVE
        note = (f"Best: {order[best].variant}; vs the ends: "
                + "; ".join(f"{order[e].variant} {fmt_delta(c)}, Holm p {_p(c)}"
                            for e, c in zip((0, len(order) - 1), ends, strict=True)) + ".")
    else:
        best_inner = max(inner, key=lambda i: stats[i].mean)
        c = with_holm([paired(order[best_inner].values(metric), order[best].values(metric))])[0]
        verdict = NOT_REPRODUCED if _direction(c) == 1 else INCONCLUSIVE
        note = (f"Best: {order[best].variant} (an end); vs the best inner one ({order[best_inner].variant}): "
                f"{fmt_delta(c)}, Holm p {_p(c)}.")
    return Outcome(verdict, rows, header, note)


def interaction(test: dict[str, Any], cells: dict[tuple[str, str], Cell], metric: str) -> Outcome:
    (s_from, s_to), (l_from, l_to) = test["small"], test["large"]
    m = next(iter(cells))[1]
    v = {n: _cell(cells, n, m).values(metric) for n in (s_from, s_to, l_from, l_to)}
    d_small = {s: v[s_to][s] - v[s_from][s] for s in set(v[s_from]) & set(v[s_to])}
    d_large = {s: v[l_to][s] - v[l_from][s] for s in set(v[l_from]) & set(v[l_to])}
    small, large, inter = with_holm([paired(v[s_from], v[s_to]), paired(v[l_from], v[l_to]),
                                     paired(d_large, d_small)])
    rows = [[f"{s_to} vs {s_from}", str(small.n), fmt_delta(small), _p(small)],
            [f"{l_to} vs {l_from}", str(large.n), fmt_delta(large), _p(large)],
            ["difference of the two changes (small - large)", str(inter.n), fmt_delta(inter), _p(inter)]]
    header = ["comparison", "n", "Δ (95% CI)", "Holm p"]
    if min(small.n, inter.n) < 2:
        return Outcome(NOT_RUN, rows, header)
    if _direction(small) == -1 and _direction(inter) == -1:
        verdict = REPRODUCED
    elif _direction(small) == 1:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return Outcome(verdict, rows, header)


def claim_variants(test: dict[str, Any]) -> set[str]:
    """The variants a claim's test reads (a study may hold more, for other claims)."""
    names = {test.get("baseline"), *(test.get("variants") or []), *(test.get("small") or []),
             *(test.get("large") or [])}
    names.update(v for pair in test.get("pairs") or [] for v in pair)
    return {str(n) for n in names if n is not None}


def evaluate_claim(claim: dict[str, Any], cells: dict[tuple[str, str], Cell], data: dict[str, Any]) -> Outcome:
    test, metric = claim["test"], data.get("metric", "knn_top1")
    kind = test["kind"]
    if kind == "gain":
        return gain(test, cells, metric)
    if kind == "equivalent":
        return equivalent(test, cells, metric)
    if kind == "collapse":
        return collapse(test, cells, float(data.get("collapse_entropy", 0.1)))
    if kind == "inverse_u":
        return inverse_u(test, cells, metric)
    return interaction(test, cells, metric)


# -- the report -----------------------------------------------------------------------------------------
def _last(cell: Cell, key: str) -> Stat:
    vals = []
    for rows in cell.epochs.values():
        xs = [r[key] for r in rows if r.get(key) is not None]
        if xs:
            vals.append(xs[-1])
    return t_interval(vals)


def _ci(s: Stat) -> str:
    if s.n == 0:
        return "—"
    if s.n == 1:
        return f"{s.mean:.1f} (n=1)"
    return f"{s.mean:.1f} ({s.lo:.1f}–{s.hi:.1f})"


def numbers_table(cells: dict[tuple[str, str], Cell]) -> str:
    multi = len({m for _, m in cells}) > 1
    rows = []
    for c in cells.values():
        ent, used, loss = _last(c, "assign_entropy"), _last(c, "prototypes_used"), _last(c, "loss")
        rows.append([(f"{display(c.method)}, " if multi else "") + c.variant, f"{len(c.summaries)} of {len(c.seeds)}",
                     _ci(c.stat("knn_top1")), _ci(c.stat("linear.top1")), num(loss.mean, 3),
                     num(ent.mean, 2), num(used.mean, 0)])
    return markdown_table(["configuration", "n (runs of seeds)", "kNN top-1 (95% CI)", "linear top-1 (95% CI)",
                           "final loss", "final assignment entropy", "prototypes in use"], rows)


def claim_section(claim: dict[str, Any], data: dict[str, Any], ref: Path, figures: Path | None) -> tuple[str, str]:
    common = [str(x) for x in data.get("common") or []]
    cells = load_cells(claim["study"], common, ref)
    out = evaluate_claim(claim, cells, data)
    used = [c for c in cells.values() if c.variant in claim_variants(claim["test"])]
    missing = sum(len(c.missing) for c in used)
    planned = sum(len(c.seeds) for c in used)
    verdict = out.verdict if not missing or out.verdict == NOT_RUN else (
        f"{out.verdict} so far: {missing} of {planned} planned runs missing")
    lines = [f"## Claim {claim['id']}: {claim['title']}", "",
             f"**{claim['paper']}, {claim['where']}**: \"{claim['statement']}\"", "",
             f"Paper's numbers: {claim['paper_numbers']}.", "",
             f"Our command: `{study_command(claim['study'], common)}`", "",
             f"**Verdict: {verdict}.**" + (" The command trains the missing runs." if missing else ""), "",
             numbers_table(cells), markdown_table(out.header, out.rows)]
    if out.note:
        lines += [out.note, ""]
    lines += [f"Why the scale may matter: {claim['scale']}", ""]
    if any(c.summaries for c in cells.values()):  # the link does not depend on drawing (check=true draws nothing)
        if figures is not None:
            claim_figure(claim, cells, figures)
        lines += [f"![claim {claim['id']}]({FIGURES.relative_to(ROOT)}/claim_{claim['id']}.png)", ""]
    return "\n".join(lines), verdict


def claim_figure(claim: dict[str, Any], cells: dict[tuple[str, str], Cell], out_dir: Path) -> Path | None:
    """kNN top-1 per configuration (mean and 95% CI, every seed a dot); with ``curves``: the training loss, the
    assignment entropy and the prototypes in use per epoch (mean over seeds), where collapse and convergence
    are the claim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ssl_bench.report import THEME, colour

    sns.set_theme(**THEME)

    done = [c for c in cells.values() if c.summaries]
    if not done:
        return None
    curves = bool(claim.get("curves"))
    fig, axes = plt.subplots(1, 4 if curves else 1, figsize=(18 if curves else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    multi = len({c.method for c in done}) > 1
    names = [(f"{display(c.method)}, " if multi else "") + c.variant for c in done]
    for i, c in enumerate(done):
        vals = list(c.values("knn_top1").values())
        s = t_interval(vals)
        ax.scatter(vals, [i] * len(vals), s=12, color=colour(c.method), alpha=0.5)
        if s.n >= 2:
            ax.errorbar(s.mean, i, xerr=[[s.mean - s.lo], [s.hi - s.mean]], fmt="o", color=colour(c.method),
                        capsize=3)
    rand = t_interval(v for c in done for v in c.values("random_knn_top1").values())
    if rand.n:  # the floor: a collapsed backbone scores about what a random one does
        ax.axvline(rand.mean, color="grey", ls=":", lw=1)
        ax.annotate("random init", (rand.mean, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="grey",
                    ha="left", va="bottom")
    ax.set_yticks(range(len(done)), names)
    ax.invert_yaxis()
    ax.set_xlabel("kNN top-1 accuracy (%), mean and 95% CI")
    if curves:
        styles = ["-", "--", ":", "-."]
        for key, a, label in (("loss", axes[0][1], "training loss"),
                              ("assign_entropy", axes[0][2], "assignment entropy (1 = uniform)"),
                              ("prototypes_used", axes[0][3], "prototypes in use")):
            for i, c in enumerate(done):
                per_epoch: dict[int, list[float]] = {}
                for rows in c.epochs.values():
                    for r in rows:
                        if r.get(key) is not None:
                            per_epoch.setdefault(int(r["epoch"]) + 1, []).append(float(r[key]))
                if per_epoch:
                    xs = sorted(per_epoch)
                    a.plot(xs, [sum(per_epoch[x]) / len(per_epoch[x]) for x in xs], styles[i % len(styles)],
                           marker="o", ms=3, label=names[i])
            a.set_xlabel("epoch")
            a.set_ylabel(f"{label}, mean over seeds")
        axes[0][3].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"claim_{claim['id']}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def write(out: Path, ref: Path = REFERENCE_DIR, figures: Path | None = None, data: dict | None = None) -> str:
    """Write the claims report to ``out`` (and figures to ``figures``); returns its text."""
    data = data or read_claims()
    sections, verdicts = [], []
    for claim in data.get("claims") or []:
        text, verdict = claim_section(claim, data, ref, figures)
        sections.append(text)
        verdicts.append([str(claim["id"]), claim["paper"], claim["title"], verdict])
    head = ["# The papers' claims, tested at small scale", "",
            "Generated by `python -m ssl_bench.claims` from the shipped records in results/reference/runs (the "
            "claims, their studies and the verdict rules, fixed before the runs, are in experiments/claims.yaml). "
            "Demo budget on Fashion-MNIST: small convnet, 4096 pretraining images, batch 64, 10 epochs, crops "
            "2x28+4x14, AdamW; kNN top-1 (k=20) on frozen backbone features, 10000 train / 10000 test images. "
            "n is the number of seeds; intervals are 95% Student-t; comparisons are paired by seed with Holm's "
            "correction within a claim. \"Inconclusive\" means the intervals overlap: no significant difference.",
            "", markdown_table(["claim", "paper", "statement", "verdict"], verdicts)]
    text = "\n".join(head + sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


OUT = ROOT / "results" / "claims.md"
FIGURES = REFERENCE_DIR / "figures" / "claims"
COMMAND = Command(
    "ssl_bench.claims", __doc__.split("\n\nThe claims")[0],
    (Key("check", "bool", False, "regenerate into a temporary file and compare with results/claims.md; exit 1 if "
         "it differs"),
     Key("out", "str", None, "where to write the report (null: results/claims.md)"),
     Key("figures", "bool", True, "also draw one figure per claim (results/reference/figures/claims/)")),
    footer=__doc__.split("\n\n", 2)[2])


def check() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        new = write(Path(tmp) / "claims.md")
    return OUT.exists() and OUT.read_text() == new


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    own, _, _ = COMMAND.parse(argv)
    if own["check"]:
        same = check()
        print("results/claims.md: " + ("equal to the regenerated report" if same else "differs from the records; "
                                       "run python -m ssl_bench.claims"))
        return 0 if same else 1
    out = Path(own["out"]) if own["out"] else OUT
    write(out, figures=FIGURES if own["figures"] else None)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
