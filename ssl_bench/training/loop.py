"""The shared training loop on Accelerate: class Trainer, read top to bottom as fit > epoch > step. It knows no method
by name: it forwards crops, asks the method for a loss, steps, and calls the method's hooks. Same code on CPU, one
GPU, many GPUs and nodes. What happens at an epoch's end (monitor kNN, health, callbacks, guardrails) is a list of
hooks it calls without knowing what they compute (``hooks.py``); checkpoints are stored by ``checkpoint.py``, signals
caught by ``signals.py``. Imports evaluation, models, methods, data, records, configuration and the shared ops;
never the pipeline or anything above it.
"""

from __future__ import annotations

import itertools
import math
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import gather_object
from omegaconf import DictConfig
from torch.utils.data import DataLoader, IterableDataset, Subset
from tqdm.auto import tqdm

from ssl_bench.common.progress import bar as progress_bar
from ssl_bench.common.tracking import scalars, tracker_names
from ssl_bench.data import EvalDataset, eval_transform
from ssl_bench.data.streaming import StreamedItems
from ssl_bench.errors import DataNotFound, TrainingStopped
from ssl_bench.methods.base import Context
from ssl_bench.models.networks import apply_speed_options
from ssl_bench.ops.distributed import all_reduce_
from ssl_bench.records.io import read_metrics, write_metrics
from ssl_bench.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from ssl_bench.training.health import HealthSample, NonFiniteWatch
from ssl_bench.training.hooks import EpochCallback, epoch_hooks, knn_on
from ssl_bench.training.optim import build_optimizer, lr_at, set_lr
from ssl_bench.training.signals import Interrupt, pause_if_asked


