"""SimCLR (Chen et al., ICML 2020) with multi-crop: the NT-Xent loss of the SwAV paper, appendix A.8, Eq. 7.

The loss and its equation: :class:`SimCLR` (an ``nn.Module`` usable in any PyTorch loop).

Distributed: each process scores its own crops (rows) against the crops of the whole global batch
gathered with gradient (columns), and averages over its rows; DDP's gradient mean then gives the
gradient of the global mean. Choices: the default temperature is 0.1 (SimCLR's value for large batches;
CARL's CIFAR runs found 0.2 better, set ``method.temperature``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method, check_crops, hyperparameters, register
from ssl_bench.ops.distributed import all_gather, rank, world_size


@dataclass
class SimCLRConfig:
    name: str = "simclr"
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")


def multicrop_nt_xent(z_crops: list[Tensor], temperature: float) -> Tensor:
    """Eq. 7 for ``z_crops`` (M tensors [b, D], this process's slice of the batch), negatives gathered
    from every process. Returns this process's mean over its M b anchors and their M - 1 positives."""
    m, b = len(z_crops), z_crops[0].shape[0]
    z = F.normalize(torch.cat(z_crops).float(), dim=1)  # [M b, D], crop-major
    z_all = all_gather(z, grad=True)  # [W M b, D], rank-major then crop-major
    r, w = rank(), world_size()
    image = torch.arange(b, device=z.device).repeat(m)  # image of each local row
    image_all = (image[None] + b * torch.arange(w, device=z.device)[:, None]).flatten()
    logits = z @ z_all.t() / temperature  # [M b, W M b]
    same = (image + r * b)[:, None] == image_all[None, :]
    is_self = torch.zeros_like(same)
    rows = torch.arange(m * b, device=z.device)
    is_self[rows, r * m * b + rows] = True
    positive = same & ~is_self
    log_neg = logits.masked_fill(same, float("-inf")).logsumexp(dim=1, keepdim=True)  # sum over N(i)
    log_prob = logits - torch.logaddexp(logits, log_neg)  # log e^{s+} / (e^{s+} + sum e^{s-})
    return -(log_prob * positive).sum() / positive.sum()


@register("simclr", SimCLRConfig, display="SimCLR")
class SimCLR(Method):
    """SimCLR's NT-Xent with multi-crop (SwAV paper, appendix A.8, Eq. 7). With B images in the (global) batch,
    M crops each and N = B M crop projections z (l2-normalised),

        L = -1/N 1/(M-1) sum_i sum_{v+ in P(i)} log [ e(z_i, v+) / (e(z_i, v+) + sum_{v- in N(i)} e(z_i, v-)) ],
        e(a, b) = exp(a^T b / tau),

    where P(i) are the other M - 1 crops of i's image and N(i) every crop of every other image in the batch.
    With M = 2 this is SimCLR's NT-Xent exactly (each positive is alone against the 2B - 2 negatives); the other
    positives are *not* in the denominator (unlike SupCon's "out" form). Stateless: no prototypes, no queue.

    Arguments: the fields of :class:`SimCLRConfig` (defaults there); ``num_global_crops`` and ``num_local_crops``
    are only checked (at least 2 crops).

    In a plain PyTorch loop:

    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.simclr import SimCLR
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> simclr = SimCLR(temperature=0.2)
    >>> optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for step in range(5):
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
    ...     loss, stats = simclr([encoder(v) for v in views])
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    >>> bool(torch.isfinite(loss))
    True
    """

    def __init__(self, embed_dim: int = 0, *, temperature: float = SimCLRConfig.temperature,
                 num_global_crops: int = 2, num_local_crops: int = 0) -> None:
        super().__init__(embed_dim)
        self.hp = hyperparameters(SimCLRConfig, locals())
        check_crops("simclr", num_global_crops, num_local_crops)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loss = multicrop_nt_xent(z_crops, self.hp.temperature)
        return loss, {"loss": loss.item()}
