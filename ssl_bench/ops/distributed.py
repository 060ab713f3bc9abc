"""Collectives that are no-ops on one process.

Thin wrappers over torch.distributed (which Accelerate initialises): Accelerate's own ``reduce`` has no
max and returns copies, while the maths here (Sinkhorn sums, k-means sums) wants in-place sum and max.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_(t: Tensor, op: str = "sum") -> Tensor:
    """In-place all-reduce (``op`` is 'sum' or 'max'); returns ``t``."""
    if is_distributed():
        red = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        if t.device.type == "cpu" and dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
            g = t.cuda()
            dist.all_reduce(g, op=red)
            t.copy_(g.cpu())
        else:
            dist.all_reduce(t, op=red)
    return t


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the gradient of its own slice (summed over ranks)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # type: ignore[override]
        out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(out, t.contiguous())
        ctx.n = t.shape[0]
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        r = dist.get_rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


def all_gather(t: Tensor, grad: bool = False) -> Tensor:
    """Concatenate ``t`` from every process along dim 0 (rank order); identity on one process."""
    if not is_distributed():
        return t
    if grad:
        return _GatherWithGrad.apply(t)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def all_reduce_grad(t: Tensor) -> Tensor:
    """The sum of ``t`` over every process, differentiable: its backward hands each process the sum of every
    process's gradient (with DDP's gradient mean, each process then gets the gradient of the one-process loss);
    identity on one process."""
    if not is_distributed():
        return t
    import torch.distributed.nn.functional as dist_fn

    return dist_fn.all_reduce(t)
