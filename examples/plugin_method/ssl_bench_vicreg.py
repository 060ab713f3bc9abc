"""VICReg (Bardes, Ponce & LeCun, ICLR 2022) as an ssl_bench objective, built on lightly's ``VICRegLoss``.

The whole plug-in: a config dataclass (every default, declared once; it becomes the config group ``method=vicreg``),
an ``nn.Module`` constructed from those fields as keyword arguments, and the entry point in pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightly.loss import VICRegLoss
from torch import Tensor

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method, check_crops, hyperparameters, register


@dataclass
class VICRegConfig:
    name: str = "vicreg"
    lambda_param: float = 25.0  # invariance weight (paper: lambda = 25)
    mu_param: float = 25.0  # variance weight (mu = 25)
    nu_param: float = 1.0  # covariance weight (nu = 1)
    eps: float = 1e-4  # inside the standard deviation's square root

    def __post_init__(self) -> None:
        for key in ("lambda_param", "mu_param", "nu_param"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {getattr(self, key)}")
        if not self.eps > 0:
            raise ConfigError(f"method.eps must be > 0, got {self.eps}")


_D = VICRegConfig


@register("vicreg", VICRegConfig, display="VICReg")
class VICReg(Method):
    """VICReg: Variance-Invariance-Covariance Regularization. For two views' projections Z, Z' [n, d] (Eqs. 1-6),

        L = lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')],
        s = mean_i ||z_i - z'_i||^2 / d,   v(Z) = mean_j max(0, 1 - sqrt(Var(Z_:j) + eps)),
        c(Z) = sum_{j != k} Cov(Z)_jk^2 / d.

    Multi-crop (the paper uses 2 views): the mean of L over every pair of crops. With several processes the
    variance and covariance are computed on the global batch (lightly gathers with gradient), so one process
    and two give the same loss.

    In a plain PyTorch loop:

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> vicreg = VICReg()
    >>> optimizer = torch.optim.SGD(encoder.parameters(), lr=0.01)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for step in range(3):
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
    ...     loss, stats = vicreg([encoder(v) for v in views])
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    >>> bool(torch.isfinite(loss))
    True
    """

    def __init__(self, embed_dim: int = 0, *, lambda_param: float = _D.lambda_param, mu_param: float = _D.mu_param,
                 nu_param: float = _D.nu_param, eps: float = _D.eps, num_global_crops: int = 2,
                 num_local_crops: int = 0) -> None:
        super().__init__(embed_dim)
        m = self.hp = hyperparameters(VICRegConfig, locals())
        check_crops("vicreg", num_global_crops, num_local_crops)
        self.criterion = VICRegLoss(m.lambda_param, m.mu_param, m.nu_param, gather_distributed=True, eps=m.eps)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        pairs = [(a, b) for a in range(len(z_crops)) for b in range(a + 1, len(z_crops))]
        loss = sum(self.criterion(z_crops[a].float(), z_crops[b].float()) for a, b in pairs) / len(pairs)
        return loss, {"loss": loss.item()}
