"""SeLa-v2 (Caron et al., NeurIPS 2020, appendix D; after Asano et al., ICLR 2020).

The loss and its equation: :class:`SeLaV2` (an ``nn.Module`` usable in any PyTorch loop).

Assignment phase (D.2, Eq. 12): at the start of every epoch, for each head, Sinkhorn-Knopp on the scores
z^T C of the whole memory bank (the previous epoch's projections, shared with DeepCluster-v2, see
methods/memory_bank.py for the bank, its sharding and its bytes per sample): the equal partition of
all N samples over the K clusters, Q = argmax_Q Tr(Q^T C^T Z) + eps H(Q) with Q 1 = 1/K, Q^T 1 = 1/N.
With W processes each holds N/W columns and the row sums are all-reduced (ssl_bench.ops.sinkhorn, shared with
SwAV), so the assignments equal one process's on the whole bank. ssl_bench.ops.sinkhorn stabilises the
kernel by each sample's maximum and falls back to log-domain iterations when a scaling vector stops being
finite, so N in the tens of thousands and K in the thousands stay finite.

Choices the paper leaves open, and ours:
- Hard labels: q_i = argmax_k Q_ik (as SeLa). Soft labels would need N K floats per head (46 GB for
  ImageNet at 3 x 3000); hard ones need 8 bytes per sample and head.
- How often: once per epoch, at its start, on the bank of the previous epoch (as DeepCluster-v2 in D.2).
  Before the first epoch the bank comes from one pass over the pretraining set (eval view).
- eps = 0.05 (SwAV's; ``method.epsilon``) and 10 Sinkhorn iterations (SeLa iterates to convergence; 10 bring
  the cluster sizes of the whole bank within a few percent of N/K). SeLa itself raises the softmax of the
  training logits z^T c / tau to the power lambda, i.e. its kernel is exp(lambda z^T c / tau): on cosines that
  is eps = tau / lambda, so SeLa's lambda = 25 with tau = 0.1 is eps = 0.004 (not 0.04), a much harder
  labelling than SwAV's 0.05; set ``method.epsilon=0.004`` to label as SeLa does.
- Prototypes: l2-normalised after every step, as SwAV (``same hyperparameters as SwAV'', D.2), so z^T c
  is a cosine and scores / eps stay bounded; head h uses global crop h mod n_global's bank.
- Transient memory of the assignment step: the [N/W, K] score matrix of one head (float32, and the
  Sinkhorn kernel of the same size): 1.2 GB for N = 50k, K = 3000 on one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.common.progress import bar
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Context, hyperparameters, register
from ssl_bench.methods.memory_bank import MemoryBankMethod, check_bank_config
from ssl_bench.ops.sinkhorn import sinkhorn


@dataclass
class SeLaV2Config:
    name: str = "selav2"
    num_heads: int = 3
    num_prototypes: int = 3000
    temperature: float = 0.1
    # Entropy weight of the labelling (Sinkhorn on cosines): 0.05 as SwAV; SeLa's lambda = 25 is tau / lambda = 0.004.
    epsilon: float = 0.05
    sinkhorn_iterations: int = 10
    bank_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_bank_config(self)
        for key in ("epsilon", "sinkhorn_iterations"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"method.{key} must be > 0, got {getattr(self, key)}")


@torch.no_grad()
def sela_assign(z: Tensor, prototypes: Tensor, epsilon: float, iterations: int) -> Tensor:
    """Hard equal-partition labels of the rows of ``z`` [n, D] (this process's part of the whole set)
    over the rows of ``prototypes`` [K, D]: argmax of the Sinkhorn codes of z^T C."""
    return sinkhorn(z.float() @ prototypes.float().t(), epsilon, iterations).argmax(dim=1)


_D = SeLaV2Config  # the defaults, declared once


@register("selav2", SeLaV2Config, display="SeLa-v2")
class SeLaV2(MemoryBankMethod):
    """SeLa-v2 (Caron et al., NeurIPS 2020, appendix D; after Asano et al., ICLR 2020). Training phase (D.1,
    Eqs. 8 and 10): every crop's l2-normalised projection z is classified into the sample's pseudo-label q
    against H heads of K prototypes C learned by gradient descent,

        l(z, C, q) = -log softmax(z^T C / tau)_q,     averaged over crops, the batch and the heads.

    Assignment phase (D.2, Eq. 12), in ``on_epoch_start``: for each head, Sinkhorn-Knopp on the scores z^T C of
    the whole memory bank, Q = argmax_Q Tr(Q^T C^T Z) + eps H(Q) with Q 1 = 1/K, Q^T 1 = 1/N; q = argmax_k Q.

    Arguments: ``embed_dim``, the fields of :class:`SeLaV2Config` (defaults there), ``num_global_crops`` (the
    first crops of ``loss``'s list, whose projections fill the bank) and ``num_samples`` (only checked: at least
    as many images as prototypes). ``loss`` needs ``batch["index"]``, each image's index in the dataset.

    In a plain PyTorch loop:

    >>> import torch
    >>> from torch import nn
    >>> from ssl_bench.methods.base import Context
    >>> from ssl_bench.methods.sela_v2 import SeLaV2
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 16))
    >>> sela = SeLaV2(embed_dim=16, num_heads=2, num_prototypes=8)
    >>> optimizer = torch.optim.SGD([*encoder.parameters(), *sela.parameters()], lr=0.1)
    >>> images, index = torch.rand(32, 3, 8, 8), torch.arange(32)
    >>> def embed_all():  # (dataset indices, projections) of every image, for the first epoch's bank
    ...     with torch.no_grad():
    ...         return index, encoder(images)
    >>> for epoch in range(2):
    ...     sela.on_epoch_start(Context(epoch=epoch, dataset_size=32, embed_dataset=embed_all))  # Sinkhorn labels
    ...     views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
    ...     loss, stats = sela([encoder(v) for v in views], {"index": index})
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    ...     sela.after_step(Context())  # prototypes back onto the unit sphere
    >>> bool(torch.isfinite(loss)), sorted(sela.epoch_stats())[:2]
    (True, ['assign_entropy', 'assign_entropy_h1'])
    """

    def __init__(self, embed_dim: int, *, num_heads: int = _D.num_heads, num_prototypes: int = _D.num_prototypes,
                 temperature: float = _D.temperature, epsilon: float = _D.epsilon,
                 sinkhorn_iterations: int = _D.sinkhorn_iterations, bank_dtype: str = _D.bank_dtype,
                 num_global_crops: int = 2, num_samples: int | None = None) -> None:
        m = hyperparameters(SeLaV2Config, locals())
        super().__init__(embed_dim, m, num_global_crops, num_samples)
        self.prototypes = nn.ModuleList(nn.Linear(embed_dim, m.num_prototypes, bias=False)
                                        for _ in range(m.num_heads))
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        for p in self.prototypes:
            p.weight.copy_(F.normalize(p.weight, dim=1))

    def prototype_weights(self) -> list[Tensor]:
        return [p.weight for p in self.prototypes]

    def assign(self, ctx: Context) -> Tensor:
        m = self.hp
        heads = bar(enumerate(self.prototypes), total=len(self.prototypes), unit="head",
                    desc=f"SeLa assignment over the memory bank ({self.n_total} images)")
        return torch.stack([sela_assign(self.bank_for_head(h), p.weight, m.epsilon, m.sinkhorn_iterations)
                            for h, p in heads])

    def after_step(self, ctx: Context) -> None:
        self.normalize_prototypes()
