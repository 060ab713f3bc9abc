"""One ordinary run: resolved config -> train -> evaluate -> result record. Used by every entry point
(run, sweep, compare), so a trial or a comparison row is exactly what ``ssl_bench.run`` produces.

The record (ssl_bench.results): config.yaml, metrics.jsonl (per epoch), baseline.json (the random-init kNN),
predictions.npz (the final evaluation's per-test-image kNN and linear predictions, written just before the
summary; ssl_bench.evaluation.predictions) and summary.json, written last."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf

from ssl_bench.common.kernels import kernel_path
from ssl_bench.common.progress import configure as configure_progress
from ssl_bench.common.tracking import log_with, start_trackers
from ssl_bench.config.compose import ConfigError
from ssl_bench.data import EvalDataset, eval_transform, fixed_subset, load_split, pretrain_dataset
from ssl_bench.evaluation import final_evaluation, flat_knn
from ssl_bench.evaluation.predictions import write_predictions
from ssl_bench.evaluation.protocols import baseline_file, cache_tag, read_baselines
from ssl_bench.methods.base import build_method
from ssl_bench.models.networks import ProjectionHead, SSLModel, build_backbone
from ssl_bench.pipeline import gpu_budgets
from ssl_bench.records.identity import configuration_id
from ssl_bench.records.io import (
    below_floor,
    find_run_dir,
    headline,
    one_line,
    portable,
    read_json,
    read_metrics,
    read_summary,
    write_atomic,
    write_json,
)
from ssl_bench.training.checkpoint import CHECKPOINT, CHECKPOINT_PREV, CHECKPOINT_TMP, check_shared_folder
from ssl_bench.training.health import HEALTH_KEYS
from ssl_bench.training.loop import Trainer, default_num_workers, peak_memory_mb
from ssl_bench.training.multicrop import build_pretrain_set
from ssl_bench.training.signals import StopOnSignal
from ssl_bench.training.syncbn import convert_sync_batchnorm

CHECKPOINTS = (CHECKPOINT, CHECKPOINT_PREV, CHECKPOINT_TMP)


def versions() -> dict[str, str]:
    import accelerate
    import lightly
    import torchvision

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "accelerate": accelerate.__version__,
           "lightly": lightly.__version__, "kernel": kernel_path()}
    out.update(code_state())
    return out


# The tracked files that decide what a run trains (a change elsewhere, docs or results, leaves records valid).
TRAINING_CODE = ("ssl_bench", "methods", "experiments", "pyproject.toml")


def code_state() -> dict[str, Any]:
    """``git``: the commit of this checkout; ``git_clean``: whether the training code (TRAINING_CODE) equals that
    commit (no uncommitted change, no untracked file). Empty outside a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]  # the checkout (ssl_bench/pipeline/experiment.py)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", *TRAINING_CODE)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git": commit, "git_clean": not dirty}


def training_commit(rev: str = "HEAD") -> str | None:
    """The last commit at or before ``rev`` that changed the training code (TRAINING_CODE): two commits with the same
    one train the same way, so a record verified at either is verified at both (a commit of docs or tests moves
    nothing). None outside a git checkout or for an unknown ``rev``."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h", rev, "--", *TRAINING_CODE], capture_output=True,
                             text=True, cwd=root, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def build_model(cfg: DictConfig) -> SSLModel:
    backbone = build_backbone(cfg)
    head = ProjectionHead(backbone.out_dim, cfg.head.hidden_dim, cfg.head.out_dim)
    return SSLModel(backbone, head, build_method(cfg, cfg.head.out_dim))


def make_accelerator(cfg: DictConfig, run_dir: Path) -> Accelerator:
    return Accelerator(
        # None: Accelerate reads ACCELERATE_MIXED_PRECISION (set by `accelerate launch` from its config or flag).
        mixed_precision=cfg.train.precision, gradient_accumulation_steps=cfg.train.grad_accum,
        # data.batch_size is the global batch: each process takes its 1/N slice of every batch.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=log_with(cfg, run_dir), project_dir=str(run_dir),
    )


def precision_source(cfg: DictConfig, used: str) -> str:
    """Where the run's precision came from, in words."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if cfg.train.precision is not None:
        overridden = f"; accelerate config / launch said {launcher}" if launcher and launcher != used else ""
        return f"train.precision{overridden}"
    if launcher:
        return "accelerate config / launch: ACCELERATE_MIXED_PRECISION"
    return "default: neither train.precision nor accelerate config / launch sets one"


