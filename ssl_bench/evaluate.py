"""Entry point: evaluate a checkpoint with the shared protocols.

    python -m ssl_bench.evaluate checkpoint=<run folder | weights file> [eval=<protocol> | eval=[knn,linear] | eval=all]
                                 [dataset=<name>] [eval.seeds=[0,1,2]] [export=<file>] [key=value ...]
    accelerate launch -m ssl_bench.evaluate ...        (several processes: each extracts its shard)

Protocols (defaults in ssl_bench/config/schema.py, EvalConfig; override as eval.<key>=...):
  knn         weighted kNN on frozen features (cosine, k in eval.knn_k, T = 0.07)
  linear      linear probe on frozen pooled features (SwAV A.3; eval.linear_mode=augmented|cached)
  finetune    semi-supervised fine-tuning on 1% / 10% of the labels (SwAV A.4; stratified, saved index files)
  supervised  the same backbone trained with labels at the run's budget: the ceiling of a table
Each also runs on the randomly initialised backbone (eval.random_baseline=true): the floor.

checkpoint=results/runs/<run_id> (or its checkpoint/model.safetensors): the run's config.yaml gives the model;
the results are merged into its summary.json as metrics.<protocol> (metrics.random.<protocol>,
metrics.supervised); dataset=<other> evaluates transfer (recorded as metrics.transfer.<other>.<protocol>), with
the other dataset's images at its own resolution. A weights file (.safetensors/.pt: our or a torchvision backbone
state_dict) takes the model from the overrides (backbone=resnet18 dataset=cifar10 ...) and writes
<file>.evaluation.json beside it. export=<file> writes the backbone as a plain state_dict (alone: no evaluation).
Bad input (no checkpoint, unknown key, a split without labels, a fraction outside (0, 1]) is one line, exit 2.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_bench.common.progress import configure as configure_progress
from ssl_bench.config.cli import guarded, leave
from ssl_bench.config.compose import ConfigError, _one_line, _split_overrides, check_settable, compose
from ssl_bench.config.overrides import Command, Key, help_requested, writable_file
from ssl_bench.config.registry import evaluated_network
from ssl_bench.config.schema import EVAL_PROTOCOLS, RunConfig
from ssl_bench.config.validation import validate
from ssl_bench.evaluation import evaluate_all, export_backbone, load_backbone
from ssl_bench.evaluation.checkpoint import WEIGHT_SUFFIXES
from ssl_bench.evaluation.protocols import baseline_file, splits_root
from ssl_bench.models.networks import build_backbone
from ssl_bench.records.io import read_json, relative_to_results, write_json
from ssl_bench.records.layout import ResultsLayout

COMMAND = Command(
    "ssl_bench.evaluate", __doc__.split("\n\nProtocols")[0],
    (Key("checkpoint", "str", None, "required: a run folder (results/runs/<run_id>) or a weights file"),
     Key("eval", "str", None, "protocols: one, a list [knn,linear] or all (null: the run config's eval.protocols)"),
     Key("export", "str", None, "write the backbone as a plain state_dict to this file (alone: no evaluation)")),
    overrides="Every other key=value is a run-config override (as for ssl_bench.run), e.g. eval.seeds=[0,1,2] "
              "(evaluation seeds), eval.linear_mode=cached, dataset=<other> (transfer).",
    deprecated={"seeds": ("eval.seeds", "evaluate's seeds= is now eval.seeds= (evaluation seeds; seeds= means "
                                        "training seeds in compare and sweep)")},
    footer="Protocols" + __doc__.split("\n\nProtocols", 1)[1])


@dataclass
class Source:
    """What to evaluate: the weights file, and the run folder and its saved config when it comes from a run."""

    weights: Path
    run_dir: Path | None = None
    saved: DictConfig | None = None


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split the command line into this entry point's own keys (those given) and the config overrides."""
    own, rest, given = COMMAND.parse(argv)
    return {k: own[k] for k in given}, rest


def protocol_list(value: str) -> list[str]:
    """'linear' | '[knn,linear]' | 'all' -> the protocol names (validated)."""
    if value.strip() == "all":
        return list(EVAL_PROTOCOLS)
    names = [x.strip().strip("'\"") for x in value.strip().strip("[]").split(",") if x.strip()]
    bad = [n for n in names if n not in EVAL_PROTOCOLS] or ([] if names else [value])
    if bad:
        raise ConfigError(f"unknown eval protocol '{bad[0]}'; valid choices: {', '.join(EVAL_PROTOCOLS)}, all")
    return names


