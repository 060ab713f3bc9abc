"""Feature extraction shared by every protocol: each process embeds its shard, features are gathered."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: Dataset, accelerator, batch_size: int = 256,
                     num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """Pooled backbone features [N, D] (float32, on CPU, dataset order) and labels [N] of ``dataset``.

    The loader goes through ``accelerator.prepare_data_loader`` so N processes each embed 1/N of every
    batch; ``gather_for_metrics`` puts the pieces back in order and drops the padding of the last batch.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    loader = accelerator.prepare_data_loader(loader) if accelerator is not None else loader
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for images, y in loader:
            if accelerator is not None:
                with accelerator.autocast():
                    f = backbone(images)
                f, y = accelerator.gather_for_metrics((f.float().contiguous(), y.contiguous()))
            else:
                f = backbone(images).float()
            feats.append(f.cpu())
            labels.append(y.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)
