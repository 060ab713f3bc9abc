"""A comparison's plan: the command line (:data:`COMMAND`, :func:`arguments`) and the study file
(experiments/study/<name>.yaml) composed and validated into a :class:`Plan`, one :class:`PlannedRun` per
variant x method x seed, and the budget check that refuses runs of one variant with different budgets. Nothing
here trains, reads a result or writes; imports configuration, records (budgets, run folders, the results
layout) and ssl_bench.analysis.report."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig

from ssl_bench.analysis.report import DEFAULT_MARGIN, method_order
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.overrides import Command, Key, writable_folder
from ssl_bench.config.registry import registry
from ssl_bench.config.schema import NON_CONFIGURATION_KEYS
from ssl_bench.config.searchpath import ConfigGroupDir, group_options
from ssl_bench.records.budget import budget_diff, budget_items, describe_diff
from ssl_bench.records.io import find_run_dir
from ssl_bench.records.layout import ResultsLayout

STUDY_DIR = ConfigGroupDir("study")  # experiments/study and the user's config folders
MATCHES = ("epochs", "images", "wall")
CLUSTERS = ("none", "slurm")
# The keys of cluster=slurm (ssl_bench.analysis.compare.jobs), not of the plan.
CLUSTER_KEYS = ("cluster", "nodes", "gpus", "partition", "time", "cpus_per_gpu", "signal_before")
DEFAULT_REFERENCE = "swav"  # the centre of the suite: every other method is tested against it
MAX_SEEDS = 8  # seeds=auto: the cap on a cell's seeds (CPU hours: 8 demo runs of a cell take ~35 min on 2 cores)
# The command's help: its usage and, after the keys, how runs are reused and budgets checked.
DOC = """Entry point: run every method under one identical budget and write the comparison table.

    python -m ssl_bench.compare methods=[swav,simclr,deepclusterv2,selav2,carl] dataset=fashion_mnist \\
        budget=demo seeds=[0,1,2] [study=<name>] [match=epochs|images|wall] [key=value ...]

Every run is an ordinary run (ssl_bench.pipeline.experiment.run_experiment) with its own record: a finished run is
reused, an interrupted one (a checkpoint and no summary) is resumed, so running the same command again
continues an interrupted comparison. Each run's budget fingerprint (ssl_bench.records.budget) is recorded; runs of
one variant with different budgets are refused, naming the keys that differ.
"""
COMMAND = Command(
    "ssl_bench.compare", DOC.split("\n\nEvery run")[0],
    (Key("methods", "list[str]", None, "methods to compare (null: the study's, else every registered one)"),
     Key("max_seeds", "int", None, f"seeds=auto: the most seeds a cell gets (null: the study's, else {MAX_SEEDS})"),
     Key("seeds", "list[int]", None, "training seeds of every method (null: the study's, else [0]); seeds=auto: the "
         "study's seeds as a pilot, then as many as the pilot's variance says decide the margin (max_seeds); "
         "evaluation seeds are eval.seeds"),
     Key("study", "str", None, "experiments/study/<name>.yaml: methods, seeds and named variants (override lists)"),
     Key("match", "str", "epochs", "epochs: final kNN after the budget's epochs; images / wall: also the online "
         "kNN monitor at the most images seen / seconds every run reached", MATCHES),
     Key("allow_mixed_budgets", "bool", False, "tabulate runs whose budgets differ (refused otherwise)"),
     Key("results", "str", "results", "runs go to <results>/runs (unless output_dir=), tables to "
         "<results>/compare/<name>/"),
     Key("name", "str", None, "folder of the comparison (null: <study|compare>-<dataset>-<budget>[-extras])"),
     Key("reference", "str", None, f"the method every other is tested against (null: {DEFAULT_REFERENCE})"),
     Key("margin", "float", None, "equivalence margin in accuracy points (TOST) and the effect the seeds must "
         f"decide (null: the study's margin, else {DEFAULT_MARGIN})"),
     Key("train", "bool", True, "false: train nothing; write the table from the records that exist and name the "
         "runs that are missing (with cluster=slurm: each run's state too, nothing submitted)"),
     Key("cluster", "str", "none", "slurm: train each run that has no record as its own sbatch job (nodes x gpus); "
         "run again, the same command reports each run's state and resubmits the missing and failed ones", CLUSTERS),
     Key("nodes", "int", 1, "cluster=slurm: machines per run"),
     Key("gpus", "int", 1, "cluster=slurm: processes per machine of each run, one per GPU"),
     Key("partition", "str", None, "cluster=slurm: sbatch partition (null: the cluster's default)"),
     Key("time", "str", "72:00:00", "cluster=slurm: sbatch time limit of each job"),
     Key("cpus_per_gpu", "int", 10, "cluster=slurm: sbatch CPUs per GPU"),
     Key("signal_before", "int", 300, "cluster=slurm: seconds before the time limit SLURM sends SIGUSR1; the job "
         "saves a checkpoint, requeues itself and resumes")),
    overrides="Every other key=value is an ordinary run override, given to every run; <method>:key=value (e.g. "
              "swav:method.epsilon=0.03) is one for that method only.",
    footer="Every run" + DOC.split("\n\nEvery run", 1)[1])
OWN_KEYS = tuple(k.name for k in COMMAND.keys)


def all_methods() -> list[str]:
    """Every registered method (methods/), the suite's order first."""
    return method_order(registry())


