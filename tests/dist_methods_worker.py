"""Two-process (gloo) worker for tests/test_methods_extra.py: ``run(rank, world, port, out)`` is started by
``torch.multiprocessing.spawn``; each rank computes on its share of the fixed data of ``fixed_data()`` and
rank 0 saves what the test compares with one process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

N, K, D, B = 90, 6, 8, 8  # bank rows, prototypes, dim, global batch


def fixed_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "bank": F.normalize(torch.randn(N, D, generator=g), dim=1),
        "prototypes": F.normalize(torch.randn(K, D, generator=g), dim=1),
        "crops": torch.randn(4, B, D, generator=g),  # 4 crops of the global batch
        "index": torch.randperm(N, generator=g)[:B],
        "images": torch.randn(B, 3, 6, 6, generator=g) * 2 + 1,
        "targets": torch.randn(B, 6, generator=g),
    }


def small_method(name: str):  # noqa: ANN201
    from ssl_bench.config.compose import compose
    from ssl_bench.methods.base import build_method

    cfg = compose([f"method={name}", "budget=smoke", f"method.num_prototypes={K}", "crops.local.n=2"])
    torch.manual_seed(0)
    return build_method(cfg, D)


def run(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results = compute(rank, world)
        if rank == 0:
            torch.save(results, Path(out) / "dist.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Done: skip Python's finalisation, which after gloo sometimes aborts (ssl_bench.config.cli.leave says more).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def compute(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Everything the test compares; also called with rank 0, world 1 (no process group) for the reference."""
    from ssl_bench.methods.barlow_twins import barlow_twins_loss, cross_correlation
    from ssl_bench.methods.base import Context
    from ssl_bench.methods.carl import consistency_loss, uniform_kl
    from ssl_bench.methods.deepcluster_v2 import spherical_kmeans
    from ssl_bench.methods.sela_v2 import sela_assign
    from ssl_bench.methods.simclr import multicrop_nt_xent
    from ssl_bench.ops.distributed import all_gather, all_reduce_

    d = fixed_data()
    own = torch.arange(rank, N, world)
    out: dict[str, torch.Tensor] = {}
    centroids, local = spherical_kmeans(d["bank"][own], own, N, K, iters=10, seed=3)
    out["kmeans_centroids"] = centroids
    out["kmeans_labels"] = all_reduce_(torch.zeros(N, dtype=torch.long).index_put_((own,), local))
    labels = sela_assign(d["bank"][own], d["prototypes"], 0.05, 10)
    out["sela_labels"] = all_reduce_(torch.zeros(N, dtype=torch.long).index_put_((own,), labels))

    # Losses over a global batch split across processes: the mean of the per-process losses is the
    # one-process loss, and each process's gradient (summed over the gather) is the slice's share.
    b = B // world
    crops = d["crops"][:, rank * b : (rank + 1) * b].clone().requires_grad_(True)
    for name, fn in {"simclr": lambda z: multicrop_nt_xent(list(z), 0.2),
                     "carl": lambda z: consistency_loss(list(z)) + 2.0 * uniform_kl(list(z)),
                     "carl_pooled": lambda z: 2.0 * uniform_kl(list(z), "pooled")}.items():
        crops.grad = None
        loss = fn(crops)
        loss.backward()
        out[f"{name}_loss"] = all_reduce_(loss.detach().reshape(1)) / world
        out[f"{name}_grad"] = all_gather(crops.grad.transpose(0, 1).contiguous()).transpose(0, 1) / world

    # Barlow Twins: the cross-correlation of the global batch (standardised with the global batch's statistics, summed
    # over processes), so every process holds the one-process matrix and loss.
    crops.grad = None
    c = cross_correlation(crops[0], crops[1])
    barlow = barlow_twins_loss(c, 5e-3)
    barlow.backward()
    out["barlow_twins_correlation"] = c.detach()
    out["barlow_twins_loss"] = barlow.detach().reshape(1)
    out["barlow_twins_grad"] = all_gather(crops.grad.transpose(0, 1).contiguous()).transpose(0, 1) / world

    # Batch norm over the global batch: each process normalises its share with the statistics of the whole.
    from ssl_bench.training.syncbn import convert_global_batchnorm

    torch.manual_seed(0)
    net = convert_global_batchnorm(torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(64, 6), torch.nn.BatchNorm1d(6)))
    x = d["images"][rank * b : (rank + 1) * b].clone().requires_grad_(True)
    y = net(x)
    ((y - d["targets"][rank * b : (rank + 1) * b]) ** 2).mean().backward()  # per-process mean, as with DDP
    out["bn_out"] = all_gather(y.detach())
    out["bn_input_grad"] = all_gather(x.grad) / world
    out["bn_param_grad"] = all_reduce_(torch.cat([p.grad.flatten() for p in net.parameters()])) / world
    out["bn_running_stats"] = torch.cat([t.flatten().float() for t in net.buffers()])

    # The methods themselves: whole-dataset pseudo-labels and the sharded bank after one step.
    for name in ("deepclusterv2", "selav2"):
        method = small_method(name)
        ctx = Context(epoch=0, dataset_size=N, embed_dataset=lambda: (torch.arange(N), d["bank"] * 3.0))
        method.on_epoch_start(ctx)
        out[f"{name}_assignments"] = method.assignments
        if name == "deepclusterv2":
            out[f"{name}_centroids"] = method.centroids
        z = [c[rank * b : (rank + 1) * b] for c in d["crops"]]
        loss, _ = method.loss(z, {"index": d["index"][rank * b : (rank + 1) * b]})
        out[f"{name}_loss"] = all_reduce_(loss.detach().reshape(1)) / world
        bank = torch.zeros(method.bank.shape[0], N, D)
        bank[:, method.own] = method.bank
        out[f"{name}_bank"] = all_reduce_(bank)
    return out
