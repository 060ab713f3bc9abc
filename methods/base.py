"""The small interface every objective implements, and the registry of objectives.

A method turns the projections of a batch's crops into a loss and keeps its own state (prototypes,
queues, memory banks, pseudo-labels). It knows nothing of the loop: it is an ``nn.Module`` constructed from
keyword arguments (its hyperparameters, the fields of its config dataclass, plus the run values it names, see
:func:`ssl_bench.config.registry.run_values`), so it works in any PyTorch loop; the ssl_bench loop calls ``loss`` and
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

# The registry and the config adapter live in a torch-free leaf module (the config imports it); re-exported here.
from ssl_bench.config.registry import MethodEntry, build_method, register, registry  # noqa: F401
from ssl_bench.errors import ConfigError
from ssl_bench.ops.distributed import all_reduce_


@dataclass
class Context:
    """What the loop tells a hook: where training stands and how to reach the shared machinery.

    The loop builds a fresh one for every hook call; in a plain PyTorch loop, build it yourself with the fields a
    hook reads (``swav.after_step(Context(step=step))``).

    :ivar epoch: the 0-based epoch about to run (``on_epoch_start``) or running (the other hooks).
    :ivar step: optimiser steps taken so far over the whole run (with ``train.grad_accum`` > 1, one per
        accumulation cycle).
    :ivar epochs: the run's epochs (``train.epochs``), for schedules over training (CARL's KL weight).
    :ivar steps_per_epoch: optimiser steps per epoch, for schedules counted in steps (SwAV's frozen prototypes).
    :ivar accelerator: the run's ``accelerate.Accelerator`` (its device, process index and collectives); ``None``
        in a plain loop. Objectives reach other processes through ``ssl_bench.ops.distributed``'s helpers, which are
        no-ops on one process.
    :ivar embed_dataset: a function returning the dataset indices ``[N]`` and the projections ``z`` ``[N, D]`` of the
        whole pretraining set (float32, on the CPU, in dataset order), computed on the global crops without
        augmentation: the full pass that memory banks need (DeepCluster-v2, SeLa-v2). ``None`` where there is no
        such pass (a streamed dataset, which the config refuses for these methods).
    :ivar dataset_size: images in the pretraining set (N).
    :ivar extras: free room for what a later loop adds; empty today.
    """

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


@dataclass(frozen=True)
class MomentumTeacher:
    """What an objective asks of the loop when it needs a momentum (EMA) teacher (BYOL, DINO): returned by
    :meth:`Method.momentum_teacher`. The loop, which never learns who asks, then keeps a copy of the backbone, the
    projection head and the objective's ``modules`` (named submodules applied after the head, e.g. DINO's prototype
    layer), excluded from the optimiser (``requires_grad`` False) and saved in checkpoints; it

    - forwards the first ``crops`` crops (the global ones) through the copy under ``torch.no_grad`` and hands the
      outputs to :meth:`Method.loss` as ``batch["teacher"]`` (one tensor per crop, ``[B_local, D']``: after the
      teacher's copies of ``modules``);
    - after each optimiser step sets every teacher parameter to ``m_k xi + (1 - m_k) theta`` with
      ``m_k = 1 - (1 - base_momentum) (cos(pi k / K) + 1) / 2`` (k the step just taken, 0-based; K the run's
      optimiser steps), the cosine schedule of BYOL (Eq. in Sec. 3.2) and DINO.

    Batch norm: the teacher runs in training mode and normalises with its own batch statistics (as the BYOL and DINO
    reference code, whose target networks are called in training mode); its running statistics, used only when the
    teacher is evaluated, come from its own forward passes, not from the average (only parameters are averaged).

    :ivar base_momentum: m_0, the momentum of the first step (BYOL and DINO: 0.996).
    :ivar crops: how many of the first crops go through the teacher (the global crops).
    :ivar modules: names of the objective's own submodules that belong to the network (after the head).
    :ivar evaluate: which network the paper reports, ``student`` or ``teacher``: the default of ``eval.network``
        for this objective, declared here once.
    """

    base_momentum: float
    crops: int = 2
    modules: tuple[str, ...] = ()
    evaluate: str = "student"

    def __post_init__(self) -> None:
        if not 0.0 <= self.base_momentum <= 1.0:
            raise ConfigError(f"method.base_momentum must be in [0, 1], got {self.base_momentum}")
        if self.evaluate not in NETWORKS:
            raise ConfigError(f"unknown network '{self.evaluate}'; valid choices: {', '.join(NETWORKS)}")


NETWORKS = ("student", "teacher")


class Method(nn.Module):
    """Base class: a loss over crop projections plus optional hooks. Holds no training logic.

    Calling the module is calling :meth:`loss`: ``loss, stats = objective([z_view1, z_view2, ...])``.

    The loop calls, in this order: :meth:`on_train_start` once (a fresh run, not a resumed one); for each epoch
    :meth:`on_epoch_start`, then per batch :meth:`loss`, the backward pass, :meth:`after_backward`, the optimiser
    step and :meth:`after_step`; at the end of the epoch :meth:`epoch_stats` for the record. Each hook gets a
    :class:`Context`. Everything stateful the objective keeps (prototypes, centroids, pseudo-labels) belongs in
    its ``state_dict`` (parameters and buffers), so checkpoints carry it; what differs per process (a queue) goes
    through :meth:`local_state_dict`.

    :param embed_dim: D, the dimension of the projections :meth:`loss` receives (``head.out_dim`` in a run).
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, z_crops: list[Tensor], batch: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, float]]:
        return self.loss(z_crops, {} if batch is None else batch)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch.

        :param z_crops: the projections of every crop, global crops first, each ``[B_local, D]`` (this process's
            part of the batch; an objective that needs the global batch gathers it).
        :param batch: the batch as the loader gives it: ``index``, each image's dataset index (for per-sample state
            such as pseudo-labels), and ``label`` (-1 where the split has none); empty in a plain loop. An objective
            that asks for a momentum teacher also finds ``teacher`` there: the teacher's outputs on the global crops.
        :returns: ``(loss, stats)``: a scalar tensor to backpropagate and the numbers logged for the step.
        """
        raise NotImplementedError

    # Optional hooks, no-ops by default.
    def on_train_start(self, ctx: Context) -> None:
        """Once, before the first step of a fresh run (not when resuming: the checkpoint holds the state). E.g. fill
        a memory bank with ``ctx.embed_dataset()`` (DeepCluster-v2, SeLa-v2)."""

    def on_epoch_start(self, ctx: Context) -> None:
        """At the start of every epoch, before its first batch (``ctx.epoch`` is the epoch about to run; a run resumed
        mid-epoch does not call it again). E.g. k-means or a full-dataset Sinkhorn on last epoch's features, a
        schedule that changes per epoch (CARL's KL weight), starting a queue (SwAV)."""

    def after_backward(self, ctx: Context) -> None:
        """After each backward pass, before the optimiser step: the gradients are there to change. E.g. drop the
        prototypes' gradient while they are frozen (SwAV)."""

    def after_step(self, ctx: Context) -> None:
        """After each optimiser step (``ctx.step`` already counts it). E.g. re-normalise the prototypes onto the unit
        sphere (SwAV)."""

    def momentum_teacher(self) -> MomentumTeacher | None:
        """A :class:`MomentumTeacher` when the objective needs a momentum copy of the network (BYOL, DINO); ``None``
        (the default) costs nothing: no copy is made."""
        return None

    def epoch_stats(self) -> dict[str, float]:
        """Diagnostics for the per-epoch record (e.g. collapse indicators: :func:`assignment_stats`)."""
        return {}

    # State kept per process (queues): saved and restored per rank, never broadcast.
    def local_state_dict(self) -> dict[str, Any]:
        """State that differs between processes (a queue of this process's features; what ``epoch_stats`` counts
        so far this epoch, so that a run resumed mid-epoch records the whole epoch): saved per rank in the
        checkpoint as ``method_local_<rank>.pt`` and given back to the same rank, never broadcast. The shared state
        belongs in the module's ``state_dict``. check-method's resume check compares every epoch's record."""
        return {}

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`local_state_dict` returned on this rank (resume)."""


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
