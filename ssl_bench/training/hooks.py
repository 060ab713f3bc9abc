"""Epoch-end hooks: what the training loop runs after every epoch, in order, without knowing what they compute. Each
hook has three phases (see :class:`EpochHook`); the standard list (:func:`epoch_hooks`) is the online kNN monitor,
the health measurements with the online linear probe, the caller's epoch callbacks (a sweep's pruner) and the
guardrails. Imports evaluation, the health measurements, configuration, the shared ops and the errors; never the
loop, which imports this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_bench.config.schema import knn_ks
from ssl_bench.errors import TrainingStopped
from ssl_bench.evaluation import extract_features, knn_eval
from ssl_bench.ops.distributed import all_reduce_
from ssl_bench.training.health import HealthSample, check_guardrails, linear_probe_top1

# (train, test) features and labels of a labelled pair: ((features [N, D], labels [N]), (features, labels)).
Features = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]
EpochCallback = Callable[[int, dict], str | None]


class EpochHook:
    """One thing done at every epoch's end. For each hook in the list, in order, the loop calls ``measure`` (keys for
    the epoch's row, before its wall time is added), then ``review`` (the complete row is ``rows[-1]``; it may add
    keys before the row is written), and, once the row is written and the checkpoint saved, ``after`` (it may stop
    the run with TrainingStopped). Every process calls every phase, so a hook may reduce across processes. The
    defaults do nothing."""

    def measure(self, epoch: int) -> dict[str, Any]:
        return {}

    def review(self, epoch: int, rows: list[dict[str, Any]]) -> None:
        return None

    def after(self, epoch: int, row: dict[str, Any]) -> None:
        return None


def knn_on(cfg: DictConfig, acc: Accelerator, backbone: nn.Module, pair: tuple | None, num_workers: int, which: str,
           ks: list[int] | None = None) -> tuple[dict[str, float], Features | None]:
    """kNN top-1 of ``backbone`` on a labelled (train, test) pair of datasets, named ``which`` in the progress bars,
    and the features it used; ({}, None) without a pair. ``ks`` defaults to the configured eval.knn_k."""
    if pair is None:
        return {}, None
    e = cfg.eval
    tr = extract_features(backbone, pair[0], acc, e.batch_size, num_workers, desc=f"{which} kNN train features")
    te = extract_features(backbone, pair[1], acc, e.batch_size, num_workers, desc=f"{which} kNN test features")
    return knn_eval((*tr, *te), list(ks or knn_ks(e)), e.knn_temperature, cfg.dataset.num_classes or None), (tr, te)


class MonitorKnn(EpochHook):
    """``monitor_knn_top1``: the kNN top-1 (k = min(20, eval.monitor_train_subset)) of the evaluated backbone
    (eval.network) on the monitor's subsets, when eval.monitor_train_subset and eval.monitor_test_subset are set.
    Keeps the features for the online linear probe."""

    def __init__(self, cfg: DictConfig, acc: Accelerator, model: nn.Module, pair: tuple | None,
                 num_workers: int) -> None:
        self.cfg, self.acc, self.model, self.pair, self.num_workers = cfg, acc, model, pair, num_workers
        self.features: Features | None = None

    def measure(self, epoch: int) -> dict[str, Any]:
        e = self.cfg.eval
        if not (e.monitor_train_subset and e.monitor_test_subset):
            return {}
        k = min(20, e.monitor_train_subset)
        network = self.model.network(e.get("network")) if hasattr(self.model, "network") else self.model.backbone
        scores, self.features = knn_on(self.cfg, self.acc, network, self.pair, self.num_workers, "monitor", [k])
        return {"monitor_knn_top1": scores[f"knn_top1_k{k}"]}

    def take_features(self) -> Features | None:
        """The last epoch's monitor features, once (the probe fits them and they are let go)."""
        feats, self.features = self.features, None
        return feats


