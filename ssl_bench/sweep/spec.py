"""The sweep file and the command line: a validated search space, study settings and the base run overrides.
Nothing here trains or writes; anything wrong raises ConfigError before any work."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.overrides import Command, Key, convert, parse_value
from ssl_bench.config.schema import NON_CONFIGURATION_KEYS
from ssl_bench.config.searchpath import GROUPS, ConfigGroupDir
from ssl_bench.records.layout import ResultsLayout

DOC = """Entry point for hyperparameter studies on Optuna; every trial is an ordinary run with its own record.

    python -m ssl_bench.sweep sweep=<name> method=swav dataset=<name> budget=<name> [study_name=<name>] \\
        [n_trials=N] [key=value ...]
    accelerate launch -m ssl_bench.sweep ...    each trial on several processes (only the main one talks to the study)

Pruning reports each epoch's online kNN (monitor_knn_top1) to Optuna. A trial that diverges (NaN loss),
collapses (every image on one prototype), runs out of memory or crashes is recorded as failed with its reason
(user attributes `fail_kind` and `reason`) and the study goes on; an interrupted one (Ctrl-C, SIGTERM) stops the
sweep. Running the same command again continues the study; in a grid, cells that were interrupted, crashed or ran
out of memory are trained again (resumed from their checkpoint).
"""

SWEEP_DIR = ConfigGroupDir("sweep")  # experiments/sweep and the user's config folders
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "percentile", "none")
# Own keys; a null default falls back on the sweep file's setting, then on the one named in the help.
COMMAND = Command(
    "ssl_bench.sweep", DOC.split("\n\nPruning")[0],
    (Key("sweep", "str", None, "required: experiments/sweep/<name>.yaml (or a .yaml path): search space, defaults"),
     Key("study_name", "str", None, "the Optuna study (null: <sweep>-<method>-<dataset>-<budget>[-extras]); the same "
         "study continues where it stopped"),
     Key("n_trials", "int", None, "trials to run now (null: the sweep's; a grid: its cells not yet done); 0 only "
         "reports (with study_name= and no sweep=: from the study alone)"),
     Key("sampler", "str", None, "null: the sweep's, else tpe; sampler.<arg>=value passes an argument", SAMPLERS),
     Key("pruner", "str", None, "null: the sweep's, else median; pruner.<arg>=value passes an argument", PRUNERS),
     Key("objective", "str", None, "the record's metric to optimise (null: the sweep's, else knn_top1): a key of "
         "metrics, a dotted path (linear.top1, cost.wall_s); linear needs eval.protocols=[knn,linear]"),
     Key("direction", "str", None, "null: the sweep's, else maximize", ("maximize", "minimize")),
     Key("storage", "str", None, "any Optuna storage URL, or journal:///path/f.log (null: "
         "sqlite:///<results>/sweeps/<study>.db)"),
     Key("n_jobs", "int", None, "worker processes on this machine sharing the storage (null: 1)"),
     Key("heartbeat", "int", 60, "seconds between a running trial's heartbeats to the storage"),
     Key("grace_period", "int", None, "a running trial without a heartbeat for this long is failed (its worker "
         "died) and queued again for another worker (null: 3 x heartbeat)"),
     Key("timeout", "float", None, "start no new trial after this many seconds"),
     Key("plot_params", "list[str]", None, "the two parameters of the heatmap (null: the first two)"),
     Key("results", "str", "results", "runs go to <results>/runs (unless output_dir=), the report to "
         "<results>/figures/<study>/"),
     Key("report", "bool", True, "at the end: best trial, table and figures")),
    overrides="Every other key=value is an ordinary run override, given to every trial (seed=, eval.seeds=, ...).",
    footer="Pruning" + DOC.split("\n\nPruning", 1)[1])
OWN_KEYS = tuple(k.name for k in COMMAND.keys)
PARAM_TYPES = ("int", "float", "categorical")
SWEEP_FILE_KEYS = ("description", "overrides", "sampler", "pruner", "objective", "direction", "n_trials", "params",
                   "grid", "plot_params")
DEFAULT_N_TRIALS = 20


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
    results: ResultsLayout
    plot_params: list[str]
    report: bool
    base: list[str]
    meta: dict[str, Any]
    argv: list[str] = field(default_factory=list)
    heartbeat: int = 60
    grace_period: int | None = None

    @property
    def prunes(self) -> bool:
        return self.pruner["type"] != "none" and self.direction == "maximize"


def split_argv(argv: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, str]], list[str]]:
    """(the own keys given, typed by the shared override grammar; sampler./pruner. arguments; run overrides).
    Own keys not given are left out: they fall back on the sweep file's setting, then on the default."""
    args: dict[str, dict[str, str]] = {"sampler": {}, "pruner": {}}
    rest: list[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        head, _, sub = key.partition(".")
        if eq and head in args and sub:
            args[head][sub] = value
        else:
            rest.append(a)
    own, run, given = COMMAND.parse(rest)
    return {k: v for k, v in own.items() if k in given}, args, run


def _at_least(key: str, value: Any, minimum: int) -> int:
    """An integer setting (typed already on the command line; a sweep file's value goes through the same grammar)."""
    if not isinstance(value, int) or isinstance(value, bool):
        value = convert(Key(key, "int", None, ""), str(value))
    if value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value}")
    return value


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
    spec.update({k: parse_value(v) for k, v in cli_args.items()})
    if spec["type"] not in valid:
        raise ConfigError(f"unknown {what} '{spec['type']}'; valid choices: {', '.join(valid)}")
    return spec


# A worker's index among several on one study: n_jobs sets it per child, a SLURM job array per task; 0 alone.
WORKER_ENV = "SSL_BENCH_SWEEP_WORKER"


