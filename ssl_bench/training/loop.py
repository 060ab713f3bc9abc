"""The shared training loop on Accelerate. It knows no method by name: it forwards crops, asks the
method for a loss, steps, and calls the method's hooks. Same code on CPU, one GPU, many GPUs and nodes.

Checkpoints (``<run>/checkpoint/``) hold Accelerate's state (model with the method's global state,
optimiser, RNG), each process's local method state (queues) and the loop position; they are written to
a temporary folder with a manifest of checksums written last, then renamed, and the previous checkpoint is kept
(``checkpoint.prev``) until a newer one is complete: an interrupted save never replaces a good checkpoint, and a
damaged one (a copy cut short) is detected on resume, which falls back on the previous one.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import resource
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from omegaconf import DictConfig
from torch.utils.data import DataLoader, IterableDataset, Subset
from tqdm.auto import tqdm

from ssl_bench.common.progress import bar as progress_bar
from ssl_bench.common.tracking import scalars, tracker_names
from ssl_bench.config.compose import ConfigError
from ssl_bench.config.schema import knn_ks
from ssl_bench.data import EvalDataset, eval_transform
from ssl_bench.data.streaming import StreamedItems
from ssl_bench.errors import DataNotFound, TrainingStopped, WriteFailed
from ssl_bench.evaluation import extract_features, knn_eval
from ssl_bench.methods.base import Context
from ssl_bench.models.networks import apply_speed_options
from ssl_bench.ops.distributed import all_reduce_
from ssl_bench.records.io import read_json, read_metrics, write_json, write_metrics
from ssl_bench.training.health import HealthSample, NonFiniteWatch, check_guardrails, linear_probe_top1
from ssl_bench.training.optim import build_optimizer, lr_at, set_lr


@dataclass
class LoopState:
    epoch: int = 0  # epoch in progress (or next to run)
    batch: int = 0  # batches of that epoch already done
    step: int = 0  # optimiser steps so far
    images: int = 0  # images seen (global)
    train_s: float = 0.0  # seconds spent in training steps (throughput denominator)
    wall_s: float = 0.0  # wall time of the run so far, over all sessions
    extra: dict[str, Any] = field(default_factory=dict)


class _OnSignal:
    """While inside, SIGTERM and SIGINT go to ``_handle``; the previous handlers come back on exit. Both replace an
    inherited SIG_IGN (a script's background job), so a run obeys ``kill -INT`` the same way in every phase."""

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)


class _Interrupt(_OnSignal):
    """Turns SIGTERM/SIGINT into a flag the loop polls, so it can save a checkpoint and stop cleanly."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = False

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        self.flag = True


class StopOnSignal(_OnSignal):
    """Outside the training loop (the random-init baseline, the final evaluation, the record) there is no state to
    checkpoint, so SIGTERM/SIGINT stop at once: TrainingStopped(``message``, 130), which the entry points print as
    one line (Ctrl-C here used to print a KeyboardInterrupt traceback). ``message`` says what is kept; set it as
    the run moves on."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        raise TrainingStopped(self.message, 130)


# A run's checkpoints: the newest, the one before it (kept until a newer one is complete) and one being written.
CHECKPOINT, CHECKPOINT_PREV, CHECKPOINT_TMP = "checkpoint", "checkpoint.prev", "checkpoint.tmp"
MANIFEST = "manifest.json"
# Tests: SSL_BENCH_DIE_IN_CHECKPOINT=<where>[:<n>] ends the process (os._exit, as kill -9 would) at that point of the
# n-th checkpoint write (default the first): after_state (model and optimiser written, nothing else) or
# after_manifest (complete, not yet renamed into place).
DIE_ENV = "SSL_BENCH_DIE_IN_CHECKPOINT"
_saves: dict[str, int] = {}


