"""SwAV: Swapping Assignments between Views (Caron et al., NeurIPS 2020).

The loss and its equation: :class:`SwAV` (an ``nn.Module`` usable in any PyTorch loop).

Choices the paper leaves open, following the reference implementation:
- Normalisation of Eq. 6: the loss is the mean over global crops i of the mean over the V + 1 other
  crops of the cross-entropy averaged over the batch (so it does not grow with the number of crops).
- Queue (paper A.6, for small batches): per process and per global crop, the last ``queue_length``
  global-batch projections (``queue_length / N`` on each of N processes). Created at
  ``queue_start_epoch``, used only once full; its scores are recomputed with the current prototypes and
  prepended to the batch before Sinkhorn, and only the batch's codes enter the loss. The queue must be a
  multiple of the global batch (refused otherwise: no silent rounding). It is checkpointed per process.
- Prototypes are frozen (their gradient dropped) for the first ``freeze_prototypes_iters`` optimiser
  steps; the paper says "the first epoch", the reference counts iterations (313 = one ImageNet epoch at
  batch 4096; 5005 in its batch-256 recipe).
- Soft codes (not rounded), as the paper recommends (C.3).

Ablation options of the paper, off by default (App. C.2, Table 13):
- ``fixed_prototypes=true``: the prototypes stay at their random initialisation (unit-norm rows of the
  default init) and are never trained; Table 13 (left): learned 73.9 vs fixed 73.1 top-1.
- ``hard_codes=true``: each Sinkhorn code is rounded to the one-hot of its largest entry before the loss;
  Table 13 (right) and Fig. 7: soft 73.9 vs hard 73.3 (hard converges faster to a worse solution).
  With a queue, the rounding happens after Sinkhorn on batch + queue, on the batch's codes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import (
    Context,
    Method,
    assignment_stats,
    check_crops,
    cross_entropy,
    hyperparameters,
    register,
)
from ssl_bench.ops.distributed import world_size
from ssl_bench.ops.sinkhorn import sinkhorn


@dataclass
class SwAVConfig:
    name: str = "swav"
    num_prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    # Features kept from previous batches for Sinkhorn (0 = no queue); paper: 3840 at batch 256.
    queue_length: int = 0
    queue_start_epoch: int = 15
    freeze_prototypes_iters: int = 313
    # Ablations (App. C.2, Table 13): random prototypes never trained; codes rounded to one-hot.
    fixed_prototypes: bool = False
    hard_codes: bool = False

    def __post_init__(self) -> None:
        checks = {
            "num_prototypes": self.num_prototypes > 0,
            "temperature": self.temperature > 0,
            "epsilon": self.epsilon > 0,
            "sinkhorn_iterations": self.sinkhorn_iterations > 0,
            "queue_length": self.queue_length >= 0,
            "queue_start_epoch": self.queue_start_epoch >= 0,
            "freeze_prototypes_iters": self.freeze_prototypes_iters >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                bound = ">= 0" if key.startswith(("queue", "freeze")) else "> 0"
                raise ConfigError(f"method.{key} must be {bound}, got {getattr(self, key)}")


def swav_loss(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """Eq. 6 with the reference normalisation: ``scores`` per crop [B, K] (z^T C), ``codes`` for the
    first len(codes) crops; mean over coded crops i of the mean over crops v != i of l(z_v, q_i)."""
    total = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        others = [v for v in range(len(scores)) if v != i]
        total = total + sum(cross_entropy(q, scores[v].float() / temperature) for v in others) / len(others)
    return total / len(codes)


def round_codes(q: Tensor) -> Tensor:
    """Hard codes (Table 13 right): the one-hot of each row's largest entry (first one on ties)."""
    return F.one_hot(q.argmax(dim=1), q.shape[1]).to(q.dtype)


_D = SwAVConfig  # the defaults, declared once


