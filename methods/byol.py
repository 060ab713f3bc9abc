"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020).

The loss and its equation: :class:`BYOL` (an ``nn.Module`` usable in any PyTorch loop).

Paper defaults (Sec. 3.3): target momentum tau_base = 0.996 raised to 1 on a cosine over training; the predictor q
has the projector's architecture (Linear-BN-ReLU-Linear, hidden 4096, output 256). The paper evaluates the online
encoder (``eval.network`` defaults to ``student``).

Choices the paper leaves open, or that the shared loop fixes:
- The projector is the shared projection head (``head.hidden_dim``, ``head.out_dim``); the predictor takes its
  architecture: hidden width ``head.hidden_dim`` unless ``method.predictor_hidden_dim`` sets one.
- The target network runs its batch norm in training mode with its own batch statistics, as the paper's code
  (ssl_bench.models.networks.Teacher).
- The predictor's batch norm sees the global crops together (one call), and the local crops together, as the
  shared projector does (the paper's code calls the network once per view).
- Multi-crop (the paper uses 2 views): every crop's prediction is compared with the target projection of every
  *other* global crop; the loss is the mean over those pairs times 2, so with 2 crops it is exactly the paper's
  symmetrised L + L~.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method, MomentumTeacher, check_crops, hyperparameters, register


@dataclass
class BYOLConfig:
    name: str = "byol"
    # The target network's momentum at the first step, raised to 1 by a cosine over training (paper: 0.996).
    base_momentum: float = 0.996
    # Hidden width of the predictor MLP; 0 = the projection head's (head.hidden_dim), the paper's choice (4096).
    predictor_hidden_dim: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.base_momentum <= 1:
            raise ConfigError(f"method.base_momentum must be in [0, 1], got {self.base_momentum}")
        if self.predictor_hidden_dim < 0:
            raise ConfigError(f"method.predictor_hidden_dim must be >= 0 (0: head.hidden_dim), "
                              f"got {self.predictor_hidden_dim}")


_D = BYOLConfig  # the defaults, declared once


def regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """Eq. 2: ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1)).mean()


def byol_loss(predictions: list[Tensor], targets: list[Tensor]) -> Tensor:
    """The symmetrised loss over crops: 2 x the mean over pairs (crop s, global crop t != s) of
    ``regression_loss(predictions[s], targets[t])`` (with two crops, L + L~ of the paper)."""
    pairs = [(s, t) for s in range(len(predictions)) for t in range(len(targets)) if s != t]
    return 2 * sum(regression_loss(predictions[s], targets[t]) for s, t in pairs) / len(pairs)


@register("byol", BYOLConfig, display="BYOL")
class BYOL(Method):
    """BYOL (Grill et al., NeurIPS 2020). The online network (encoder, projector g_theta, predictor q_theta) predicts
    the target network's projection z' of another view; the target is a momentum average of the online encoder and
    projector. With y = f(v), z = g(y) online and z' = g_xi(f_xi(v')) target,

        L_theta,xi = || q(z) / ||q(z)|| - z' / ||z'|| ||^2 = 2 - 2 <q(z), z'> / (||q(z)|| ||z'||)   (Eq. 2),

    symmetrised by feeding v' online and v to the target (L~); the total L + L~ is minimised in theta only, and after
    each step xi <- tau xi + (1 - tau) theta with tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 (the loop's momentum
    teacher).

    Arguments: ``embed_dim`` (D of the projections), the fields of :class:`BYOLConfig` (defaults there),
    ``head_hidden_dim`` (the predictor's width when ``predictor_hidden_dim`` is 0), ``num_global_crops`` (the
    teacher's crops) and ``num_local_crops`` (checked: at least 2 crops). ``loss`` reads the target projections from
    ``batch["teacher"]`` (the ssl_bench loop puts them there).

    In a plain PyTorch loop (the target network is yours to keep: a copy of the encoder, averaged after each step):

    >>> import copy
    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.byol import BYOL
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> target = copy.deepcopy(encoder).requires_grad_(False)
    >>> byol = BYOL(embed_dim=16, predictor_hidden_dim=32)
    >>> optimizer = torch.optim.SGD([*encoder.parameters(), *byol.parameters()], lr=0.1)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for step in range(5):
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]  # your augmentations here
    ...     loss, stats = byol([encoder(v) for v in views], {"teacher": [target(v) for v in views]})
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    ...     for s, t in zip(encoder.parameters(), target.parameters()):
    ...         _ = t.data.mul_(0.996).add_(s.data, alpha=0.004)
    >>> bool(torch.isfinite(loss)), sorted(stats)
    (True, ['loss'])
    """

    def __init__(self, embed_dim: int, *, base_momentum: float = _D.base_momentum,
                 predictor_hidden_dim: int = _D.predictor_hidden_dim, head_hidden_dim: int = 4096,
                 num_global_crops: int = 2, num_local_crops: int = 0) -> None:
        super().__init__(embed_dim)
        self.hp = hyperparameters(BYOLConfig, locals())
        check_crops("byol", num_global_crops, num_local_crops)
        self.num_global = num_global_crops
        hidden = self.hp.predictor_hidden_dim or head_hidden_dim
        self.predictor = nn.Sequential(nn.Linear(embed_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, embed_dim))

    def momentum_teacher(self) -> MomentumTeacher:
        return MomentumTeacher(self.hp.base_momentum, crops=self.num_global, evaluate="student")

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        targets = batch.get("teacher")
        if targets is None:
            raise ValueError("byol needs the target network's projections of the global crops in batch['teacher']")
        predictions = self.predict(z_crops)
        loss = byol_loss(predictions, [t.detach() for t in targets])
        return loss, {"loss": loss.item()}

    def predict(self, z_crops: list[Tensor]) -> list[Tensor]:
        """q(z) for every crop: the global crops in one call, the local crops in another (the predictor's batch norm
        sees the crops the projector's saw together)."""
        out: list[Tensor] = []
        for group in (z_crops[: self.num_global], z_crops[self.num_global :]):
            if group:
                out.extend(self.predictor(torch.cat(group)).chunk(len(group)))
        return out