@dataclass
class Variant:
    """One arm of a study: a name and the overrides that define it."""

    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class PlannedRun:
    variant: str
    method: str
    seed: int
    cfg: DictConfig

    @property
    def run_dir(self) -> Path:
        """The run's folder: an existing record of the same configuration and seed, else its new name."""
        return find_run_dir(self.cfg)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def state(self) -> str:
        """'complete' (a summary exists), 'interrupted' (a checkpoint, no summary) or 'new'."""
        if (self.run_dir / "summary.json").exists():
            return "complete"
        if any((self.run_dir / c).exists() for c in ("checkpoint", "checkpoint.prev", "checkpoint.tmp")):
            return "interrupted"  # any slot: resume=true picks the newest one that verifies
        return "new"


@dataclass
class Plan:
    name: str
    study: str | None
    description: str
    methods: list[str]
    seeds: list[int]
    variants: list[Variant]
    baseline: str | None
    reference: str
    match: str
    allow_mixed: bool
    out_dir: Path
    overrides: list[str]
    runs: list[PlannedRun]
    margin: float = DEFAULT_MARGIN
    design: str = ""  # seeds=auto: the design in words (pilot, re-estimation, final n)
    auto: bool = False
    max_seeds: int = MAX_SEEDS


def load_study(name: str) -> dict[str, Any]:
    """Read experiments/study/<name>.yaml (methods, seeds, overrides, variants, baseline, description)."""
    path = STUDY_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown study '{name}'; valid choices: {', '.join(group_options('study'))}")
    data = yaml.safe_load(path.read_text()) or {}
    known = {"description", "methods", "seeds", "overrides", "variants", "baseline", "margin", "max_seeds"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    return data


def _variants(study: dict[str, Any], where: str) -> list[Variant]:
    raw = study.get("variants") or [{"name": "default", "overrides": []}]
    out = []
    for v in raw:
        if not isinstance(v, dict) or "name" not in v:
            raise ConfigError(f"{where}: each variant needs a name and an overrides list, got {v!r}")
        out.append(Variant(str(v["name"]), [str(o) for o in v.get("overrides") or []]))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: variant names must be unique, got {', '.join(names)}")
    return out


def _auto_name(study: str | None, cfg: DictConfig, overrides: list[str]) -> str:
    """<study|compare>-<dataset>-<budget>, plus the budget-changing overrides (or their hash if long)."""
    skip = ("dataset", "budget", *NON_CONFIGURATION_KEYS)
    extra = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in skip]
    name = f"{study or 'compare'}-{cfg.choices.dataset}-{cfg.choices.budget}"
    if extra:
        tail = "_".join(extra)
        name += "-" + (tail if len(tail) <= 40 else hashlib.sha256(tail.encode()).hexdigest()[:8])
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", name)


def arguments(argv: list[str]) -> dict[str, Any]:
    """The command line as :func:`plan`'s keyword arguments: its own keys typed, ``seeds=auto``, the run overrides
    and the ``<method>:key=value`` ones."""
    auto = "seeds=auto" in argv
    own, rest, _ = COMMAND.parse([a for a in argv if a != "seeds=auto"])
    overrides: list[str] = []
    per_method: dict[str, list[str]] = {}
    for a in rest:
        key, _, value = a.partition("=")
        if ":" in key:
            m, _, sub = key.partition(":")
            if m not in group_options("method"):
                raise ConfigError(f"'{a}': per-method overrides are <method>:key=value with method one of "
                                  f"{', '.join(group_options('method'))}")
            per_method.setdefault(m, []).append(f"{sub}={value}")
        else:
            overrides.append(a)
    return {**own, "seeds": "auto" if auto else own["seeds"], "overrides": overrides, "per_method": per_method}


