"""Semi-supervised fine-tuning (SwAV appendix A.4) and the supervised reference.

Fine-tuning: the whole network (a copy of the pretrained backbone, batch-norm in training mode, plus a new
linear head initialised N(0, 0.01)) is trained with cross-entropy on a stratified fraction of the labels (1% or
10%; index files in splits.py) for 20 epochs at batch 256, SGD with momentum 0.9 and no weight decay, with
distinct learning rates for the backbone and the head (1%: 0.02 / 5; 10%: 0.01 / 0.2), both multiplied by 0.2 at
epochs 12 and 16. Augmentation: RandomResizedCrop + horizontal flip. Top-1 / top-5 on the test split.

Supervised reference: the same backbone from random initialisation, trained with labels on the pretraining
images for the budget's epochs at its batch size (SGD, momentum 0.9, cosine decay, one lr), so a table has its
ceiling next to the methods; its own head gives top-1 / top-5 and its backbone is then evaluated like any other.

Training goes through Accelerate: N processes each take 1/N of every (global) batch, gradients are averaged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_bench.common.progress import bar
from ssl_bench.evaluation.common import Stepper, sharded_loader, wrap
from ssl_bench.evaluation.features import extract_features
from ssl_bench.evaluation.linear import cosine_lr, topk_accuracy


class Classifier(nn.Module):
    """Backbone + linear head on its pooled output."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def step_lr(base: float, epoch: int, milestones: list[int], gamma: float) -> float:
    """``base`` times ``gamma`` for every milestone epoch already reached (A.4: x0.2 at epochs 12 and 16)."""
    return base * gamma ** sum(epoch >= m for m in milestones)


def train_classifier(model: Classifier, train_set: Dataset, accelerator, *, epochs: int, batch_size: int,
                     lr_backbone: float, lr_head: float, lr_at: Callable[[float, int, int, int], float],
                     momentum: float, weight_decay: float, seed: int, num_workers: int = 0,
                     desc: str = "training") -> Classifier:
    """Train backbone and head end to end; ``lr_at(base, epoch, step, total_steps)`` gives each group's lr.
    ``batch_size`` is the global batch; incomplete last batches are dropped (unless the set is smaller).
    ``desc`` names the progress bar."""
    from accelerate.utils import set_seed

    set_seed(seed)
    wrapped = wrap(model, accelerator)
    groups = [{"params": list(model.backbone.parameters()), "lr": lr_backbone, "base_lr": lr_backbone},
              {"params": list(model.head.parameters()), "lr": lr_head, "base_lr": lr_head}]
    opt = torch.optim.SGD(groups, lr=lr_head, momentum=momentum, weight_decay=weight_decay)
    step_fn = Stepper(accelerator, opt)
    with sharded_loader(accelerator, train_set, batch_size, seed, num_workers) as loader:
        total, step = epochs * len(loader), 0
        wrapped.train()
        progress = bar(total=total, desc=desc, unit="step")
        for epoch in range(epochs):
            progress.set_description(f"{desc} epoch {epoch + 1}/{epochs}")
            for images, y in loader:
                for group in opt.param_groups:
                    group["lr"] = lr_at(group["base_lr"], epoch, step, total)
                with accelerator.autocast():
                    logits = wrapped(images)
                step_fn(F.cross_entropy(logits.float(), y))
                step += 1
                progress.update()
        progress.close()
    return model.eval()


def finetune(backbone: nn.Module, train_set: Dataset, num_classes: int, accelerator, *, epochs: int, batch_size: int,
             lr_backbone: float, lr_head: float, milestones: list[int], gamma: float, momentum: float = 0.9,
             weight_decay: float = 0.0, seed: int = 0, num_workers: int = 0) -> Classifier:
    """A.4 fine-tuning of a copy of ``backbone`` (the original is left untouched) on ``train_set`` (augmented
    views with labels of the label subset)."""
    model = Classifier(copy.deepcopy(backbone), num_classes)
    return train_classifier(model, train_set, accelerator, epochs=epochs, batch_size=batch_size,
                            lr_backbone=lr_backbone, lr_head=lr_head,
                            lr_at=lambda base, epoch, step, total: step_lr(base, epoch, milestones, gamma),
                            momentum=momentum, weight_decay=weight_decay, seed=seed, num_workers=num_workers,
                            desc="fine-tuning")


def train_supervised(backbone: nn.Module, train_set: Dataset, num_classes: int, accelerator, *, epochs: int,
                     batch_size: int, lr: float, weight_decay: float, momentum: float = 0.9, seed: int = 0,
                     num_workers: int = 0) -> Classifier:
    """The supervised reference: ``backbone`` (random init) + head trained with labels, cosine decay to 0."""
    model = Classifier(backbone, num_classes)
    return train_classifier(model, train_set, accelerator, epochs=epochs, batch_size=batch_size, lr_backbone=lr,
                            lr_head=lr, lr_at=lambda base, epoch, step, total: cosine_lr(base, step, total),
                            momentum=momentum, weight_decay=weight_decay, seed=seed, num_workers=num_workers,
                            desc="supervised reference")


@torch.no_grad()
def evaluate_classifier(model: nn.Module, test_set: Dataset, accelerator, batch_size: int = 256,
                        num_workers: int = 0) -> dict[str, float]:
    """Top-1 / top-5 (%) of an end-to-end classifier on ``test_set`` (evaluation view), sharded like features."""
    logits, y = extract_features(model, test_set, accelerator, batch_size, num_workers, desc="test predictions")
    return topk_accuracy(logits, y)
