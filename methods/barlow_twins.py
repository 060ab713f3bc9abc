"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al., ICML 2021).

The loss and its equation: :class:`BarlowTwins` (an ``nn.Module`` usable in any PyTorch loop).

Paper defaults (Sec. 2, 4): lambda = 5e-3 (the reference code: 0.0051), projector 8192-8192-8192 (here: the shared
projection head), embeddings normalised along the batch (batch norm without affine parameters), the cross-correlation
over the whole batch of every GPU.

Choices the paper leaves open:
- Distributed: the normalisation uses the mean and (biased) variance of the global batch and the cross-correlation
  sums z_A^T z_B over every process before dividing by the global batch, both through differentiable all-reduces,
  so N processes compute exactly the one-process loss (the reference: a synchronised batch norm and an all-reduce
  of C).
- Multi-crop (the paper uses 2 views): the loss is the mean over the unordered pairs of distinct crops {a, b} with a
  a global crop (with 2 crops, exactly Eq. 1).
- eps = 1e-5 in the normalisation, as batch norm's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method, check_crops, hyperparameters, register
from ssl_bench.ops.distributed import all_reduce_grad


@dataclass
class BarlowTwinsConfig:
    name: str = "barlow_twins"
    # lambda, the weight of the redundancy-reduction (off-diagonal) term (paper: 5e-3).
    lambda_param: float = 5.0e-3

    def __post_init__(self) -> None:
        if not self.lambda_param >= 0:
            raise ConfigError(f"method.lambda_param must be >= 0, got {self.lambda_param}")


def batch_standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """(z - mean) / sqrt(var + eps) per dimension, with the mean and the biased variance of the global batch
    (every process's rows; differentiable)."""
    z = z.float()
    sums = all_reduce_grad(torch.cat([z.sum(0), z.new_tensor([z.shape[0]])]))
    n = sums[-1]
    centred = z - sums[:-1] / n
    var = all_reduce_grad((centred * centred).sum(0)) / n
    return centred * torch.rsqrt(var + eps)


def cross_correlation(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Eq. 2: C_ij = sum_b z^A_bi z^B_bj / N over the global batch (N rows, every process), the embeddings
    standardised along the batch."""
    a, b = batch_standardise(z_a), batch_standardise(z_b)
    n = all_reduce_grad(a.new_tensor([a.shape[0]]))
    return all_reduce_grad(a.t() @ b) / n


def barlow_twins_loss(c: Tensor, lambda_param: float) -> Tensor:
    """Eq. 1: sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2."""
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + lambda_param * off


@register("barlow_twins", BarlowTwinsConfig, display="Barlow Twins")
class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation matrix C between the embeddings of two views,
    standardised along the batch, is pushed towards the identity,

        L_BT = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2,
        C_ij = sum_b z^A_{b,i} z^B_{b,j} / (sqrt(sum_b (z^A_{b,i})^2) sqrt(sum_b (z^B_{b,j})^2))      (Eqs. 1-2),

    with b over the global batch (every process) and z standardised per dimension over it. No teacher, no negatives,
    no state.

    Arguments: the fields of :class:`BarlowTwinsConfig` (defaults there); ``num_global_crops`` (pairs need a global
    crop) and ``num_local_crops`` (checked: at least 2 crops).

    In a plain PyTorch loop:

    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.barlow_twins import BarlowTwins
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> barlow = BarlowTwins(lambda_param=5e-3)
    >>> optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for step in range(5):
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]  # your augmentations here
    ...     loss, stats = barlow([encoder(v) for v in views])
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    >>> bool(torch.isfinite(loss)), sorted(stats)
    (True, ['loss'])
    """

    def __init__(self, embed_dim: int = 0, *, lambda_param: float = BarlowTwinsConfig.lambda_param,
                 num_global_crops: int = 2, num_local_crops: int = 0) -> None:
        super().__init__(embed_dim)
        self.hp = hyperparameters(BarlowTwinsConfig, locals())
        check_crops("barlow_twins", num_global_crops, num_local_crops)
        self.num_global = max(1, num_global_crops)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        pairs = [(a, b) for a in range(min(self.num_global, len(z_crops))) for b in range(a + 1, len(z_crops))]
        loss = sum(barlow_twins_loss(cross_correlation(z_crops[a], z_crops[b]), self.hp.lambda_param)
                   for a, b in pairs) / len(pairs)
        return loss, {"loss": loss.item()}
