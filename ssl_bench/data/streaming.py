"""Hugging Face datasets streamed for pretraining (``dataset=hf dataset.streaming=true``), for data that does not
fit on the local disk: ``datasets.load_dataset(root, split=..., streaming=True)`` reads it file by file while
training (from the hub, or offline from a local folder of parquet files).

The loop's map-style path shuffles indices; a stream has none, so this path gives the same guarantees its own way:

- each process reads its own part (``split_dataset_by_node``: whole files when their count divides by the number
  of processes, else every N-th example), and each loader worker its own files of that part;
- the order changes every epoch (file order + a buffer of ``dataset.shuffle_buffer`` examples), seeded by
  (seed, epoch): the same run reads the same order with the same processes and loader workers;
- every item gets an index unique within the epoch (its position in its worker's stream, interleaved over
  workers and processes), and its crops are seeded by (seed, epoch, index) as for map-style data;
- every process runs the same number of steps, ``len // data.batch_size`` per epoch (``len`` = the split's size
  from the dataset's info, or ``dataset.num_examples``): a part that runs out is read again (in a new order), so
  no process stops early and leaves the others waiting in a collective.

Memory-bank methods (DeepCluster-v2, SeLa-v2) need every image by index in a full pass; ``validation.validate`` refuses
them with streaming. Evaluation splits are still loaded map-style (the kNN and linear protocols index them).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ssl_bench.data.sources import _first_line
from ssl_bench.errors import DataNotFound
from ssl_bench.ops.distributed import rank, world_size

# set_epoch(epoch + pass * _PASS_STRIDE) for the second and later passes over a part within one epoch: another
# order, never that of another epoch's first pass.
_PASS_STRIDE = 1_000_003


def to_rgb(img: Any) -> Image.Image:
    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


class HFStream(IterableDataset):
    """This process's part of a streamed split, as (index, RGB image, label; -1 when unlabeled) triples.

    ``len()`` is the whole split's size (all processes). The loop sets ``epoch`` before each epoch, and
    ``batch_size`` (this process's) and ``skip_batches`` (batches of the epoch already trained, on resume): those
    are skipped here, before any image is cropped."""

    def __init__(self, ds: Any, num_examples: int, image_key: str, label_key: str, seed: int, buffer_size: int,
                 process_index: int = 0, num_processes: int = 1) -> None:
        from datasets.distributed import split_dataset_by_node

        feat = (ds.features or {}).get(label_key)
        self.classes = getattr(feat, "names", None)
        self.num_examples, self.image_key, self.label_key = num_examples, image_key, label_key
        self.rank, self.world = process_index, num_processes
        # Split first, then shuffle: each process shuffles the order of its own files only.
        self.ds = split_dataset_by_node(ds, rank=process_index, world_size=num_processes)
        self.ds = self.ds.shuffle(seed=seed, buffer_size=buffer_size)
        # Loader workers share this process's files; more workers than files would sit idle (datasets stops them).
        shards = ds.num_shards
        self.max_workers = shards // num_processes if shards % num_processes == 0 else shards
        if shards % num_processes:
            warnings.warn(f"streaming: {shards} data files do not divide among {num_processes} processes, so every "
                          f"process reads all of them and keeps every {num_processes}-th example ({num_processes}x "
                          f"the reads); a file count divisible by the process count avoids it", stacklevel=2)
        self.epoch, self.batch_size, self.skip_batches = 0, 1, 0

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[tuple[int, Image.Image, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader takes whole batches from its workers in turn: worker w made batches w, w + workers, ...
        skip = len(range(worker, self.skip_batches, workers)) * self.batch_size
        position = 0
        for n_pass in range(1 << 62):  # endless: the loop stops after its steps per epoch
            self.ds.set_epoch(self.epoch + n_pass * _PASS_STRIDE)
            before = position
            for row in self.ds:
                if position >= skip:
                    label = row.get(self.label_key, -1)
                    index = (position * workers + worker) * self.world + self.rank
                    yield index, to_rgb(row[self.image_key]), int(-1 if label is None else label)
                position += 1
            if position == before:  # this worker's share is empty: nothing to repeat
                return


class _Current(Dataset):
    """Stands in for a stream as the base of a map-style item wrapper: serves the one item being processed."""

    def __init__(self, length: int) -> None:
        self.length, self.item = length, (0, None, -1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        i, image, label = self.item
        assert index == i, (index, i)
        return image, label


class StreamedItems(IterableDataset):
    """A pretraining item wrapper (MultiCropDataset, RawImageDataset, ...: anything that reads ``base[index]``
    and has ``epoch``) whose base is an :class:`HFStream`, run over the stream: the same item dicts, each
    image's crops seeded by (seed, epoch, index) exactly as the map-style path seeds them."""

    def __init__(self, items: Any) -> None:
        self.items, self.stream = items, items.base

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[dict]:
        self.stream.epoch = self.items.epoch  # set by the loop on the wrapper before each epoch's iterator
        current = _Current(len(self.stream))
        items = copy.copy(self.items)  # a shallow copy: the transforms are shared, only the base differs
        items.base = current
        for triple in self.stream:
            current.item = triple
            yield items[triple[0]]


def open_stream(cfg: DictConfig) -> HFStream:
    """The pretraining split (``dataset.pretrain_splits``, one split) of ``dataset.root`` as a stream, limited
    to its first ``data.train_subset`` examples when set (a fixed subset: the same for every method)."""
    import datasets

    d = cfg.dataset
    (split,) = d.pretrain_splits
    try:
        ds = datasets.load_dataset(d.root, split=split, streaming=True)
    except Exception as exc:  # hub unreachable, wrong name, unknown split, ...: one line
        raise DataNotFound(f"hf dataset '{d.root}' (split {split}) could not be streamed: {_first_line(exc)} "
                           f"(offline, dataset.root must be a local folder of data files, e.g. parquet)") from exc
    if ds.features is not None and d.image_key not in ds.features:
        raise DataNotFound(f"hf dataset '{d.root}' has no column '{d.image_key}'; columns: "
                           f"{', '.join(ds.features)} (set dataset.image_key / dataset.label_key)")
    info = (ds.info.splits or {}).get(split) if ds.info is not None else None
    n = int(d.num_examples) or (int(info.num_examples) if info is not None and info.num_examples else 0)
    if not n:  # local data files: their metadata is not read
        raise DataNotFound(f"hf dataset '{d.root}' does not say how many examples split '{split}' has; set "
                           f"dataset.num_examples=N (the steps per epoch are N // data.batch_size)")
    if 0 < cfg.data.train_subset < n:
        ds, n = ds.take(int(cfg.data.train_subset)), int(cfg.data.train_subset)
    return HFStream(ds, n, d.image_key, d.label_key, seed=int(cfg.seed), buffer_size=int(d.shuffle_buffer),
                    process_index=rank(), num_processes=world_size())
