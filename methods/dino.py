"""DINO: self-distillation with no labels (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
ICCV 2021).

The loss and its equation: :class:`DINO` (an ``nn.Module`` usable in any PyTorch loop).

Paper defaults (Sec. 3.1-3.2, App. C-D of the paper): K = 65536 output dimensions, student temperature 0.1, teacher
temperature with a linear warm-up from 0.04 to 0.07 over the first 30 epochs, centre momentum m = 0.9, teacher
momentum 0.996 -> 1 on a cosine schedule; the last layer frozen during the first epoch (the reference code,
main_dino.py); the teacher is what the paper evaluates (``eval.network`` defaults to ``teacher``).

Choices the paper leaves open, or that the shared loop fixes:
- The DINO head is the shared projection head (its MLP; ``head.out_dim`` is the bottleneck) followed by this
  objective's own layer: l2-normalisation and a weight-normalised linear layer to K without bias, its norm fixed to 1
  (the reference's ``norm_last_layer=True``): ``g_k(z) = <z / ||z||, v_k / ||v_k||>``. The teacher has its own copy
  of that layer (``MomentumTeacher.modules``), averaged like the rest of the network.
- The shared head has batch norm (the paper's ViT head has none); the teacher runs it in training mode with its own
  batch statistics (ssl_bench.models.networks.Teacher).
- The normalisation of the loss is the reference's: the sum over pairs (teacher crop t, student crop s != t) of the
  batch-mean cross-entropy, divided by the number of pairs.
- The teacher temperature changes per epoch (``linspace(warmup, final, warmup_epochs)[epoch]``), as the reference; the
  epoch is kept in the module's state (``epoch`` buffer), so a run resumed mid-epoch uses the same temperature.
- The centre is updated after the loss of each step from the teacher outputs of the global batch (all processes).
- Weight-decay schedule (0.04 -> 0.4) and gradient clipping of the reference are the shared optimiser's business and
  are not applied here, so that every method is trained by the same optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Context, Method, MomentumTeacher, check_crops, hyperparameters, register
from ssl_bench.ops.distributed import all_reduce_


@dataclass
class DINOConfig:
    name: str = "dino"
    # K, the dimension of the softmax outputs (paper: 65536).
    output_dim: int = 65536
    # Student temperature tau_s (paper: 0.1).
    student_temp: float = 0.1
    # Teacher temperature tau_t after the warm-up (paper: 0.07 for its longer runs; 0.04 without warm-up).
    teacher_temp: float = 0.07
    # Teacher temperature at epoch 0, raised linearly to teacher_temp over warmup_teacher_temp_epochs (paper: 0.04).
    warmup_teacher_temp: float = 0.04
    # Epochs of the teacher temperature's linear warm-up (paper: 30; 0 = teacher_temp from the start).
    warmup_teacher_temp_epochs: int = 30
    # Momentum m of the centre c <- m c + (1 - m) mean(teacher outputs) (paper: 0.9).
    center_momentum: float = 0.9
    # The teacher's momentum at the first step, raised to 1 by a cosine over training (paper: 0.996).
    base_momentum: float = 0.996
    # Epochs during which the last layer gets no gradient (paper's reference: 1).
    freeze_last_layer_epochs: int = 1

    def __post_init__(self) -> None:
        checks = {
            "output_dim": self.output_dim > 0,
            "student_temp": self.student_temp > 0,
            "teacher_temp": self.teacher_temp > 0,
            "warmup_teacher_temp": self.warmup_teacher_temp > 0,
            "warmup_teacher_temp_epochs": self.warmup_teacher_temp_epochs >= 0,
            "center_momentum": 0 <= self.center_momentum <= 1,
            "base_momentum": 0 <= self.base_momentum <= 1,
            "freeze_last_layer_epochs": self.freeze_last_layer_epochs >= 0,
        }
        bounds = {"center_momentum": "in [0, 1]", "base_momentum": "in [0, 1]",
                  "warmup_teacher_temp_epochs": ">= 0", "freeze_last_layer_epochs": ">= 0"}
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"method.{key} must be {bounds.get(key, '> 0')}, got {getattr(self, key)}")


_D = DINOConfig  # the defaults, declared once


def teacher_temperature(epoch: int, warmup: float, final: float, warmup_epochs: int) -> float:
    """The reference's schedule: ``linspace(warmup, final, warmup_epochs)[epoch]`` during the warm-up, then final."""
    if epoch >= warmup_epochs:
        return final
    if warmup_epochs == 1:
        return warmup
    return warmup + (final - warmup) * epoch / (warmup_epochs - 1)


