"""Backbones, the projection head, and the model that ties them to an objective."""

from __future__ import annotations

from itertools import groupby

import torch
import torchvision
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_bench.methods.base import Method


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


class SSLModel(nn.Module):
    """Backbone + head + objective in one module, so one DDP wrapper syncs all their gradients.

    ``forward`` runs every crop of one resolution through the backbone in a single call (global crops
    first, then local crops) and hands the method one projection per crop.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, method: Method) -> None:
        super().__init__()
        self.backbone, self.head, self.method = backbone, head, method
        # The layout of the crops given to the backbone (channels_last with train.channels_last).
        self.memory_format = torch.contiguous_format

    def project(self, crops: list[Tensor]) -> list[Tensor]:
        z_crops: list[Tensor] = []
        start = 0
        for _, group in groupby(crops, key=lambda t: t.shape[-2:]):
            n = len(list(group))
            chunk = crops[start : start + n]
            x = torch.cat(chunk).contiguous(memory_format=self.memory_format)
            z = self.head(self.backbone(x))
            z_crops.extend(z.chunk(n))
            start += n
        return z_crops

    def forward(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        return self.method.loss(self.project(batch["crops"]), batch)


def apply_speed_options(model: nn.Module, cfg: DictConfig) -> nn.Module:
    """train.channels_last and train.compile on an :class:`SSLModel`, in place, before it is wrapped for
    distribution (a model without a backbone is left alone). Compiling the submodules in place
    (nn.Module.compile) keeps the state dict's keys, so checkpoints stay interchangeable with eager runs; the
    objective stays eager (its Sinkhorn and queues are small, and some of it is distributed)."""
    t = cfg.train
    if not isinstance(model, SSLModel):
        return model
    if t.get("channels_last", False):
        model.backbone.to(memory_format=torch.channels_last)
        model.memory_format = torch.channels_last
    if t.get("compile", False):
        # Static shapes: one graph per crop size (2 in training) rather than a slower dynamic-shape graph.
        for module in (model.backbone, model.head):
            module.compile(backend=t.get("compile_backend", "inductor"), dynamic=False)
    return model