@dataclass
class LoopState:
    """The loop's position, saved in every checkpoint (loop.json) and resumed from."""

    epoch: int = 0  # epoch in progress (or next to run)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimiser steps so far
    images: int = 0  # images seen (global)
    train_s: float = 0.0  # seconds spent in training steps (throughput denominator)
    wall_s: float = 0.0  # wall time of the run so far, over all sessions
    extra: dict[str, Any] = field(default_factory=dict)
    # A mid-epoch stop's per-step losses of the epoch so far, one list per process in rank order: the resumed epoch's
    # loss is the mean over all its steps, as the uninterrupted run's (the same sums in the same order).
    epoch_losses: list[list[float]] = field(default_factory=list)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """One run's training: the prepared model, optimiser and loader, the loop's position (``state``) and the epoch-end
    hooks. ``fit`` trains to train.epochs from wherever ``load_checkpoint`` left it."""

    def __init__(self, cfg: DictConfig, accelerator: Accelerator, model: torch.nn.Module, train_set: Any,
                 eval_sets: dict[str, Any], run_dir: Path, num_workers: int,
                 augment: Callable[[dict], dict] | None = None,
                 epoch_callbacks: list[EpochCallback] | None = None) -> None:
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.train_set = train_set
        self.augment = augment  # batched multi-crop on the device (tensor backend), else crops come ready
        self.eval_sets = eval_sets  # {"monitor": (train_ds, test_ds) or None, ...}
        self.num_workers = num_workers
        self.generator = torch.Generator()
        # A streamed dataset (dataset.streaming): the item wrapper's base is an HFStream, not indexable.
        self.stream = train_set.base if isinstance(getattr(train_set, "base", None), IterableDataset) else None
        apply_speed_options(model, cfg)  # train.channels_last, train.compile
        optimizer = build_optimizer(model, cfg)
        if self.stream is None:
            loader = DataLoader(train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                num_workers=num_workers, generator=self.generator,
                                pin_memory=accelerator.device.type == "cuda",
                                persistent_workers=False)  # workers must see each epoch's dataset.epoch
            self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
            self.steps_per_epoch = len(self.loader)
        else:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)
            self.loader = self._stream_loader(num_workers)
            self.steps_per_epoch = len(train_set) // cfg.data.batch_size  # the same on every process
        self._unwrapped = accelerator.unwrap_model(self.model)  # once: unwrap_model is not free per step
        self.method = self._unwrapped.method
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        self.opt_steps_per_epoch = max(1, self.steps_per_epoch // cfg.train.grad_accum)
        self.total_steps = self.opt_steps_per_epoch * cfg.train.epochs
        self.warmup_steps = int(round(cfg.optim.warmup_epochs * self.opt_steps_per_epoch))
        self.state = LoopState()
        self.ckpt_dir = run_dir / CHECKPOINT
        self.tracking = bool(tracker_names(cfg.train))
        # Health: a fixed sample read after each epoch, and hooks that only keep references to the step's outputs
        # (naming a non-finite loss's first non-finite tensor); neither draws a random number training uses.
        h = cfg.get("health")
        health = (HealthSample(cfg, train_set.base, accelerator.device, h.samples)
                  if h is not None and h.samples and self.stream is None and hasattr(train_set, "base") else None)
        self.hooks = epoch_hooks(cfg, accelerator, self._unwrapped, eval_sets.get("monitor"), num_workers, health,
                                 list(epoch_callbacks or []), self.log)
        self.watch = None if cfg.train.get("compile", False) else NonFiniteWatch(self._unwrapped)

    # -- the loop: fit > epoch > step ----------------------------------------------------------------
    def fit(self) -> LoopState:
        """Train from the current position to train.epochs; each epoch ends with its row, hooks and checkpoint."""
        start_wall = time.time() - self.state.wall_s
        if self.state.epoch == 0 and self.state.batch == 0 and self.state.step == 0:
            self.method.on_train_start(self.context())
        rows = [r for r in read_metrics(self.run_dir) if r["epoch"] < self.state.epoch]
        with Interrupt() as interrupt:
            while self.state.epoch < self.cfg.train.epochs:
                epoch = self.state.epoch
                losses, t_epoch, n_epoch = self.train_epoch(epoch, interrupt, start_wall)
                row = self._epoch_row(epoch, losses, t_epoch, n_epoch)  # the hooks measure before the wall time
                self.state.epoch += 1
                self.state.batch = 0
                self.state.epoch_losses = []
                self.state.wall_s = time.time() - start_wall
                row["wall_s"] = self.state.wall_s
                rows.append(row)
                self._end_epoch(epoch, rows)
            # A signal after the last step's poll (during the last epoch's monitor or checkpoint) still stops the
            # run before its evaluation, as one during training does; the final checkpoint is saved.
            if all_reduce_(torch.tensor([float(interrupt.flag)], device=self.acc.device), "max").item():
                raise TrainingStopped("interrupted after the last training step; checkpoint saved; continue with "
                                      "resume=true", 130)
        return self.state

    def train_epoch(self, epoch: int, interrupt: Interrupt, start_wall: float) -> tuple[list[float], float, int]:
        """The epoch's remaining steps: (their losses, the epoch's start time, the images it saw)."""
        loader = self._epoch_loader(epoch)
        losses = self._losses_so_far()
        t_epoch, n_epoch = time.time(), 0
        bar = progress_bar(total=self.steps_per_epoch, initial=self.state.batch,
                           desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}", unit="step")
        for batch in loader:
            if self.state.batch >= self.steps_per_epoch:
                break
            t0, step_before = time.time(), self.state.step
            if self.augment is not None:
                batch = self.augment(batch)
            if self.watch is not None:
                self.watch.clear()
            loss, stats = self.train_step(batch)
            bs = batch["index"].shape[0] * self.acc.num_processes
            self.state.batch += 1
            self.state.images += bs
            n_epoch += bs
            self.state.train_s += time.time() - t0
            losses.append(stats.get("loss", float(loss)))
            pause_if_asked(self.state.step, interrupt, str(self.run_dir))
            stop = self._poll(losses, batch, epoch, interrupt)
            self._show_step(bar, losses, step_before, n_epoch / max(1e-9, time.time() - t_epoch))
            if stop:
                self.state.wall_s = time.time() - start_wall
                self.state.epoch_losses = gather_object([losses])
                self.save_checkpoint()
                bar.close()
                raise TrainingStopped(f"interrupted at epoch {epoch + 1}, batch {self.state.batch}; "
                                      f"checkpoint saved; continue with resume=true", 130)
        bar.close()
        if self.stream is not None and self.state.batch < self.steps_per_epoch:  # the others wait for it
            raise DataNotFound(f"the stream ran out on process {self.acc.process_index} after {self.state.batch} "
                               f"of {self.steps_per_epoch} batches: its part of the data is empty")
        return losses, t_epoch, n_epoch

    def train_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """One batch: forward, backward, the method's hooks; every train.grad_accum batches an optimiser step at the
        scheduled lr. Returns the loss (detached) and the method's step statistics."""
        acc = self.acc
        method = self.method
        with acc.accumulate(self.model):
            loss, stats = self.model(batch)
            acc.backward(loss)
            method.after_backward(self.context())
            if acc.sync_gradients:
                set_lr(self.optimizer, lr_at(self.state.step, self.total_steps, self.warmup_steps,
                                             self.cfg.optim.lr, self.cfg.optim.final_lr,
                                             self.cfg.optim.start_warmup_lr))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            self.state.step += 1
            method.after_step(self.context())
            # A momentum teacher, where the objective asked for one: its average after the step (and the objective's
            # own after_step), at the momentum scheduled for this step.
            if getattr(self._unwrapped, "teacher", None) is not None:
                self._unwrapped.update_teacher(self.state.step - 1, self.total_steps)
        return loss.detach(), stats

    # -- the epoch's parts ---------------------------------------------------------------------------
    def _losses_so_far(self) -> list[float]:
        """This process's losses of the epoch before a mid-epoch stop (empty at an epoch's start). Resumed on another
        number of processes, the first process takes them all: the epoch's mean stays the mean over its steps."""
        saved = self.state.epoch_losses if self.state.batch else []
        if len(saved) == self.acc.num_processes:
            return list(saved[self.acc.process_index])
        return [x for part in saved for x in part] if self.acc.is_main_process else []

    def _epoch_loader(self, epoch: int) -> Iterable[dict[str, Any]]:
        """The epoch's batches from the current one on: same order and crops for this epoch however we got here
        (fresh, resumed, N processes)."""
        self.generator.manual_seed(self.cfg.seed * 100_003 + epoch)
        self.train_set.epoch = epoch
        if self.augment is not None:
            self.augment.epoch = epoch
        if self.state.batch == 0:
            self.method.on_epoch_start(self.context())
        if self.stream is not None:
            # Resumed mid-epoch: the stream skips whole rounds of batches (one per loader worker) before
            # decoding or cropping; the rest of a round is read and dropped, since the loader always
            # starts its round at worker 0 and must continue the uninterrupted run's order.
            per_round = max(1, self.loader.num_workers)
            self.stream.skip_batches = self.state.batch - self.state.batch % per_round
            return itertools.islice(self.loader, self.state.batch % per_round, None)
        return self.acc.skip_first_batches(self.loader, self.state.batch) if self.state.batch else self.loader

    def _poll(self, losses: list[float], batch: dict[str, Any], epoch: int, interrupt: Interrupt) -> bool:
        """After a step, agreed by every process: stop on a non-finite loss (raises), or say a signal came."""
        flags = torch.tensor([float(not math.isfinite(losses[-1])), float(interrupt.flag)], device=self.acc.device)
        all_reduce_(flags, "max")
        if flags[0]:
            first = ("" if self.watch is None or math.isfinite(losses[-1])
                     else f"; first non-finite: {self.watch.culprit(batch)}")
            raise TrainingStopped(
                f"loss became {losses[-1]} at epoch {epoch + 1}, step {self.state.step}{first}; stopped. "
                f"The last good checkpoint (if any) is kept in {self.ckpt_dir}", 1)
        return bool(flags[1])

    def _show_step(self, bar: Any, losses: list[float], step_before: int, images_per_s: float) -> None:
        """The progress bar and, every train.log_every optimiser steps (each step once, however many batches it
        accumulates), the loss (mean over this process's batches since the last log) and lr to the trackers."""
        bar.update(1)
        every, step = self.cfg.train.log_every, self.state.step
        if self.tracking and every and step != step_before and not step % every and self.acc.is_main_process:
            window = losses[-every * self.cfg.train.grad_accum:]
            self.acc.log({"train/loss": sum(window) / len(window), "train/lr": self.optimizer.param_groups[0]["lr"]},
                         step=step)
        if not bar.disable:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}",
                            img_s=f"{images_per_s:.0f}")

    def _epoch_row(self, epoch: int, losses: list[float], t_epoch: float, n_epoch: int) -> dict[str, Any]:
        """The epoch's metrics row: the loss over the global batch (each process's loss is that of its share), the
        method's statistics, then what each hook measures."""
        # loss_sem: the standard error of the epoch's mean loss, the noise the not_learning guardrail compares the
        # loss's change with (ssl_bench/training/learning.py): the step-to-step noise from successive differences
        # (von Neumann: var = mean (x[i+1] - x[i])^2 / 2, blind to the loss's own trend within the epoch) / sqrt(steps).
        ssd = sum((b - a) ** 2 for a, b in zip(losses, losses[1:], strict=False))
        total = all_reduce_(torch.tensor([sum(losses), len(losses), ssd, max(0, len(losses) - 1)], dtype=torch.float64,
                                         device=self.acc.device))
        n, mean = float(total[1].clamp(min=1)), float(total[0] / total[1].clamp(min=1))
        row = {"epoch": epoch, "step": self.state.step, "loss": mean,
               "loss_sem": math.sqrt(float(total[2]) / (2 * float(total[3])) / n) if float(total[3]) else 0.0,
               "lr": self.optimizer.param_groups[0]["lr"],
               "images_per_s": n_epoch / max(1e-9, time.time() - t_epoch)}
        row.update(self.method.epoch_stats())
        for hook in self.hooks:
            row.update(hook.measure(epoch))
        return row

    def _end_epoch(self, epoch: int, rows: list[dict[str, Any]]) -> None:
        """The hooks' review, the metrics file and trackers, the log line, the checkpoint, then the hooks' after."""
        cfg, acc, row = self.cfg, self.acc, rows[-1]
        for hook in self.hooks:
            hook.review(epoch, rows)
        if acc.is_main_process:
            write_metrics(self.run_dir, rows)
            if self.tracking:  # at the optimiser step, the axis of the per-step values
                acc.log(scalars({k: v for k, v in row.items() if k != "step"}, "epoch/"), step=self.state.step)
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                          if k != "guardrails"))  # each guardrail has its own line (a hook's review)
        every = cfg.train.checkpoint_every
        if self.state.epoch == cfg.train.epochs or (every and self.state.epoch % every == 0):
            self.save_checkpoint()
        for hook in self.hooks:
            hook.after(epoch, row)

    # -- what the loop offers: checkpoints, the method's context, logging, kNN -----------------------
    def save_checkpoint(self) -> None:
        """Every process: the model, optimiser, method and this position to a new checkpoint (rotated, verifiable:
        :func:`ssl_bench.training.checkpoint.save_checkpoint`)."""
        save_checkpoint(self.acc, self.run_dir, self.method, self.state.__dict__)

    def load_checkpoint(self) -> bool:
        """Load the newest usable checkpoint; False when there is none at all. A damaged newest one is named in one
        line, with the older one resumed from; none usable is a ConfigError."""
        loaded = load_checkpoint(self.acc, self.run_dir, self.method)
        if loaded is None:
            return False
        found, position, notes = loaded
        self.state = LoopState(**position)
        if notes:
            self.log(f"warning: {'; '.join(notes)}; resuming from {found} (epoch {self.state.epoch + 1}, batch "
                     f"{self.state.batch}, step {self.state.step})")
        return True

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self._unwrapped

    def context(self) -> Context:
        return Context(epoch=self.state.epoch, step=self.state.step, epochs=self.cfg.train.epochs,
                       steps_per_epoch=self.opt_steps_per_epoch, accelerator=self.acc,
                       dataset_size=len(self.train_set), embed_dataset=self.embed_dataset)

    def log(self, msg: str) -> None:
        if self.acc.is_main_process:
            tqdm.write(msg)

    def knn(self, which: str, ks: list[int] | None = None) -> dict[str, float]:
        """kNN top-1 of the evaluated backbone (eval.network) on the eval pair ``which`` ("final", "monitor"); {}
        without that pair."""
        return knn_on(self.cfg, self.acc, self.evaluated, self.eval_sets.get(which), self.num_workers, which, ks)[0]

    @property
    def evaluated(self) -> torch.nn.Module:
        """The backbone evaluation reads: eval.network's (the student's, or a momentum teacher's)."""
        model = self.unwrapped
        return model.network(self.cfg.eval.get("network")) if hasattr(model, "network") else model.backbone

    @torch.no_grad()
    def embed_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices [N] and head projections z [N, D] (float32, CPU, dataset order) of the whole
        pretraining set on the deterministic eval view, for memory banks. As the training forward (and the
        memory initialisation of the clustering papers' reference code): batches of data.batch_size with
        batch-statistics BN (at random init, eval-mode BN maps every image to nearly the same z); the running
        statistics are restored afterwards. The set is padded by wrap-around to whole batches (no tiny last batch for
        BN); each process embeds 1/N of every batch and all get the whole set."""
        n, bs = len(self.train_set), self.cfg.data.batch_size
        ds = EvalDataset(self.train_set.base, eval_transform(self.cfg))
        ds = Subset(ds, [*range(n), *range((-n) % bs)])
        loader = self.acc.prepare_data_loader(DataLoader(ds, batch_size=bs, num_workers=self.num_workers))
        model = self.unwrapped
        saved = [b.clone() for b in model.buffers()]
        zs = []
        try:
            for images, _ in progress_bar(loader, desc=f"memory bank: embedding {n} images", unit="batch"):
                with self.acc.autocast():
                    z = model.head(model.backbone(images))
                zs.append(self.acc.gather_for_metrics(z.float().contiguous()).cpu())
        finally:
            for b, old in zip(model.buffers(), saved, strict=True):
                b.copy_(old)
        return torch.arange(n), torch.cat(zs)[:n]

    def _stream_loader(self, num_workers: int) -> DataLoader:
        """The loader of a streamed dataset. Each process already reads its own part of the stream (HFStream),
        so Accelerate must not shard it again: by default it reads an IterableDataset on the main process only
        and sends every batch to the others (dispatch_batches), or, without dispatching, has every process read
        all of it and keep its slice of each batch. Prepared as for one process, it only moves batches to the
        device. Batches are this process's share of the global batch, as split_batches gives map-style data."""
        assert self.stream is not None
        local_batch = self.cfg.data.batch_size // self.acc.num_processes
        self.stream.batch_size = local_batch
        loader = DataLoader(StreamedItems(self.train_set), batch_size=local_batch, drop_last=True,
                            num_workers=min(num_workers, self.stream.max_workers),
                            pin_memory=self.acc.device.type == "cuda", persistent_workers=False)
        return prepare_data_loader(loader, self.acc.device, num_processes=1, process_index=0, put_on_device=True,
                                   dispatch_batches=False)


def default_num_workers(cfg: DictConfig) -> int:
    """Loader workers per process: the configured number, else the process's share of the cores minus
    the one that runs the model (at most 8)."""
    if cfg.data.num_workers >= 0:
        return int(cfg.data.num_workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(8, per_process - 1))