def worker_index() -> int:
    for var in (WORKER_ENV, "SLURM_ARRAY_TASK_ID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def make_sampler(spec: dict[str, Any], params: dict[str, Param]) -> optuna.samplers.BaseSampler:
    kind, args = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    if args.get("seed") is not None:  # workers sharing sampler.seed would all draw the same points
        args["seed"] = int(args["seed"]) + worker_index()
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


def default_storage(results: ResultsLayout, study: str) -> str:
    return f"sqlite:///{results.sweep_db(safe_name(study)).resolve()}"


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
    params = _space(where, data)
    sampler, pruner = _sampler_and_pruner(where, data, own, args, params)
    objective = str(own.get("objective", data.get("objective", "knn_top1")))
    direction = str(own.get("direction", data.get("direction", "maximize")))
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be maximize or minimize, got '{direction}'")
    n_trials = own.get("n_trials", data.get("n_trials"))
    n_trials = None if n_trials is None else _at_least("n_trials", n_trials, 0)
    n_jobs = _at_least("n_jobs", own.get("n_jobs", 1), 1)
    heartbeat = _at_least("heartbeat", own.get("heartbeat", 60), 1)
    grace = own.get("grace_period")
    grace = None if grace is None else _at_least("grace_period", grace, heartbeat + 1)
    plot_params = _plot_params(own, data, params)
    if n_jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("n_jobs > 1 cannot be combined with accelerate launch (each trial already uses every "
                          "process); run several sweep commands against the same storage instead")
    results = ResultsLayout(own.get("results", "results"))
    base = _base_overrides(where, name, data, run, params, results)
    cfg = compose(base)
    check_space(where, base, params)
    objective = _objective(objective, cfg)
    study = own.get("study_name") or default_study_name(name, cfg.choices, base)
    storage = own.get("storage") or default_storage(results, study)
    meta = _meta(name, data, cfg, base, params, objective, direction, plot_params)
    return Sweep(name, params, sampler, pruner, objective, direction, n_trials, n_jobs, own.get("timeout"), study,
                 storage, results, plot_params, own.get("report", True), base, meta, list(argv), heartbeat, grace)


def _space(where: str, data: dict[str, Any]) -> dict[str, Param]:
    """The search space: ``params`` (ranges or choices) and ``grid`` (lists of values)."""
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
    return params


def _sampler_and_pruner(where: str, data: dict[str, Any], own: dict[str, Any], args: dict[str, dict[str, str]],
                        params: dict[str, Param]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sampler's and pruner's specs, built once here so that a bad argument is refused before any work."""
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
    return sampler, pruner


def _plot_params(own: dict[str, Any], data: dict[str, Any], params: dict[str, Param]) -> list[str]:
    plot = own.get("plot_params")
    plot_params = list(plot) if plot is not None else [str(p) for p in data.get("plot_params") or list(params)[:2]]
    unknown = [p for p in plot_params if p not in params]
    if unknown or len(plot_params) > 2 or len(set(plot_params)) != len(plot_params):
        raise ConfigError(f"plot_params must name up to two distinct swept parameters ({', '.join(params)}), "
                          f"got {plot_params}")
    return plot_params


def _base_overrides(where: str, name: str, data: dict[str, Any], run: list[str], params: dict[str, Param],
                    results: ResultsLayout) -> list[str]:
    """The base run overrides: the sweep file's defaults, then the command line's (later ones win)."""
    file_overrides = data.get("overrides") or []
    if not isinstance(file_overrides, list):
        raise ConfigError(f"{where}: overrides must be a list of key=value, got {file_overrides!r}")
    base = [str(o) for o in file_overrides] + run
    for o in base:
        if _key(o) in ("run_id",) or _key(o).startswith("tags"):
            raise ConfigError(f"'{o}': a sweep names its runs and sets their tags itself (tags.study, tags.trial)")
        if _key(o) in params:
            raise ConfigError(f"'{o}': {_key(o)} is swept by {name}; remove it from the command line")
    if not any(_key(o) == "output_dir" for o in base):
        base.append(f"output_dir={results.runs}")
    return base


def _objective(objective: str, cfg: Any) -> str:
    """The record's metric; one measured at the end of a run needs its protocol in eval.protocols."""
    objective = {"linear": "linear.top1"}.get(objective, objective)
    protocol = objective.split(".")[0]
    if protocol in ("linear", "finetune", "supervised") and protocol not in list(cfg.eval.get("protocols", [protocol])):
        raise ConfigError(f"objective={objective} is measured by the {protocol} protocol at the end of each run: add "
                          f"eval.protocols=[knn,{protocol}]" + (" (eval.linear_mode=cached is fast)"
                                                                 if protocol == "linear" else ""))
    return objective


def _meta(name: str, data: dict[str, Any], cfg: Any, base: list[str], params: dict[str, Param], objective: str,
          direction: str, plot_params: list[str]) -> dict[str, Any]:
    """What the study records about itself (a later command must match it: see storage.open_study)."""
    signature = sorted(f"{k}={v}" for k, v in {**{g: cfg.choices[g] for g in GROUPS},
                                                 **_fingerprinted(base)}.items())
    return {"sweep": Path(name).stem, "base": signature, "objective": objective, "direction": direction,
            "method": cfg.method.name, "dataset": cfg.dataset.name, "budget": cfg.choices.budget,
            "backbone": cfg.backbone.name, "epochs": int(cfg.train.epochs), "batch_size": int(cfg.data.batch_size),
            "params": {n: p.spec() for n, p in params.items()}, "plot_params": plot_params,
            "description": str(data.get("description", ""))}
