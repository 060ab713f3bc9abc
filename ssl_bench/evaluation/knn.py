"""Weighted kNN on frozen features (Wu et al. 2018; SwAV Table 11; CARL's monitor): cosine similarity between
L2-normalised features, the k nearest training features vote for their class with weight exp(sim / T).

The search is chunked over test and training features and keeps a running top-k, so a training bank that is
memory-mapped from disk (ImageNet-size sets, see features.py) is read in pieces; the largest k is searched
once and every smaller k reuses its prefix, so one extraction and one search serve every k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.common.progress import bar
from ssl_bench.config.schema import KNN_K
from ssl_bench.evaluation.features import rows


@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, test_f: Tensor, ks: list[int], temperature: float = 0.07,
                num_classes: int | None = None, chunk: int = 1024, bank_chunk: int = 16384,
                device: torch.device | str = "cpu") -> dict[int, Tensor]:
    """Predicted class [M] of every test feature, for each k (capped at the number of training features)."""
    n = len(train_f)
    num_classes = int(num_classes or int(max(train_y.max(), 0)) + 1)
    kmax = min(max(ks), n)
    train_y = train_y.to(device)
    preds: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start in bar(range(0, len(test_f), chunk), desc=f"kNN over {n} features", unit="chunk"):
        q = F.normalize(rows(test_f, start, start + chunk, device), dim=1)
        best_s = torch.empty(len(q), 0, device=device)
        best_i = torch.empty(len(q), 0, dtype=torch.long, device=device)
        for b0 in range(0, n, bank_chunk):
            bank = F.normalize(rows(train_f, b0, b0 + bank_chunk, device), dim=1)
            s = q @ bank.t()
            best_s = torch.cat([best_s, s], dim=1)
            best_i = torch.cat([best_i, torch.arange(b0, b0 + len(bank), device=device).expand(len(q), -1)], dim=1)
            best_s, pos = best_s.topk(min(kmax, best_s.shape[1]), dim=1)  # sorted, largest first
            best_i = best_i.gather(1, pos)
        neighbour_y = train_y[best_i]
        weight = (best_s / temperature).exp()
        for k in ks:
            kk = min(k, n)
            votes = torch.zeros(len(q), num_classes, device=device)
            votes.scatter_add_(1, neighbour_y[:, :kk], weight[:, :kk])
            preds[k].append(votes.argmax(1).cpu())
    return {k: torch.cat(p) if p else torch.zeros(0, dtype=torch.long) for k, p in preds.items()}


@torch.no_grad()
def knn_accuracy(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, ks: list[int],
                 temperature: float = 0.07, num_classes: int | None = None,
                 chunk: int = 1024, device: torch.device | str = "cpu") -> dict[int, float]:
    """Top-1 accuracy (in %) for each k; features are L2-normalised here. k is capped at the bank size."""
    num_classes = int(num_classes or int(max(train_y.max(), test_y.max())) + 1)
    preds = knn_predict(train_f, train_y, test_f, ks, temperature, num_classes, chunk, device=device)
    return top1_of(preds, test_y)


def top1_of(preds: dict[int, Tensor], test_y: Tensor) -> dict[int, float]:
    """Top-1 accuracy (in %) of each k's predictions: one formula for the accuracy and the kept predictions
    (predictions.npz), so a record's accuracy is exactly the share of its kept predictions that are right."""
    test_y = test_y.cpu()
    return {k: 100.0 * float((p == test_y).sum()) / max(1, len(test_y)) for k, p in preds.items()}


def knn_eval(features: tuple[Tensor, Tensor, Tensor, Tensor], ks: list[int], temperature: float,
             num_classes: int | None = None) -> dict[str, float]:
    """kNN top-1 for each k as a flat dict {"knn_top1_k10": ..., "knn_top1_k20": ...}, plus "knn_top1" = the
    top-1 at k=KNN_K when ``ks`` has it (one name, one k, in every record)."""
    acc = knn_accuracy(*features, ks=ks, temperature=temperature, num_classes=num_classes)
    out = {f"knn_top1_k{k}": v for k, v in acc.items()}
    if KNN_K in acc:
        out["knn_top1"] = acc[KNN_K]
    return out
