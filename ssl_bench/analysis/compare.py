"""Entry point: run every method under one identical budget and write the comparison table.

    python -m ssl_bench.compare methods=[swav,simclr,deepclusterv2,selav2,carl] dataset=fashion_mnist \\
        budget=demo seeds=[0,1,2] [study=<name>] [match=epochs|images|wall] [key=value ...]

Every run is an ordinary run (ssl_bench.pipeline.experiment.run_experiment) with its own record: a finished run is
reused, an interrupted one (a checkpoint and no summary) is resumed, so running the same command again
continues an interrupted comparison. Each run's budget fingerprint (ssl_bench.records.budget) is recorded; runs of
one variant with different budgets are refused, naming the keys that differ.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from ssl_bench.analysis import cells
from ssl_bench.analysis.against_reference import reference_lines
from ssl_bench.analysis.report import (
    ALPHA,
    BETTER,
    DEFAULT_MARGIN,
    EQUIVALENT,
    STATS,
    UNDERPOWERED,
    WORSE,
    Decision,
    Paired,
    Stat,
    budget_caption,
    crops_label,
    decide,
    display,
    fmt_delta,
    fmt_stat,
    interval90,
    linear_protocol,
    markdown_table,
    method_order,
    monitor_protocol,
    n_warning,
    num,
    paired,
    protocol,
    seeds_needed,
    t_interval,
    with_holm,
)
from ssl_bench.common.skipped import note as skipped_note
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.overrides import Command, Key, help_requested, writable_folder
from ssl_bench.config.registry import registry
from ssl_bench.config.schema import NON_CONFIGURATION_KEYS
from ssl_bench.config.searchpath import ConfigGroupDir, group_options
from ssl_bench.errors import TrainingStopped
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records.budget import budget_diff, budget_fingerprint, budget_items, describe_diff
from ssl_bench.records.identity import configuration_id
from ssl_bench.records.io import (
    dig,
    find_run_dir,
    read_config,
    read_metrics,
    read_summary,
    readable,
    write_atomic,
    write_json,
)
from ssl_bench.records.layout import ResultsLayout

STUDY_DIR = ConfigGroupDir("study")  # experiments/study and the user's config folders
MATCHES = ("epochs", "images", "wall")
DEFAULT_REFERENCE = "swav"  # the centre of the suite: every other method is tested against it
MAX_SEEDS = 8  # seeds=auto: the cap on a cell's seeds (CPU hours: 8 demo runs of a cell take ~35 min on 2 cores)
COMMAND = Command(
    "ssl_bench.compare", __doc__.split("\n\nEvery run")[0],
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
         "runs that are missing")),
    overrides="Every other key=value is an ordinary run override, given to every run; <method>:key=value (e.g. "
              "swav:method.epsilon=0.03) is one for that method only.",
    footer="Every run" + __doc__.split("\n\nEvery run", 1)[1])
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


# -- parsing ------------------------------------------------------------------------------------------
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
    """:func:`arguments` without ``train`` (not part of a plan), and ``train``."""
    args = arguments(argv)
    return args, bool(args.pop("train"))


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


# -- seeds=auto -----------------------------------------------------------------------------------------
def with_seeds(plan: Plan, seeds: list[int]) -> Plan:
    """The plan with every (variant, method) at ``seeds`` (configs copied from its first run, the seed changed)."""
    first: dict[tuple[str, str], PlannedRun] = {}
    for r in plan.runs:
        first.setdefault((r.variant, r.method), r)
    runs = []
    for (v, m), r0 in first.items():
        for s in seeds:
            cfg = copy.deepcopy(r0.cfg)
            cfg.seed = s
            cfg.overrides = [o if not o.startswith("seed=") else f"seed={s}" for o in r0.cfg.overrides]
            runs.append(PlannedRun(v, m, s, cfg))
    return dataclasses.replace(plan, seeds=list(seeds), runs=runs)


def auto_seeds(plan: Plan) -> tuple[int, str]:
    """From the pilot's records: the seeds that decide ±plan.margin with 80% power for every comparison of the
    table (report.seeds_needed on the sd of its paired differences: the variance only, never the differences'
    mean, so the re-estimation does not peek at the effects), capped at plan.max_seeds; and the design in words."""
    pilot_runs = run_rows(plan)
    if not pilot_runs["status"].isin(DONE).all():
        return len(plan.seeds), f"seeds=auto: the pilot of {len(plan.seeds)} seeds is not complete yet; n = pilot."
    table = summarise(cell_rows(pilot_runs), plan)
    needs = []
    for _, r in table.iterrows():
        for c in ACCURACIES:
            for prefix in (f"{c}_vs_ref", f"{c}_vs_baseline"):
                if pd.notna(r.get(f"{prefix}_sd")) and r.get(f"{prefix}_n", 0) >= 2:
                    needs.append((seeds_needed(float(r[f"{prefix}_sd"]), plan.margin),
                                  f"{r['method_name']}{'' if len(plan.variants) == 1 else f' [{r.variant}]'} "
                                  f"{ACCURACIES[c]} {'vs the reference' if 'ref' in prefix else 'gain'}, sd "
                                  f"{r[f'{prefix}_sd']:.2f}"))
    pilot = len(plan.seeds)
    if not needs:
        return pilot, f"seeds=auto: the pilot of {pilot} seeds has no paired differences yet; n = {pilot}."
    need, which = max(needs)
    n = max(pilot, min(need, plan.max_seeds))
    over = sum(k > plan.max_seeds for k, _ in needs)
    design = (f"seeds=auto: a pilot of {pilot} seeds ({' '.join(map(str, plan.seeds))}); from the sd of each "
              f"comparison's paired differences (the variance only, not the differences themselves) the seeds that "
              f"decide ±{plan.margin:g} at 80% power: at most {need if need <= 999 else '>999'} ({which}); capped at "
              f"max_seeds = {plan.max_seeds}: n = {n}." + (
                  f" {over} of {len(needs)} comparisons would need more than {plan.max_seeds} and are reported as "
                  f"underpowered with the n they need." if over else ""))
    return n, design


# -- running ------------------------------------------------------------------------------------------
def execute(plan: Plan, train: bool = True, require_all: bool = True) -> dict[str, str]:
    """Run the planned runs one after another; returns run_id -> 'reused' | 'trained' | 'resumed' | 'diverged'.
    With ``train=False`` every record must exist already (tables from records only), unless ``require_all`` is
    false: then a missing one is reported as 'not trained yet' (the seeds a design added after its pilot)."""
    states = [r.state() for r in plan.runs]
    n = len(plan.runs)
    if not train and require_all and states.count("complete") < n:
        missing = [r.run_id for r, st in zip(plan.runs, states, strict=True) if st != "complete"]
        raise ConfigError(f"comparison {plan.name}: {len(missing)} of {n} records missing under "
                          f"{plan.runs[0].cfg.output_dir} (first: {missing[0]}); train them with ssl_bench.compare")
    print(f"comparison {plan.name}: {n} runs ({len(plan.variants)} variant(s) x {len(plan.methods)} methods x "
          f"{len(plan.seeds)} seeds): {states.count('complete')} complete (reused), "
          f"{states.count('interrupted')} interrupted (resumed), {states.count('new')} to train")
    status: dict[str, str] = {}
    for i, (run, state) in enumerate(zip(plan.runs, states, strict=True), 1):
        variant = f"[{run.variant}] " if len(plan.variants) > 1 else ""
        print(f"[{i}/{n}] {variant}{run.method} seed {run.seed}: {run.run_id} ({state})", flush=True)
        cfg = run.cfg
        if state == "complete":
            status[run.run_id] = "reused"
            continue
        if not train:
            status[run.run_id] = "not trained yet"
            continue
        if state == "interrupted" and not cfg.resume:
            cfg = compose([*list(cfg.overrides), "resume=true"])
        try:
            run_experiment(cfg, beside=reference_lines)
        except TrainingStopped as exc:
            if exc.exit_code != 1:  # interrupted by the user: stop the comparison too
                raise
            print(f"  {run.method} seed {run.seed} diverged; the comparison goes on without it: {exc}")
            status[run.run_id] = "diverged"
            continue
        status[run.run_id] = "resumed" if state == "interrupted" else "trained"
    return status


# -- the table ----------------------------------------------------------------------------------------
def run_rows(plan: Plan, status: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per planned run from its record (summary.json, config.yaml, metrics.jsonl)."""
    status = status or {}
    rows = []
    for r in plan.runs:
        d = r.run_dir
        row: dict[str, Any] = {"variant": r.variant, "method": r.method, "seed": r.seed, "run_id": r.run_id,
                               "path": str(d)}
        ok = readable(d)  # a damaged record: one warning, and the run counts as unreadable (ssl_bench.common.skipped)
        cfg = read_config(d) if ok and (d / "config.yaml").exists() else OmegaConf.to_container(r.cfg)
        row.update(budget_fp=budget_fingerprint(cfg), configuration_id=configuration_id(cfg), crops=crops_label(cfg),
                   _items=budget_items(cfg), _cfg=cfg, _epochs=read_metrics(d) if ok else [])
        if ok and (d / "summary.json").exists():
            s = read_summary(d)
            m, c = s.get("metrics", {}), s.get("cost", {})
            row.update(status=status.get(r.run_id, "complete"), dataset=s.get("dataset"), budget=s.get("budget"),
                       epochs=s.get("epochs"), batch_size=s.get("batch_size"), knn_top1=m.get("knn_top1"),
                       random_knn_top1=m.get("random_knn_top1"), monitor_knn_top1=m.get("monitor_knn_top1"),
                       linear_top1=dig(m, "linear.top1"), random_linear_top1=dig(m, "random.linear.top1"),
                       wall_s=c.get("wall_s"), images_per_s=c.get("images_per_s"), peak_mem_mb=c.get("peak_mem_mb"),
                       images_seen=c.get("images_seen"), collapsed=bool(s.get("collapsed", False)))
            if m.get("final_health_rank_backbone") is not None:  # ssl_bench/training/health.py; older records have none
                row["final_rank"] = m["final_health_rank_backbone"]
            row["versions.git"] = (s.get("versions") or {}).get("git")
        else:
            row.update(status=status.get(r.run_id, "missing" if ok else "unreadable"), dataset=cfg["dataset"]["name"],
                       budget=r.cfg.choices.budget, epochs=cfg["train"]["epochs"],
                       batch_size=cfg["data"]["batch_size"])
        rows.append(row)
    return pd.DataFrame(rows)


