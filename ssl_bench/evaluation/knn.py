"""Weighted kNN on frozen features (Wu et al. 2018; SwAV Table 11): cosine similarity, the k nearest
training features vote for their class with weight exp(sim / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils.benchmarking import knn_predict
from torch import Tensor


@torch.no_grad()
def knn_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, ks: list[int],
                 temperature: float = 0.07, num_classes: int | None = None,
                 chunk: int = 1024) -> dict[int, float]:
    """Top-1 accuracy (in %) for each k; features are L2-normalised here. k is capped at the bank size."""
    num_classes = int(num_classes or int(max(train_y.max(), test_y.max())) + 1)
    bank = F.normalize(train_f.float(), dim=1).t().contiguous()
    test_f = F.normalize(test_f.float(), dim=1)
    correct = {k: 0 for k in ks}
    for start in range(0, len(test_f), chunk):
        f, y = test_f[start : start + chunk], test_y[start : start + chunk]
        for k in ks:
            pred = knn_predict(f, bank, train_y, num_classes, knn_k=min(k, bank.shape[1]), knn_t=temperature)
            correct[k] += int((pred[:, 0] == y).sum())
    return {k: 100.0 * c / len(test_f) for k, c in correct.items()}


def knn_eval(features: tuple[Tensor, Tensor, Tensor, Tensor], ks: list[int], temperature: float,
             num_classes: int | None = None) -> dict[str, float]:
    """kNN top-1 for each k as a flat dict {"knn_top1": <first k>, "knn_top1_k20": ..., ...}."""
    acc = knn_accuracy(*features, ks=ks, temperature=temperature, num_classes=num_classes)
    out = {f"knn_top1_k{k}": v for k, v in acc.items()}
    out["knn_top1"] = acc[ks[0]]
    return out