def resolve_source(value: str) -> Source:
    """A run folder (or a file inside its checkpoint/), or a bare weights file."""
    p = Path(value)
    if not p.exists():
        raise ConfigError(f"checkpoint {p} not found: give a run folder (results/runs/<run_id>) or a weights file "
                          f"({', '.join(WEIGHT_SUFFIXES)})")
    if p.is_dir():
        if not (p / "config.yaml").exists():
            raise ConfigError(f"{p} is not a run folder (no config.yaml); give results/runs/<run_id> or a weights file")
        weights = p / "checkpoint" / "model.safetensors"
        if not weights.exists():
            raise ConfigError(f"run {p} has no checkpoint/model.safetensors (checkpoints are not committed: train "
                              f"it again, or give a weights file)")
        return Source(weights, p, OmegaConf.load(p / "config.yaml"))
    if p.parent.name == "checkpoint" and (p.parent.parent / "config.yaml").exists():
        return Source(p, p.parent.parent, OmegaConf.load(p.parent.parent / "config.yaml"))
    if p.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(f"checkpoint {p}: unknown weights format; valid: {', '.join(WEIGHT_SUFFIXES)} "
                          f"or a run folder")
    return Source(p)


def _set_key(cfg: DictConfig, override: str) -> None:
    check_settable(cfg, override)
    try:
        cfg.merge_with(OmegaConf.from_dotlist([override]))
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"'{override}': {_one_line(exc)}") from exc


def run_config(saved: DictConfig, overrides: list[str]) -> tuple[DictConfig, str | None]:
    """The run's saved config with evaluation-time overrides; returns it and the transfer dataset (or None).

    The saved config is laid over the current schema (keys added since the run get their defaults); the model
    (method, backbone, head) stays the run's. ``dataset=<name>`` swaps in that dataset's ``dataset`` and
    ``crops`` blocks (its images at its own resolution): transfer when it differs from the run's dataset."""
    groups, keys = _split_overrides(overrides)
    fixed = [g for g in groups if g != "dataset"]
    if fixed:
        raise ConfigError(f"{fixed[0]}= cannot change for a trained checkpoint (the run's config.yaml fixes it); "
                          f"only dataset= (transfer) and key=value overrides apply")
    data = OmegaConf.to_container(saved, resolve=True)
    choices, train_overrides = dict(data.pop("choices", {}) or {}), list(data.pop("overrides", []) or [])
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the run's config.yaml does not fit the current schema: {_one_line(exc)}") from exc
    transfer = None
    if "dataset" in groups:
        target = compose([f"dataset={groups['dataset']}"])
        if target.dataset.name != cfg.dataset.name or choices.get("dataset") != groups["dataset"]:
            transfer = groups["dataset"]
        cfg.merge_with({"dataset": target.dataset, "crops": target.crops})
        choices["dataset"] = groups["dataset"]
    for o in keys:
        _set_key(cfg, o)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    cfg.choices, cfg.overrides = choices, train_overrides
    validate(cfg)
    OmegaConf.set_struct(cfg, True)
    return cfg, transfer


