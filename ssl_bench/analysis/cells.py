"""Cells: the one place where runs are grouped. Every table, figure, claim and sweep report pools runs as seeds only
through this module.

A *cell* is one configuration (runs equal in everything but the seed: ``configuration_id``, ssl_bench.records.identity)
trained by one program. The program is checked, not assumed: a record whose first epoch today's code no longer
reproduces is *stale* (``python -m ssl_bench.reference verify`` writes the ledger ``verification.json`` beside the
``runs/`` folder, ssl_bench.analysis.verify), and a cell holding a stale run is *refused*: tables and figures leave it
out
and say so in one line naming the runs, instead of pooling seeds of two programs. Runs without a ledger (your own
results) are pooled by configuration; their commits are kept (``commit``) so a table can say when they differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.errors import ConfigError
from ssl_bench.records.io import read_json
from ssl_bench.records.layout import ResultsLayout

STALE_STATES = ("stale", "config changed")


def _ledger_stale(runs_dir: Path) -> dict[str, str]:
    p = ResultsLayout.of_runs(runs_dir).ledger
    if not p.exists():
        return {}
    records = read_json(p).get("records", {})
    return {name: e.get("why", "") for name, e in records.items() if e.get("status") in STALE_STATES}


def stale_of(paths: pd.Series) -> pd.Series:
    """For each run folder, why its record is stale ("" when it is not, or was never verified)."""
    ledgers: dict[Path, dict[str, str]] = {}
    out = []
    for p in paths:
        p = Path(p)
        ledger = ledgers.setdefault(p.parent, _ledger_stale(p.parent))
        out.append(ledger.get(p.name, ""))
    return pd.Series(out, index=paths.index, dtype=object)


def assign(df: pd.DataFrame) -> pd.DataFrame:
    """Add the cell columns to one row per run (needs ``configuration_id`` and ``path``; ``seed``, ``method``,
    ``configuration`` label and ``versions.git`` when present): ``cell`` (its key: the configuration id),
    ``cell_label`` (the configuration's label, made unique with the id where two cells share one), ``stale`` (why the
    record is stale, else ""), ``commit``."""
    df = df.copy()
    df["cell"] = df["configuration_id"].astype(str)
    labels = df["configuration"] if "configuration" in df else df["cell"]
    per_label = pd.DataFrame({"label": labels, "cell": df["cell"]}).drop_duplicates()
    shared = set(per_label["label"][per_label["label"].duplicated(keep=False)])
    df["cell_label"] = [f"{lab} [{c}]" if lab in shared else lab for lab, c in zip(labels, df["cell"], strict=True)]
    df["stale"] = stale_of(df["path"]) if "path" in df else ""
    df["commit"] = df["versions.git"].fillna("?").astype(str) if "versions.git" in df else "?"
    return df


def split(df: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(cell key, its runs) in order of first appearance. Two runs of one seed in a cell are a ConfigError."""
    if "cell" not in df:
        df = assign(df)
    for key, g in df.groupby("cell", sort=False):
        if "seed" in g and g["seed"].duplicated().any():
            dup = g[g["seed"].duplicated(keep=False)]
            raise ConfigError(f"cell {key} holds two runs of seed {int(dup['seed'].iloc[0])}: "
                              f"{', '.join(Path(p).name for p in dup['path'])}")
        yield str(key), g


def refused(df: pd.DataFrame) -> list[str]:
    """One line per cell that holds a stale run, naming the runs."""
    if "cell" not in df:
        df = assign(df)
    lines = []
    for key, g in split(df):
        bad = g[g["stale"] != ""]
        if len(bad):
            lines.append(f"refused: cell '{g['cell_label'].iloc[0]}' ({key}): today's code does not reproduce "
                         f"{', '.join(Path(p).name for p in bad['path'])} (python -m ssl_bench.reference verify; "
                         f"retrain them)")
    return lines


def usable(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs of the cells that are not refused, and the refusal lines."""
    if "cell" not in df:
        df = assign(df)
    lines = refused(df)
    bad = {k for k, g in df.groupby("cell") if (g["stale"] != "").any()}
    return df[~df["cell"].isin(bad)], lines


def per_seed(g: pd.DataFrame, col: str) -> dict[int, float]:
    """A cell's values of ``col`` by seed (missing values left out)."""
    if col not in g:
        return {}
    return {int(s): float(v) for s, v in zip(g["seed"], g[col], strict=True) if pd.notna(v)}


def _without(diffs: Any, key: str) -> str:
    return json.dumps({k: v for k, v in dict(diffs).items() if k != key}, sort_keys=True, default=str)


def varying(df: pd.DataFrame, key: str, value: Any = None) -> list[pd.DataFrame]:
    """Sets of cells that are equal but for ``key`` (and the method, each at its budget as defined otherwise), with
    at least two values of it: a figure "accuracy vs <key>" draws one set, one point per (method, value), and each
    point is exactly one cell. Needs ``differences`` (keys that differ from the budget as defined), ``budget`` and
    ``dataset``; ``value`` maps a row's config to the plotted value (default: the key's value)."""
    if "cell" not in df:
        df = assign(df)
    sig = [f"{b}|{d}|{_without(x, key)}" for b, d, x in zip(df["budget"], df["dataset"], df["differences"],
                                                            strict=True)]
    vals = [json.dumps(dict(x).get(key), default=str) for x in df["differences"]]
    df = df.assign(_sig=sig, _val=vals)
    out = []
    for _, s in df.groupby("_sig", sort=False):
        if s["_val"].nunique() > 1:
            # By construction one cell per (method, value): the method, budget, dataset and differences fix it.
            assert (s.groupby(["method", "_val"])["cell"].nunique() == 1).all(), "a point would pool two cells"
            out.append(s.drop(columns=["_sig", "_val"]))
    return out


def trial_cells(trials: pd.DataFrame) -> pd.Series:
    """The configuration of each sweep trial (the sweep fixes everything else): the values of all its parameters
    (``params.*`` columns), so a heatmap square that holds several configurations can say so."""
    cols = sorted(c for c in trials.columns if c.startswith("params."))
    return trials[cols].astype(str).agg("|".join, axis=1) if cols else pd.Series("", index=trials.index)
