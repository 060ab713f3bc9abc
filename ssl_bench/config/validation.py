"""Validation of a composed run config: range checks that types alone cannot express, each failure one line
(:class:`ConfigError`) naming the valid range or choices. The objective's own checks are its entry's ``validate``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig

from ssl_bench.common.tracking import tracker_problem
from ssl_bench.config.classes import read_class_list
from ssl_bench.config.registry import registry
from ssl_bench.config.schema import (
    AUGMENT_BACKENDS,
    BACKBONES,
    CLASS_LIST_DATASETS,
    COMPILE_BACKENDS,
    EVAL_PROTOCOLS,
    FUSED_OPTIMIZERS,
    GUARDRAILS,
    LINEAR_MODES,
    OPTIMIZERS,
    PRECISIONS,
)
from ssl_bench.errors import ConfigError, DataNotFound


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: DictConfig) -> None:
    """Range checks that types alone cannot express; each failure is one line naming the valid range."""
    methods = registry()
    check(cfg.method.name in methods, f"unknown method '{cfg.method.name}'; valid: {', '.join(methods)}")
    check(cfg.backbone.name in BACKBONES,
           f"unknown backbone.name '{cfg.backbone.name}'; valid choices: {', '.join(BACKBONES)}")
    check(cfg.optim.name in OPTIMIZERS,
           f"unknown optim.name '{cfg.optim.name}'; valid choices: {', '.join(OPTIMIZERS)}")
    check(cfg.train.precision is None or cfg.train.precision in PRECISIONS,
           f"unknown train.precision '{cfg.train.precision}'; valid choices: {', '.join(PRECISIONS)} "
           "(or null: accelerate's setting)")
    check(cfg.train.log_every >= 0, f"train.log_every must be >= 0 (0: no per-step logging), "
           f"got {cfg.train.log_every}")
    problem = tracker_problem(cfg.train)
    check(problem is None, problem or "")
    check(cfg.augment.backend in AUGMENT_BACKENDS,
           f"unknown augment.backend '{cfg.augment.backend}'; valid choices: {', '.join(AUGMENT_BACKENDS)}")
    check(cfg.augment.backend != "tensor" or cfg.dataset.image_size > 0,
           f"augment.backend=tensor needs fixed-size images; {cfg.dataset.name} has dataset.image_size=0 "
           "(use pil or hybrid)")
    check(cfg.augment.backend != "device_decode" or (cfg.dataset.image_size == 0 and not cfg.dataset.streaming),
           f"augment.backend=device_decode decodes image files; {cfg.dataset.name} "
           f"{'is streamed' if cfg.dataset.streaming else 'is held as pixels'} (use tensor, pil or hybrid)")
    check(cfg.train.compile_backend in COMPILE_BACKENDS, f"unknown train.compile_backend "
           f"'{cfg.train.compile_backend}'; valid choices: {', '.join(COMPILE_BACKENDS)}")
    check(not cfg.optim.fused or cfg.optim.name in FUSED_OPTIMIZERS,
           f"optim.fused=true: {cfg.optim.name} has no fused version (lightly's LARS updates parameter by parameter); "
           f"fused works with {', '.join(FUSED_OPTIMIZERS)}")
    check(cfg.data.batch_size > 0, f"data.batch_size must be > 0, got {cfg.data.batch_size}")
    check(cfg.train.epochs > 0, f"train.epochs must be > 0, got {cfg.train.epochs}")
    check(cfg.train.guardrails in GUARDRAILS, f"unknown train.guardrails '{cfg.train.guardrails}'; valid choices: "
           f"{', '.join(GUARDRAILS)}")
    h = cfg.health
    check(h.samples >= 0 and h.probe_steps >= 0 and h.uniform_epochs >= 1 and h.probe_lr > 0,
           "health.samples and health.probe_steps must be >= 0, health.uniform_epochs >= 1, health.probe_lr > 0")
    check(h.samples != 1, "health.samples must be 0 (off) or >= 2: uniformity needs pairs of images")
    check(0 <= h.min_rank_fraction < 1, f"health.min_rank_fraction must be in [0, 1), got {h.min_rank_fraction}")
    check(cfg.train.grad_accum >= 1, f"train.grad_accum must be >= 1, got {cfg.train.grad_accum}")
    check(cfg.train.checkpoint_every >= 0, "train.checkpoint_every must be >= 0 (0: only at the end)")
    check(cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    check(cfg.optim.final_lr >= 0 and cfg.optim.weight_decay >= 0, "optim.final_lr and weight_decay must be >= 0")
    check(cfg.optim.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")
    check(cfg.head.hidden_dim > 0 and cfg.head.out_dim > 0, "head.hidden_dim and head.out_dim must be > 0")
    _validate_crops(cfg)
    _validate_dataset(cfg)
    _validate_eval(cfg.eval)
    for key in ("train_subset",):
        check(cfg.data[key] >= 0, f"data.{key} must be >= 0 (0 = all)")
    methods[cfg.method.name].validate(cfg)


def class_list(spec: Any) -> list[str]:
    """The class names of dataset.classes (a file on the config search path, or a list)."""
    check(isinstance(spec, str | ListConfig | list),
           f"dataset.classes must be a file of class names or a list of them, got {spec!r}")
    try:
        return read_class_list(spec)
    except DataNotFound as exc:
        raise ConfigError(str(exc)) from exc


def _validate_crops(cfg: DictConfig) -> None:
    """Two crop kinds (global, local), each with a valid scale range and a size that fits the dataset's images."""
    check(set(cfg.crops.keys()) == {"global", "local"},
           f"crops must have exactly 'global' and 'local', got {', '.join(cfg.crops.keys())}")
    check(cfg.crops["global"].n >= 1, f"crops.global.n must be >= 1, got {cfg.crops['global'].n}")
    check(cfg.crops["local"].n >= 0, f"crops.local.n must be >= 0, got {cfg.crops['local'].n}")
    for kind, spec in cfg.crops.items():
        lo, hi = (list(spec.scale) + [None, None])[:2]
        check(len(spec.scale) == 2 and 0 < lo <= hi <= 1,
               f"crops.{kind}.scale must be [min, max] with 0 < min <= max <= 1, got {list(spec.scale)}")
        check(spec.size > 0, f"crops.{kind}.size must be > 0, got {spec.size}")
        if cfg.dataset.image_size > 0 and spec.n > 0:
            check(spec.size <= cfg.dataset.image_size,
                   f"crops.{kind}.size={spec.size} is larger than the {cfg.dataset.name} images "
                   f"({cfg.dataset.image_size} px); valid: 1..{cfg.dataset.image_size}")


