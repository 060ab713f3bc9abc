"""A claim's plan: experiments/claims.yaml read and checked, one claim's settings (the variants its test reads,
its primary metric, its margin, its command) and its cells (:func:`load_cells`): the planned runs of its study
(ssl_bench.analysis.compare's plan, at given seeds) with the records that exist, a stale record refusing its
cell. Reads records and writes nothing; imports configuration, records, ssl_bench.analysis.cells and .report,
and ssl_bench.analysis.compare (lazily, for the plan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ssl_bench.analysis import cells as cells_mod
from ssl_bench.analysis.report import DEFAULT_MARGIN, Stat, t_interval
from ssl_bench.config.compose import ConfigError
from ssl_bench.config.searchpath import EXPERIMENTS_DIR
from ssl_bench.records.io import REFERENCE_DIR, dig, read_metrics, read_summary, readable

ROOT = REFERENCE_DIR.parent.parent  # the checkout: records are named relative to it, claims.md is its results/claims.md
KINDS = ("gain", "equivalent", "collapse", "inverse_u", "interaction")
MARGIN_KINDS = ("gain", "equivalent", "inverse_u", "interaction")  # the kinds decided against an equivalence margin
# A claim's verdict words: scoped to the scale that was run (the scale is printed with each claim).
REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced at this scale", "not reproduced at this scale", "not run yet"
DIRECTION, UNDERPOWERED_HERE = "direction only at this scale", "underpowered at this scale"
# The verdict's metric keys (of the record's metrics) and their names; a claim's primary metric is its paper's protocol.
METRICS = {"knn_top1": "kNN top-1", "linear.top1": "linear top-1"}


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
        check_margin(c, data, path)
    return data


def paper_effect(claim: dict[str, Any]) -> tuple[float, float] | None:
    """The paper's effect in points of the claim's metric, as (low, high) (one number: low = high), signed as the
    claim's comparisons are (variant - baseline; for an interaction, the small setting's change minus the large
    one's; for an equivalence claim, the smallest difference the paper treats as an effect); None when the paper
    gives no number."""
    v = claim.get("paper_effect")
    if v is None:
        return None
    lo, hi = sorted(float(x) for x in (v if isinstance(v, list | tuple) else [v, v]))
    return lo, hi


def effect_text(effect: tuple[float, float] | None) -> str:
    """'-0.6', '+2 to +4', or 'no number'."""
    if effect is None:
        return "no number"
    lo, hi = effect
    return f"{lo:+g}" if lo == hi else f"{lo:+g} to {hi:+g}"


def check_margin(claim: dict[str, Any], data: dict[str, Any], path: Path | str = "claims.yaml") -> None:
    """A claim decided against a margin states the paper's effect (``paper_effect``: a number, [low, high], or null
    with ``paper_effect_why``), and its margin is smaller than that effect: else "equivalent within ±margin" could
    not contradict the paper. One-line ConfigError naming the claim."""
    if claim["test"].get("kind") not in MARGIN_KINDS:
        return
    where = f"{path}: claim {claim.get('id')}"
    if "paper_effect" not in claim:
        raise ConfigError(f"{where}: no paper_effect (the paper's effect in points: a number, [low, high], or null "
                          "with paper_effect_why)")
    effect = paper_effect(claim)
    if effect is None:
        if not claim.get("paper_effect_why"):
            raise ConfigError(f"{where}: paper_effect is null; say why in paper_effect_why")
        return
    lo, hi = effect
    size = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
    margin = margin_of(claim, data)
    if not margin < size:
        raise ConfigError(f"{where}: the equivalence margin ±{margin:g} is not smaller than the paper's effect "
                          f"({effect_text(effect)} points), so 'equivalent' could not contradict the paper; "
                          f"use a margin below {size:g}")


def scale_of(cells: list[Cell]) -> str:
    """The scale the cells' records ran at, from their configs: dataset, image resolution, epochs, backbone and
    pretraining images ('fashion_mnist, 28x28 images, 10 epochs, small_cnn backbone (width 32), 4096 pretraining
    images'); several values of one are joined with ' / '; '' without records."""
    seen: dict[str, list[str]] = {k: [] for k in ("dataset", "size", "epochs", "backbone", "images")}
    for c in cells:
        for s, d in sorted(c.run_dirs.items()):
            cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").exists() else {}
            summary = c.summaries.get(s, {})
            size = dig(cfg, "dataset.image_size")
            width = dig(cfg, "backbone.width")
            for key, value in (("dataset", dig(cfg, "dataset.name") or summary.get("dataset")),
                               ("size", f"{size}x{size} images" if size else None),
                               ("epochs", f"{summary.get('epochs', dig(cfg, 'train.epochs'))} epochs"),
                               ("backbone", f"{dig(cfg, 'backbone.name') or summary.get('backbone')} backbone"
                                + (f" (width {width})" if width else "")),
                               ("images", f"{dig(cfg, 'data.train_subset')} pretraining images"
                                if dig(cfg, "data.train_subset") else "the full pretraining split")):
                if value is not None and str(value) not in seen[key]:
                    seen[key].append(str(value))
    return ", ".join(" / ".join(v) for v in seen.values() if v)


@dataclass
class Cell:
    """One configuration of a study (variant x method): its records by seed."""

    variant: str
    method: str
    seeds: list[int]
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)
    epochs: dict[int, list[dict]] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # stale records (ssl_bench.analysis.cells): the cell is left out

    def values(self, metric: str) -> dict[int, float]:
        out = {}
        for s, summary in self.summaries.items():
            v = dig(summary.get("metrics", {}), metric)
            if v is not None:
                out[s] = float(v)
        return out

    def stat(self, metric: str) -> Stat:
        return t_interval(self.values(metric).values())

    @property
    def missing(self) -> list[int]:
        return [s for s in self.seeds if s not in self.summaries]