def plan_arguments(argv: list[str]) -> tuple[dict[str, Any], bool]:
    """:func:`arguments` without ``train`` and the cluster's keys (not part of a plan), and ``train``."""
    args, train, _ = split_arguments(argv)
    return args, train


def split_arguments(argv: list[str]) -> tuple[dict[str, Any], bool, dict[str, Any]]:
    """:func:`arguments` as (the plan's keywords, ``train``, the keys of cluster=slurm: CLUSTER_KEYS)."""
    args = arguments(argv)
    return args, bool(args.pop("train")), {k: args.pop(k) for k in CLUSTER_KEYS}


def parse(argv: list[str]) -> Plan:
    """Read the command line and compose (validate) every run's config; nothing is trained or written. With
    ``seeds=auto`` the plan holds the pilot's runs; :func:`auto_seeds` extends it."""
    return plan(**plan_arguments(argv)[0])


def plan(*, methods: Sequence[str] | None = None, seeds: Sequence[int] | Literal["auto"] | None = None,
         study: str | None = None, overrides: Sequence[str] = (), per_method: Mapping[str, Sequence[str]] | None = None,
         match: str = "epochs", allow_mixed_budgets: bool = False, results: str | Path = "results",
         name: str | None = None, reference: str | None = None, margin: float | None = None,
         max_seeds: int | None = None) -> Plan:
    """Compose (validate) every run's config of a comparison; nothing is trained or written. The keywords are the
    command line's keys (``python -m ssl_bench.compare --help``); ``overrides`` are run overrides given to every
    run, ``per_method`` the ones of one method only. ``seeds="auto"``: the study's seeds are a pilot, the plan holds
    its runs and :func:`auto_seeds` extends it."""
    auto = seeds == "auto"
    common = [str(o) for o in overrides]
    for o in common:
        if o.partition("=")[0].lstrip("+~") in ("method", "seed"):
            raise ConfigError(f"'{o}': compare sets method and seed itself; use methods=[..] and seeds=[..]")
    stray = [m for m in per_method or {} if m not in group_options("method")]
    if stray:
        raise ConfigError(f"per-method overrides for unknown method '{stray[0]}'; valid choices: "
                          f"{', '.join(group_options('method'))}")
    spec = load_study(study) if study else {}
    where = f"experiments/study/{study}.yaml"
    methods = _methods(methods, spec)
    seeds, max_seeds = _seeds(None if auto else seeds, max_seeds, spec, auto)
    reference = _reference(reference, methods)
    if match not in MATCHES:
        raise ConfigError(f"unknown match '{match}'; valid choices: {', '.join(MATCHES)}")
    layout = ResultsLayout(results)
    writable_folder(layout.root, "results")
    if not any(o.startswith("output_dir=") for o in common):
        common.append(f"output_dir={layout.runs}")
    variants = _variants(spec, where)
    baseline = spec.get("baseline")
    if baseline is not None and baseline not in [v.name for v in variants]:
        raise ConfigError(f"{where}: baseline '{baseline}' is not one of the variants "
                          f"({', '.join(v.name for v in variants)})")
    study_common = [str(o) for o in spec.get("overrides") or []]
    runs = _planned_runs(variants, methods, seeds, (study_common, common),
                         {m: [str(o) for o in os] for m, os in (per_method or {}).items()})
    name = name or _auto_name(study, runs[0].cfg, [*study_common, *common])
    margin = float(margin if margin is not None else spec.get("margin", DEFAULT_MARGIN))
    if not margin > 0:
        raise ConfigError(f"margin={margin}: the equivalence margin must be a positive number of accuracy points")
    out = Plan(name, study, str(spec.get("description", "")).strip(), methods, seeds, variants, baseline,
               reference, match, allow_mixed_budgets, layout.compare(name), [*study_common, *common], runs, margin,
               auto=auto, max_seeds=max_seeds)
    check_budgets([(r.variant, f"{r.method} s{r.seed}", budget_items(r.cfg)) for r in runs], out)
    return out