class Health(EpochHook):
    """The epoch's health keys (health_*: on a fixed sample, see ssl_bench.training.health) and the online linear
    probe's top-1 (online_linear_top1, on the monitor's features), read from the model without changing it."""

    def __init__(self, cfg: DictConfig, acc: Accelerator, model: nn.Module, sample: HealthSample | None,
                 monitor: MonitorKnn | None) -> None:
        self.cfg, self.acc, self.model, self.sample, self.monitor = cfg, acc, model, sample, monitor
        self.initial: list[Tensor] | None = None  # the trainable parameters before training (weight_drift)

    def _weight_drift(self) -> float | None:
        """weight_drift: ||theta - theta_0|| / ||theta_0|| over the trainable parameters, theta_0 their values when
        the hooks were built (the seeded initial weights, also in a resumed run: the checkpoint loads after), so a
        resumed run records what the uninterrupted one does. Read only; the first call takes theta_0."""
        with torch.no_grad():
            now = [p.detach().float().clone() for p in self.model.parameters() if p.requires_grad]
            if self.initial is None:
                self.initial = now
                return None
            num = sum(float((a - b).pow(2).sum()) for a, b in zip(now, self.initial, strict=True))
            den = sum(float(b.pow(2).sum()) for b in self.initial)
        return (num / den) ** 0.5 if den > 0 else None

    def measure(self, epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        h = self.cfg.get("health")
        if h is not None and h.samples and (drift := self._weight_drift()) is not None:
            out["weight_drift"] = drift
        if self.sample is not None:
            out.update(self.sample.measure(self.model, self.acc, self.cfg.eval.batch_size))
        feats = self.monitor.take_features() if self.monitor is not None else None
        classes = int(self.cfg.dataset.num_classes or 0)
        if h is not None and h.linear_probe and h.probe_steps and feats is not None and classes > 1:
            out["online_linear_top1"] = linear_probe_top1(feats[0], feats[1], classes, h.probe_steps, h.probe_lr)
        return out


class EpochCallbacks(EpochHook):
    """The caller's callbacks (e.g. a sweep's pruner) see each epoch's row on the main process; one that returns a
    reason stops the run on every process (the decision is reduced, so no process is left waiting)."""

    def __init__(self, acc: Accelerator, callbacks: list[EpochCallback]) -> None:
        self.acc, self.callbacks = acc, list(callbacks)

    def after(self, epoch: int, row: dict[str, Any]) -> None:
        reason = None
        if self.acc.is_main_process:
            for cb in self.callbacks:
                reason = reason or cb(epoch, row)
        flag = all_reduce_(torch.tensor([1.0 if reason else 0.0], device=self.acc.device), "max")
        if flag.item():
            raise TrainingStopped(f"stopped after epoch {epoch + 1}: {reason or 'requested by the main process'}",
                                  3, pruned=True)


class Guardrails(EpochHook):
    """train.guardrails: ``review`` adds the guardrails that fire (row["guardrails"]) and says each in a line (warn,
    stop); ``after`` stops the run on the first one (stop), once the row and the checkpoint are written."""

    def __init__(self, cfg: DictConfig, log: Callable[[str], None]) -> None:
        self.cfg, self.log = cfg, log

    def review(self, epoch: int, rows: list[dict[str, Any]]) -> None:
        if self.cfg.train.guardrails != "off" and (found := check_guardrails(rows, self.cfg)):
            rows[-1]["guardrails"] = found
            for g in found:
                self.log(f"guardrail {g['check']} (epoch {epoch + 1}): {g['message']}")

    def after(self, epoch: int, row: dict[str, Any]) -> None:
        if self.cfg.train.guardrails == "stop" and row.get("guardrails"):
            g = row["guardrails"][0]
            raise TrainingStopped(f"guardrail {g['check']} after epoch {epoch + 1}: {g['message']} "
                                  "(train.guardrails=warn only warns)", 1)


def epoch_hooks(cfg: DictConfig, acc: Accelerator, model: nn.Module, monitor_pair: tuple | None, num_workers: int,
                health_sample: HealthSample | None, callbacks: list[EpochCallback],
                log: Callable[[str], None]) -> list[EpochHook]:
    """The standard hooks in their order: the monitor's kNN, then health (its probe fits the monitor's features), then
    the callbacks (they see the whole row), then the guardrails (they stop a run after the callbacks have seen it)."""
    monitor = MonitorKnn(cfg, acc, model, monitor_pair, num_workers)
    health = Health(cfg, acc, model, health_sample, monitor)
    if cfg.get("health") is not None and cfg.health.samples:
        health._weight_drift()  # the initial weights, before a resume loads its checkpoint: weight_drift's origin
    return [monitor, health, EpochCallbacks(acc, callbacks), Guardrails(cfg, log)]
