"""The protocols run for one backbone over several seeds, and the records they write.

``evaluate_all`` runs the requested protocols on the evaluated backbone, on the randomly initialised backbone
(the floor, ``random``) and, when asked, on a supervised reference (the ceiling, ``supervised``), and returns the
``metrics`` tree of the record::

    knn            {"top1": <first k>, "top1_k10": .., "top1_k20": .., ..., "settings": {...}}
    linear         {"top1": .., "top5": .., "settings": {...}}
    finetune_1pct  {"top1": .., "top5": .., "settings": {...}}      (one per eval.finetune_fractions)
    random         {"knn": {...}, "linear": {...}, "finetune_10pct": {...}}
    supervised     {"top1": .., "top5": .., "knn": {...}, "linear": {...}, "settings": {...}}

With several seeds every number is the mean over seeds, ``<key>_std`` the sample standard deviation and
``per_seed`` the single values. ``settings`` says which protocol produced the numbers (offline kNN vs linear vs
fine-tuning, mode, hyper-parameters, dataset, splits, image counts, seeds, backbone), so a table never mixes them.

Seeds: seed s draws the kNN/linear subsets with ``data.subset_seed + s`` (s = 0 is the subset of the run's own
final kNN), the label split ``<fraction>_seed<s>``, and the classifier's init, batch order and augmentations.
Features of one backbone and subset are extracted once and shared by every k and by the cached linear probe.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

from ssl_bench.config.compose import ConfigError
from ssl_bench.config.schema import EVAL_PROTOCOLS, KNN_K, knn_ks
from ssl_bench.data import EvalDataset, eval_transform, fixed_subset, load_split, num_classes
from ssl_bench.evaluation.features import extract_features
from ssl_bench.evaluation.finetune import evaluate_classifier, finetune, train_supervised
from ssl_bench.evaluation.knn import knn_predict, top1_of
from ssl_bench.evaluation.linear import linear_logits, topk_accuracy, train_linear_augmented, train_linear_cached
from ssl_bench.evaluation.predictions import prediction_arrays
from ssl_bench.evaluation.splits import dataset_labels, fraction_name, label_subset
from ssl_bench.models.networks import build_backbone
from ssl_bench.records.io import read_json, write_json
from ssl_bench.records.layout import ResultsLayout

FROZEN = ("knn", "linear")


def train_transform(cfg: DictConfig) -> T.Compose:
    """The augmentation of the linear probe (augmented mode), fine-tuning and the supervised reference (SwAV
    A.3/A.4): RandomResizedCrop to the evaluation resolution (scale ``eval.crop_scale``) + horizontal flip."""
    size = cfg.crops["global"].size
    return T.Compose([T.RandomResizedCrop(size, scale=tuple(cfg.eval.crop_scale)), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(list(cfg.dataset.mean), list(cfg.dataset.std))])


def random_backbone(cfg: DictConfig, offset: int = 0) -> nn.Module:
    """The backbone as initialised by a run with seed ``cfg.seed + offset`` (same weights as the run's start:
    the backbone is the first thing built after ``set_seed``), without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed) + offset)
        return build_backbone(cfg)


def splits_root(cfg: DictConfig, runs_dir: Path | None = None) -> Path:
    """eval.splits_dir, else the splits folder of the runs folder's layout (output_dir/../splits)."""
    if cfg.eval.splits_dir:
        return Path(cfg.eval.splits_dir)
    return ResultsLayout.of_runs(runs_dir if runs_dir is not None else cfg.output_dir).splits


# Bump when an evaluation protocol's code changes what it computes: older cached floors are then ignored.
BASELINE_CACHE_VERSION = 1
# Eval keys that do not change a protocol's result on a given backbone (which protocols, where files go).
_NOT_RESULT_KEYS = ("protocols", "seeds", "random_baseline", "baseline_cache", "splits_dir", "feature_memory_mb",
                    "monitor_train_subset", "monitor_test_subset")


