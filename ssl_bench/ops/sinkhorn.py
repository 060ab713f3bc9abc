"""Sinkhorn-Knopp for equal-partition assignments, shared by SwAV and SeLa-v2.

Solves (SwAV, Eqs. 3-5)  max_Q Tr(Q^T C^T Z) + eps H(Q)  over the transportation polytope
Q 1_B = 1_K / K, Q^T 1_K = 1_B / B, whose solution is Q* = Diag(u) exp(C^T Z / eps) Diag(v).

We keep Q in that factored form and update only the scaling vectors,
    u <- (1/K) / (K_ v),    v <- (1/B) / (K_^T u),        K_ = exp(scores / eps),
which is the reference algorithm (rows normalised, then columns, ``iterations`` times) without rewriting
the whole matrix twice per iteration: two matrix-vector products per iteration instead of six passes.
The B x K matrix is touched as few times as possible: one row-max read of the scores, one fused
``scores / eps - row max`` into the only B x K allocation (which is also the result), an in-place exp,
the matrix-vector products, and the in-place final scaling (lightly's version makes two B x K
allocations and about twenty passes; on a CPU, writing a fresh 4096 x 3000 allocation for the first
time costs about as much as all six matrix-vector products, because of page faults).

Numerics: K_ is built with each sample's maximum subtracted, so every column has an entry of 1 and no
exp overflows, whatever the range of scores / eps (lightly's ``sinkhorn`` returns inf/NaN once it
exceeds ~88). The subtracted maxima are folded back into the starting v, so the result equals the
reference's. If a prototype is so far from every sample that its whole row underflows, the scaling
vectors stop being finite and we rerun the same iterations in the log domain, which cannot underflow.

Distributed: rows are summed over all processes (one all-reduce per iteration, of K numbers), columns
are local; N processes holding B/N samples each get exactly the codes of the whole batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssl_bench.ops.distributed import all_reduce_, is_distributed


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes for ``scores`` [B, K] (this process's samples x prototypes).

    Returns Q [B, K] in float32 whose rows sum to 1 (each sample's code is a distribution) and whose
    columns sum to about B_total / K (equal partition; exact as ``iterations`` grows).
    """
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn needs epsilon > 0 and iterations >= 1, got {epsilon}, {iterations}")
    s = scores.detach()
    b_local, k = s.shape
    inv_eps = 1.0 / epsilon
    b_total = float(b_local)
    if is_distributed():
        b_total = float(all_reduce_(torch.tensor([b_total], device=s.device)))
    col_max = torch.amax(s, dim=1).float().mul_(inv_eps)  # [B]: each sample's largest score / eps
    global_max = all_reduce_(col_max.max().reshape(1) if b_local else col_max.new_full((1,), -1e30), "max")
    # K_ = exp(scores / eps - col_max): one fused pass writes float32 from any input dtype (no separate
    # float copy or logits tensor), then exp in place; this buffer becomes the result.
    kern = torch.empty(b_local, k, dtype=torch.float32, device=s.device)
    torch.add(col_max.neg()[:, None], s, alpha=inv_eps, out=kern).exp_()
    v = torch.exp(col_max - global_max)  # reference's column scale, relative to the global max
    r, c = 1.0 / k, 1.0 / b_total
    for _ in range(iterations):
        u = r / all_reduce_(v @ kern)  # row sums over every process's samples
        v = c / (kern @ u)
    bad = (~(torch.isfinite(u).all() & torch.isfinite(v).all())).float().reshape(1)
    if bool(all_reduce_(bad, "max")):  # v is per process: every process must take the same path (collectives)
        return _sinkhorn_log(scores, epsilon, iterations)
    return kern.mul_(u).mul_(v[:, None] * b_total)


def _logsumexp_all(x: Tensor, dim: int) -> Tensor:
    """logsumexp over ``dim`` and over processes (for the row sums)."""
    m = all_reduce_(x.max(dim=dim).values.clamp_min(-1e30), "max")
    return torch.log(all_reduce_(torch.exp(x - m.unsqueeze(dim)).sum(dim=dim))) + m


@torch.no_grad()
def _sinkhorn_log(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """The same iterations on log u, log v: slower (an exp per pass) but immune to underflow."""
    logits = scores.detach().float() / epsilon
    b_total = all_reduce_(torch.tensor([float(logits.shape[0])], device=logits.device))
    log_r, log_c = -torch.log(torch.tensor(float(logits.shape[1]))), -torch.log(b_total)
    log_v = torch.zeros(logits.shape[0], device=logits.device)
    log_u = torch.zeros(logits.shape[1], device=logits.device)
    for _ in range(iterations):
        log_u = log_r - _logsumexp_all(logits + log_v[:, None], dim=0)
        log_v = log_c - torch.logsumexp(logits + log_u[None, :], dim=1)
    # exp(logits + log u + log v) * B with the last column step folded in: a row softmax, so each code
    # sums to 1 exactly even when float32 logits of ~1e4 lose digits.
    return torch.softmax(logits + log_u[None, :], dim=1)


def sinkhorn_log_reference(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """The same iterations in float64 log space (cannot overflow): the yardstick for huge scores / eps."""
    logits = scores.double() / epsilon
    b, k = logits.shape
    log_v = torch.zeros(b, dtype=torch.float64)
    for _ in range(iterations):
        log_u = -math.log(k) - torch.logsumexp(logits + log_v[:, None], dim=0)
        log_v = -math.log(b) - torch.logsumexp(logits + log_u[None, :], dim=1)
    return torch.exp(logits + log_u[None, :] + log_v[:, None] + math.log(b))


def random_cosine_scores(b: int, k: int, d: int = 128, seed: int = 0) -> Tensor:
    """Cosine similarities of b random unit features to k random unit prototypes (tests and benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.t()


def sinkhorn_reference(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """The paper's pseudo-code (SwAV, A.1) verbatim, one process, float64: the tests' yardstick."""
    q = torch.exp(scores.double() / epsilon).t()
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q *= ((1.0 / k) / q.sum(dim=1)).unsqueeze(1)
        q *= ((1.0 / b) / q.sum(dim=0)).unsqueeze(0)
    return (q / q.sum(dim=0, keepdim=True)).t()
