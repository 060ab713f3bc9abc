"""Datasets by name. ``load_split(cfg, split)`` returns a dataset of (PIL RGB image, int label).

Registry: fashion_mnist, cifar10, cifar100, stl10, imagenet, imagenet100, imagefolder, tiny_imagenet, hf.
Missing data raises :class:`DataNotFound` with one line saying where the data must be and how to get it.
``dataset.classes`` keeps a list of classes of an image-folder tree (ImageNet-100); ``dataset.streaming``
streams a Hugging Face pretraining split (ssl_bench/data/streaming.py).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision import transforms as T

from ssl_bench.data.sources import SOURCES
from ssl_bench.errors import DataNotFound

__all__ = ["DataNotFound", "SOURCES", "load_split", "pretrain_dataset", "eval_transform", "EvalDataset",
           "fixed_subset", "num_classes"]


def load_split(cfg: DictConfig, split: str) -> Dataset:
    name = cfg.dataset.name
    if name not in SOURCES:
        raise DataNotFound(f"unknown dataset '{name}'; valid choices: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](cfg.dataset, split)


def fixed_subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """The same ``n`` images for every run with this seed (n = 0 or >= len: the whole set)."""
    if n <= 0 or n >= len(ds):  # type: ignore[arg-type]
        return ds
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values  # type: ignore[arg-type]
    return Subset(ds, idx.tolist())


def pretrain_dataset(cfg: DictConfig) -> Dataset:
    """The pretraining images: the splits of dataset.pretrain_splits, a fixed subset of data.train_subset of
    them when set; with dataset.streaming, this process's part of a stream (an IterableDataset)."""
    if cfg.dataset.streaming:
        from ssl_bench.data.streaming import open_stream

        return open_stream(cfg)
    parts = [load_split(cfg, s) for s in cfg.dataset.pretrain_splits]
    ds = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    return fixed_subset(ds, cfg.data.train_subset, cfg.data.subset_seed)


def eval_transform(cfg: DictConfig) -> T.Compose:
    """Deterministic view for feature extraction: the global-crop resolution, centre crop for large images."""
    size = cfg.crops["global"].size
    norm = T.Normalize(list(cfg.dataset.mean), list(cfg.dataset.std))
    if cfg.dataset.image_size and cfg.dataset.image_size <= size:
        return T.Compose([T.Resize(size), T.ToTensor(), norm]) if cfg.dataset.image_size != size else \
            T.Compose([T.ToTensor(), norm])
    return T.Compose([T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor(), norm])


class EvalDataset(Dataset):
    def __init__(self, base: Dataset, transform: T.Compose) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), label


def num_classes(cfg: DictConfig, ds: Dataset) -> int:
    if cfg.dataset.num_classes:
        return int(cfg.dataset.num_classes)
    inner = ds
    while isinstance(inner, Subset):
        inner = inner.dataset
    # Pretraining sets concatenate splits (STL-10: unlabeled + train); any part that names its classes counts.
    parts = inner.datasets if isinstance(inner, ConcatDataset) else [inner]
    for part in parts:
        classes = getattr(part, "classes", None)
        if classes:
            return len(classes)
    return int(max(int(inner[i][1]) for i in range(len(inner)))) + 1  # type: ignore[arg-type]
