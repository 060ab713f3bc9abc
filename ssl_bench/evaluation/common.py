"""Training helpers shared by the probes: data sharded through Accelerate, DDP, mixed precision.

The evaluation trains on the run's own Accelerator without ``accelerator.prepare``/``backward`` for the model:
those would divide every loss by the run's gradient-accumulation steps and tie the step to its accumulation
state. Data goes through ``prepare_data_loader`` (each process takes 1/N of every global batch), the model is
wrapped in DDP on several processes, and fp16 gets its own gradient scaler.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset


def global_batch(batch_size: int, n: int, processes: int) -> int:
    """``batch_size`` capped at the set size and rounded down to a multiple of the processes (>= processes)."""
    return max(processes, min(batch_size, n) // processes * processes)


@contextmanager
def sharded_loader(accelerator, dataset: Dataset, batch_size: int, seed: int,
                   num_workers: int = 0) -> Iterator[DataLoader]:
    """A shuffled loader of global batches (incomplete last batch dropped), 1/N of each per process."""
    n = len(dataset)  # type: ignore[arg-type]
    bs = global_batch(batch_size, n, accelerator.num_processes)
    loader = DataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed))
    prepared = accelerator.prepare_data_loader(loader)
    try:
        yield prepared
    finally:
        if prepared in accelerator._dataloaders:
            accelerator._dataloaders.remove(prepared)


def wrap(model: nn.Module, accelerator) -> nn.Module:
    """``model`` on the accelerator's device, in DDP when there are several processes."""
    model = model.to(accelerator.device)
    if accelerator.num_processes > 1:
        dev = accelerator.device
        return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return model


class Stepper:
    """loss -> gradients -> optimiser step, with a gradient scaler under fp16."""

    def __init__(self, accelerator, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        fp16 = getattr(accelerator, "mixed_precision", "no") == "fp16"
        self.scaler = torch.amp.GradScaler(accelerator.device.type) if fp16 else None

    def __call__(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
