"""The previous-epoch memory bank, pseudo-label table and multi-head loss shared by DeepCluster-v2 and SeLa-v2
(SwAV paper, appendix D). Not a method itself: the two method files subclass :class:`MemoryBankMethod`.

State and memory (N samples, W processes, D = head.out_dim, G = global crops, H heads, K prototypes):
- bank: per process, the rows of the dataset indices i with i mod W = rank, for each global crop:
  G D s / W bytes per sample (s = 4 for ``bank_dtype=float32``, 2 for float16/bfloat16). Each step the
  batch's global-crop projections are gathered and every process stores the rows it owns. ImageNet
  (1.28M) at D = 128, G = 2: 1.31 GB in float32 or 0.66 GB in float16 in all, divided by W. Checkpointed
  per process (``local_state_dict``); resuming with another number of processes refills it by one pass.
- assignments [H, N] int64 (H 8 bytes per sample, 31 MB for ImageNet) and centroids [H, K, D], the same
  on every process: saved in the model's state_dict but not registered as buffers, so DDP does not
  broadcast them before every forward.
- k-means: sums [K, D] and counts [K] are all-reduced, so W processes cluster the whole dataset; the
  local assignments are gathered into the global [H, N] table.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Context, Method, assignment_stats
from ssl_bench.ops.distributed import all_gather, all_reduce_, rank, world_size

BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_bank_config(c: Any) -> None:
    for key in ("num_heads", "num_prototypes", "temperature"):
        if not getattr(c, key) > 0:
            raise ConfigError(f"method.{key} must be > 0, got {getattr(c, key)}")
    if c.bank_dtype not in BANK_DTYPES:
        raise ConfigError(f"unknown method.bank_dtype '{c.bank_dtype}'; valid choices: "
                          f"{', '.join(BANK_DTYPES)}")


def multihead_ce(z_crops: list[Tensor], prototypes: list[Tensor], targets: Tensor,
                 temperature: float) -> Tensor:
    """Eq. 8 with hard pseudo-labels: mean over heads h, crops v and samples i of
    -log softmax(z_v,i^T C_h / tau)[targets[h, i]]. ``z_crops`` unit rows [b, D], ``prototypes`` [K, D]."""
    terms = [F.cross_entropy(z.float() @ c.t() / temperature, targets[h])
             for h, c in enumerate(prototypes) for z in z_crops]
    return torch.stack(terms).mean()


class MemoryBankMethod(Method):
    """Shared by DeepCluster-v2 and SeLa-v2: the previous-epoch memory bank (sharded by dataset index),
    the global pseudo-label table, the multi-head loss and the collapse diagnostics. Subclasses give
    ``prototype_weights()`` and ``assign(ctx)`` (which returns the local labels [H, n_own])."""

    _global_state: tuple[str, ...] = ("assignments",)
    # The bank is filled by a pass over the whole pretraining set by dataset index (Context.embed_dataset), which
    # a streamed dataset cannot give: config.validate refuses dataset.streaming for these methods.
    needs_full_pass = True

    def __init__(self, embed_dim: int, hp: Any, num_global_crops: int, num_samples: int | None) -> None:
        """``hp``: the subclass's config dataclass (num_heads, num_prototypes, temperature, bank_dtype);
        ``num_samples``: the pretraining images when known (more prototypes than images is refused)."""
        super().__init__(embed_dim)
        self.hp = hp
        if num_samples and hp.num_prototypes > num_samples:
            raise ConfigError(f"method.num_prototypes={hp.num_prototypes} is larger than the "
                              f"data.train_subset={num_samples} pretraining images")
        self.num_global = num_global_crops
        self.bank: Tensor | None = None  # per process [G, n_own, D]
        self.own: Tensor | None = None  # dataset indices of the bank's rows (i mod W == rank)
        self.n_total = 0  # N, the dataset size
        self.assignments: Tensor | None = None  # global [H, N]

    # -- the bank --------------------------------------------------------------------------------
    def bank_for_head(self, h: int) -> Tensor:
        return self.bank[h % self.num_global]  # type: ignore[index]

    @torch.no_grad()
    def fill_bank(self, ctx: Context) -> None:
        if ctx.embed_dataset is None:
            raise RuntimeError(f"{self.hp.name} needs Context.embed_dataset to fill its memory bank")
        index, z = ctx.embed_dataset()
        n = ctx.dataset_size or len(index)
        dev = ctx.accelerator.device if ctx.accelerator is not None else z.device
        pos = torch.empty(n, dtype=torch.long)
        pos[index.cpu()] = torch.arange(len(index))
        self.n_total = n
        self.own = torch.arange(rank(), n, world_size(), device=dev)
        rows = F.normalize(z[pos[self.own.cpu()]].float(), dim=1)
        dtype = BANK_DTYPES[self.hp.bank_dtype]
        self.bank = rows.to(dev, dtype).unsqueeze(0).repeat(self.num_global, 1, 1)

    @torch.no_grad()
    def update_bank(self, z_global: list[Tensor], index: Tensor) -> None:
        """Store this batch's global-crop projections (gathered from every process) in the owned rows."""
        if self.bank is None:
            return
        idx = all_gather(index.to(self.bank.device))
        z = torch.stack([all_gather(F.normalize(x.detach().float(), dim=1)) for x in z_global])  # [G, B, D]
        w = world_size()
        mine = idx % w == rank()
        self.bank[:, idx[mine] // w] = z[:, mine].to(self.bank.dtype)

    # -- hooks -----------------------------------------------------------------------------------
    def prototype_weights(self) -> list[Tensor]:
        raise NotImplementedError

    def assign(self, ctx: Context) -> Tensor:
        raise NotImplementedError

    def on_epoch_start(self, ctx: Context) -> None:
        if self.bank is None:  # first epoch, or resumed with another number of processes
            self.fill_bank(ctx)
        self.to_device(ctx.accelerator.device if ctx.accelerator is not None else self.bank.device)
        local = self.assign(ctx)  # [H, n_own]
        table = torch.zeros(len(local), self.n_total, dtype=torch.long, device=local.device)
        table[:, self.own] = local
        self.assignments = all_reduce_(table)  # every index is owned by exactly one process

    def loss(self, z_crops: list[Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        if self.assignments is None:
            raise RuntimeError(f"{self.hp.name}: no pseudo-labels (on_epoch_start was not called)")
        z = [F.normalize(x.float(), dim=1) for x in z_crops]
        index = batch["index"].to(z[0].device)
        self.to_device(index.device)
        targets = self.assignments[:, index]  # type: ignore[index]
        loss = multihead_ce(z, self.prototype_weights(), targets, self.hp.temperature)
        self.update_bank(z_crops[: self.num_global], index)
        return loss, {"loss": loss.item()}

    def epoch_stats(self) -> dict[str, float]:
        """Collapse diagnostics of the pseudo-labels of the whole dataset, per head (head 0 unsuffixed)."""
        if self.assignments is None or self.own is None:
            return {}
        out: dict[str, float] = {}
        k = self.hp.num_prototypes
        for h, labels in enumerate(self.assignments.to(self.own.device)[:, self.own]):
            stats = assignment_stats(torch.bincount(labels, minlength=k).cpu())
            out.update({(key if h == 0 else f"{key}_h{h}"): v for key, v in stats.items()})
        return out

    # -- state -----------------------------------------------------------------------------------
    def to_device(self, device: torch.device) -> None:
        """Plain tensor attributes do not follow ``module.to``: move them where the computation is."""
        for name in ("bank", "own", *self._global_state):
            t = getattr(self, name)
            if t is not None and t.device != device:
                setattr(self, name, t.to(device))

    def local_state_dict(self) -> dict[str, Any]:
        if self.bank is None:
            return {}
        return {"bank": self.bank.cpu(), "own": self.own.cpu(), "n_total": self.n_total,  # type: ignore[union-attr]
                "world_size": world_size()}

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size") != world_size() or "bank" not in state:
            self.bank = self.own = None  # refilled by one pass at the next epoch start
            return
        self.bank, self.own, self.n_total = state["bank"], state["own"], state["n_total"]

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self._global_state:
            t = getattr(self, name)
            if t is not None:
                destination[prefix + name] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        for name in self._global_state:
            t = state_dict.pop(prefix + name, None)
            if t is not None:
                setattr(self, name, t.clone())
        super()._load_from_state_dict(state_dict, prefix, *args)
