"""Entry point for hyperparameter studies on Optuna; every trial is an ordinary run with its own record.

    python -m ssl_bench.sweep sweep=<name> method=swav dataset=<name> budget=<name> [study=<name>] \\
        [n_trials=N] [key=value ...]
    accelerate launch -m ssl_bench.sweep ...    each trial on several processes (only the main one talks to the study)

Pruning reports each epoch's online kNN (monitor_knn_top1) to Optuna. A trial that diverges (NaN loss),
collapses (every image on one prototype), runs out of memory or crashes is recorded as failed with its reason
(user attributes `fail_kind` and `reason`) and the study goes on; an interrupted one (Ctrl-C, SIGTERM) stops the
sweep. Running the same command again continues the study; in a grid, cells that were interrupted, crashed or ran
out of memory are trained again (resumed from their checkpoint).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import logging
import math
import os
import re
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import open_dict

from ssl_bench.cli import guarded
from ssl_bench.config import GROUPS, NON_CONFIGURATION_KEYS, ConfigError, ConfigGroupDir, compose
from ssl_bench.errors import DataNotFound, TrainingStopped
from ssl_bench.experiment import run_experiment
from ssl_bench.overrides import Command, Key, help_requested
from ssl_bench.results import find_run_dir

SWEEP_DIR = ConfigGroupDir("sweep")  # experiments/sweep and the user's config folders
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "percentile", "none")
# Own keys; a null default falls back on the sweep file's setting, then on the one named in the help.
COMMAND = Command(
    "ssl_bench.sweep", __doc__.split("\n\nPruning")[0],
    (Key("sweep", "str", None, "required: experiments/sweep/<name>.yaml (or a .yaml path): search space, defaults"),
     Key("study", "str", None, "the Optuna study (null: <sweep>-<method>-<dataset>-<budget>[-extras]); the same "
         "study continues where it stopped"),
     Key("n_trials", "int", None, "trials to run now (null: the sweep's; a grid: its cells not yet done); 0 only "
         "reports (with study= and no sweep=: from the study alone)"),
     Key("sampler", "str", None, "null: the sweep's, else tpe; sampler.<arg>=value passes an argument", SAMPLERS),
     Key("pruner", "str", None, "null: the sweep's, else median; pruner.<arg>=value passes an argument", PRUNERS),
     Key("objective", "str", None, "the record's metric to optimise (null: the sweep's, else knn_top1): a key of "
         "metrics, a dotted path (linear.top1, cost.wall_s); linear needs eval.protocols=[knn,linear]"),
     Key("direction", "str", None, "null: the sweep's, else maximize", ("maximize", "minimize")),
     Key("storage", "str", None, "any Optuna storage URL, or journal:///path/f.log (null: "
         "sqlite:///<results>/sweeps/<study>.db)"),
     Key("n_jobs", "int", None, "worker processes on this machine sharing the storage (null: 1)"),
     Key("timeout", "float", None, "start no new trial after this many seconds"),
     Key("plot_params", "list[str]", None, "the two parameters of the heatmap (null: the first two)"),
     Key("results", "str", "results", "runs go to <results>/runs (unless output_dir=), the report to "
         "<results>/figures/<study>/"),
     Key("report", "bool", True, "at the end: best trial, table and figures")),
    overrides="Every other key=value is an ordinary run override, given to every trial (seed=, eval.seeds=, ...).",
    footer="Pruning" + __doc__.split("\n\nPruning", 1)[1])
OWN_KEYS = tuple(k.name for k in COMMAND.keys)
PARAM_TYPES = ("int", "float", "categorical")
SWEEP_FILE_KEYS = ("description", "overrides", "sampler", "pruner", "objective", "direction", "n_trials", "params",
                   "grid", "plot_params")
DEFAULT_N_TRIALS = 20
META = "ssl_bench"  # study user attribute holding what the study is (for continuation checks and reports)
# Failures that may say nothing about the parameters (a killed worker, Ctrl-C, a crash, out of memory): a grid
# trains such a cell again when the command is run again. NaN losses, collapses and invalid points are results.
RETRYABLE = (None, "interrupted", "crash", "oom")


class TrialFailed(Exception):
    """A trial without a usable result (NaN loss, collapse, out of memory, a crash); the study goes on."""


@dataclass
class Param:
    """One dimension of the search space."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list = field(default_factory=list)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, self.choices)

    def probes(self) -> list:
        """Values that must compose into a valid run config (the ends of a range, every choice)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def spec(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        return {"type": self.type, "low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass
class Sweep:
    """A parsed, validated sweep: search space, study settings and the base run overrides."""

    name: str
    params: dict[str, Param]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    objective: str
    direction: str
    n_trials: int | None
    n_jobs: int
    timeout: float | None
    study: str
    storage: str
    results: Path
    plot_params: list[str]
    report: bool
    base: list[str]
    meta: dict[str, Any]
    argv: list[str] = field(default_factory=list)

    @property
    def prunes(self) -> bool:
        return self.pruner["type"] != "none" and self.direction == "maximize"


# -- command line and sweep file ----------------------------------------------------------------------------------
def split_argv(argv: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]], list[str]]:
    """(own keys as typed, checked against their declared types; sampler./pruner. arguments; run overrides)."""
    args: dict[str, dict[str, str]] = {"sampler": {}, "pruner": {}}
    rest: list[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        head, _, sub = key.partition(".")
        if eq and head in args and sub:
            args[head][sub] = value
        else:
            rest.append(a)
    own, run = COMMAND.split(rest)
    return own, args, run


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _list(text: str) -> list[str]:
    return [s.strip().strip("'\"") for s in text.strip().strip("[]").split(",") if s.strip()]


def _int(key: str, text: Any, minimum: int) -> int:
    try:
        value = int(str(text))
    except ValueError:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got '{text}'") from None
    if value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value}")
    return value


def _bool(key: str, text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key} must be true or false, got '{text}'")


def _number(where: str, what: str, value: Any, integer: bool) -> float | int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {what} must be a number, got {value!r}") from None
    if integer:
        if not x.is_integer():
            raise ConfigError(f"{where}: {what} must be an integer for type int, got {value!r}")
        return int(x)
    return x


def parse_param(where: str, name: str, spec: Any) -> Param:
    """One entry of ``params``: {type: int|float, low, high, log, step} or {type: categorical, choices}."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {name} must be a mapping such as {{type: float, low: 0.01, high: 0.1, log: true}}"
                          f", got {spec!r}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}: {name}: unknown type {kind!r}; valid types: {', '.join(PARAM_TYPES)}")
    allowed = ("type", "choices") if kind == "categorical" else ("type", "low", "high", "log", "step")
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: {name}: unknown field(s) {', '.join(unknown)} for type {kind}; "
                          f"valid: {', '.join(allowed)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {name}: categorical needs a non-empty list of choices, got {choices!r}")
        bad = [c for c in choices if not (c is None or isinstance(c, str | int | float | bool))]
        if bad:
            raise ConfigError(f"{where}: {name}: choices must be numbers, strings or booleans, got {bad[0]!r}")
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: {name}: choices must be distinct, got {choices}")
        return Param(name, kind, choices=list(choices))
    if spec.get("low") is None or spec.get("high") is None:
        raise ConfigError(f"{where}: {name}: type {kind} needs low and high")
    integer = kind == "int"
    low = _number(where, f"{name}.low", spec["low"], integer)
    high = _number(where, f"{name}.high", spec["high"], integer)
    if not low < high:
        raise ConfigError(f"{where}: {name}: low ({low}) must be < high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {name}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: {name}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        step = _number(where, f"{name}.step", step, integer)
        if step <= 0 or log:
            raise ConfigError(f"{where}: {name}: step must be > 0 and cannot be combined with log, got {step}")
    return Param(name, kind, low, high, log, step)


def sweep_path(name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return SWEEP_DIR / f"{name}.yaml"


def sweep_options() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def read_sweep_file(name: str) -> dict[str, Any]:
    path = sweep_path(name)
    if not path.is_file():
        raise ConfigError(f"unknown sweep '{name}'; valid choices: {', '.join(sweep_options())} "
                          f"(experiments/sweep/<name>.yaml) or a path to a .yaml file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with params (or grid), sampler, pruner, objective")
    unknown = sorted(set(data) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SWEEP_FILE_KEYS)}")
    return data


def _kind_and_args(where: str, what: str, from_file: Any, cli_kind: str | None, cli_args: dict[str, str],
                   valid: tuple[str, ...], default: str) -> dict[str, Any]:
    """sampler/pruner: 'tpe' or {type: tpe, arg: value}; the command line's kind replaces the file's (and its
    arguments), the command line's arguments are added."""
    spec: dict[str, Any] = {"type": default}
    if isinstance(from_file, str):
        spec = {"type": from_file}
    elif isinstance(from_file, dict):
        spec = dict(from_file)
        spec.setdefault("type", default)
    elif from_file is not None:
        raise ConfigError(f"{where}: {what} must be a name or a mapping with a type, got {from_file!r}")
    if cli_kind is not None and cli_kind != spec["type"]:
        spec = {"type": cli_kind}
    spec.update({k: _scalar(v) for k, v in cli_args.items()})
    if spec["type"] not in valid:
        raise ConfigError(f"unknown {what} '{spec['type']}'; valid choices: {', '.join(valid)}")
    return spec


def make_sampler(spec: dict[str, Any], params: dict[str, Param]) -> optuna.samplers.BaseSampler:
    kind, args = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    try:
        if kind == "tpe":  # constant liar: parallel workers do not all pick the same point
            return optuna.samplers.TPESampler(**{"constant_liar": True, **args})
        # A grid's cells are queued as trials with fixed parameters (plan_trials), which workers pop atomically;
        # trials beyond the grid (an explicit n_trials) draw cells at random.
        return optuna.samplers.RandomSampler(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sampler={kind}: {str(exc).splitlines()[0]}") from None


def make_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    kind, args = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    try:
        if kind == "median":
            return optuna.pruners.MedianPruner(**args)
        if kind == "percentile":
            return optuna.pruners.PercentilePruner(**{"percentile": 25.0, **args})
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pruner={kind}: {str(exc).splitlines()[0]}") from None


def fmt_value(v: Any) -> str:
    """A parameter value as a Hydra override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return repr(v) if isinstance(v, float) else str(v)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _fingerprinted(overrides: list[str]) -> dict[str, str]:
    """The overrides that change what a run computes (last one wins), by key."""
    out = {}
    for o in overrides:
        k = _key(o)
        if k not in NON_CONFIGURATION_KEYS:
            out[k] = o.split("=", 1)[1]
    return out


def default_study_name(sweep: str, choices: Any, base: list[str]) -> str:
    """<sweep>-<method>-<dataset>-<budget>, plus the other result-changing overrides (or their hash if long)."""
    extra = [f"{k}={v}" for k, v in _fingerprinted(base).items() if k not in GROUPS]
    name = f"{Path(sweep).stem}-{choices.method}-{choices.dataset}-{choices.budget}"
    if extra:
        tail = "_".join(extra)
        name += "-" + (tail if len(tail) <= 40 else hashlib.sha256(tail.encode()).hexdigest()[:8])
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", name)


def default_storage(results: Path, study: str) -> str:
    return f"sqlite:///{(results / 'sweeps' / f'{safe_name(study)}.db').resolve()}"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", name)


def check_space(where: str, base: list[str], params: dict[str, Param]) -> None:
    """Every value of the space (ends of ranges, every choice) must compose into a valid run config. Composed a
    few points at a time (composing is slow); a failing point is retried one parameter at a time to name it."""
    probes = {n: p.probes() for n, p in params.items()}
    for i in range(max(len(v) for v in probes.values())):
        point = {n: v[i % len(v)] for n, v in probes.items()}
        try:
            compose([*base, *(f"{n}={fmt_value(v)}" for n, v in point.items())])
        except ConfigError as exc:
            for n, v in point.items():
                try:
                    compose([*base, f"{n}={fmt_value(v)}"])
                except ConfigError as one:
                    raise ConfigError(f"{where}: {n}={fmt_value(v)} is not a valid run setting: {one}") from None
            raise ConfigError(f"{where}: the point {point} is not a valid run config: {exc}") from None


def parse(argv: list[str]) -> Sweep:
    """Read the command line and the sweep file and validate everything (the search space against the run
    config schema, sampler, pruner); nothing is trained or written. Anything wrong raises ConfigError."""
    own, args, run = split_argv(argv)
    if "sweep" not in own:
        raise ConfigError(f"sweep=<name> is required; valid choices: {', '.join(sweep_options())}")
    name = own["sweep"]
    data = read_sweep_file(name)
    where = f"sweep {name}"
    params: dict[str, Param] = {}
    raw_params = data.get("params") or {}
    raw_grid = data.get("grid") or {}
    if not isinstance(raw_params, dict) or not isinstance(raw_grid, dict):
        raise ConfigError(f"{where}: params and grid must be mappings of config key to a spec (params) or a list "
                          f"of values (grid)")
    for key, spec in raw_params.items():
        params[str(key)] = parse_param(where, str(key), spec)
    for key, values in raw_grid.items():
        if str(key) in params:
            raise ConfigError(f"{where}: {key} is in both params and grid")
        params[str(key)] = parse_param(where, str(key), {"type": "categorical", "choices": values})
    if not params:
        raise ConfigError(f"{where}: the search space is empty: give params (or grid for sampler grid)")
    sampler = _kind_and_args(where, "sampler", data.get("sampler"), own.get("sampler"), args["sampler"],
                             SAMPLERS, "tpe")
    pruner = _kind_and_args(where, "pruner", data.get("pruner"), own.get("pruner"), args["pruner"], PRUNERS, "median")
    if sampler["type"] == "grid":
        ranges = [n for n, p in params.items() if p.type != "categorical"]
        if ranges:
            raise ConfigError(f"{where}: sampler=grid needs a list of values for every parameter; {ranges[0]} is a "
                              f"{params[ranges[0]].type} range (put it under grid: with its values)")
    make_sampler(sampler, params)
    make_pruner(pruner)
    objective = str(own.get("objective", data.get("objective", "knn_top1")))
    direction = str(own.get("direction", data.get("direction", "maximize")))
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be maximize or minimize, got '{direction}'")
    n_trials = own.get("n_trials", data.get("n_trials"))
    n_trials = None if n_trials is None else _int("n_trials", n_trials, 0)
    n_jobs = _int("n_jobs", own.get("n_jobs", 1), 1)
    timeout = own.get("timeout")
    if timeout is not None:
        try:
            timeout = float(timeout)
        except ValueError:
            raise ConfigError(f"timeout must be a number of seconds, got '{timeout}'") from None
    plot = own.get("plot_params")
    plot_params = _list(plot) if plot is not None else [str(p) for p in data.get("plot_params") or list(params)[:2]]
    unknown = [p for p in plot_params if p not in params]
    if unknown or len(plot_params) > 2 or len(set(plot_params)) != len(plot_params):
        raise ConfigError(f"plot_params must name up to two distinct swept parameters ({', '.join(params)}), "
                          f"got {plot_params}")
    report = _bool("report", own.get("report", "true"))
    if n_jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("n_jobs > 1 cannot be combined with accelerate launch (each trial already uses every "
                          "process); run several sweep commands against the same storage instead")

    # The base run overrides: the sweep file's defaults, then the command line's (later ones win).
    file_overrides = data.get("overrides") or []
    if not isinstance(file_overrides, list):
        raise ConfigError(f"{where}: overrides must be a list of key=value, got {file_overrides!r}")
    results = Path(own.get("results", "results"))
    base = [str(o) for o in file_overrides] + run
    for o in base:
        if _key(o) in ("run_id",) or _key(o).startswith("tags"):
            raise ConfigError(f"'{o}': a sweep names its runs and sets their tags itself (tags.study, tags.trial)")
        if _key(o) in params:
            raise ConfigError(f"'{o}': {_key(o)} is swept by {name}; remove it from the command line")
    if not any(_key(o) == "output_dir" for o in base):
        base.append(f"output_dir={results / 'runs'}")
    cfg = compose(base)
    check_space(where, base, params)
    objective = {"linear": "linear.top1"}.get(objective, objective)
    protocol = objective.split(".")[0]
    if protocol in ("linear", "finetune", "supervised") and protocol not in list(cfg.eval.get("protocols", [protocol])):
        raise ConfigError(f"objective={objective} is measured by the {protocol} protocol at the end of each run: add "
                          f"eval.protocols=[knn,{protocol}]" + (" (eval.linear_mode=cached is fast)"
                                                                 if protocol == "linear" else ""))
    study = own.get("study") or default_study_name(name, cfg.choices, base)
    storage = own.get("storage") or default_storage(results, study)
    signature = sorted(f"{k}={v}" for k, v in {**{g: cfg.choices[g] for g in GROUPS},
                                                 **_fingerprinted(base)}.items())
    meta = {"sweep": Path(name).stem, "base": signature, "objective": objective, "direction": direction,
            "method": cfg.method.name, "dataset": cfg.dataset.name, "budget": cfg.choices.budget,
            "backbone": cfg.backbone.name, "epochs": int(cfg.train.epochs), "batch_size": int(cfg.data.batch_size),
            "params": {n: p.spec() for n, p in params.items()}, "plot_params": plot_params,
            "description": str(data.get("description", ""))}
    return Sweep(name, params, sampler, pruner, objective, direction, n_trials, n_jobs, timeout, study, storage,
                 results, plot_params, report, base, meta, list(argv))


# -- storage and study ----------------------------------------------------------------------------------------------
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


# -- one trial ------------------------------------------------------------------------------------------------------
def metric(summary: dict[str, Any], name: str) -> float | None:
    """A number from a run record: a key of ``metrics`` or a dotted path (``cost.wall_s``)."""
    for root in (summary.get("metrics", {}), summary):
        node: Any = root
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float) and not isinstance(node, bool):
            return float(node)
    return None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@contextmanager
def point_lock(path: Path, take: bool) -> Iterator[None]:
    """Workers sharing a results folder never train the same point at once: the second waits, then reuses the
    first one's record (or resumes its checkpoint). Only the main process of a trial locks."""
    if not take:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another worker is training this point ({path.stem}); waiting for it", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _reporter(trial: optuna.Trial, sw: Sweep) -> Callable[[int, dict], str | None]:
    """Epoch callback: report the online kNN to Optuna; a reason to stop when the pruner says so."""

    def report(epoch: int, row: dict) -> str | None:
        value = row.get("monitor_knn_top1")
        if value is None or not math.isfinite(value):
            return None
        trial.report(float(value), epoch)
        if trial.should_prune():
            return (f"pruned by the {sw.pruner['type']} pruner: online kNN top-1 {value:.2f}% after epoch "
                    f"{epoch + 1}")
        return None

    return report


def run_trial(sw: Sweep, number: int, params: dict[str, Any], trial: optuna.Trial | None = None,
              position: tuple[int, int] | None = None) -> float | None:
    """Train and evaluate one point as an ordinary run tagged with the study and trial number. On the main
    process (``trial`` given) return the objective; raise TrialFailed / optuna.TrialPruned with the reason
    stored as user attributes. Other processes (trial None) follow along and return None. ``position`` (n, N):
    this is the n-th of the N trials this command runs, for the line that announces it."""

    def note(**attrs: Any) -> None:
        if trial is not None:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)

    def failed(kind: str, reason: str) -> TrialFailed:
        note(fail_kind=kind, reason=reason)
        return TrialFailed(reason)

    overrides = [*sw.base, *(f"{k}={fmt_value(v)}" for k, v in params.items()), "resume=true"]
    try:
        cfg = compose(overrides)
    except ConfigError as exc:
        raise failed("config", f"invalid config at this point: {exc}") from None
    with open_dict(cfg):
        cfg.tags.sweep, cfg.tags.study, cfg.tags.trial = sw.meta["sweep"], sw.study, str(number)
    run_dir = find_run_dir(cfg)
    rid = run_dir.name
    record = run_dir / "summary.json"
    if trial is not None:
        of = f" ({position[0]} of {position[1]})" if position else ""
        print(f"[sweep {sw.study}] trial {number}{of}: " + " ".join(f"{k}={fmt_value(v)}" for k, v in params.items()),
              flush=True)
    callbacks = [_reporter(trial, sw)] if trial is not None and sw.prunes else []
    try:
        with point_lock(sw.results / "sweeps" / "locks" / f"{rid}.lock", trial is not None):
            note(run_id=rid, record=str(record), reused=record.exists())
            summary = run_experiment(cfg, epoch_callbacks=callbacks)
    except TrainingStopped as exc:
        if exc.pruned:
            note(fail_kind="pruned", reason=str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        if exc.exit_code == 1:
            raise failed("nan", f"diverged: {_one_line(exc)}") from None
        note(fail_kind="interrupted", reason=_one_line(exc))
        raise  # Ctrl-C / SIGTERM: the sweep stops; the next run of the command trains this point again
    except DataNotFound:
        raise  # every trial would fail the same way
    except ConfigError as exc:
        raise failed("config", f"invalid config at this point: {exc}") from None
    except Exception as exc:
        if _is_oom(exc):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise failed("oom", f"out of memory: {_one_line(exc)}") from None
        traceback.print_exc()
        raise failed("crash", f"crashed: {type(exc).__name__}: {_one_line(exc)}") from None
    if trial is None:
        return None
    value = metric(summary, sw.objective)
    for key in ("knn_top1", "monitor_knn_top1", "final_loss", "final_prototypes_used"):
        if key in summary.get("metrics", {}):
            note(**{key: summary["metrics"][key]})
    note(wall_s=summary.get("cost", {}).get("wall_s"))
    if value is None:
        available = sorted(summary.get("metrics", {})) + sorted(f"cost.{k}" for k in summary.get("cost", {}))
        note(fail_kind="config", reason=f"objective {sw.objective} not in the record")
        raise ConfigError(f"objective '{sw.objective}' is not in the run record {record}; available: "
                          f"{', '.join(available)}")
    note(objective_value=value)
    if summary.get("collapsed"):
        raise failed("collapse", f"collapsed: every image assigned to one prototype ({sw.objective} {value:.2f})")
    if not math.isfinite(value):
        raise failed("nan", f"{sw.objective} is {value}")
    return value


# -- several processes per trial (accelerate launch) --------------------------------------------------------------
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def share(obj: Any) -> Any:
    """Broadcast a picklable object from the main process to every process (identity on one process)."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # The process state every run's Accelerator will share (same arguments as Accelerator gives it). Its
    # process group must outlive each run: Accelerator.end_training() destroys it unless FORK_LAUNCHED is set
    # (read by every PartialState(); it changes nothing else outside TPUs).
    os.environ["FORK_LAUNCHED"] = "1"
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=state.device if dist.get_backend() == "nccl" else None)
    return box[0]


def end_processes() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def follow(sw: Sweep) -> None:
    """The other processes: run each trial the main process announces until it says stop."""
    while True:
        msg = share(None)
        if not msg or msg[0] != "trial":
            return
        _, number, params = msg
        try:
            run_trial(sw, number, params, None)
        except (TrialFailed, optuna.TrialPruned):
            pass


# -- the study ------------------------------------------------------------------------------------------------------
class _NoTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; for TrialFailed the reason is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            record.exc_info = None
        return True


def optimize(study: optuna.Study, sw: Sweep, n: int) -> None:
    started = [0]

    def objective(trial: optuna.Trial) -> float:
        params = {name: p.suggest(trial) for name, p in sw.params.items()}
        share(("trial", trial.number, params))
        started[0] += 1
        value = run_trial(sw, trial.number, params, trial, position=(started[0], n))
        assert value is not None
        return value

    log = logging.getLogger("optuna.study._optimize")
    filt = _NoTraceback()
    log.addFilter(filt)
    try:
        study.optimize(objective, n_trials=n, timeout=sw.timeout, catch=(TrialFailed,))
    finally:
        log.removeFilter(filt)


def spawn_workers(sw: Sweep, n: int) -> int:
    """n_jobs worker processes on this machine, each a sweep with its share of the trials, one storage."""
    k = min(sw.n_jobs, n)
    shares = [n // k + (i < n % k) for i in range(k)]
    keep = [a for a in sw.argv if a.split("=", 1)[0] not in ("n_jobs", "n_trials", "report", "study", "storage")]
    keep += [f"study={sw.study}", f"storage={sw.storage}", "n_jobs=1", "report=false"]
    if not any(a.startswith("train.num_threads=") for a in keep):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        keep.append(f"train.num_threads={max(1, cores // k)}")
    import torch

    gpus = torch.cuda.device_count() if "CUDA_VISIBLE_DEVICES" not in os.environ else 0
    procs = []
    for i, s in enumerate(shares):
        env = dict(os.environ)
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "ssl_bench.sweep", *keep, f"n_trials={s}"], env=env))
    print(f"[sweep {sw.study}] {k} workers, trials {shares}", flush=True)
    return max(p.wait() for p in procs)


def summarize(study: optuna.Study, meta: dict[str, Any], out_dir: Path, storage: str,
              plot_params: list[str] | None = None) -> None:
    """Print the best trial and write the table and figures."""
    from ssl_bench.sweep_plots import write_report

    States = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in States}
    print(f"study {study.study_name}: {len(trials)} trials (" + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + ")")
    if counts["complete"]:
        best = study.best_trial
        print(f"highest {meta.get('objective', 'value')}: trial {best.number}, {best.value:.4g}, params "
              + " ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items())
              + " (one trial per point is one seed: see the figures' n before calling it best)")
    paths = write_report(study, meta, out_dir, plot_params, runs_dir=out_dir.parent.parent / "runs")
    for what, path in paths.items():
        print(f"  {what}: {path}")
    if storage.startswith(("sqlite", "postgresql", "mysql")):
        print(f"  dashboard: optuna-dashboard {storage}")


def report_only(own: dict[str, str]) -> int:
    """n_trials=0 study=<name> without sweep=: report from the study's storage alone."""
    results = Path(own.get("results", "results"))
    storage = own.get("storage") or default_storage(results, own["study"])
    try:
        study = optuna.load_study(study_name=own["study"], storage=make_storage(storage))
    except KeyError:
        raise ConfigError(f"no study '{own['study']}' in {storage}") from None
    plot = _list(own["plot_params"]) if "plot_params" in own else None
    summarize(study, study.user_attrs.get(META, {}), results / "figures" / safe_name(own["study"]), storage, plot)
    return 0


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    own, _, _ = split_argv(argv)
    if "sweep" not in own and own.get("n_trials") == "0" and "study" in own:
        return report_only(own)
    sw = parse(argv)
    if rank() != 0:
        try:
            follow(sw)
        finally:
            end_processes()
        return 0
    code = 0
    try:
        study = open_study(sw)
        n = plan_trials(study, sw)
        print(f"[sweep {sw.study}] {sw.meta['description'] or sw.name}: {n} trial(s) now, sampler "
              f"{sw.sampler['type']}, pruner {sw.pruner['type'] if sw.prunes else 'off'}, objective "
              f"{sw.objective} ({sw.direction}), storage {sw.storage}", flush=True)
        if sw.pruner["type"] != "none" and not sw.prunes:
            print("  (pruning reports the online kNN, higher is better: off with direction=minimize)")
        if n and sw.n_jobs > 1:
            code = spawn_workers(sw, n)
        elif n:
            optimize(study, sw, n)
    finally:
        if world_size() > 1:
            share(("stop",))
            end_processes()
    if sw.report:
        summarize(study, sw.meta, sw.results / "figures" / safe_name(sw.study), sw.storage, sw.plot_params)
    return code


def _entry() -> int:
    try:
        return guarded(main)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the study", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_entry())
