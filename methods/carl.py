"""CARL: Consistent Assignment for Representation Learning (Silva & Ramirez Rivera, SAC 2022).

The loss and its equation: :class:`CARL` (an ``nn.Module`` usable in any PyTorch loop).

Paper defaults: b = 4, a = 1.5, E = 100 epochs (CIFAR, Sec. 4.2); K = 100 (CIFAR-10), 300 (CIFAR-100,
STL-10), 3000 (downsampled ImageNet) (A.4).

Choices the paper leaves open:
- Multi-crop (the paper uses 2 views): L_c is the mean over all unordered pairs of crops {a, b} of the
  image of -log <p^a, p^b> (with 2 crops exactly Eq. 4), and L_KL is the mean over crops v of
  KL(p_hat^v || U), p_hat^v the mean of crop v's distributions over the whole (global) batch, so every
  view is pushed to use all prototypes (with 2 crops: the mean of the two views' terms).
- Distributed: p_hat is the mean over the global batch (per-process means gathered with gradient).
- z is used as the head outputs it (not normalised) and the softmax has no temperature, as in Eqs. 2-3;
  prototypes are trained by plain gradient descent (not re-normalised).
- e counts finished epochs (0 during the first epoch); E = 0 means lambda = a throughout.
- <p^a, p^b> is computed as exp(logsumexp(log p^a + log p^b)), finite even for confident assignments.

Options (off by default) for the paper's ablations and the authors' follow-up code:
- ``kl_mode``: ``per_view`` (default) is the mean over crops v of KL(p_hat^v || U), Eq. 5 applied to each
  view's batch as written; ``pooled`` pools every crop's distributions into one batch mean p_hat =
  mean_{v, i} p_i^v before a single KL, as the authors' follow-up code does. Per-view is the default because
  it is the paper's equation and is the stronger constraint: a pooled mean can be uniform while each view's
  mean is not (views could split the prototypes between them), a per-view uniform mean implies a pooled one.
- Constant lambda (Fig. 2's constant schedules): ``lambda_epochs=0`` gives lambda_e = ``lambda_end`` for
  every epoch; no KL term (Sec. 3, "lambda_e(0, 0)"): ``lambda_end=0 lambda_epochs=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Context, Method, assignment_stats, check_crops, hyperparameters, register
from ssl_bench.ops.distributed import all_gather

KL_MODES = ("per_view", "pooled")


@dataclass
class CARLConfig:
    name: str = "carl"
    num_prototypes: int = 100
    lambda_start: float = 4.0  # b
    lambda_end: float = 1.5  # a
    lambda_epochs: int = 100  # E
    kl_mode: str = "per_view"  # or "pooled" (one KL of the mean over all crops' predictions)

    def __post_init__(self) -> None:
        checks = {"num_prototypes": (self.num_prototypes > 0, "> 0"),
                  "lambda_start": (self.lambda_start >= 0, ">= 0"),
                  "lambda_end": (self.lambda_end >= 0, ">= 0"),
                  "lambda_epochs": (self.lambda_epochs >= 0, ">= 0")}
        for key, (ok, bound) in checks.items():
            if not ok:
                raise ConfigError(f"method.{key} must be {bound}, got {getattr(self, key)}")
        if self.kl_mode not in KL_MODES:
            raise ConfigError(f"method.kl_mode must be one of {', '.join(KL_MODES)}, got '{self.kl_mode}'")


def kl_weight(epoch: int, start: float, end: float, epochs: int) -> float:
    """Eq. 8: lambda_e decays linearly from ``start`` (b) to ``end`` (a) over ``epochs`` (E), then stays."""
    if epochs <= 0 or epoch >= epochs:
        return end
    return start - (start - end) * epoch / epochs


def consistency_loss(logits: list[Tensor]) -> Tensor:
    """Eq. 4 over all pairs of crops: mean over pairs {a, b} of -mean_i log <softmax(q_a), softmax(q_b)>."""
    logp = [torch.log_softmax(q.float(), dim=1) for q in logits]
    terms = [-torch.logsumexp(logp[a] + logp[b], dim=1).mean()
             for a in range(len(logp)) for b in range(a + 1, len(logp))]
    return torch.stack(terms).mean()


def _kl_to_uniform(p_mean: Tensor) -> Tensor:
    return math.log(p_mean.numel()) + torch.special.xlogy(p_mean, p_mean).sum()


def _global_mean(p: Tensor) -> Tensor:
    """Mean over the global batch of per-sample distributions [B, K] (per-process means, equal B)."""
    return all_gather(p.mean(dim=0, keepdim=True), grad=True).mean(dim=0)


def uniform_kl(logits: list[Tensor], mode: str = "per_view") -> Tensor:
    """Eqs. 5-6. ``per_view``: mean over crops of KL(mean_i p_i^v || U); ``pooled``: KL(mean_{v,i} p_i^v || U).
    Means are over the global batch."""
    probs = [torch.softmax(q.float(), dim=1) for q in logits]
    if mode == "pooled":
        return _kl_to_uniform(torch.stack([_global_mean(p) for p in probs]).mean(dim=0))
    return torch.stack([_kl_to_uniform(_global_mean(p)) for p in probs]).mean()


_D = CARLConfig  # the defaults, declared once


@register("carl", CARLConfig, display="CARL")
class CARL(Method):
    """CARL: Consistent Assignment for Representation Learning (Silva & Ramirez Rivera, SAC 2022).

    K prototypes C are a linear layer (no bias); each view's projection z gets the energies q = z C (Eq. 2)
    and the assignment distribution p = softmax(q) (Eq. 3). The loss (Eq. 7) is

        L = L_c + lambda_e L_KL,
        L_c  = -1/B sum_i log <p_i^a, p_i^+>                              (Eq. 4, consistency of two views)
        L_KL = KL(p_hat || U) = log K + sum_k p_hat_k log p_hat_k,  p_hat = 1/B sum_i p_i   (Eqs. 5-6)
        lambda_e = b - (b - a) e / E  for e <= E, else a                   (Eq. 8, linear decay)

    Arguments: ``embed_dim`` and the fields of :class:`CARLConfig` (defaults there); ``num_global_crops`` and
    ``num_local_crops`` are only checked (at least 2 crops). ``on_epoch_start`` sets lambda_e of the epoch.

    In a plain PyTorch loop:

    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.base import Context
    >>> from ssl_bench.methods.carl import CARL
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> carl = CARL(embed_dim=16, num_prototypes=10, lambda_epochs=2)
    >>> optimizer = torch.optim.SGD([*encoder.parameters(), *carl.parameters()], lr=0.1)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for epoch in range(2):
    ...     carl.on_epoch_start(Context(epoch=epoch))  # lambda_e of this epoch
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
    ...     loss, stats = carl([encoder(v) for v in views])
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    >>> bool(torch.isfinite(loss)), sorted(carl.epoch_stats())
    (True, ['assign_entropy', 'lambda_e', 'prototypes_used'])
    """

    def __init__(self, embed_dim: int, *, num_prototypes: int = _D.num_prototypes,
                 lambda_start: float = _D.lambda_start, lambda_end: float = _D.lambda_end,
                 lambda_epochs: int = _D.lambda_epochs, kl_mode: str = _D.kl_mode,
                 num_global_crops: int = 2, num_local_crops: int = 0) -> None:
        super().__init__(embed_dim)
        m = self.hp = hyperparameters(CARLConfig, locals())
        check_crops("carl", num_global_crops, num_local_crops)
        self.prototypes = nn.Linear(embed_dim, m.num_prototypes, bias=False)
        # lambda_e of the current epoch, a buffer so that a run resumed mid-epoch uses the right value.
        lam = kl_weight(0, m.lambda_start, m.lambda_end, m.lambda_epochs)
        self.register_buffer("lambda_e", torch.tensor(lam))
        self._counts = torch.zeros(m.num_prototypes)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = [self.prototypes(z) for z in z_crops]
        l_c, l_kl = consistency_loss(logits), uniform_kl(logits, self.hp.kl_mode)
        loss = l_c + self.lambda_e * l_kl
        with torch.no_grad():
            self._counts += torch.bincount(logits[0].argmax(1), minlength=len(self._counts)).cpu()
        return loss, {"loss": loss.item(), "loss_consistency": l_c.item(), "loss_kl": l_kl.item()}

    def on_epoch_start(self, ctx: Context) -> None:
        m = self.hp
        self.lambda_e.fill_(kl_weight(ctx.epoch, m.lambda_start, m.lambda_end, m.lambda_epochs))
        self._counts.zero_()

    def epoch_stats(self) -> dict[str, float]:
        return {**assignment_stats(self._counts), "lambda_e": float(self.lambda_e)}

    def local_state_dict(self) -> dict[str, Any]:
        """This process's assignment counts of the epoch so far: a run resumed mid-epoch records the whole epoch."""
        return {"counts": self._counts.clone()}

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("counts") is not None and state["counts"].shape == self._counts.shape:
            self._counts.copy_(state["counts"])