def dino_loss(student: list[Tensor], teacher: list[Tensor], center: Tensor, teacher_temp: float,
              student_temp: float) -> Tensor:
    """Eq. 1 over crops: the mean over pairs (t, s), s != t, of the batch mean of
    -sum_k P_t(x_t)_k log P_s(x_s)_k, with P_t = softmax((g_t - c) / tau_t) and P_s = softmax(g_s / tau_s).
    ``teacher`` holds the teacher outputs of the global crops, ``student`` those of every crop (global first)."""
    total, pairs = student[0].new_zeros((), dtype=torch.float32), 0
    log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    for t, g in enumerate(teacher):
        p_t = F.softmax((g.float() - center) / teacher_temp, dim=-1)
        for s, lp in enumerate(log_p):
            if s != t:
                total = total + (-(p_t * lp).sum(dim=-1)).mean()
                pairs += 1
    return total / pairs


@register("dino", DINOConfig, display="DINO")
class DINO(Method):
    """DINO (Caron et al., ICCV 2021): a student g_theta_s trained to match a momentum teacher g_theta_t. For an
    image, the teacher sees the global crops x_1, x_2 and the student every crop V (global and local); the outputs
    (K dimensions) become distributions with a temperature, the teacher's after centring:

        P_s(x)_k = exp(g_s(x)_k / tau_s) / sum_j exp(g_s(x)_j / tau_s),
        P_t(x)_k = exp((g_t(x)_k - c_k) / tau_t) / sum_j exp((g_t(x)_j - c_j) / tau_t),

        L = sum_{x in {x_1, x_2}} sum_{x' in V, x' != x} H(P_t(x), P_s(x')),   H(a, b) = -a log b   (Eq. 3),

    averaged over the batch and divided by the number of pairs (the reference code). After each step the centre
    follows the teacher's batch mean, c <- m c + (1 - m) mean_i g_t(x_i) (Eq. 4, over the global batch), and the
    teacher follows the student, theta_t <- lambda theta_t + (1 - lambda) theta_s with lambda from 0.996 to 1 on a
    cosine (the loop's momentum teacher). tau_t rises linearly from 0.04 to 0.07 over the first 30 epochs.

    g is the shared head, then this objective's layer: l2-normalisation and a weight-normalised linear map to K
    (``last_layer``, norm fixed to 1), copied into the teacher.

    Arguments: ``embed_dim`` (D of the projections), the fields of :class:`DINOConfig` (defaults there),
    ``num_global_crops`` (the first crops of ``loss``'s list: the teacher's) and ``num_local_crops`` (checked: at
    least 2 crops). ``loss`` reads the teacher's outputs from ``batch["teacher"]`` (the ssl_bench loop puts them there).

    In a plain PyTorch loop (the teacher is yours to keep: a copy of encoder and last layer, averaged after each step):

    >>> import copy
    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.base import Context
    >>> from ssl_bench.methods.dino import DINO
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> dino = DINO(embed_dim=16, output_dim=32, warmup_teacher_temp_epochs=0, freeze_last_layer_epochs=0)
    >>> teacher, teacher_layer = copy.deepcopy(encoder), copy.deepcopy(dino.last_layer)
    >>> optimizer = torch.optim.SGD([*encoder.parameters(), *dino.parameters()], lr=0.1)
    >>> images = torch.rand(32, 3, 8, 8)
    >>> for step in range(5):
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]  # your augmentations here
    ...     with torch.no_grad():
    ...         t = [teacher_layer(teacher(v)) for v in views]
    ...     loss, stats = dino([encoder(v) for v in views], {"teacher": t})
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    ...     with torch.no_grad():
    ...         for s, p in zip([*encoder.parameters(), *dino.last_layer.parameters()],
    ...                         [*teacher.parameters(), *teacher_layer.parameters()]):
    ...             _ = p.mul_(0.996).add_(s, alpha=0.004)
    >>> bool(torch.isfinite(loss)), sorted(stats)
    (True, ['loss', 'teacher_entropy'])
    """

    def __init__(self, embed_dim: int, *, output_dim: int = _D.output_dim, student_temp: float = _D.student_temp,
                 teacher_temp: float = _D.teacher_temp, warmup_teacher_temp: float = _D.warmup_teacher_temp,
                 warmup_teacher_temp_epochs: int = _D.warmup_teacher_temp_epochs,
                 center_momentum: float = _D.center_momentum, base_momentum: float = _D.base_momentum,
                 freeze_last_layer_epochs: int = _D.freeze_last_layer_epochs,
                 num_global_crops: int = 2, num_local_crops: int = 0) -> None:
        super().__init__(embed_dim)
        self.hp = hyperparameters(DINOConfig, locals())
        check_crops("dino", num_global_crops, num_local_crops)
        self.num_global = num_global_crops
        self.last_layer = PrototypeLayer(embed_dim, self.hp.output_dim)
        self.register_buffer("center", torch.zeros(1, self.hp.output_dim))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))  # for the teacher temperature

    def momentum_teacher(self) -> MomentumTeacher:
        return MomentumTeacher(self.hp.base_momentum, crops=self.num_global, modules=("last_layer",),
                               evaluate="teacher")

    def teacher_temp_now(self) -> float:
        m = self.hp
        return teacher_temperature(int(self.epoch), m.warmup_teacher_temp, m.teacher_temp,
                                   m.warmup_teacher_temp_epochs)

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        teacher = batch.get("teacher")
        if teacher is None:
            raise ValueError("dino needs the teacher's outputs on the global crops in batch['teacher']")
        student = [self.last_layer(z) for z in z_crops]
        teacher = [t.detach().float() for t in teacher]
        loss = dino_loss(student, teacher, self.center, self.teacher_temp_now(), self.hp.student_temp)
        with torch.no_grad():
            p = F.softmax((torch.cat(teacher) - self.center) / self.teacher_temp_now(), dim=-1).mean(0)
            entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
            self.update_center(teacher)
        return loss, {"loss": loss.item(), "teacher_entropy": entropy}

    @torch.no_grad()
    def update_center(self, teacher: list[Tensor]) -> None:
        """c <- m c + (1 - m) (the mean of the teacher outputs over the global crops of the global batch)."""
        stacked = torch.cat(teacher)
        sums = all_reduce_(torch.cat([stacked.sum(0), stacked.new_tensor([stacked.shape[0]])]))
        batch_center = (sums[:-1] / sums[-1]).unsqueeze(0)
        m = self.hp.center_momentum
        self.center.copy_(self.center * m + batch_center * (1 - m))

    def on_epoch_start(self, ctx: Context) -> None:
        self.epoch.fill_(ctx.epoch)

    def after_backward(self, ctx: Context) -> None:
        if ctx.epoch < self.hp.freeze_last_layer_epochs:
            self.last_layer.weight.grad = None


class PrototypeLayer(nn.Module):
    """DINO's last layer: l2-normalise z, then a linear map without bias whose rows are kept at norm 1 (weight
    normalisation with the norm fixed to 1: the gradient reaches the directions only)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, z: Tensor) -> Tensor:
        return F.linear(F.normalize(z, dim=-1), F.normalize(self.weight, dim=1))
