"""Linear probe on frozen backbone features (SwAV appendix A.3).

The classifier is one linear layer on the backbone's pooled output, trained with SGD (momentum 0.9), cosine
learning-rate decay from ``lr`` to 0 over ``epochs``, weight decay ``weight_decay`` and batch ``batch_size``
(A.3 on ImageNet: 100 epochs, lr 0.3, wd 1e-6, batch 256, RandomResizedCrop + horizontal flip). Two modes:

- ``augmented``: every epoch the training images are cropped and flipped anew and go through the frozen backbone
  (in eval mode); the paper's protocol. The classifier is trained with Accelerate (DDP over processes).
- ``cached``: the features of the evaluation view, extracted once (and shared with kNN), no augmentation; the fast
  variant for CPU budgets and sweeps. Every process trains the same classifier on the same gathered features.

By default a BatchNorm without affine parameters precedes the linear layer (as the MAE and MoCo v3 probes):
at test time it is a fixed standardisation, so the classifier stays linear, and the lr does not depend on the
scale of a particular backbone's features. Top-1 and top-5 accuracy (in %) on the test split.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_bench.common.progress import bar
from ssl_bench.evaluation.common import Stepper, sharded_loader, wrap
from ssl_bench.evaluation.features import rows


class LinearClassifier(nn.Module):
    """[BatchNorm1d(affine=False)] + Linear(dim, num_classes), initialised as SwAV's eval_linear (N(0, 0.01), 0)."""

    def __init__(self, dim: int, num_classes: int, bn: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False) if bn else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x))


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at step ``total``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


def _init_classifier(dim: int, num_classes: int, bn: bool, seed: int) -> LinearClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LinearClassifier(dim, num_classes, bn)


def train_linear_cached(train_f: Tensor, train_y: Tensor, num_classes: int, *, epochs: int, lr: float,
                        weight_decay: float, momentum: float, batch_size: int, bn: bool = True, seed: int = 0,
                        device: torch.device | str = "cpu") -> LinearClassifier:
    """Train the probe on fixed features [N, D] (in memory or memory-mapped). Deterministic for a seed: the
    classifier init and the batch order come from ``seed``; the last incomplete batch of an epoch is dropped
    (batch statistics of a handful of samples) unless the set is smaller than one batch."""
    n = len(train_f)
    clf = _init_classifier(train_f.shape[1], num_classes, bn, seed).to(device)
    bs = min(batch_size, n)
    steps = n // bs
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    total, step = epochs * steps, 0
    train_y = train_y.long()
    clf.train()
    for _ in bar(range(epochs), desc="linear probe (cached features)", unit="epoch"):
        perm = torch.randperm(n, generator=g)
        for i in range(steps):
            idx = perm[i * bs : (i + 1) * bs].sort().values  # sorted: sequential reads from a memory map
            x = train_f[idx].to(device=device, dtype=torch.float32)
            loss = F.cross_entropy(clf(x), train_y[idx].to(device))
            for group in opt.param_groups:
                group["lr"] = cosine_lr(lr, step, total)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return clf.eval()


def train_linear_augmented(backbone: nn.Module, train_set: Dataset, num_classes: int, accelerator, *, epochs: int,
                           lr: float, weight_decay: float, momentum: float, batch_size: int, bn: bool = True,
                           seed: int = 0, num_workers: int = 0) -> LinearClassifier:
    """Train the probe on augmented views (``train_set`` yields (augmented image tensor, label)) through the
    frozen ``backbone`` (eval mode, no gradients). ``batch_size`` is the global batch (1/N per process)."""
    from accelerate.utils import set_seed

    set_seed(seed)
    backbone = backbone.to(accelerator.device)
    was_training = backbone.training
    backbone.eval()
    clf = _init_classifier(backbone.out_dim, num_classes, bn, seed)
    model = wrap(clf, accelerator)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    step_fn = Stepper(accelerator, opt)
    try:
        with sharded_loader(accelerator, train_set, batch_size, seed, num_workers) as loader:
            total, step = epochs * len(loader), 0
            model.train()
            progress = bar(total=total, desc="linear probe", unit="step")
            for epoch in range(epochs):
                progress.set_description(f"linear probe epoch {epoch + 1}/{epochs}")
                for images, y in loader:
                    with torch.no_grad(), accelerator.autocast():
                        f = backbone(images)
                    loss = F.cross_entropy(model(f.float()), y)
                    for group in opt.param_groups:
                        group["lr"] = cosine_lr(lr, step, total)
                    step_fn(loss)
                    step += 1
                    progress.update()
            progress.close()
    finally:
        backbone.train(was_training)
    return clf.eval()


@torch.no_grad()
def topk_accuracy(logits: Tensor, y: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{"top1": ..., "top5": ...} in % (top-k with k capped at the number of classes)."""
    y = y.to(logits.device)
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred == y[:, None]
    return {f"top{k}": 100.0 * int(hit[:, : min(k, kmax)].any(1).sum()) / max(1, len(y)) for k in ks}


@torch.no_grad()
def evaluate_linear(clf: nn.Module, test_f: Tensor, test_y: Tensor, chunk: int = 8192,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1 / top-5 of the probe on fixed test features."""
    return topk_accuracy(linear_logits(clf, test_f, chunk, device), test_y)


@torch.no_grad()
def linear_logits(clf: nn.Module, test_f: Tensor, chunk: int = 8192, device: torch.device | str = "cpu") -> Tensor:
    """The probe's logits [M, classes] on fixed test features (on CPU): shared by the accuracy and the kept
    predictions (their argmax), so both come from one forward pass."""
    clf = clf.to(device).eval()
    return torch.cat([clf(rows(test_f, s, s + chunk, device)).cpu() for s in range(0, len(test_f), chunk)])
