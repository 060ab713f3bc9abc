"""The small interface every objective implements, and the registry of objectives.

A method turns the projections of a batch's crops into a loss and keeps its own state (prototypes,
queues, memory banks, pseudo-labels). It knows nothing of the loop: it is an ``nn.Module`` constructed from
keyword arguments (its hyperparameters, the fields of its config dataclass, plus the run values it names, see
:func:`ssl_bench.registry.run_values`), so it works in any PyTorch loop; the ssl_bench loop calls ``loss`` and
the optional hooks below with a :class:`Context`. Adding a method is one file in methods/ (or in another package,
registered through the entry-point group ``ssl_bench.methods``) whose class is decorated with :func:`register`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ssl_bench.distributed import all_reduce_
from ssl_bench.errors import ConfigError

# The registry and the config adapter live in a torch-free leaf module (the config imports it); re-exported here.
from ssl_bench.registry import MethodEntry, build_method, register, registry  # noqa: F401


@dataclass
class Context:
    """What the loop tells a hook: where training stands and how to reach the shared machinery."""

    epoch: int = 0  # 0-based epoch about to run / running
    step: int = 0  # optimiser steps taken so far
    epochs: int = 1
    steps_per_epoch: int = 1
    accelerator: Any = None
    # Projections (z, after the head) of the whole pretraining set, ordered by dataset index, computed on
    # the global crops without augmentation; for methods that need a full pass (memory banks).
    embed_dataset: Callable[[], tuple[Tensor, Tensor]] | None = None
    dataset_size: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


class Method(nn.Module):
    """Base class: a loss over crop projections plus optional hooks. Holds no training logic.

    Calling the module is calling :meth:`loss`: ``loss, stats = objective([z_view1, z_view2, ...])``.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, z_crops: list[Tensor], batch: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, float]]:
        return self.loss(z_crops, {} if batch is None else batch)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """z for every crop (global crops first), each [B_local, D]; returns (loss, logged stats)."""
        raise NotImplementedError

    # Optional hooks, no-ops by default.
    def on_train_start(self, ctx: Context) -> None: ...

    def on_epoch_start(self, ctx: Context) -> None: ...

    def after_backward(self, ctx: Context) -> None: ...

    def after_step(self, ctx: Context) -> None: ...

    def epoch_stats(self) -> dict[str, float]:
        """Diagnostics for the per-epoch record (e.g. collapse indicators)."""
        return {}

    # State kept per process (queues): saved and restored per rank, never broadcast.
    def local_state_dict(self) -> dict[str, Any]:
        return {}

    def load_local_state_dict(self, state: dict[str, Any]) -> None: ...


def check_crops(name: str, num_global_crops: int, num_local_crops: int) -> None:
    """Objectives that compare crops of an image need two of them."""
    if num_global_crops + num_local_crops < 2:
        raise ConfigError(f"{name} needs at least 2 crops (crops.global.n + crops.local.n >= 2)")


def cross_entropy(targets: Tensor, logits: Tensor) -> Tensor:
    """Mean over rows of -sum_k q_k log softmax(logits)_k, with soft targets q."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def assignment_stats(counts: Tensor) -> dict[str, float]:
    """Collapse diagnostics from hard-assignment counts over an epoch (summed over processes):
    entropy of the mean assignment (normalised to [0, 1], 1 = uniform) and prototypes in use."""
    counts = all_reduce_(counts.clone().float())
    total = counts.sum()
    if total == 0:
        return {}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum() / torch.log(torch.tensor(float(len(counts))))
    return {"assign_entropy": float(entropy) + 0.0, "prototypes_used": int((counts > 0).sum())}  # + 0.0: no "-0"


def hyperparameters(config: type, arguments: dict[str, Any]) -> Any:
    """An objective's config dataclass from its constructor's ``locals()``: the dataclass's range checks run for a
    plain loop exactly as for a run, and the defaults stay declared once (the constructor reads them from it).
    The shipped objectives keep it as ``self.hp``."""
    names = [f.name for f in dataclasses.fields(config) if f.name != "name"]
    return config(**{k: arguments[k] for k in names})