def baseline_file(cfg: DictConfig, accelerator, runs_dir: Path | None = None) -> Path | None:
    """Where the random-init floor of this evaluation is kept for reuse (None with eval.baseline_cache=false).

    The floor is the same computation for every run that shares the dataset, backbone, seed, evaluation
    settings, precision and device type: every method of a comparison, every trial of a sweep. It is keyed
    by a hash of exactly those settings and lives beside the runs (``<output_dir>/../baselines/``). The precision
    is the accelerator's (train.precision null means accelerate's setting), so the key does not change with it."""
    if not cfg.eval.baseline_cache:
        return None
    key = {"version": BASELINE_CACHE_VERSION, "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
           "backbone": OmegaConf.to_container(cfg.backbone, resolve=True), "seed": int(cfg.seed),
           "subset_seed": int(cfg.data.subset_seed), "view": int(cfg.crops["global"].size),
           "precision": accelerator.mixed_precision, "device": accelerator.device.type,
           "eval": {k: v for k, v in OmegaConf.to_container(cfg.eval, resolve=True).items()  # type: ignore[union-attr]
                    if k not in _NOT_RESULT_KEYS}}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    root = ResultsLayout.of_runs(runs_dir if runs_dir is not None else cfg.output_dir).baselines
    return root / f"{cfg.dataset.name}-{cfg.backbone.name}-s{cfg.seed}-{digest}.json"


def cache_tag(protocol: str, seeds: list[int]) -> str:
    return f"{protocol}|seeds={','.join(map(str, seeds))}"


def read_baselines(path: Path | None, accelerator) -> dict[str, Any]:
    """The cached floors, as the main process reads them (broadcast: every process must skip the same work)."""
    from accelerate.utils import broadcast_object_list

    box = [read_json(path) if path is not None and path.exists() and accelerator.is_main_process else {}]
    if accelerator.num_processes > 1:
        broadcast_object_list(box)
    return box[0]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every number (recursively); with several seeds also ``<key>_std`` (sample standard
    deviation) and ``per_seed`` (the single values of the top-level numbers)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        vals = [r[key] for r in runs]
        if isinstance(vals[0], dict):
            out[key] = aggregate(vals)
        elif isinstance(vals[0], (int, float)):
            out[key] = float(statistics.fmean(vals))
            if len(vals) > 1:
                out[f"{key}_std"] = float(statistics.stdev(vals))
    if len(runs) > 1:
        out["per_seed"] = {k: [r[k] for r in runs] for k in runs[0] if isinstance(runs[0][k], (int, float))}
    return out


