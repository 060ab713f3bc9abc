"""DeepCluster-v2 (Caron et al., NeurIPS 2020, appendix D).

The loss and its equation: :class:`DeepClusterV2` (an ``nn.Module`` usable in any PyTorch loop).

Assignment phase (D.2, Eq. 11), at the start of every epoch: spherical k-means on the memory bank, i.e.
the projections of every sample computed during the previous epoch (no extra forward pass; before the
first epoch the bank is filled by one pass over the pretraining set on the deterministic eval view).
H heads (3 x 3000 in the paper), each clustering the bank of one global crop in turn (head h uses global
crop h mod n_global, as the reference's ``crops_for_assign``); 10 Lloyd iterations from K samples drawn
from the seed (the same on every process), empty clusters keep their previous centroid.

The memory bank, the pseudo-label table and the multi-head loss are shared with SeLa-v2: methods/memory_bank.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.common.progress import bar
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Context, hyperparameters, register
from ssl_bench.methods.memory_bank import MemoryBankMethod, check_bank_config
from ssl_bench.ops.distributed import all_reduce_

CHUNK = 1 << 15  # bank rows scored at once (bounds the [rows, K] score matrix)


@dataclass
class DeepClusterV2Config:
    name: str = "deepclusterv2"
    num_heads: int = 3
    num_prototypes: int = 3000
    temperature: float = 0.1
    kmeans_iters: int = 10
    bank_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_bank_config(self)
        if self.kmeans_iters < 0:
            raise ConfigError(f"method.kmeans_iters must be >= 0, got {self.kmeans_iters}")


def nearest(x: Tensor, centroids: Tensor) -> Tensor:
    """Index of the most similar centroid (largest dot product) for every row of ``x``, in chunks."""
    return torch.cat([(xc.float() @ centroids.t()).argmax(dim=1) for xc in x.split(CHUNK)])


@torch.no_grad()
def spherical_kmeans(x: Tensor, index: Tensor, n_total: int, k: int, iters: int = 10,
                     seed: int = 0, on_iter: Callable[[], object] | None = None) -> tuple[Tensor, Tensor]:
    """Spherical k-means (Eq. 11) of the unit rows ``x`` [n, D] with dataset indices ``index`` [n]; with W
    processes each passes its own rows (disjoint indices covering 0..n_total-1) and all get the result
    of clustering all n_total rows. Initial centroids: the rows of k indices drawn from ``seed``.
    ``on_iter`` is called after each iteration (a progress bar's update).

    Returns (centroids [k, D] float32 unit rows, assignments [n] of the local rows to their nearest centroid).
    """
    if k > n_total:
        raise ConfigError(f"method.num_prototypes={k} is larger than the {n_total} pretraining images")
    dev = x.device
    chosen = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:k].to(dev)
    slot = torch.full((n_total,), -1, dtype=torch.long, device=dev)
    slot[chosen] = torch.arange(k, device=dev)
    mine = slot[index]
    centroids = torch.zeros(k, x.shape[1], device=dev)
    centroids[mine[mine >= 0]] = x[mine >= 0].float()
    all_reduce_(centroids)  # each chosen row lives on exactly one process
    for _ in range(iters):
        assign = nearest(x, centroids)
        sums = torch.zeros_like(centroids)
        for xc, ac in zip(x.split(CHUNK), assign.split(CHUNK), strict=True):
            sums.index_add_(0, ac, xc.float())
        counts = all_reduce_(torch.bincount(assign, minlength=k).float())
        all_reduce_(sums)
        full = counts > 0
        centroids[full] = F.normalize(sums[full], dim=1)  # unit mean direction; empty clusters stay
        if on_iter is not None:
            on_iter()
    return centroids, nearest(x, centroids)


_D = DeepClusterV2Config  # the defaults, declared once


@register("deepclusterv2", DeepClusterV2Config, display="DeepCluster-v2")
class DeepClusterV2(MemoryBankMethod):
    """DeepCluster-v2 (Caron et al., NeurIPS 2020, appendix D). Training phase (D.1, Eqs. 8-9): every crop's
    l2-normalised projection z is classified against fixed prototypes, the k-means centroids c, into the
    sample's pseudo-label q (hard):

        l(z, c, q) = -log softmax(z^T c / tau)_q,     averaged over crops, the batch and H heads.

    Assignment phase (D.2, Eq. 11), in ``on_epoch_start``: spherical k-means on the memory bank of the previous
    epoch's projections (the first epoch's bank comes from ``Context.embed_dataset``, one pass over the data).

    Arguments: ``embed_dim``, the fields of :class:`DeepClusterV2Config` (defaults there), ``num_global_crops``
    (the first crops of ``loss``'s list, whose projections fill the bank), ``num_samples`` (only checked: at
    least as many images as prototypes) and ``seed`` (the k-means initialisation). ``loss`` needs
    ``batch["index"]``, each image's index in the dataset.

    In a plain PyTorch loop:

    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.base import Context
    >>> from ssl_bench.methods.deepcluster_v2 import DeepClusterV2
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> dc = DeepClusterV2(embed_dim=16, num_heads=2, num_prototypes=8)
    >>> optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    >>> images, index = torch.rand(32, 3, 8, 8), torch.arange(32)
    >>> def embed_all():  # (dataset indices, projections) of every image, for the first epoch's bank
    ...     with torch.no_grad():
    ...         return index, encoder(images)
    >>> for epoch in range(2):
    ...     dc.on_epoch_start(Context(epoch=epoch, dataset_size=32, embed_dataset=embed_all))  # k-means
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
    ...     loss, stats = dc([encoder(v) for v in views], {"index": index})
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    >>> bool(torch.isfinite(loss)), dc.assignments.shape
    (True, torch.Size([2, 32]))
    """

    _global_state = ("assignments", "centroids")

    def __init__(self, embed_dim: int, *, num_heads: int = _D.num_heads, num_prototypes: int = _D.num_prototypes,
                 temperature: float = _D.temperature, kmeans_iters: int = _D.kmeans_iters,
                 bank_dtype: str = _D.bank_dtype, num_global_crops: int = 2, num_samples: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(embed_dim, hyperparameters(DeepClusterV2Config, locals()), num_global_crops, num_samples)
        self.seed = seed
        self.centroids: Tensor | None = None  # [H, K, D], fixed prototypes of the current epoch

    def prototype_weights(self) -> list[Tensor]:
        if self.centroids is None:
            raise RuntimeError("deepclusterv2: no centroids yet (on_epoch_start was not called)")
        return list(self.centroids)

    def assign(self, ctx: Context) -> Tensor:
        m = self.hp
        centroids, labels = [], []
        progress = bar(total=m.num_heads * m.kmeans_iters, desc=f"k-means over the memory bank ({self.n_total} "
                       f"images, {m.num_heads} heads)", unit="iter")
        for h in range(m.num_heads):
            seed = self.seed * 1_000_003 + ctx.epoch * 1009 + h
            c, a = spherical_kmeans(self.bank_for_head(h), self.own, self.n_total, m.num_prototypes,  # type: ignore[arg-type]
                                    m.kmeans_iters, seed, on_iter=progress.update)
            centroids.append(c)
            labels.append(a)
        progress.close()
        self.centroids = torch.stack(centroids)
        return torch.stack(labels)
