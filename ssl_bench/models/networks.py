"""Backbones, the projection head, the momentum teacher an objective may ask for, and the model that ties them to an
objective."""

from __future__ import annotations

import copy
import math
from itertools import groupby

import torch
import torchvision
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import NETWORKS, Method, MomentumTeacher


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallConvNet(nn.Module):
    """Four 3x3 conv-BN-ReLU stages (width w, 2w, 4w, 8w; the last three stride 2) and global average
    pooling: a backbone that trains in seconds on a CPU, for the demo and test budgets."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, width, 1), conv_bn(width, 2 * width, 2), conv_bn(2 * width, 4 * width, 2),
            conv_bn(4 * width, 8 * width, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = 8 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def build_backbone(cfg: DictConfig) -> nn.Module:
    """The backbone maps images to pooled features; ``.out_dim`` is their size."""
    b = cfg.backbone
    if b.name == "small_cnn":
        return SmallConvNet(b.width)
    net = getattr(torchvision.models, b.name)(weights=None)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    if b.small_image_stem:  # CIFAR-style stem: 3x3 stride-1 conv, no max-pool
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    return net


class ProjectionHead(nn.Module):
    """2-layer MLP with BN (SwAV: 2048 -> 2048 -> 128)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def momentum_at(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """The teacher's momentum after optimiser step ``step`` (0-based) of ``total_steps``: cosine from ``base`` at
    step 0 towards ``final`` at ``total_steps`` (BYOL Sec. 3.2: tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2)."""
    t = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * t) + 1) / 2


def project(crops: list[Tensor], backbone: nn.Module, head: nn.Module, tail: list[nn.Module] | None = None,
            memory_format: torch.memory_format = torch.contiguous_format) -> list[Tensor]:
    """One projection per crop: crops of one resolution go through the backbone in a single call."""
    z_crops: list[Tensor] = []
    start = 0
    for _, group in groupby(crops, key=lambda t: t.shape[-2:]):
        n = len(list(group))
        x = torch.cat(crops[start : start + n]).contiguous(memory_format=memory_format)
        z = head(backbone(x))
        for module in tail or []:
            z = module(z)
        z_crops.extend(z.chunk(n))
        start += n
    return z_crops


class Teacher(nn.Module):
    """The momentum copy an objective asks for (:class:`ssl_bench.methods.base.MomentumTeacher`): the backbone, the
    head and the objective's named modules, deep-copied at construction (so the teacher starts equal to the
    student), never trained by the optimiser (``requires_grad`` False: no optimiser group, no DDP gradient), updated
    by :meth:`update` after each optimiser step. Its parameters and buffers are part of the model's state dict
    (``teacher.*``), so checkpoints carry it and a resumed run continues it exactly."""

    def __init__(self, backbone: nn.Module, head: nn.Module, method: Method, spec: MomentumTeacher) -> None:
        super().__init__()
        self.spec = spec
        self.backbone, self.head = copy.deepcopy(backbone), copy.deepcopy(head)
        self.tail = nn.ModuleList(copy.deepcopy(getattr(method, name)) for name in spec.modules)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, crops: list[Tensor], memory_format: torch.memory_format = torch.contiguous_format
                ) -> list[Tensor]:
        return project(crops, self.backbone, self.head, list(self.tail), memory_format)

    @torch.no_grad()
    def update(self, student: list[nn.Module], momentum: float) -> None:
        """xi <- m xi + (1 - m) theta for every parameter, ``student`` being the modules this teacher copies, in
        order (backbone, head, the objective's modules)."""
        mine = [p for m in (self.backbone, self.head, *self.tail) for p in m.parameters()]
        theirs = [p for m in student for p in m.parameters()]
        if len(mine) != len(theirs):
            raise RuntimeError(f"the teacher has {len(mine)} parameter tensors and the student {len(theirs)}")
        torch._foreach_mul_(mine, momentum)
        torch._foreach_add_(mine, [p.detach() for p in theirs], alpha=1.0 - momentum)