def flat_knn(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The flat keys of the record (knn_top1, knn_top1_k20, ...) from a structured kNN record."""
    out = {f"{prefix}knn_{k}": v for k, v in record.items() if k.startswith("top1_k") and not k.endswith("_std")}
    out[f"{prefix}knn_top1"] = record["top1"]
    return out


class Evaluator:
    """The labeled data of one dataset and the protocols on it; features are cached per (backbone, subset)."""

    def __init__(self, cfg: DictConfig, accelerator, work_dir: Path, splits_dir: Path, num_workers: int = 0,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg, self.acc = cfg, accelerator
        self.work_dir, self.splits_dir, self.num_workers = Path(work_dir), Path(splits_dir), num_workers
        self.log = log or ((lambda msg: print(msg, flush=True)) if accelerator.is_main_process else (lambda msg: None))
        self.device = accelerator.device
        d = cfg.dataset
        self.train_raw = load_split(cfg, d.train_split)
        self.test_raw = load_split(cfg, d.test_split)
        self.num_classes = num_classes(cfg, self.train_raw)
        self.eval_tf, self.aug_tf = eval_transform(cfg), train_transform(cfg)
        self._labels: dict[str, np.ndarray] = {}
        self._features: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._split_files: dict[str, list[str]] = defaultdict(list)
        self._labeled: dict[str, list[int]] = defaultdict(list)
        # name (index, labels, knn, linear) -> eval seed -> per-test-image array, of the evaluated backbone only.
        self.kept: dict[str, dict[int, np.ndarray]] = defaultdict(dict)

    # -- data ------------------------------------------------------------------------------------
    def labels(self, which: str) -> np.ndarray:
        if which not in self._labels:
            self._labels[which] = dataset_labels(self.train_raw if which == "train" else self.test_raw)
        return self._labels[which]

    def require_labels(self, protocol: str) -> None:
        """A labeled protocol on an unlabeled split (STL-10 'unlabeled', a Hugging Face set without labels) is
        a configuration error, raised before any work."""
        d = self.cfg.dataset
        if d.train_split == d.test_split:
            raise ConfigError(f"eval '{protocol}' needs separate train and test splits; {d.name} has "
                              f"dataset.train_split = dataset.test_split = '{d.test_split}'")
        for which, split in (("train", d.train_split), ("test", d.test_split)):
            missing = int((self.labels(which) < 0).sum())
            if missing:
                raise ConfigError(f"eval '{protocol}' needs labels, but {missing} images of {d.name} split "
                                  f"'{split}' have none; set dataset.{which}_split to a labeled split")

    def _subset_seed(self, n: int, total: int, seed: int) -> int | None:
        return None if n <= 0 or n >= total else int(self.cfg.data.subset_seed) + seed

    def subset(self, which: str, seed: int) -> tuple[Dataset, int | None]:
        """The kNN/linear subset of ``which`` for ``seed`` (the whole split when eval.knn_*_subset is 0)."""
        raw = self.train_raw if which == "train" else self.test_raw
        n = self.cfg.eval.knn_train_subset if which == "train" else self.cfg.eval.knn_test_subset
        s = self._subset_seed(n, len(raw), seed)  # type: ignore[arg-type]
        return (raw if s is None else fixed_subset(raw, n, s)), s

    def features(self, tag: str, backbone: nn.Module, which: str, seed: int) -> tuple[Tensor, Tensor]:
        ds, s = self.subset(which, seed)
        key = (tag, which, s)
        if key not in self._features:
            e = self.cfg.eval
            self._features[key] = extract_features(
                backbone, EvalDataset(ds, self.eval_tf), self.acc, e.batch_size, self.num_workers,
                spill_path=self.work_dir / f"{tag}-{which}-{'all' if s is None else s}.npy",
                max_memory_bytes=int(e.feature_memory_mb) * 2**20, desc=f"{tag} {which} features")
        return self._features[key]

    def drop(self, tag: str) -> None:
        for key in [k for k in self._features if k[0] == tag]:
            del self._features[key]

    def close(self) -> None:
        self._features.clear()
        self.acc.wait_for_everyone()
        if self.acc.is_main_process and self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- protocols, one seed -----------------------------------------------------------------------
    def knn(self, backbone: nn.Module, tag: str, seed: int) -> dict[str, float]:
        e = self.cfg.eval
        tr, te = self.features(tag, backbone, "train", seed), self.features(tag, backbone, "test", seed)
        preds = knn_predict(tr[0], tr[1], te[0], knn_ks(e), e.knn_temperature, self.num_classes, device=self.device)
        acc = top1_of(preds, te[1])
        self.keep(tag, "knn", seed, preds[KNN_K], te[1])
        return {"top1": acc[KNN_K], **{f"top1_k{k}": acc[k] for k in knn_ks(e)}}

    def linear(self, backbone: nn.Module, tag: str, seed: int) -> dict[str, float]:
        e = self.cfg.eval
        test_f, test_y = self.features(tag, backbone, "test", seed)
        opts = dict(epochs=e.linear_epochs, lr=e.linear_lr, weight_decay=e.linear_weight_decay,
                    momentum=e.linear_momentum, batch_size=e.linear_batch_size, bn=e.linear_bn, seed=seed)
        if e.linear_mode == "cached":
            train_f, train_y = self.features(tag, backbone, "train", seed)
            clf = train_linear_cached(train_f, train_y, self.num_classes, device=self.device, **opts)
        else:
            train, _ = self.subset("train", seed)
            clf = train_linear_augmented(backbone, EvalDataset(train, self.aug_tf), self.num_classes, self.acc,
                                         num_workers=self.num_workers, **opts)
        logits = linear_logits(clf, test_f, device=self.device)
        self.keep(tag, "linear", seed, logits.argmax(1), test_y)
        return topk_accuracy(logits, test_y)

    def keep(self, tag: str, name: str, seed: int, predicted: Tensor, test_y: Tensor) -> None:
        """Keep the evaluated backbone's per-test-image predictions (predictions.npz) with the images they are of;
        the floors' and the supervised reference's are not kept."""
        if tag != "pretrained":
            return
        ds, s = self.subset("test", seed)
        index = np.asarray(ds.indices) if s is not None else np.arange(len(ds))  # type: ignore[attr-defined,arg-type]
        self.kept["index"][seed], self.kept["labels"][seed] = index, test_y.cpu().numpy()
        self.kept[name][seed] = predicted.cpu().numpy()

    def predictions(self, seeds: list[int]) -> dict[str, np.ndarray]:
        """The arrays of predictions.npz (ssl_bench.evaluation.predictions) for ``seeds``; empty when none kept."""
        return prediction_arrays(seeds, self.kept, KNN_K) if self.kept else {}

    def finetune(self, backbone: nn.Module, seed: int, i: int) -> dict[str, float]:
        e, d = self.cfg.eval, self.cfg.dataset
        fraction = float(e.finetune_fractions[i])
        idx, path = label_subset(self.labels("train"), d.name, d.train_split, fraction, seed, self.splits_dir,
                                 write=self.acc.is_main_process)
        name = f"finetune_{fraction_name(fraction)}"
        self._split_files[name].append(str(path))
        self._labeled[name].append(len(idx))
        model = finetune(backbone, EvalDataset(Subset(self.train_raw, idx.tolist()), self.aug_tf), self.num_classes,
                         self.acc, epochs=e.finetune_epochs, batch_size=e.finetune_batch_size,
                         lr_backbone=e.finetune_lr_backbone[i], lr_head=e.finetune_lr_head[i],
                         milestones=list(e.finetune_milestones), gamma=e.finetune_gamma, momentum=e.finetune_momentum,
                         weight_decay=e.finetune_weight_decay, seed=seed, num_workers=self.num_workers)
        test, _ = self.subset("test", seed)
        return evaluate_classifier(model, EvalDataset(test, self.eval_tf), self.acc, e.batch_size, self.num_workers)

    def _one_seed(self, backbone: nn.Module, tag: str, protocols: list[str], seed: int,
                  walls: dict[str, float]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for p in protocols:
            if p == "finetune":
                for i, fraction in enumerate(self.cfg.eval.finetune_fractions):
                    name, t0 = f"finetune_{fraction_name(fraction)}", time.time()
                    out[name] = self.finetune(backbone, seed, i)
                    walls[name] += time.time() - t0
                    self.log(f"  {tag} {name} seed {seed}: top-1 {out[name]['top1']:.2f}%")
            elif p in FROZEN:
                t0 = time.time()
                out[p] = getattr(self, p)(backbone, tag, seed)
                walls[p] += time.time() - t0
                self.log(f"  {tag} {p} seed {seed}: top-1 {out[p]['top1']:.2f}%")
        return out

    def evaluate(self, backbone: nn.Module, tag: str, protocols: list[str], seeds: list[int]) -> dict[str, Any]:
        """Records (mean over seeds + settings) of ``protocols`` (knn, linear, finetune) on ``backbone``."""
        for p in protocols:
            self.require_labels(p)
        backbone = backbone.to(self.device)
        self._split_files.clear()
        self._labeled.clear()
        runs: dict[str, list[dict]] = defaultdict(list)
        walls: dict[str, float] = defaultdict(float)
        for seed in seeds:
            for name, res in self._one_seed(backbone, tag, protocols, seed, walls).items():
                runs[name].append(res)
        self.drop(tag)
        return {name: {**aggregate(r), "settings": self.settings(name, tag, seeds, walls[name])}
                for name, r in runs.items()}

    def supervised(self, seeds: list[int], frozen: list[str]) -> dict[str, Any]:
        """The supervised reference, one per seed, and the frozen-feature protocols on its backbone."""
        self.require_labels("supervised")
        cfg, e = self.cfg, self.cfg.eval
        train = fixed_subset(self.train_raw, cfg.data.train_subset, cfg.data.subset_seed)
        runs: list[dict] = []
        walls: dict[str, float] = defaultdict(float)
        for seed in seeds:
            t0 = time.time()
            model = train_supervised(random_backbone(cfg, seed), EvalDataset(train, self.aug_tf), self.num_classes,
                                     self.acc, epochs=cfg.train.epochs, batch_size=cfg.data.batch_size,
                                     lr=e.supervised_lr, weight_decay=e.supervised_weight_decay, seed=seed,
                                     num_workers=self.num_workers)
            test, _ = self.subset("test", seed)
            res: dict[str, Any] = evaluate_classifier(model, EvalDataset(test, self.eval_tf), self.acc, e.batch_size,
                                                      self.num_workers)
            walls["supervised"] += time.time() - t0
            self.log(f"  supervised reference seed {seed}: top-1 {res['top1']:.2f}%")
            res.update(self._one_seed(model.backbone, f"supervised{seed}", frozen, seed, walls))
            self.drop(f"supervised{seed}")
            runs.append(res)
        rec = aggregate(runs)
        for p in frozen:
            rec[p]["settings"] = self.settings(p, "supervised", seeds, walls[p])
        rec["settings"] = self.settings("supervised", "supervised", seeds, walls["supervised"])
        rec["settings"]["train_images"] = len(train)  # type: ignore[arg-type]
        return rec

    # -- provenance --------------------------------------------------------------------------------
    def settings(self, name: str, tag: str, seeds: list[int], wall_s: float) -> dict[str, Any]:
        """What produced a record: enough to tell protocols, modes and datasets apart in a table."""
        cfg, e, d = self.cfg, self.cfg.eval, self.cfg.dataset
        size = cfg.crops["global"].size
        aug = f"RandomResizedCrop({size}, scale={list(e.crop_scale)}) + horizontal flip"
        n_train = len(self.subset("train", seeds[0])[0])  # type: ignore[arg-type]
        n_test = len(self.subset("test", seeds[0])[0])  # type: ignore[arg-type]
        base: dict[str, Any] = {
            "protocol": name.split("_")[0], "evaluation": "offline", "backbone": tag, "dataset": d.name,
            "train_split": d.train_split, "test_split": d.test_split, "num_classes": self.num_classes,
            "test_images": n_test, "seeds": list(seeds), "eval_resolution": size, "wall_s": round(wall_s, 2),
        }
        if len(seeds) > 1:
            base["std"] = "sample standard deviation over seeds"
        if name == "knn":
            base.update(k=knn_ks(e), temperature=e.knn_temperature, similarity="cosine", vote="exp(sim / T)",
                        train_images=n_train, features="pooled backbone output, evaluation view")
        elif name == "linear":
            base.update(mode=e.linear_mode, epochs=e.linear_epochs, lr=e.linear_lr, schedule="cosine",
                        weight_decay=e.linear_weight_decay, momentum=e.linear_momentum, batch_size=e.linear_batch_size,
                        bn=e.linear_bn, train_images=n_train, reference="SwAV A.3",
                        augmentation=aug if e.linear_mode == "augmented" else "none (cached features)")
        elif name.startswith("finetune_"):
            i = [f"finetune_{fraction_name(f)}" for f in e.finetune_fractions].index(name)
            base.update(fraction=float(e.finetune_fractions[i]), labeled_images=self._labeled[name],
                        split_files=self._split_files[name], epochs=e.finetune_epochs,
                        lr_backbone=e.finetune_lr_backbone[i], lr_head=e.finetune_lr_head[i],
                        milestones=list(e.finetune_milestones), gamma=e.finetune_gamma, momentum=e.finetune_momentum,
                        weight_decay=e.finetune_weight_decay, batch_size=e.finetune_batch_size, augmentation=aug,
                        reference="SwAV A.4")
        elif name == "supervised":
            base.update(epochs=cfg.train.epochs, batch_size=cfg.data.batch_size, lr=e.supervised_lr, schedule="cosine",
                        weight_decay=e.supervised_weight_decay, momentum=0.9, augmentation=aug,
                        init="random (seed + eval seed)")
        return base


def evaluate_all(cfg: DictConfig, accelerator, backbone: nn.Module, *, protocols: list[str], seeds: list[int],
                 work_dir: Path, splits_dir: Path, num_workers: int = 0, random_knn: dict[str, float] | None = None,
                 log: Callable[[str], None] | None = None, baselines: Path | None = None,
                 predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The metrics tree for ``backbone`` on cfg.dataset: the protocols, their random-init floor (when
    eval.random_baseline) and the supervised ceiling (when 'supervised' is among the protocols).
    ``random_knn`` (flat knn_top1* of the run's baseline.json, seed 0) is reused instead of recomputed, and so
    is every floor already in the ``baselines`` file (see :func:`baseline_file`); new floors are added to it.
    ``predictions``, when given, is filled with the per-test-image predictions of ``backbone`` (the arrays of
    predictions.npz, ssl_bench.evaluation.predictions): a separate output, so the metrics tree is unchanged."""
    bad = [p for p in protocols if p not in EVAL_PROTOCOLS]
    if bad:
        raise ConfigError(f"unknown eval protocol '{bad[0]}'; valid choices: {', '.join(EVAL_PROTOCOLS)}")
    ev = Evaluator(cfg, accelerator, work_dir, splits_dir, num_workers, log)
    try:
        main = [p for p in protocols if p != "supervised"]
        for p in protocols:
            ev.require_labels(p)
        out: dict[str, Any] = ev.evaluate(backbone, "pretrained", main, seeds)
        if predictions is not None:
            predictions.update(ev.predictions(seeds))
        if cfg.eval.random_baseline and main:
            cached = read_baselines(baselines, accelerator)  # {protocol|seeds: {record key: record}}
            reuse = (random_knn is not None and "knn" in main and list(seeds) == [0]
                     and cache_tag("knn", seeds) not in cached)
            model = random_backbone(cfg)
            rnd: dict[str, Any] = {}
            fresh: dict[str, Any] = {}
            for p in main:
                tag = cache_tag(p, seeds)
                if reuse and p == "knn":
                    rec = {k.replace("knn_", "", 1): v for k, v in random_knn.items() if k.startswith("knn_top1")}
                    settings = {**ev.settings("knn", "random_init", [0], 0.0),
                                "source": "baseline.json (before training)"}
                    part = fresh[tag] = {"knn": {**rec, "settings": settings}}
                elif tag in cached:  # finetune gives finetune_1pct, finetune_10pct: keep every key it gave
                    # The cache file relative to the results folder: a record names no path of the writer's machine.
                    source = f"cache {baselines.parent.name}/{baselines.name}"
                    part = {k: {**v, "settings": {**v.get("settings", {}), "source": source}}
                            for k, v in cached[tag].items()}
                else:
                    part = fresh[tag] = ev.evaluate(model, "random_init", [p], seeds)
                rnd.update(part)
            if baselines is not None and accelerator.is_main_process and fresh:
                baselines.parent.mkdir(parents=True, exist_ok=True)
                latest = read_json(baselines) if baselines.exists() else {}  # another run may have added some
                write_json(baselines, {**latest, **fresh})
            out["random"] = rnd
        if "supervised" in protocols:
            out["supervised"] = ev.supervised(seeds, [p for p in protocols if p in FROZEN])
    finally:
        ev.close()
    return out


def final_evaluation(cfg: DictConfig, accelerator, backbone: nn.Module, run_dir: Path, num_workers: int = 0,
                     random_knn: dict[str, float] | None = None,
                     predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The evaluation at the end of ``ssl_bench.run``: kNN (always; the flat ``knn_top1*`` keys come from it)
    and the other protocols of eval.protocols, over eval.seeds. Returns the record's metrics: the flat kNN keys
    plus the structured tree of ``evaluate_all``; ``predictions`` (when given) gets the per-test-image predictions
    the run keeps in predictions.npz."""
    protocols = ["knn", *[p for p in cfg.eval.protocols if p != "knn"]]
    tree = evaluate_all(cfg, accelerator, backbone, protocols=protocols, seeds=list(cfg.eval.seeds),
                        work_dir=Path(run_dir) / "features.tmp", splits_dir=splits_root(cfg, Path(run_dir).parent),
                        num_workers=num_workers, random_knn=random_knn,
                        baselines=baseline_file(cfg, accelerator, Path(run_dir).parent), predictions=predictions)
    return {**flat_knn(tree["knn"]), **tree}
