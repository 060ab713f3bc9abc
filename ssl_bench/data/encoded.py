"""The encoded bytes of a dataset's images, for the ``device_decode`` augmentation backend: loader workers read
files (a few hundred KB per image) and the training device decodes a whole batch at once.

``encoded_reader(ds)`` finds the files behind a dataset of PIL images (an image folder, Tiny-ImageNet's file
list, a Hugging Face dataset of encoded images, and subsets and concatenations of them) and returns a picklable
``index -> (bytes, label)``; a dataset held as pixels (CIFAR, Fashion-MNIST) has no files and gets None.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset, Subset

from ssl_bench.data.sources import RGB, HFDataset

Reader = Callable[[int], tuple[bytes, int]]


class FileBytes:
    """(path, label) samples -> the file's bytes and the label."""

    def __init__(self, samples: list[tuple[Any, int]]) -> None:
        self.samples = samples

    def __call__(self, i: int) -> tuple[bytes, int]:
        path, label = self.samples[i]
        return Path(path).read_bytes(), int(label)


class HFBytes:
    """A Hugging Face dataset's image column read without decoding (its stored bytes, else its file)."""

    def __init__(self, ds: HFDataset) -> None:
        import datasets

        self.raw = ds.ds.cast_column(ds.image_key, datasets.Image(decode=False))
        self.image_key, self.label_key = ds.image_key, ds.label_key

    def __call__(self, i: int) -> tuple[bytes, int]:
        row = self.raw[int(i)]
        image = row[self.image_key]
        data = image.get("bytes") or Path(image["path"]).read_bytes()
        label = row.get(self.label_key, -1)
        return data, int(-1 if label is None else label)


class SubsetBytes:
    def __init__(self, inner: Reader, indices: list[int]) -> None:
        self.inner, self.indices = inner, indices

    def __call__(self, i: int) -> tuple[bytes, int]:
        return self.inner(int(self.indices[i]))


class ConcatBytes:
    def __init__(self, parts: list[Reader], ends: list[int]) -> None:
        self.parts, self.ends = parts, ends

    def __call__(self, i: int) -> tuple[bytes, int]:
        k = bisect.bisect_right(self.ends, i)
        return self.parts[k](i - (self.ends[k - 1] if k else 0))


def encoded_reader(ds: Dataset) -> Reader | None:
    """``index -> (encoded image bytes, label)`` for ``ds``, or None when its images are not stored encoded."""
    if isinstance(ds, Subset):
        inner = encoded_reader(ds.dataset)
        return SubsetBytes(inner, list(ds.indices)) if inner else None
    if isinstance(ds, ConcatDataset):
        parts = [encoded_reader(p) for p in ds.datasets]
        return ConcatBytes(parts, list(ds.cumulative_sizes)) if all(parts) else None  # type: ignore[arg-type]
    if isinstance(ds, RGB):
        return encoded_reader(ds.base)
    if isinstance(ds, HFDataset):
        import datasets

        return HFBytes(ds) if isinstance(ds.ds.features.get(ds.image_key), datasets.Image) else None
    samples = getattr(ds, "samples", None)  # ImageFolder, FileListDataset: (path, label) pairs
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple | list):
        return FileBytes(samples)
    return None