def set_threads(cfg: DictConfig, accelerator: Accelerator) -> None:
    """`accelerate launch` on a CPU sets one thread per process; use the machine's cores unless told."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    elif accelerator.device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))))


def eval_pairs(cfg: DictConfig) -> dict[str, tuple]:
    """Labeled (train, test) pairs: 'final' for the end-of-run kNN, 'monitor' for the per-epoch one."""
    tf = eval_transform(cfg)
    train = load_split(cfg, cfg.dataset.train_split)
    test = load_split(cfg, cfg.dataset.test_split)
    e, seed = cfg.eval, cfg.data.subset_seed
    pairs = {"final": (EvalDataset(fixed_subset(train, e.knn_train_subset, seed), tf),
                       EvalDataset(fixed_subset(test, e.knn_test_subset, seed), tf))}
    if e.monitor_train_subset and e.monitor_test_subset:
        pairs["monitor"] = (EvalDataset(fixed_subset(train, e.monitor_train_subset, seed + 1), tf),
                            EvalDataset(fixed_subset(test, e.monitor_test_subset, seed + 1), tf))
    return pairs


# Lines printed after a run's headline (cfg, summary, run folder) -> lines: the entry points pass the comparison with
# the shipped reference (ssl_bench.analysis.against_reference), which the pipeline cannot import (a layer above it).
Beside = Callable[[DictConfig, dict[str, Any], Path], list[str]]


def run_experiment(cfg: DictConfig, epoch_callbacks: list[Callable[[int, dict], str | None]] | None = None,
                   beside: Beside | None = None) -> dict[str, Any]:
    """Train and evaluate one config; returns the summary (also written to <run>/summary.json).

    ``epoch_callbacks`` get (epoch, that epoch's metrics row) on the main process after each epoch; a
    callback that returns a reason (a string) stops the run with TrainingStopped(pruned=True). ``beside`` gives the
    lines printed after the headline (e.g. the shipped reference's numbers)."""
    beside = beside or (lambda *_: [])
    run_dir = find_run_dir(cfg)
    rid = run_dir.name
    main = int(os.environ.get("RANK", "0")) == 0
    if (run_dir / "summary.json").exists() and not cfg.overwrite:
        if main:
            summary = read_summary(run_dir)
            print(f"run {rid} is already complete (overwrite=true trains it again)\n" + headline(summary)
                  + "".join(f"\n{line}" for line in beside(cfg, summary, run_dir))
                  + f"\nrecord: {run_dir}/summary.json")
        return read_json(run_dir / "summary.json")
    if any((run_dir / c).exists() for c in CHECKPOINTS) and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"{run_dir} holds an unfinished run: resume=true continues it, "
                          f"overwrite=true starts it over")
    configure_progress(cfg.train.progress)
    accelerator = make_accelerator(cfg, run_dir)
    try:
        return _run(cfg, accelerator, rid, run_dir, epoch_callbacks, beside)
    finally:
        accelerator.end_training()
        AcceleratorState._reset_state()  # let the next run in this process build its own Accelerator
        GradientState._reset_state()


def _run(cfg: DictConfig, acc: Accelerator, rid: str, run_dir: Path, epoch_callbacks: list | None,
         beside: Beside) -> dict[str, Any]:
    n = acc.num_processes
    if cfg.data.batch_size % n:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) must be divisible by the "
                          f"{n} processes")
    if acc.is_main_process and cfg.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    acc.wait_for_everyone()
    set_threads(cfg, acc)
    set_seed(cfg.seed)
    trainer, backend = _build_trainer(cfg, acc, run_dir, epoch_callbacks)
    # The record says the precision used (null = whatever `accelerate launch` said), so identity never depends
    # on the environment a record is read in.
    source = precision_source(cfg, acc.mixed_precision)
    cfg.train.precision = acc.mixed_precision
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(portable(cfg)))
        start_trackers(cfg, acc, rid, run_dir)
    check_shared_folder(acc, run_dir)
    resumed = cfg.resume and trainer.load_checkpoint()
    say = print if acc.is_main_process else (lambda *a, **k: None)
    if cfg.print_config:
        say(OmegaConf.to_yaml(cfg))
    say(f"ssl_bench: {one_line(cfg, n, trainer.steps_per_epoch)}\n"
        f"  {n} process(es) on {acc.device}, {torch.get_num_threads()} threads, {trainer.num_workers} loader workers "
        f"each, {backend} multi-crop, precision {acc.mixed_precision} ({source})\n"
        f"  config: {run_dir}/config.yaml" + ("" if cfg.print_config else " (print_config=true prints it)")
        + (f"\n  resumed at epoch {trainer.state.epoch + 1}, batch {trainer.state.batch}" if resumed else "")
        + (f"\n  note: {untried}" if (untried := gpu_budgets.note(cfg)) else ""))
    # Ctrl-C / SIGTERM outside the training loop (which checkpoints and stops itself): one line, exit 130.
    with StopOnSignal("interrupted before training (the random-init baseline); nothing was trained") as stop:
        baseline_path = run_dir / "baseline.json"
        eval_s = _random_baseline(cfg, acc, trainer, run_dir, say)
        state = trainer.fit()
        stop.message = ("interrupted during the final evaluation; training is finished and its checkpoint "
                        "saved; resume=true evaluates it")
        say(f"final evaluation: {', '.join(dict.fromkeys(['knn', *cfg.eval.protocols]))} ...")
        t_final = time.time()
        # kNN (flat knn_top1* keys) + eval.protocols over eval.seeds, with their random-init floor (metrics.random).
        predictions: dict[str, Any] = {}  # per test image, kept beside the summary (not in it)
        final = final_evaluation(cfg, acc, trainer.evaluated, run_dir, trainer.num_workers,
                                 random_knn=read_json(baseline_path) if baseline_path.exists() else None,
                                 predictions=predictions)
        summary = _summary(cfg, acc, rid, state, final, eval_s + (time.time() - t_final))
        if baseline_path.exists():
            summary["metrics"].update({f"random_{k}": v for k, v in read_json(baseline_path).items()})
        _add_last_epoch(summary, read_metrics(run_dir) if acc.is_main_process else [], say)
        # The accuracies below this run's own random-init floor (records.io.below_floor): [] when none is.
        summary["below_floor"] = below_floor(summary["metrics"])
        if acc.is_main_process:
            if predictions:  # before the summary, which marks the record complete
                write_predictions(run_dir, predictions)
            write_json(run_dir / "summary.json", summary)
            say("\n".join([headline(summary), *beside(cfg, summary, run_dir),
                           f"wall {state.wall_s:.0f} s, {summary['cost']['images_per_s']:.0f} images/s, peak memory "
                           f"{summary['cost']['peak_mem_mb']:.0f} MB", f"record: {run_dir}/summary.json"]))
    return summary


