"""The Python API (notebooks, scripts): the command lines' overrides in, the records out.

    from ssl_bench import api
    summary = api.run(["method=swav", "budget=smoke"])            # dict: the run's summary.json (+ path)
    metrics = api.evaluate(summary["path"], eval="linear")          # dict: the metrics written
    table = api.compare(["budget=smoke"], methods=["swav", "simclr"])  # DataFrame: the comparison table
    runs = api.load("results")                                      # DataFrame: one row per finished run

Each function is its entry point without the process around it: the same overrides (Hydra's grammar), the same
validation, the same records on disk. Bad input raises :class:`ssl_bench.errors.ConfigError` (one-line message)
instead of exiting 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from ssl_bench.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved, validated run config of ``python -m ssl_bench.run <overrides>``."""
    from ssl_bench.config.compose import compose as _compose

    return _compose(list(overrides))


def run(overrides: Sequence[str] | DictConfig = ()) -> dict[str, Any]:
    """Train, evaluate and record one run (a finished one is reused); returns its summary, with ``path`` (the
    run folder) added."""
    from ssl_bench.analysis.against_reference import reference_lines
    from ssl_bench.config.overrides import writable_folder
    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records.io import find_run_dir

    cfg = overrides if isinstance(overrides, DictConfig) else compose(overrides)
    writable_folder(cfg.output_dir, "output_dir")
    summary = dict(run_experiment(cfg, beside=reference_lines))
    summary.setdefault("path", str(find_run_dir(cfg)))
    return summary


def evaluate(checkpoint: str | Path, eval: str | Sequence[str] | None = None,  # noqa: A002  (the CLI key)
             overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``python -m ssl_bench.evaluate checkpoint=... [eval=...] <overrides>``: returns the metrics written into the
    run's record (or <weights>.evaluation.json)."""
    from ssl_bench.evaluate import evaluate as _evaluate

    argv = [f"checkpoint={checkpoint}"]
    if eval is not None:
        argv.append(f"eval={eval if isinstance(eval, str) else '[' + ','.join(eval) + ']'}")
    return _evaluate([*argv, *overrides])


def compare(overrides: Sequence[str] = (), train: bool = True, **plan: Any) -> pd.DataFrame:
    """``python -m ssl_bench.compare <overrides>``: runs (or reuses) every run and returns the table (also written
    to <results>/compare/<name>/); ``train=False`` only tabulates the records that exist. Keywords are those of
    :func:`ssl_bench.analysis.compare.plan` and win over the same key in ``overrides``, e.g.
    ``api.compare(["budget=smoke"], methods=["swav", "simclr"], seeds=[0, 1], results="results")``."""
    from ssl_bench.analysis import compare as cmp

    args, given, cluster = cmp.split_arguments(list(overrides))
    train = given and train  # a train=false among the overrides wins too
    if cluster["cluster"] != "none":
        raise ConfigError("api.compare trains here: submit jobs with python -m ssl_bench.compare ... cluster=slurm")
    extra = list(plan.pop("overrides", []))
    return cmp.compare(cmp.plan(**{**args, **plan, "overrides": [*args["overrides"], *extra]}), train=train,
                       verbose=False)


def load(path: str | Path = "results", sweeps: bool = True) -> pd.DataFrame:
    """Every finished run at or under ``path`` as a DataFrame (ssl_bench.records.io.load); a single run folder too."""
    from ssl_bench.records.io import load as _load

    return _load(path, sweeps=sweeps)


def load_run(path: str | Path) -> dict[str, Any]:
    """One run's record: its summary.json as a dict."""
    from ssl_bench.records.io import read_summary

    return read_summary(Path(path))


__all__ = ["compare", "compose", "evaluate", "load", "load_run", "run"]