class SSLModel(nn.Module):
    """Backbone + head + objective in one module, so one DDP wrapper syncs all their gradients.

    ``forward`` runs every crop of one resolution through the backbone in a single call (global crops
    first, then local crops) and hands the method one projection per crop. When the objective asks for a momentum
    teacher (:meth:`ssl_bench.methods.base.Method.momentum_teacher`), ``teacher`` holds it and ``forward`` adds its
    outputs on the global crops to the batch (``batch["teacher"]``); otherwise ``teacher`` is None and costs nothing.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, method: Method) -> None:
        super().__init__()
        self.backbone, self.head, self.method = backbone, head, method
        # The layout of the crops given to the backbone (channels_last with train.channels_last).
        self.memory_format = torch.contiguous_format
        spec = method.momentum_teacher() if hasattr(method, "momentum_teacher") else None
        self.teacher: Teacher | None = Teacher(backbone, head, method, spec) if spec is not None else None

    def project(self, crops: list[Tensor]) -> list[Tensor]:
        return project(crops, self.backbone, self.head, None, self.memory_format)

    def forward(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        z_crops = self.project(batch["crops"])
        if self.teacher is not None:
            batch = {**batch, "teacher": self.teacher(batch["crops"][: self.teacher.spec.crops], self.memory_format)}
        return self.method.loss(z_crops, batch)

    def update_teacher(self, step: int, total_steps: int) -> float | None:
        """After optimiser step ``step`` (0-based) of ``total_steps``: the teacher's moving average at the scheduled
        momentum (:func:`momentum_at`); returns the momentum used (None without a teacher)."""
        if self.teacher is None:
            return None
        m = momentum_at(step, total_steps, self.teacher.spec.base_momentum)
        self.teacher.update([self.backbone, self.head, *(getattr(self.method, n) for n in self.teacher.spec.modules)],
                            m)
        return m

    def network_name(self, choice: str | None = None) -> str:
        """``eval.network`` resolved: the choice, else the network the objective's paper reports (its teacher's
        ``evaluate``; ``student`` without a teacher). A teacher asked of an objective without one is a ConfigError."""
        name = choice or (self.teacher.spec.evaluate if self.teacher is not None else "student")
        if name not in NETWORKS:
            raise ConfigError(f"unknown eval.network '{name}'; valid choices: {', '.join(NETWORKS)}")
        if name == "teacher" and self.teacher is None:
            raise ConfigError("eval.network=teacher: this method has no momentum teacher (eval.network=student)")
        return name

    def network(self, choice: str | None = None) -> nn.Module:
        """The backbone that evaluation reads: the student's or the teacher's (see :meth:`network_name`)."""
        return self.teacher.backbone if self.network_name(choice) == "teacher" else self.backbone  # type: ignore


def apply_speed_options(model: nn.Module, cfg: DictConfig) -> nn.Module:
    """train.channels_last and train.compile on an :class:`SSLModel`, in place, before it is wrapped for
    distribution (a model without a backbone is left alone). Compiling the submodules in place
    (nn.Module.compile) keeps the state dict's keys, so checkpoints stay interchangeable with eager runs; the
    objective stays eager (its Sinkhorn and queues are small, and some of it is distributed)."""
    t = cfg.train
    if not isinstance(model, SSLModel):
        return model
    teacher = [model.teacher.backbone, model.teacher.head] if model.teacher is not None else []
    if t.get("channels_last", False):
        for backbone in (model.backbone, *teacher[:1]):
            backbone.to(memory_format=torch.channels_last)
        model.memory_format = torch.channels_last
    if t.get("compile", False):
        # Static shapes: one graph per crop size (2 in training) rather than a slower dynamic-shape graph.
        for module in (model.backbone, model.head, *teacher):
            module.compile(backend=t.get("compile_backend", "inductor"), dynamic=False)
    return model