def _build_trainer(cfg: DictConfig, acc: Accelerator, run_dir: Path, epoch_callbacks: list | None
                   ) -> tuple[Trainer, str]:
    """The data, the model and the loop, built in this order after set_seed (the order fixes the initial weights);
    returns the trainer and the multi-crop backend's name."""
    backend, train_set, augment = build_pretrain_set(cfg, pretrain_dataset(cfg), acc.device)
    if len(train_set) < cfg.data.batch_size:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(train_set)} "
                          f"pretraining images")
    pairs = eval_pairs(cfg)
    model = build_model(cfg)
    # Batch norm over the global batch: on by default with several processes, as the papers train.
    n = acc.num_processes
    sync_bn = cfg.backbone.sync_bn if cfg.backbone.sync_bn is not None else n > 1
    if sync_bn and n > 1:
        model = convert_sync_batchnorm(model, acc.device)
    workers = default_num_workers(cfg)
    return Trainer(cfg, acc, model, train_set, pairs, run_dir, workers, augment, epoch_callbacks), backend


def _random_baseline(cfg: DictConfig, acc: Accelerator, trainer: Trainer, run_dir: Path,
                     say: Callable[..., None]) -> float:
    """The kNN of the randomly initialised backbone (before any step), from the cache when another run computed
    the same floor; returns the seconds spent evaluating."""
    baseline_path = run_dir / "baseline.json"
    if not (cfg.eval.random_baseline and not baseline_path.exists() and trainer.state.step == 0):
        return 0.0
    eval_s = 0.0
    cached = read_baselines(baseline_file(cfg, acc, run_dir.parent), acc).get(cache_tag("knn", [0]))
    if cached is not None:  # the same floor, computed by an earlier run (another method, same settings)
        base = flat_knn(cached["knn"])
    else:
        say("kNN of the randomly initialised backbone (baseline) ...")
        t0 = time.time()
        base = trainer.knn("final")
        eval_s += time.time() - t0
    if acc.is_main_process:
        write_json(baseline_path, base)
    return eval_s


def _summary(cfg: DictConfig, acc: Accelerator, rid: str, state: Any, final: dict[str, Any], eval_s: float
             ) -> dict[str, Any]:
    """The record's summary (summary.json) before the last epoch's keys; ``eval_s``: seconds spent evaluating."""
    return {
        "run_id": rid, "configuration_id": configuration_id(cfg), "status": "complete",
        "method": cfg.method.name, "dataset": cfg.dataset.name, "budget": cfg.choices.budget,
        "backbone": cfg.backbone.name, "seed": cfg.seed, "epochs": cfg.train.epochs,
        "batch_size": cfg.data.batch_size, "overrides": list(portable(cfg).overrides), "tags": dict(cfg.tags),
        # The precision used: train.precision, else accelerate's setting.
        "precision": acc.mixed_precision,
        "metrics": dict(final),
        "cost": {"wall_s": state.wall_s + eval_s,
                 "train_s": state.train_s, "images_seen": state.images,
                 "images_per_s": state.images / max(1e-9, state.train_s),
                 "peak_mem_mb": peak_memory_mb(acc.device), "num_processes": acc.num_processes,
                 "device": str(acc.device)},
        "versions": versions(),
    }


def _add_last_epoch(summary: dict[str, Any], rows: list[dict[str, Any]], say: Callable[..., None]) -> None:
    """The last epoch's keys (final_loss, final health, ...), every guardrail that fired, and a collapse."""
    if not rows:
        return
    last = rows[-1]
    for key in ("loss", "assign_entropy", "prototypes_used", "monitor_knn_top1", *HEALTH_KEYS):
        if key in last:
            summary["metrics"][f"final_{key}" if key != "monitor_knn_top1" else key] = last[key]
    # Every guardrail that fired (ssl_bench/training/health.py), with its epoch; [] when none did.
    summary["guardrails"] = [{"epoch": r["epoch"], **g} for r in rows for g in r.get("guardrails", [])]
    if last.get("prototypes_used") == 1:
        summary["collapsed"] = True
        say("warning: assignments collapsed to a single prototype in the last epoch")
