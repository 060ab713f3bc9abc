"""Result records: one folder per run under results/runs/<run_id>/.

    config.yaml      the resolved config
    metrics.jsonl    one JSON line per finished epoch
    summary.json     method, dataset, budget, seed, epochs, metrics.*, cost.*, versions (written last)

Every file is written to a temporary name and renamed, so a reader never sees half a file and a crash
never loses what was already written. ``load(path)`` returns every finished run as one DataFrame.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def write_metrics(run_dir: str | Path, rows: list[dict]) -> None:
    write_atomic(Path(run_dir) / "metrics.jsonl",
                 "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in rows))


def _runs(path: Path) -> list[Path]:
    if (path / "summary.json").exists():
        return [path]
    return sorted(p.parent for p in path.rglob("summary.json"))


def load(path: str | Path = "results") -> pd.DataFrame:
    """All finished runs under ``path`` (a results folder, a runs folder or one run) as one DataFrame,
    one row per run, nested keys flattened with dots (``metrics.knn_top1``, ``cost.wall_s``)."""
    rows = []
    for run in _runs(Path(path)):
        rec = read_json(run / "summary.json")
        rec["path"] = str(run)
        rows.append(rec)
    if not rows:
        return pd.DataFrame()
    return pd.json_normalize(rows, sep=".")


def load_epochs(path: str | Path = "results") -> pd.DataFrame:
    """Per-epoch metrics of every run, with the run's id, method, dataset, budget and seed on each row."""
    frames = []
    for run in _runs(Path(path)):
        rec = read_json(run / "summary.json")
        df = pd.json_normalize(read_metrics(run), sep=".")
        for key in ("run_id", "method", "dataset", "budget", "seed"):
            df[key] = rec.get(key)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