def add_matched(runs: pd.DataFrame, match: str) -> str | None:
    """Add matched_top1 / matched_epoch columns (monitor kNN at the common images seen or wall-clock);
    returns a caption like 'at 40960 images seen' (None for match=epochs)."""
    if match == "epochs":
        return None
    done = runs[runs["status"].isin(DONE)]
    done = done[[bool(e) for e in done["_epochs"]]]
    if done.empty:
        return None
    if match == "images":
        per_epoch = {i: r["images_seen"] / max(1, r["epochs"]) for i, r in done.iterrows()}
        common = min(r["images_seen"] for _, r in done.iterrows())
        pos = {i: [(e["epoch"] + 1) * per_epoch[i] for e in runs.at[i, "_epochs"]] for i in done.index}
        caption = f"at {common:.0f} images seen (the fewest any run saw)"
    else:
        pos = {i: [e.get("wall_s", math.inf) for e in runs.at[i, "_epochs"]] for i in done.index}
        common = min(p[-1] for p in pos.values() if p)
        caption = f"at {common:.0f} s wall-clock (the shortest run)"
    runs["matched_top1"] = math.nan
    runs["matched_epoch"] = math.nan
    for i, p in pos.items():
        ok = [j for j, x in enumerate(p) if x <= common * (1 + 1e-9) and "monitor_knn_top1" in runs.at[i, "_epochs"][j]]
        if ok:
            runs.at[i, "matched_top1"] = runs.at[i, "_epochs"][ok[-1]]["monitor_knn_top1"]
            runs.at[i, "matched_epoch"] = ok[-1] + 1
    return caption