def _methods(methods: Sequence[str] | None, spec: dict[str, Any]) -> list[str]:
    """The compared methods: given, else the study's, else every registered one."""
    out = [str(m) for m in (methods or spec.get("methods") or all_methods())]
    unknown = [m for m in out if m not in group_options("method")]
    if unknown:
        raise ConfigError(f"unknown method '{unknown[0]}'; valid choices: {', '.join(group_options('method'))}")
    if len(set(out)) != len(out):
        raise ConfigError(f"methods lists a method twice: {', '.join(out)}")
    return out


def _seeds(seeds: Sequence[int] | None, max_seeds: int | None, spec: dict[str, Any], auto: bool
           ) -> tuple[list[int], int]:
    """The training seeds (given, else the study's, else [0]) and the cap of seeds=auto."""
    try:
        out = [int(s) for s in (seeds if seeds is not None else spec.get("seeds", [0]))]
    except ValueError as exc:
        raise ConfigError(f"seeds must be integers, e.g. seeds=[0,1,2]: {exc}") from exc
    if len(set(out)) != len(out):
        raise ConfigError(f"seeds lists a seed twice: {out}")
    cap = int(max_seeds if max_seeds is not None else spec.get("max_seeds", MAX_SEEDS))
    if auto and (len(out) < 2 or cap < len(out)):
        raise ConfigError(f"seeds=auto needs a pilot of at least 2 seeds (the study's seeds: {out}) and "
                          f"max_seeds >= the pilot (max_seeds={cap})")
    return out, cap


def _reference(reference: str | None, methods: list[str]) -> str:
    """The method every other is tested against."""
    out = reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE in methods else methods[0])
    if out not in methods:
        raise ConfigError(f"reference={out} is not among the compared methods; valid choices: {', '.join(methods)}")
    return out


def _planned_runs(variants: list[Variant], methods: list[str], seeds: list[int],
                  common: tuple[list[str], list[str]], per_method: dict[str, list[str]]) -> list[PlannedRun]:
    """Every (variant, method, seed) with its composed config. ``common``: the study's overrides and the caller's;
    the order of the overrides is part of every record (a variant's sit between the two)."""
    study_common, callers = common
    runs: list[PlannedRun] = []
    for v in variants:
        for m in methods:
            first: DictConfig | None = None
            for s in seeds:
                overrides = [f"method={m}", f"seed={s}", *study_common, *v.overrides, *callers, *per_method.get(m, [])]
                if first is None:
                    try:
                        cfg = first = compose(overrides)
                        writable_folder(cfg.output_dir, "output_dir")
                    except ConfigError as exc:
                        label = f"variant '{v.name}', " if len(variants) > 1 else ""
                        raise ConfigError(f"{label}method {m}: {exc}") from exc
                else:  # the same config but the seed (nothing in experiments/ interpolates it): don't compose again
                    cfg = copy.deepcopy(first)
                    cfg.seed = s
                    cfg.overrides = overrides
                runs.append(PlannedRun(v.name, m, s, cfg))
    return runs


# -- the budget check ---------------------------------------------------------------------------------
def check_budgets(entries: list[tuple[str, str, dict[str, Any]]], plan: Plan) -> list[str]:
    """Refuse (ConfigError, one line) runs of one variant whose budgets differ, and variants that differ in
    keys other than the ones their overrides set; returns warnings instead when mixed budgets are allowed."""
    problems: list[str] = []
    first: dict[str, tuple[str, dict[str, Any]]] = {}
    for variant, label, items in entries:
        if variant not in first:
            first[variant] = (label, items)
            continue
        ref_label, ref = first[variant]
        diff = budget_diff(ref, items)
        if diff:
            where = f" in variant '{variant}'" if len(plan.variants) > 1 else ""
            problems.append(f"runs{where} have different budgets: {describe_diff(diff, (ref_label, label))}")
    varied = [o.split("=", 1)[0].lstrip("+~") for v in plan.variants for o in v.overrides]
    names = list(first)
    for other in names[1:]:
        diff = budget_diff(first[names[0]][1], first[other][1])
        stray = {k: d for k, d in diff.items() if not any(k == p or k.startswith(p + ".") or p == "budget"
                                                           for p in varied)}
        if stray:
            problems.append(f"variants '{names[0]}' and '{other}' differ in keys their overrides do not set: "
                            f"{describe_diff(stray, (names[0], other))}")
    if problems and not plan.allow_mixed:
        raise ConfigError(f"{problems[0]}; allow_mixed_budgets=true tabulates them anyway")
    return problems
