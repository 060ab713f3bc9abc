"""Feature extraction shared by every protocol: each process embeds its shard, features are gathered.

The features are the backbone's pooled output (D = ``backbone.out_dim``: 2048 for a ResNet-50, 512 for a
ResNet-18, 8 x width for the small convnet) on the deterministic evaluation view. In memory they are
float32, **4·D bytes per image** (ResNet-50: 8 KiB; ImageNet's 1.28M training images: 10.5 GB). When that
would exceed ``max_memory_bytes`` they are streamed to a float16 ``.npy`` file instead, **2·D bytes per image**
(ResNet-50: 4 KiB, 5.2 GB for ImageNet train; ResNet-18: 1 KiB, 1.3 GB), and returned as a float16 tensor
mapped from that file, which the protocols read in chunks (never whole into memory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ssl_bench.common.progress import bar


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: Dataset, accelerator, batch_size: int = 256,
                     num_workers: int = 0, spill_path: str | Path | None = None,
                     max_memory_bytes: int | None = None, desc: str = "features") -> tuple[Tensor, Tensor]:
    """Pooled backbone features [N, D] (dataset order, on CPU) and labels [N] of ``dataset``.

    The loader goes through ``accelerator.prepare_data_loader`` so N processes each embed 1/N of every
    batch; ``gather_for_metrics`` puts the pieces back in order and drops the padding of the last batch, so
    every process gets the same features as one process would. Float32 in memory; when the float32 features
    would exceed ``max_memory_bytes`` (and ``spill_path`` is given), the main process streams them to
    ``spill_path`` as float16 (2 bytes x D per image) and every process gets them memory-mapped from there
    (processes of one machine, or a shared file system, share the file).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    prepared = accelerator.prepare_data_loader(loader) if accelerator is not None else None
    loader = prepared if prepared is not None else loader
    main = accelerator is None or accelerator.is_main_process
    n = len(dataset)  # type: ignore[arg-type]
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    spill, memmap, offset = False, None, 0
    try:
        for images, y in bar(loader, desc=desc, unit="batch"):
            if accelerator is not None:
                with accelerator.autocast():
                    f = backbone(images)
                f, y = accelerator.gather_for_metrics((f.float().contiguous(), y.contiguous()))
            else:
                f = backbone(images).float()
            f = f.cpu()
            if not feats and memmap is None and not spill and spill_path is not None and max_memory_bytes is not None:
                spill = n * f.shape[1] * 4 > max_memory_bytes
                if spill and main:
                    Path(spill_path).parent.mkdir(parents=True, exist_ok=True)
                    memmap = np.lib.format.open_memmap(str(spill_path), mode="w+", dtype=np.float16,
                                                       shape=(n, f.shape[1]))
            if spill:
                if main:
                    memmap[offset : offset + len(f)] = f.half().numpy()
                offset += len(f)
            else:
                feats.append(f)
            labels.append(y.cpu())
    finally:
        backbone.train(was_training)
        if prepared is not None and prepared in getattr(accelerator, "_dataloaders", []):
            accelerator._dataloaders.remove(prepared)  # do not keep the dataset alive in the accelerator
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    if not spill:
        return (torch.cat(feats) if feats else torch.zeros(0, 0)), labels_t
    if main:
        memmap.flush()
        del memmap
    if accelerator is not None:
        accelerator.wait_for_everyone()
    # Copy-on-write mapping: pages are read from the file on demand; nothing is written back.
    return torch.from_numpy(np.load(str(spill_path), mmap_mode="c")), labels_t


def rows(x: Tensor, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
    """Rows [start, stop) of a feature tensor (in memory or memory-mapped) as float32 on ``device``."""
    return x[start:stop].to(device=device, dtype=torch.float32)
