"""Label subsets for semi-supervised fine-tuning: stratified, drawn once with a fixed seed, saved as index files.

``<splits_dir>/<dataset>/<fraction>_seed<k>.json`` holds the sorted indices (into the dataset's train split)
of ``fraction`` of the labeled images of every class (at least one per class), drawn with seed k. The file is
written atomically the first time and read back afterwards, so every method, budget and machine fine-tunes on
the same images; it also records the split size and a hash of its labels, and refuses a dataset that does not
match. The subsets come from the train split only, so they never overlap the test split (SwAV A.4 uses
SimCLR's 1% / 10% ImageNet files the same way: drop such a file, as indices, in place to reuse it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from ssl_bench.errors import ConfigError
from ssl_bench.records.io import read_json, write_atomic


def dataset_labels(ds: Dataset) -> np.ndarray:
    """The integer labels of every item (-1 = unlabeled), read from the dataset's label array when it has one
    (ArrayDataset, torchvision, ImageFolder, Hugging Face), else by loading each item."""
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    if isinstance(ds, ConcatDataset):
        return np.concatenate([dataset_labels(d) for d in ds.datasets])
    hf, key = getattr(ds, "ds", None), getattr(ds, "label_key", None)
    if hf is not None and key is not None and hasattr(hf, "column_names"):
        return np.asarray([-1 if v is None else v for v in hf[key]], dtype=np.int64)
    for obj in (ds, getattr(ds, "base", None)):
        for attr in ("labels", "targets"):
            values = getattr(obj, attr, None) if obj is not None else None
            if values is not None and len(values) == len(ds):  # type: ignore[arg-type]
                return np.asarray(values, dtype=np.int64)
    if hasattr(ds, "base"):
        return dataset_labels(ds.base)  # type: ignore[attr-defined]
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)  # type: ignore[arg-type]


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction x n_c) images (at least 1) of every class c, drawn with ``seed``."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"a label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        take = max(1, int(round(fraction * len(members))))
        order = torch.randperm(len(members), generator=g).numpy()
        picked.append(members[order[:take]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def fraction_name(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct', 0.005 -> '0_5pct' (for record keys)."""
    return f"{fraction * 100:g}".replace(".", "_") + "pct"


def labels_hash(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def label_subset(labels: np.ndarray, dataset: str, split: str, fraction: float, seed: int, splits_dir: str | Path,
                 write: bool = True) -> tuple[np.ndarray, Path]:
    """The stratified subset of ``fraction`` of the train split, read from its index file or drawn and saved
    there (by the caller with ``write=True``, the main process; the others draw the same indices)."""
    path = Path(splits_dir) / dataset / f"{fraction:g}_seed{seed}.json"
    digest = labels_hash(labels)
    if path.exists():
        rec = read_json(path)
        if rec.get("num_images") != len(labels) or rec.get("labels_sha256") != digest or rec.get("split") != split:
            raise ConfigError(f"label split {path} was drawn from a different {dataset} '{rec.get('split')}' split "
                              f"({rec.get('num_images')} images) than the one loaded ({split}, {len(labels)} "
                              f"images); move it away or set eval.splits_dir")
        return np.asarray(rec["indices"], dtype=np.int64), path
    idx = stratified_indices(labels, fraction, seed)
    if write:
        classes, counts = np.unique(labels[idx], return_counts=True)
        head = {"dataset": dataset, "split": split, "fraction": fraction, "seed": seed, "num_images": len(labels),
                "labels_sha256": digest, "num_selected": len(idx),
                "per_class": {str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)}}
        # One field per line, the indices on one line (a 10% ImageNet split stays a ~1 MB file).
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in {**head, "indices": idx.tolist()}.items())
        write_atomic(path, "{\n" + body + "\n}\n")
    return idx, path