def _die_if_asked(where: str) -> None:
    spec = os.environ.get(DIE_ENV, "")
    if not spec or spec.split(":")[0] != where:
        return
    _saves[where] = _saves.get(where, 0) + 1
    if _saves[where] == int(spec.split(":")[1] if ":" in spec else 1):
        os._exit(137)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}[Errno {exc.errno}] {exc.strerror}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _disk_error(exc: BaseException) -> bool:
    """Whether writing failed for the disk's sake (an OSError, or torch's / safetensors' wrapping of one)."""
    if isinstance(exc, OSError | WriteFailed):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("no space", "errno", "file write failed", "ioerror", "disk quota", "read-only"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """manifest.json: size and sha256 of every file of the checkpoint, written last (atomically)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    write_json(folder / MANIFEST, {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                                   for p in files})


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (None: complete and every file as written). One without a manifest
    (written before checkpoints had one) is taken as complete when it has its loop position."""
    if not folder.is_dir():
        return "missing"
    manifest = folder / MANIFEST
    if not manifest.exists():
        if folder.name == CHECKPOINT_TMP:
            return "incomplete (its write was interrupted)"
        return None if (folder / "loop.json").exists() else "incomplete (no loop.json)"
    try:
        files = read_json(manifest)
    except ConfigError as exc:
        return f"its {MANIFEST} is damaged ({exc})"
    for name, want in sorted(files.items()):
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != want["bytes"]:
            return f"{name} has {p.stat().st_size} bytes, {want['bytes']} were written (cut short?)"
        if _sha256(p) != want["sha256"]:
            return f"{name} differs from its checksum (damaged)"
    return None


def usable_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete, verified checkpoint of ``run_dir`` and a note per newer one that is damaged. A complete
    checkpoint.tmp (killed between its manifest and its rename) is the newest. (None, []) when the run has no
    checkpoint at all; a ConfigError (one line) when it has some and none is usable."""
    notes, problems = [], []
    for name in (CHECKPOINT_TMP, CHECKPOINT, CHECKPOINT_PREV):
        folder = run_dir / name
        if not folder.exists():
            continue
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, notes
        problems.append(f"{name}: {problem}")
        if name != CHECKPOINT_TMP:  # an interrupted write is normal after a kill, not news; a damaged checkpoint is
            notes.append(f"checkpoint {folder} is unusable: {problem}")
    if problems:
        raise ConfigError(f"no usable checkpoint in {run_dir} ({'; '.join(problems)}): start the run over with "
                          "overwrite=true")
    return None, []


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    def __init__(self, cfg: DictConfig, accelerator: Accelerator, model: torch.nn.Module, train_set,
                 eval_sets: dict[str, Any], run_dir: Path, num_workers: int,
                 augment: Callable[[dict], dict] | None = None,
                 epoch_callbacks: list[Callable[[int, dict], str | None]] | None = None) -> None:
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.train_set = train_set
        self.augment = augment  # batched multi-crop on the device (tensor backend), else crops come ready
        self.epoch_callbacks = list(epoch_callbacks or [])
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
        self.health = (HealthSample(cfg, train_set.base, accelerator.device, h.samples)
                       if h is not None and h.samples and self.stream is None and hasattr(train_set, "base") else None)
        self.watch = None if cfg.train.get("compile", False) else NonFiniteWatch(self._unwrapped)
        self._monitor_features: tuple | None = None

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

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def unwrapped(self) -> torch.nn.Module:
        return self._unwrapped

    def context(self) -> Context:
        return Context(epoch=self.state.epoch, step=self.state.step, epochs=self.cfg.train.epochs,
                       steps_per_epoch=self.opt_steps_per_epoch, accelerator=self.acc,
                       dataset_size=len(self.train_set), embed_dataset=self.embed_dataset)

    @torch.no_grad()
    def embed_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices [N] and head projections z [N, D] (float32, CPU, dataset order) of the whole
        pretraining set on the deterministic eval view, for memory banks. As the training forward (and the
        SwAV reference's memory initialisation): batches of data.batch_size with batch-statistics BN (at
        random init, eval-mode BN maps every image to nearly the same z); the running statistics are
        restored afterwards. The set is padded by wrap-around to whole batches (no tiny last batch for
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

    def log(self, msg: str) -> None:
        if self.acc.is_main_process:
            tqdm.write(msg)

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write everything to checkpoint.tmp, its manifest (a sha256 per file) last, then rotate: the current
        checkpoint becomes checkpoint.prev and checkpoint.tmp the current one (main process renames). At every
        moment one complete, verifiable checkpoint exists, so a kill or a full disk mid-write loses at most the
        epoch in progress. A disk error is one line (WriteFailed); the half-written checkpoint.tmp is removed."""
        tmp = self.run_dir / CHECKPOINT_TMP
        try:
            if self.acc.is_main_process and tmp.exists():
                shutil.rmtree(tmp)
            self.acc.wait_for_everyone()
            self.acc.save_state(str(tmp))
            _die_if_asked("after_state")
            method = self.unwrapped.method
            torch.save(method.local_state_dict(), tmp / f"method_local_{self.acc.process_index}.pt")
            self.acc.wait_for_everyone()
            if self.acc.is_main_process:
                write_json(tmp / "loop.json", self.state.__dict__)
                write_manifest(tmp)  # last: a checkpoint without it is incomplete
                _die_if_asked("after_manifest")
                prev = self.run_dir / CHECKPOINT_PREV
                if self.ckpt_dir.exists():
                    if prev.exists():
                        shutil.rmtree(prev)
                    os.replace(self.ckpt_dir, prev)
                os.replace(tmp, self.ckpt_dir)
        except (OSError, RuntimeError, WriteFailed) as exc:
            if not _disk_error(exc):
                raise
            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise WriteFailed(f"cannot write the checkpoint {tmp}: {_first_line(exc)}; the previous checkpoint is "
                              "kept (resume=true continues from it)") from exc
        self.acc.wait_for_everyone()

    def load_checkpoint(self) -> bool:
        """Load the newest usable checkpoint (see :func:`usable_checkpoint`); False when there is none at all. A
        damaged newest one is named in one line, with the older one resumed from; none usable is a ConfigError."""
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [None]
        if self.acc.is_main_process:  # one verdict for every process, so all load the same slot
            try:
                found, notes = usable_checkpoint(self.run_dir)
                box[0] = (str(found) if found else None, notes, None)
            except ConfigError as exc:
                box[0] = (None, [], str(exc))
        if self.acc.num_processes > 1:
            broadcast_object_list(box)
        found_s, notes, error = box[0]
        if error:
            raise ConfigError(error)
        if found_s is None:
            return False
        found = Path(found_s)
        self.acc.load_state(str(found))
        local = found / f"method_local_{self.acc.process_index}.pt"
        if local.exists():
            self.unwrapped.method.load_local_state_dict(torch.load(local, weights_only=False))
        self.state = LoopState(**read_json(found / "loop.json"))
        if notes:
            self.log(f"warning: {'; '.join(notes)}; resuming from {found} (epoch {self.state.epoch + 1}, batch "
                     f"{self.state.batch}, step {self.state.step})")
        return True

    # -- evaluation ------------------------------------------------------------------------------
    def knn(self, which: str, ks: list[int] | None = None) -> dict[str, float]:
        pair = self.eval_sets.get(which)
        if pair is None:
            return {}
        e = self.cfg.eval
        backbone = self.unwrapped.backbone
        tr = extract_features(backbone, pair[0], self.acc, e.batch_size, self.num_workers,
                              desc=f"{which} kNN train features")
        te = extract_features(backbone, pair[1], self.acc, e.batch_size, self.num_workers,
                              desc=f"{which} kNN test features")
        if which == "monitor":  # the online linear probe is fitted on the same features
            self._monitor_features = (tr, te)
        return knn_eval((*tr, *te), list(ks or knn_ks(e)), e.knn_temperature, self.cfg.dataset.num_classes or None)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> LoopState:
        method = self.unwrapped.method
        start_wall = time.time() - self.state.wall_s
        if self.state.epoch == 0 and self.state.batch == 0 and self.state.step == 0:
            method.on_train_start(self.context())
        rows = [r for r in read_metrics(self.run_dir) if r["epoch"] < self.state.epoch]
        with _Interrupt() as interrupt:
            while self.state.epoch < self.cfg.train.epochs:
                epoch = self.state.epoch
                loader = self._epoch_loader(epoch)
                losses, t_epoch, n_epoch = self._train_epoch(loader, epoch, interrupt, start_wall)
                row = self._epoch_row(epoch, losses, t_epoch, n_epoch)
                self.state.epoch += 1
                self.state.batch = 0
                self.state.wall_s = time.time() - start_wall
                row["wall_s"] = self.state.wall_s
                rows.append(row)
                self._end_epoch(epoch, row, rows)
            # A signal after the last step's poll (during the last epoch's monitor or checkpoint) still stops the
            # run before its evaluation, as one during training does; the final checkpoint is saved.
            if all_reduce_(torch.tensor([float(interrupt.flag)], device=self.acc.device), "max").item():
                raise TrainingStopped("interrupted after the last training step; checkpoint saved; continue with "
                                      "resume=true", 130)
        return self.state

    def _epoch_loader(self, epoch: int) -> Iterable[dict[str, Any]]:
        """The epoch's batches from the current one on: same order and crops for this epoch however we got here
        (fresh, resumed, N processes)."""
        self.generator.manual_seed(self.cfg.seed * 100_003 + epoch)
        self.train_set.epoch = epoch
        if self.augment is not None:
            self.augment.epoch = epoch
        if self.state.batch == 0:
            self.unwrapped.method.on_epoch_start(self.context())
        if self.stream is not None:
            # Resumed mid-epoch: the stream skips whole rounds of batches (one per loader worker) before
            # decoding or cropping; the rest of a round is read and dropped, since the loader always
            # starts its round at worker 0 and must continue the uninterrupted run's order.
            per_round = max(1, self.loader.num_workers)
            self.stream.skip_batches = self.state.batch - self.state.batch % per_round
            return itertools.islice(self.loader, self.state.batch % per_round, None)
        return self.acc.skip_first_batches(self.loader, self.state.batch) if self.state.batch else self.loader

    def _train_epoch(self, loader: Iterable[dict[str, Any]], epoch: int, interrupt: _Interrupt, start_wall: float
                     ) -> tuple[list[float], float, int]:
        """The epoch's remaining steps: (their losses, the epoch's start time, the images it saw)."""
        losses: list[float] = []
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
            stop = self._poll(losses, batch, epoch, interrupt)
            bar.update(1)
            self.log_step(losses, step_before)
            if not bar.disable:
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}",
                                img_s=f"{n_epoch / max(1e-9, time.time() - t_epoch):.0f}")
            if stop:
                self.state.wall_s = time.time() - start_wall
                self.save_checkpoint()
                bar.close()
                raise TrainingStopped(f"interrupted at epoch {epoch + 1}, batch {self.state.batch}; "
                                      f"checkpoint saved; continue with resume=true", 130)
        bar.close()
        if self.stream is not None and self.state.batch < self.steps_per_epoch:  # the others wait for it
            raise DataNotFound(f"the stream ran out on process {self.acc.process_index} after {self.state.batch} "
                               f"of {self.steps_per_epoch} batches: its part of the data is empty")
        return losses, t_epoch, n_epoch

    def _poll(self, losses: list[float], batch: dict[str, Any], epoch: int, interrupt: _Interrupt) -> bool:
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

    def _epoch_row(self, epoch: int, losses: list[float], t_epoch: float, n_epoch: int) -> dict[str, Any]:
        """The epoch's metrics row: the loss over the global batch (each process's loss is that of its share), the
        method's statistics, the online kNN monitor and the health keys."""
        cfg = self.cfg
        total = all_reduce_(torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=self.acc.device))
        row = {"epoch": epoch, "step": self.state.step, "loss": float(total[0] / total[1].clamp(min=1)),
               "lr": self.optimizer.param_groups[0]["lr"],
               "images_per_s": n_epoch / max(1e-9, time.time() - t_epoch)}
        row.update(self.unwrapped.method.epoch_stats())
        if cfg.eval.monitor_train_subset and cfg.eval.monitor_test_subset:
            k = min(20, cfg.eval.monitor_train_subset)
            row["monitor_knn_top1"] = self.knn("monitor", [k])[f"knn_top1_k{k}"]
        row.update(self.health_row())
        return row

    def _end_epoch(self, epoch: int, row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Guardrails, the metrics file and trackers, the log line, the checkpoint and the epoch callbacks."""
        cfg, acc = self.cfg, self.acc
        if cfg.train.guardrails != "off" and (found := check_guardrails(rows, cfg)):
            row["guardrails"] = found
            for g in found:
                self.log(f"guardrail {g['check']} (epoch {epoch + 1}): {g['message']}")
        if acc.is_main_process:
            write_metrics(self.run_dir, rows)
            if self.tracking:  # at the optimiser step, the axis of the per-step values
                acc.log(scalars({k: v for k, v in row.items() if k != "step"}, "epoch/"), step=self.state.step)
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                          if k != "guardrails"))  # each guardrail has its own line above
        last = self.state.epoch == cfg.train.epochs
        every = cfg.train.checkpoint_every
        if last or (every and self.state.epoch % every == 0):
            self.save_checkpoint()
        self.run_epoch_callbacks(epoch, row)
        if cfg.train.guardrails == "stop" and row.get("guardrails"):
            g = row["guardrails"][0]
            raise TrainingStopped(f"guardrail {g['check']} after epoch {epoch + 1}: {g['message']} "
                                  "(train.guardrails=warn only warns)", 1)

    def health_row(self) -> dict[str, float]:
        """The epoch's health keys (health_*) and the online linear probe's top-1 (online_linear_top1), read from
        the model without changing it."""
        out: dict[str, float] = {}
        h = self.cfg.get("health")
        if self.health is not None:
            out.update(self.health.measure(self.unwrapped, self.acc, self.cfg.eval.batch_size))
        feats, self._monitor_features = self._monitor_features, None
        classes = int(self.cfg.dataset.num_classes or 0)
        if h is not None and h.linear_probe and h.probe_steps and feats is not None and classes > 1:
            out["online_linear_top1"] = linear_probe_top1(feats[0], feats[1], classes, h.probe_steps, h.probe_lr)
        return out

    def log_step(self, losses: list[float], step_before: int) -> None:
        """Loss (mean over this process's batches since the last log) and lr to the trackers, every
        train.log_every optimiser steps (each step once, however many batches it accumulates)."""
        every = self.cfg.train.log_every
        step = self.state.step
        if not self.tracking or not every or step == step_before or step % every:
            return
        if self.acc.is_main_process:
            window = losses[-every * self.cfg.train.grad_accum:]
            self.acc.log({"train/loss": sum(window) / len(window), "train/lr": self.optimizer.param_groups[0]["lr"]},
                         step=step)

    def run_epoch_callbacks(self, epoch: int, row: dict) -> None:
        """Callbacks (e.g. a sweep's pruner) see each epoch's record on the main process; one that returns
        a reason stops the run on every process (the decision is broadcast, so no process is left waiting)."""
        reason = None
        if self.acc.is_main_process:
            for cb in self.epoch_callbacks:
                reason = reason or cb(epoch, row)
        flag = all_reduce_(torch.tensor([1.0 if reason else 0.0], device=self.acc.device), "max")
        if flag.item():
            raise TrainingStopped(f"stopped after epoch {epoch + 1}: {reason or 'requested by the main process'}",
                                  3, pruned=True)

    def train_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
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
        return loss.detach(), stats


def default_num_workers(cfg: DictConfig) -> int:
    """Loader workers per process: the configured number, else the process's share of the cores minus
    the one that runs the model (at most 8)."""
    if cfg.data.num_workers >= 0:
        return int(cfg.data.num_workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(8, per_process - 1))