def merge_metrics(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """Merge ``src`` into ``dst``: a record (a dict with 'settings') replaces the old one whole; other dicts
    (random, transfer, transfer.<dataset>) merge key by key; numbers replace."""
    for key, value in src.items():
        old = dst.get(key)
        if isinstance(value, dict) and "settings" not in value and isinstance(old, dict):
            merge_metrics(old, value)
        else:
            dst[key] = value
    return dst


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock (flock on a side file) around a read-modify-write of a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge_record(path: Path, metrics: dict[str, Any], entry: dict[str, Any], base: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Merge ``metrics`` into ``path``'s metrics and append ``entry`` to its evaluation log, atomically."""
    with _locked(path.with_name(f".{path.name}.lock")):
        rec = read_json(path) if path.exists() else dict(base or {})
        merge_metrics(rec.setdefault("metrics", {}), metrics)
        rec.setdefault("evaluations", []).append(entry)
        write_json(path, rec)
    return rec


def _check_batches(cfg: DictConfig, n: int) -> None:
    for key in ("batch_size", "linear_batch_size", "finetune_batch_size"):
        if cfg.eval[key] % n:
            raise ConfigError(f"eval.{key}={cfg.eval[key]} (a global batch) must be divisible by the {n} processes")


def evaluate_checkpoint(cfg: DictConfig, accelerator: Accelerator, src: Source, protocols: list[str],
                        transfer: str | None = None, export: str | None = None,
                        argv: list[str] | None = None) -> dict[str, Any]:
    """Load the backbone of ``src``, export it and/or run ``protocols``, and write the results; returns the
    metrics written (empty when only exporting)."""
    from ssl_bench.pipeline.experiment import set_threads
    from ssl_bench.training.loop import default_num_workers

    main = accelerator.is_main_process
    say = print if main else (lambda *a, **k: None)
    _check_batches(cfg, accelerator.num_processes)
    set_threads(cfg, accelerator)
    # eval.network: the run's (its config, else the network its method's paper reports); a weights file: the student
    network = evaluated_network(cfg) if src.run_dir is not None else (cfg.eval.get("network") or "student")
    backbone = load_backbone(build_backbone(cfg), src.weights, network)
    if export:
        if main:
            say(f"exported the {cfg.backbone.name} backbone of {src.weights} to {export_backbone(backbone, export)}")
        accelerator.wait_for_everyone()
    if not protocols:
        return {}
    seeds = list(cfg.eval.seeds)
    whose = " (the momentum teacher's)" if network == "teacher" else ""
    say(f"ssl_bench evaluate {src.run_dir or src.weights}\n  {cfg.backbone.name} backbone{whose} from {src.weights}\n"
        f"  {', '.join(protocols)} on {cfg.dataset.name}" + (f" (transfer from {src.saved.dataset.name})" if transfer
                                                              else "")
        + f", seeds {seeds}, {accelerator.num_processes} process(es) on {accelerator.device}")
    home = src.run_dir if src.run_dir is not None else src.weights.parent
    work = home / (f".{src.weights.name}.features.tmp" if src.run_dir is None else "features.tmp")
    splits = splits_root(cfg, src.run_dir.parent if src.run_dir is not None else None)
    t0 = time.time()
    tree = evaluate_all(cfg, accelerator, backbone, protocols=protocols, seeds=seeds, work_dir=work,
                        splits_dir=splits, num_workers=default_num_workers(cfg),
                        baselines=baseline_file(cfg, accelerator,
                                                src.run_dir.parent if src.run_dir is not None else None))
    # A run's weights are named relative to its results folder (records move between machines).
    named = (relative_to_results(src.weights, ResultsLayout.of_run(src.run_dir).root) if src.run_dir is not None
             else str(src.weights))
    entry = {"protocols": protocols, "dataset": cfg.dataset.name, "seeds": seeds, "checkpoint": named,
             "arguments": list(argv or []), "wall_s": round(time.time() - t0, 2),
             "num_processes": accelerator.num_processes, "device": str(accelerator.device),
             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if src.run_dir is None:
        metrics = {cfg.dataset.name: tree}
        path = src.weights.with_name(f"{src.weights.name}.evaluation.json")
        base = {"checkpoint": str(src.weights), "backbone": cfg.backbone.name}
    else:
        metrics = {"transfer": {transfer: tree}} if transfer else tree
        path = src.run_dir / "summary.json"
        if not path.exists():  # an unfinished run: its summary is written at the end of training
            path = src.run_dir / "evaluation.json"
        base = {"run_id": src.run_dir.name}
    if main:
        merge_record(path, metrics, entry, base)
        _report(say, tree, path)
    accelerator.wait_for_everyone()
    return metrics


def _report(say: Any, tree: dict[str, Any], path: Path) -> None:
    rnd = tree.get("random", {})
    for name, rec in tree.items():
        if isinstance(rec, dict) and "top1" in rec and name not in ("random", "supervised"):
            extra = f" (random init {rnd[name]['top1']:.2f}%)" if name in rnd else ""
            std = f" ± {rec['top1_std']:.2f}" if "top1_std" in rec else ""
            say(f"{name} top-1: {rec['top1']:.2f}%{std}{extra}")
    if "supervised" in tree:
        say(f"supervised reference top-1: {tree['supervised']['top1']:.2f}%")
    say(f"record: {path}")


def evaluate(argv: list[str]) -> dict[str, Any]:
    """``python -m ssl_bench.evaluate argv`` without the exit: returns the metrics written (ssl_bench.api)."""
    special, rest = parse_args(argv)
    if not special.get("checkpoint"):
        raise ConfigError("checkpoint=<run folder or weights file> is required, e.g. "
                          "checkpoint=results/runs/<run_id> eval=linear")
    if special.get("export"):
        writable_file(special["export"], "export")
    src = resolve_source(special["checkpoint"])
    extra = []
    if "eval" in special:
        extra.append(f"eval.protocols=[{','.join(protocol_list(special['eval']))}]")
    if src.saved is not None:
        cfg, transfer = run_config(src.saved, rest + extra)
    else:
        cfg, transfer = compose(rest + extra), None
    export = special.get("export") or None
    protocols = list(cfg.eval.protocols) if ("eval" in special or not export) else []
    configure_progress(cfg.train.progress)
    accelerator = Accelerator(mixed_precision=cfg.train.precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    try:
        return evaluate_checkpoint(cfg, accelerator, src, protocols, transfer, export, argv)
    finally:
        accelerator.end_training()
        AcceleratorState._reset_state()
        GradientState._reset_state()


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    evaluate(argv)
    return 0


if __name__ == "__main__":
    leave(guarded(main))