def _validate_dataset(cfg: DictConfig) -> None:
    d = cfg.dataset
    if d.classes is not None:
        check(d.name in CLASS_LIST_DATASETS, f"dataset.classes selects classes of image-folder datasets "
               f"({', '.join(CLASS_LIST_DATASETS)}); {d.name} does not support it")
        k = len(class_list(d.classes))
        check(d.num_classes == k, f"dataset.num_classes={d.num_classes} but dataset.classes lists {k} classes")
    check(d.num_examples >= 0, f"dataset.num_examples must be >= 0 (0 = from the dataset's info), "
           f"got {d.num_examples}")
    if not d.streaming:
        return
    check(d.name == "hf", f"dataset.streaming=true streams Hugging Face datasets (dataset=hf); {d.name} is read "
           "from local files")
    check(len(d.pretrain_splits) == 1, f"dataset.streaming=true streams one pretraining split, got "
           f"dataset.pretrain_splits={list(d.pretrain_splits)}")
    check(d.shuffle_buffer >= 1, f"dataset.shuffle_buffer must be >= 1, got {d.shuffle_buffer}")
    method = cfg.method.name
    check(not getattr(registry()[method].cls, "needs_full_pass", False),
           f"method {method} needs every pretraining image by index (a memory bank filled by a full pass over the "
           f"data), which a stream cannot give; use dataset.streaming=false")


def _validate_eval(e: DictConfig) -> None:
    bad = [p for p in e.protocols if p not in EVAL_PROTOCOLS]
    check(not bad, f"unknown eval protocol '{bad[0] if bad else ''}'; valid choices: {', '.join(EVAL_PROTOCOLS)}")
    check(len(e.seeds) > 0, "eval.seeds must list at least one seed, e.g. [0, 1, 2]")
    check(len(e.knn_k) > 0 and all(k > 0 for k in e.knn_k), f"eval.knn_k values must be > 0, got {list(e.knn_k)}")
    check(e.knn_temperature > 0, "eval.knn_temperature must be > 0")
    for key in ("knn_train_subset", "knn_test_subset", "monitor_train_subset", "monitor_test_subset"):
        check(e[key] >= 0, f"eval.{key} must be >= 0 (0 = all)")
    for key in ("batch_size", "linear_epochs", "linear_batch_size", "finetune_epochs", "finetune_batch_size",
                "feature_memory_mb"):
        check(e[key] > 0, f"eval.{key} must be > 0, got {e[key]}")
    for key in ("linear_lr", "supervised_lr", "finetune_gamma"):
        check(e[key] > 0, f"eval.{key} must be > 0, got {e[key]}")
    for key in ("linear_weight_decay", "linear_momentum", "finetune_momentum", "finetune_weight_decay",
                "supervised_weight_decay"):
        check(e[key] >= 0, f"eval.{key} must be >= 0, got {e[key]}")
    check(e.linear_mode in LINEAR_MODES,
           f"unknown eval.linear_mode '{e.linear_mode}'; valid choices: {', '.join(LINEAR_MODES)}")
    fr = list(e.finetune_fractions)
    check(len(fr) > 0 and all(0 < f <= 1 for f in fr),
           f"eval.finetune_fractions must be in (0, 1] (e.g. [0.01, 0.1] for 1% and 10%), got {fr}")
    check(len(e.finetune_lr_backbone) == len(fr) and len(e.finetune_lr_head) == len(fr),
           f"eval.finetune_lr_backbone and eval.finetune_lr_head need one lr per fraction ({len(fr)}: {fr})")
    check(all(x > 0 for x in [*e.finetune_lr_backbone, *e.finetune_lr_head]), "eval.finetune_lr_* must be > 0")
    check(all(m > 0 for m in e.finetune_milestones), "eval.finetune_milestones must be epochs > 0")
    lo, hi = (list(e.crop_scale) + [None, None])[:2]
    check(len(e.crop_scale) == 2 and 0 < lo <= hi <= 1,
           f"eval.crop_scale must be [min, max] with 0 < min <= max <= 1, got {list(e.crop_scale)}")