DONE = ("reused", "trained", "resumed", "complete")
# Accuracy columns of the table: record column -> words.
ACCURACIES = {"knn_top1": "kNN top-1", "linear_top1": "linear top-1"}


def cell_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The planned runs with their cells (ssl_bench.analysis.cells): a cell holding a stale record is refused (its runs'
    status becomes 'refused'); a (variant, method) whose records are of two configurations is an error."""
    runs = cells.assign(runs)
    for (v, m), g in runs.groupby(["variant", "method"], sort=False):
        if g["cell"].nunique() > 1:
            raise ConfigError(f"variant '{v}', method {m}: its records are of {g['cell'].nunique()} configurations "
                              f"({', '.join(sorted(set(g['cell'])))}); a cell pools one configuration")
    bad = set(runs.loc[runs["stale"] != "", "cell"])
    runs.loc[runs["cell"].isin(bad) & runs["status"].isin(DONE), "status"] = "refused"
    return runs


def refusal_lines(runs: pd.DataFrame) -> list[str]:
    """One line per refused cell (a stale record in it), naming its runs."""
    out = []
    for (v, m), g in runs[runs["stale"] != ""].groupby(["variant", "method"], sort=False):
        out.append(f"refused: {display(m)} [{v}]: today's code does not reproduce "
                   f"{', '.join(Path(p).name for p in g['path'])} (python -m ssl_bench.reference verify; retrain them)")
    return out


def summarise(runs: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """The comparison table: one row per (variant, method) = one cell (one configuration, analysis.cells); for every
    accuracy its mean, sd, n and 95% t-interval over seeds, the paired difference to the reference method of the
    same variant (and, with a study baseline, to the baseline variant of the same method) with Holm-corrected paired
    t-tests, TOST against ±plan.margin, the minimum detectable effect and the verdict (analysis.report.decide)."""
    if "cell" not in runs:
        runs = cell_rows(runs)
    done = runs[runs["status"].isin(DONE)]
    rows = []
    for v in plan.variants:
        for m in plan.methods:
            every = runs[(runs["variant"] == v.name) & (runs["method"] == m)]
            g = done[done["cell"].isin(set(every["cell"]))]
            g = g[g["path"].isin(set(every["path"]))]
            row: dict[str, Any] = {"variant": v.name, "method": m, "method_name": display(m),
                                   "configuration_id": "/".join(sorted(set(every["configuration_id"]))),
                                   "n_seeds": len(g), "seeds": " ".join(str(s) for s in g["seed"]),
                                   "budget": every["budget"].iloc[0],
                                   "budget_fp": "/".join(sorted(set(every["budget_fp"]))),
                                   "crops": every["crops"].iloc[0], "epochs": every["epochs"].iloc[0],
                                   "batch_size": every["batch_size"].iloc[0],
                                   "commits": " ".join(sorted(set(g["commit"])))}
            for col in (*ACCURACIES, "random_knn_top1", "random_linear_top1", "matched_top1", "wall_s",
                        "images_per_s", "peak_mem_mb", "final_rank"):
                st = t_interval(g[col] if col in g else [])
                if st.n:
                    row.update({f"{col}_mean": st.mean, f"{col}_sd": st.sd, f"{col}_n": st.n,
                                f"{col}_ci_lo": st.lo, f"{col}_ci_hi": st.hi})
            if "matched_epoch" in g:
                row["matched_epoch_mean"] = g["matched_epoch"].mean() if len(g) else math.nan
            row["images_seen"] = g["images_seen"].mean() if len(g) else math.nan
            bad = every[~every["status"].isin(DONE)]
            row["missing"] = " ".join(f"s{s}:{st}" for s, st in zip(bad["seed"], bad["status"], strict=True))
            row["refused"] = " ".join(Path(p).name for p, why in zip(every["path"], every["stale"], strict=True)
                                      if why)
            row["collapsed"] = int(g["collapsed"].sum()) if "collapsed" in g else 0
            row["run_ids"] = " ".join(every["run_id"])
            row["_seeds"] = {col: cells.per_seed(g, col) for col in ACCURACIES}
            rows.append(row)
    table = pd.DataFrame(rows)
    for col in ACCURACIES:
        if f"{col}_mean" not in table:
            continue
        for v in plan.variants:  # each method against the reference method, within the variant
            idx = [i for i in table.index
                   if table.at[i, "variant"] == v.name and table.at[i, "method"] != plan.reference]
            ref = table[(table["variant"] == v.name) & (table["method"] == plan.reference)]
            if ref.empty or not idx:
                continue
            base = ref["_seeds"].iloc[0][col]
            tests = with_holm([paired(base, table.at[i, "_seeds"][col]) for i in idx])
            _store(table, idx, f"{col}_vs_ref", tests, plan.margin)
        if plan.baseline:  # each variant against the baseline variant, per method (e.g. the multi-crop gain)
            idx = [i for i in table.index if table.at[i, "variant"] != plan.baseline]
            base = {m: table[(table["variant"] == plan.baseline) & (table["method"] == m)]["_seeds"]
                    for m in plan.methods}
            tests = with_holm([paired(base[table.at[i, "method"]].iloc[0][col], table.at[i, "_seeds"][col])
                               for i in idx])
            _store(table, idx, f"{col}_vs_baseline", tests, plan.margin)
    return table


def _store(table: pd.DataFrame, idx: list, prefix: str, tests: list[Paired], margin: float) -> None:
    for i, t in zip(idx, tests, strict=True):
        d = decide(t, margin)
        lo90, hi90 = interval90(t)
        table.loc[i, [f"{prefix}_diff", f"{prefix}_ci_lo", f"{prefix}_ci_hi", f"{prefix}_n", f"{prefix}_p",
                      f"{prefix}_p_holm", f"{prefix}_ci90_lo", f"{prefix}_ci90_hi", f"{prefix}_p_tost",
                      f"{prefix}_margin", f"{prefix}_mde", f"{prefix}_n_needed", f"{prefix}_sd"]] = [
            t.diff.mean, t.diff.lo, t.diff.hi, t.n, t.p, t.p_holm, lo90, hi90, d.p_tost, margin, d.mde, d.n_needed,
            t.diff.sd]
        table.loc[i, f"{prefix}_significant"] = t.significant
        table.loc[i, f"{prefix}_decision"] = d.word if t.n >= 2 else ""
        table.loc[i, f"{prefix}_verdict"] = d.text()


def _decision(r: pd.Series, prefix: str) -> Decision | None:
    t = _test(r, prefix)
    if t is None:
        return None
    return Decision(str(r.get(f"{prefix}_decision") or ""), t, float(r[f"{prefix}_margin"]),
                    float(r[f"{prefix}_p_tost"]), float(r[f"{prefix}_mde"]), int(r[f"{prefix}_n_needed"]))


def _test(r: pd.Series, prefix: str) -> Paired | None:
    if f"{prefix}_diff" not in r or pd.isna(r.get(f"{prefix}_n")):
        return None
    n = int(r[f"{prefix}_n"])
    return Paired(n, Stat(n, r[f"{prefix}_diff"], r[f"{prefix}_sd"], r[f"{prefix}_ci_lo"], r[f"{prefix}_ci_hi"]),
                  r[f"{prefix}_p"], r[f"{prefix}_p_holm"])


def _cell(r: pd.Series, col: str, digits: int = 1) -> str:
    n = r.get(f"{col}_n")
    if pd.isna(n):
        return "—"
    return fmt_stat(Stat(int(n), r[f"{col}_mean"], r[f"{col}_sd"], r[f"{col}_ci_lo"], r[f"{col}_ci_hi"]), digits)


def verdict_words(margin: float, family: str) -> str:
    """How the verdicts are reached, for captions (compare tables and the claims report)."""
    return (f"Verdicts: *better* / *worse* by Δ when the paired t-test is significant after Holm's correction over "
            f"{family} (α = {ALPHA}); else *equivalent within ±{margin:g}* when TOST puts the 90% CI of Δ inside "
            f"±{margin:g} points; else *underpowered*, with the number of seeds that would decide ±{margin:g} at "
            f"80% power given the observed sd of the paired differences. MDE: the smallest true difference the "
            f"t-test finds with 80% power at this n.")


def table_markdown(table: pd.DataFrame, runs: pd.DataFrame, plan: Plan, matched: str | None,
                   warnings: list[str]) -> str:
    """The comparison as Markdown: a caption naming protocol, budget, statistics and the reference, the table (in
    the suite's order: no ranking by noise), the verdicts in words and, with a baseline variant, the gain table."""
    accs = [c for c in ACCURACIES if f"{c}_mean" in table and table[f"{c}_mean"].notna().any()]
    rank = "final_rank_mean" in table and table["final_rank_mean"].notna().any()  # records with health only
    header, rows = _table_rows(table, plan, accs, matched, rank)
    out = _caption(table, runs, plan, accs, matched, warnings) + "\n\n" + markdown_table(header, rows) + "\n" \
        + _verdicts(table, plan, accs)
    if plan.baseline:
        out += "\n" + _baseline_table(table, plan, accs)
    return out


def _table_rows(table: pd.DataFrame, plan: Plan, accs: list[str], matched: str | None, rank: bool
                ) -> tuple[list[str], list[list[str]]]:
    """The table's header and one row per (variant, method), variants in the study's order."""
    multi = len(plan.variants) > 1
    ref = display(plan.reference)
    header = (["variant"] if multi else []) + ["method"]
    for c in accs:
        header += [f"{ACCURACIES[c]} (%)", f"Δ {ACCURACIES[c]} vs {ref} (pt, paired, 95% CI)", "verdict"]
    header += ["matched kNN top-1 (%) (epoch)"] if matched else []
    header += ["random init kNN (%)"] + (["random init linear (%)"] if "linear_top1" in accs else [])
    header += ["crops", "wall (s)", "images/s", "peak mem (MB)", *(["final effective rank"] if rank else []), "seeds"]
    rows = []
    order = pd.concat([table[table["variant"] == v.name] for v in plan.variants])
    for _, r in order.iterrows():
        row = [r["variant"]] if multi else []
        name = r["method_name"] + (f" (refused: stale {r['refused']})" if r.get("refused") else
                                   f" (missing {r['missing']})" if r["missing"] else "") + (
            f" ({r['collapsed']} collapsed)" if r["collapsed"] else "")
        row += [name]
        for c in accs:
            d = _decision(r, f"{c}_vs_ref")
            row += [_cell(r, c)]
            row += ["reference", "—"] if r["method"] == plan.reference else (
                [fmt_delta(d.test), d.text()] if d else ["—", "—"])
        if matched:
            row.append(f"{_cell(r, 'matched_top1')} ({r.get('matched_epoch_mean', math.nan):.3g})")
        row += [num(r.get("random_knn_top1_mean"))] + ([num(r.get("random_linear_top1_mean"))]
                                                         if "linear_top1" in accs else [])
        row += [r["crops"], num(r.get("wall_s_mean"), 0), num(r.get("images_per_s_mean"), 0),
                num(r.get("peak_mem_mb_mean"), 0), *([num(r.get("final_rank_mean"), 1)] if rank else []),
                r["seeds"] or "—"]
        rows.append(row)
    return header, rows


def _caption(table: pd.DataFrame, runs: pd.DataFrame, plan: Plan, accs: list[str], matched: str | None,
             warnings: list[str]) -> str:
    """What the table shows: protocol, budget, statistics, the reference, the seeds' design and every caveat."""
    cfg = runs["_cfg"].iloc[0]
    multi = len(plan.variants) > 1
    d = plan.description or f"{len(plan.methods)} methods under one budget"
    ns = [int(r[f"{c}_n"]) for _, r in table.iterrows() for c in accs if pd.notna(r.get(f"{c}_n"))]
    uneven = [f"{r['method_name']}" + (f" [{r['variant']}]" if multi else "") + ": "
              + ", ".join(f"{ACCURACIES[c]} n={int(r[f'{c}_n'])}" for c in accs if pd.notna(r.get(f"{c}_n")))
              for _, r in table.iterrows()
              if len({int(r[f"{c}_n"]) for c in accs if pd.notna(r.get(f"{c}_n"))}) > 1]
    caption = (f"**{plan.name}**: {d}\n\n{budget_caption(list(runs['_cfg']), runs['budget'].iloc[0])} "
               f"Accuracy: {protocol(cfg)}" + (f"; linear: {linear_protocol(cfg)}" if "linear_top1" in accs else "")
               + f". {STATS} Δ: each method minus {display(plan.reference)} on the same seeds (same seed = same data "
               f"order and crops), mean and 95% CI of the per-seed differences. "
               + verdict_words(plan.margin, f"the {max(0, len(plan.methods) - 1)} comparisons of each protocol and "
                                            f"variant") + " Rows are in the suite's order, not ranked."
               + n_warning(ns))
    if plan.design:
        caption += f" **Seeds**: {plan.design}"
    if uneven:
        caption += " **Protocols with different n**: " + "; ".join(uneven) + "."
    refused = [r for _, r in table.iterrows() if r.get("refused")]
    if refused:
        caption += (" **Refused cells** (records today's code does not reproduce; `python -m ssl_bench.reference "
                    "verify`, then retrain them): " + "; ".join(f"{r['method_name']}: {r['refused']}" for r in refused)
                    + ".")
    if matched:
        caption += (f" Matched: {monitor_protocol(cfg)}, read {matched} at the last epoch every run reached "
                    f"(mean epoch in brackets).")
    if plan.allow_mixed and warnings:
        caption += " **Mixed budgets** (allow_mixed_budgets=true): " + "; ".join(warnings) + "."
    return caption


def _verdicts(table: pd.DataFrame, plan: Plan, accs: list[str]) -> str:
    """The comparisons in words, per protocol: which are better / worse, equivalent, underpowered."""
    lines = []
    ref = display(plan.reference)
    for v in plan.variants:
        g = table[(table["variant"] == v.name) & (table["method"] != plan.reference)]
        where = f" [{v.name}]" if len(plan.variants) > 1 else ""
        for c in accs:
            ds = [(r, _decision(r, f"{c}_vs_ref")) for _, r in g.iterrows()]
            ds = [(r, d) for r, d in ds if d is not None and d.test.n >= 2]
            if not ds:
                continue
            parts = []
            for word, say in ((BETTER, "better than"), (WORSE, "worse than"), (EQUIVALENT, "equivalent to"),
                              (UNDERPOWERED, "undecided against")):
                these = [(r, d) for r, d in ds if d.word == word]
                if these:
                    parts.append(f"{say} {ref}: " + ", ".join(
                        f"{r['method_name']} ({fmt_delta(d.test)}" + (
                            f"; n={d.n_needed if d.n_needed <= 999 else '>999'} would decide)"
                            if word == UNDERPOWERED else ")") for r, d in these))
            n = "/".join(map(str, sorted({d.test.n for _, d in ds})))
            lines.append(f"- {ACCURACIES[c]}{where}, n={n}, margin ±{plan.margin:g}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n" if lines else ""


def _baseline_table(table: pd.DataFrame, plan: Plan, accs: list[str]) -> str:
    """Per method: the baseline variant, each other variant, and the paired gain over the baseline."""
    others = [v.name for v in plan.variants if v.name != plan.baseline]
    header = ["method"]
    for c in accs:
        header += [f"{ACCURACIES[c]}: {plan.baseline}"]
        for o in others:
            header += [f"{ACCURACIES[c]}: {o}", "gain (pt, paired, 95% CI)", "verdict"]
    rows = []
    for m in plan.methods:
        g = table[table["method"] == m].set_index("variant")
        row = [display(m)]
        for c in accs:
            row.append(_cell(g.loc[plan.baseline], c))
            for o in others:
                d = _decision(g.loc[o], f"{c}_vs_baseline")
                row += [_cell(g.loc[o], c), fmt_delta(d.test) if d else "—", d.text() if d else "—"]
        rows.append(row)
    return (f"Gain over the baseline variant '{plan.baseline}', per method, paired by seed; Holm-corrected over the "
            f"{len(plan.methods) * len(others)} comparisons of each protocol; TOST against ±{plan.margin:g}.\n\n"
            + markdown_table(header, rows))


def write_outputs(plan: Plan, runs: pd.DataFrame, table: pd.DataFrame, md: str, matched: str | None,
                  warnings: list[str]) -> None:
    out = plan.out_dir
    public = runs[[c for c in runs.columns if not c.startswith("_")]]
    write_atomic(out / "runs.csv", public.to_csv(index=False))
    public_table = table[[c for c in table.columns if not c.startswith("_")]]
    write_atomic(out / "table.csv", public_table.to_csv(index=False, float_format="%.4f"))
    write_atomic(out / "table.md", md)
    write_json(out / "comparison.json", {
        "name": plan.name, "study": plan.study, "description": plan.description, "methods": plan.methods,
        "seeds": plan.seeds, "variants": [{"name": v.name, "overrides": v.overrides} for v in plan.variants],
        "baseline": plan.baseline, "reference": plan.reference, "match": plan.match, "matched": matched,
        "overrides": plan.overrides,
        "allow_mixed_budgets": plan.allow_mixed, "budget_warnings": warnings,
        "budget_fingerprints": sorted(set(runs["budget_fp"]))})


def compare(plan: Plan, train: bool = True, verbose: bool = True, require_all: bool = True) -> pd.DataFrame:
    """Run (or reuse) every run of the plan, check the budgets of the records and write the table. With
    ``seeds=auto`` the pilot runs first, then the seeds it asks for (:func:`auto_seeds`). ``train=False`` trains
    nothing: every record must exist, or with ``require_all=False`` the table is written from those that do and the
    others are named as not trained yet."""
    status = execute(plan, train, require_all)
    if plan.auto:
        n, design = auto_seeds(plan)
        print(design)
        more = plan.seeds + [s for s in range(max(plan.seeds) + 1, 10**6) if s not in plan.seeds][:n - len(plan.seeds)]
        plan = dataclasses.replace(with_seeds(plan, more), design=design)
        status.update(execute(plan, train, require_all=False))
    runs = run_rows(plan, status)
    # The records are the truth: check their saved configs again, not only what was composed.
    warnings = check_budgets([(r["variant"], f"{r['method']} s{r['seed']}", r["_items"]) for _, r in runs.iterrows()],
                             plan)
    runs = cell_rows(runs)
    for line in refusal_lines(runs):
        print(line, file=sys.stderr)
    matched = add_matched(runs, plan.match)
    table = summarise(runs, plan)
    md = table_markdown(table, runs, plan, matched, warnings) + skipped_note([str(r.run_dir) for r in plan.runs])
    write_outputs(plan, runs, table, md, matched, warnings)
    if verbose:
        print(md)
    print(f"table: {plan.out_dir}/table.md (and table.csv, runs.csv)")
    return table


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    args, train = plan_arguments(argv)
    compare(plan(**args), train=train, require_all=False)
    return 0