def study_command(study: str, common: list[str], seeds: list[int] | None = None) -> str:
    # Runs go beside the other reference records; the compare tables to the user's results/compare (the
    # claims report is the shipped table).
    seeds_arg = f" seeds=[{','.join(map(str, seeds))}]" if seeds else ""
    return (f"python -m ssl_bench.compare study={study} {' '.join(common)}{seeds_arg} "
            f"output_dir=results/reference/runs")


def load_cells(study: str, common: list[str], ref: Path = REFERENCE_DIR, seeds: list[int] | None = None
               ) -> dict[tuple[str, str], Cell]:
    """Every (variant, method) of the study with the records that exist (relative to the checkout); each is one
    cell (ssl_bench.analysis.cells): a record today's code does not reproduce is left out and named in ``refused``."""
    from ssl_bench.analysis import compare as cmp

    rel = ref.relative_to(ROOT) if ref.is_relative_to(ROOT) else ref
    plan = cmp.plan(study=study, overrides=common, seeds=seeds or None, results=rel)
    dirs = [ROOT / r.run_dir if not r.run_dir.is_absolute() else r.run_dir for r in plan.runs]
    stale = cells_mod.stale_of(pd.Series([str(d) for d in dirs]))
    out: dict[tuple[str, str], Cell] = {}
    for r, d, why in zip(plan.runs, dirs, stale, strict=True):
        cell = out.setdefault((r.variant, r.method), Cell(r.variant, r.method, []))
        cell.seeds.append(r.seed)
        if why:
            cell.refused.append(d.name)
        elif (d / "summary.json").exists() and readable(d):  # a damaged record: a warning, and not run yet
            cell.summaries[r.seed] = read_summary(d)
            cell.epochs[r.seed] = read_metrics(d)
            cell.run_dirs[r.seed] = d
    for cell in out.values():  # a cell with a stale record is refused whole: its seeds would mix two programs
        if cell.refused:
            cell.summaries, cell.epochs, cell.run_dirs = {}, {}, {}
    return out


def claim_variants(test: dict[str, Any]) -> set[str]:
    """The variants a claim's test reads (a study may hold more, for other claims)."""
    names = {test.get("baseline"), *(test.get("variants") or []), *(test.get("small") or []),
             *(test.get("large") or [])}
    names.update(v for pair in test.get("pairs") or [] for v in pair)
    return {str(n) for n in names if n is not None}


def primary_metric(claim: dict[str, Any], data: dict[str, Any]) -> str:
    """The claim's primary metric: its own ``metric`` (the paper's protocol), else the file's."""
    metric = str(claim.get("metric") or data.get("metric", "knn_top1"))
    if metric not in METRICS:
        raise ConfigError(f"claims.yaml: claim {claim.get('id')}: metric '{metric}'; valid: {', '.join(METRICS)}")
    return metric


def margin_of(claim: dict[str, Any], data: dict[str, Any]) -> float:
    return float(claim.get("margin", claim["test"].get("margin", data.get("margin", DEFAULT_MARGIN))))
