"""Optimisers (SGD, LARS from lightly, AdamW) with bias/norm parameters excluded from weight decay,
and the learning-rate schedule: linear warm-up, then cosine decay to a final value (SwAV, A.1)."""

from __future__ import annotations

import math

import torch
from lightly.utils.lars import LARS
from omegaconf import DictConfig
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool) -> list[dict]:
    """Two groups: weights with decay; biases and normalisation parameters (1-d tensors) without it.
    lightly's LARS also skips its trust-ratio scaling for groups with zero weight decay."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_bias_and_norm and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = param_groups(model, o.weight_decay, o.exclude_bias_and_norm)
    # fused=None leaves torch its default (the foreach update on a GPU); config validation refuses fused LARS.
    fused = True if o.get("fused", False) else None
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, fused=fused)
    if o.name == "lars":
        return LARS(groups, lr=o.lr, momentum=o.momentum, trust_coefficient=o.lars_trust_coefficient)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), fused=fused)
    raise ValueError(f"unknown optimizer {o.name}")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float,
          start_warmup_lr: float = 0.0) -> float:
    """Linear warm-up from ``start_warmup_lr`` to ``base_lr`` over ``warmup_steps``, then cosine to
    ``final_lr`` at ``total_steps`` (per optimiser step, as the SwAV reference)."""
    if step < warmup_steps:
        return start_warmup_lr + (base_lr - start_warmup_lr) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