@register("swav", SwAVConfig, display="SwAV")
class SwAV(Method):
    """SwAV: Swapping Assignments between Views (Caron et al., NeurIPS 2020).

    Features are projected to the unit sphere, z = f(x) / ||f(x)||, and scored against K prototypes
    C (no bias, columns re-normalised after every step). Codes q come from Sinkhorn-Knopp on the *global*
    crops only (Eqs. 3-5, epsilon 0.05, 3 iterations); each code is predicted from every other crop of the
    same image (Eq. 6):

        L = sum_{i in global} sum_{v != i} l(z_v, q_i),   l(z, q) = -sum_k q_k log softmax(z^T C / tau)_k.

    Arguments: ``embed_dim`` (D of the projections), the fields of :class:`SwAVConfig` (defaults there), and
    ``num_global_crops`` (the first crops of ``loss``'s list, which get codes). ``num_local_crops`` and
    ``batch_size`` (the global batch) are only checked: at least 2 crops, a queue a multiple of the batch.

    In a plain PyTorch loop (two views of each image; the hooks keep the prototypes on the sphere and frozen for
    the first ``freeze_prototypes_iters`` steps):

    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.base import Context
    >>> from ssl_bench.methods.swav import SwAV
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> swav = SwAV(embed_dim=16, num_prototypes=30, freeze_prototypes_iters=1)
    >>> optimizer = torch.optim.SGD([*encoder.parameters(), *swav.parameters()], lr=0.1)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for step in range(5):
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]  # your augmentations here
    ...     loss, stats = swav([encoder(v) for v in views])
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     swav.after_backward(Context(step=step))  # drops the prototypes' gradient while frozen
    ...     optimizer.step()
    ...     swav.after_step(Context(step=step))  # back onto the unit sphere
    >>> bool(torch.isfinite(loss)), sorted(stats)
    (True, ['loss'])
    """

    def __init__(self, embed_dim: int, *, num_prototypes: int = _D.num_prototypes, temperature: float = _D.temperature,
                 epsilon: float = _D.epsilon, sinkhorn_iterations: int = _D.sinkhorn_iterations,
                 queue_length: int = _D.queue_length, queue_start_epoch: int = _D.queue_start_epoch,
                 freeze_prototypes_iters: int = _D.freeze_prototypes_iters,
                 fixed_prototypes: bool = _D.fixed_prototypes, hard_codes: bool = _D.hard_codes,
                 num_global_crops: int = 2, num_local_crops: int = 0, batch_size: int | None = None) -> None:
        super().__init__(embed_dim)
        m = self.hp = hyperparameters(SwAVConfig, locals())
        if batch_size is not None and m.queue_length % batch_size:
            q, b = m.queue_length, batch_size
            raise ConfigError(f"method.queue_length={q} must be a multiple of data.batch_size={b} "
                              f"(e.g. {max(b, q - q % b)}); it is never rounded silently")
        check_crops("swav", num_global_crops, num_local_crops)
        self.num_global = num_global_crops
        self.prototypes = nn.Linear(embed_dim, m.num_prototypes, bias=False)
        self.normalize_prototypes()
        if m.fixed_prototypes:  # excluded from the optimiser's groups (ssl_bench.training.optim skips them)
            self.prototypes.weight.requires_grad_(False)
        self.queue: Tensor | None = None  # per process: [num_global, queue_length / N, D]; not a buffer
        self._counts = torch.zeros(m.num_prototypes)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        m = self.hp
        z = [F.normalize(x, dim=1) for x in z_crops]
        scores = [self.prototypes(x) for x in z]
        bs = z[0].shape[0]
        codes = []
        with torch.no_grad():
            for i in range(self.num_global):
                s = scores[i]
                if self.queue is not None:
                    if bool(self.queue[i, -1].any()):  # use the queue once it is full
                        s = torch.cat([self.prototypes(self.queue[i].to(s.dtype)), s])
                    self.queue[i, bs:] = self.queue[i, :-bs].clone()
                    self.queue[i, :bs] = z[i].detach().float()
                q = sinkhorn(s, m.epsilon, m.sinkhorn_iterations)[-bs:]
                codes.append(round_codes(q) if m.hard_codes else q)
            self._counts += torch.bincount(codes[0].argmax(1), minlength=m.num_prototypes).cpu()
        loss = swav_loss(scores, codes, m.temperature)
        return loss, {"loss": loss.item()}

    def on_epoch_start(self, ctx: Context) -> None:
        m = self.hp
        self._counts.zero_()
        if m.queue_length > 0 and ctx.epoch >= m.queue_start_epoch and self.queue is None:
            n = m.queue_length // world_size()
            self.queue = torch.zeros(self.num_global, n, self.embed_dim, device=self.prototypes.weight.device)

    def after_backward(self, ctx: Context) -> None:
        if ctx.step < self.hp.freeze_prototypes_iters:
            self.prototypes.weight.grad = None

    def after_step(self, ctx: Context) -> None:
        if not self.hp.fixed_prototypes:  # fixed ones stay bit-identical to their initialisation
            self.normalize_prototypes()

    def epoch_stats(self) -> dict[str, float]:
        return assignment_stats(self._counts)

    def local_state_dict(self) -> dict[str, Any]:
        # the epoch's assignment counts too: a run resumed mid-epoch records the whole epoch's diagnostics
        return {"queue": None if self.queue is None else self.queue.cpu(), "counts": self._counts.clone()}

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        q = state.get("queue")
        self.queue = None if q is None else q.to(self.prototypes.weight.device)
        if state.get("counts") is not None and state["counts"].shape == self._counts.shape:
            self._counts.copy_(state["counts"])

