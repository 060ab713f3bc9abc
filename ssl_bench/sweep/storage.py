"""Where a study lives: Optuna storages from a URL, opening or continuing a study, planning a grid's trials."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import optuna

from ssl_bench.config import ConfigError
from ssl_bench.sweep.spec import DEFAULT_N_TRIALS, Sweep, make_pruner, make_sampler

META = "ssl_bench"  # study user attribute holding what the study is (for continuation checks and reports)
# Failures that may say nothing about the parameters (a killed worker, Ctrl-C, a crash, out of memory): a grid
# trains such a cell again when the command is run again. NaN losses, collapses and invalid points are results.
RETRYABLE = (None, "interrupted", "crash", "oom")



def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: an RDB URL (SQLite, PostgreSQL, MySQL) or journal:///path/file.log."""
    try:
        if url.startswith("journal:"):
            path = url[len("journal:"):]
            path = path[2:] if path.startswith("//") else path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(path))
        if "://" not in url:
            raise ConfigError(f"storage={url}: expected an Optuna storage URL: sqlite:///file.db, "
                              f"postgresql://user:pass@host/db, mysql+pymysql://user:pass@host/db or "
                              f"journal:///path/file.log")
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 120}}  # several local workers write to one file
        # Heartbeats: the trials of a worker that died are marked failed (and retried) by the next worker.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=60,
                                              grace_period=180)
    except ConfigError:
        raise
    except Exception as exc:  # missing driver, unreachable server, bad URL
        raise ConfigError(f"storage={url}: cannot open it: {type(exc).__name__}: "
                          f"{(str(exc).strip().splitlines() or [''])[0]}") from None


def open_study(sw: Sweep) -> optuna.Study:
    """Create the study or continue it; refuse to continue one made for another base config or objective."""
    study = optuna.create_study(study_name=sw.study, storage=make_storage(sw.storage),
                                sampler=make_sampler(sw.sampler, sw.params), pruner=make_pruner(sw.pruner),
                                direction=sw.direction, load_if_exists=True)
    meta = study.user_attrs.get(META)
    if meta is None:
        study.set_user_attr(META, sw.meta)
        return study
    for key in ("base", "objective", "direction"):
        if meta.get(key) != sw.meta[key]:
            raise ConfigError(f"study '{sw.study}' was made with {key} {meta.get(key)}, this command has "
                              f"{sw.meta[key]}: use the same settings or another study=<name>")
    if meta != sw.meta:
        study.set_user_attr(META, sw.meta)  # e.g. a changed search space or plot_params
    return study


def _cell(t: optuna.trial.FrozenTrial, names: list[str]) -> tuple | None:
    params = t.params or t.system_attrs.get("fixed_params") or {}
    return tuple(params[n] for n in names) if all(n in params for n in names) else None


def plan_trials(study: optuna.Study, sw: Sweep) -> int:
    """How many trials to run now. A grid: each cell without a finished trial and not already queued or running
    is queued (cells whose trials only failed for a RETRYABLE reason count as not finished); the default is
    the number of queued cells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials of dead workers (no heartbeat) -> failed
    if sw.sampler["type"] != "grid":
        return sw.n_trials if sw.n_trials is not None else DEFAULT_N_TRIALS
    names = list(sw.params)
    done, busy, waiting = set(), set(), 0
    States = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False):
        cell = _cell(t, names)
        if cell is None:
            continue
        if t.state in (States.WAITING, States.RUNNING):
            busy.add(cell)
            waiting += t.state == States.WAITING
        elif not (t.state == States.FAIL and t.user_attrs.get("fail_kind") in RETRYABLE):
            done.add(cell)
    todo = [c for c in itertools.product(*(sw.params[n].choices for n in names)) if c not in done | busy]
    for cell in todo:
        study.enqueue_trial(dict(zip(names, cell, strict=True)))
    return sw.n_trials if sw.n_trials is not None else waiting + len(todo)

