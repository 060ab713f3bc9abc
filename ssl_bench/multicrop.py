"""The one multi-crop augmentation every method gets (SwAV, Sec. 3.2 and A.2).

``crops.global.n`` crops of ``crops.global.size`` px at RandomResizedCrop scale ``crops.global.scale``,
then ``crops.local.n`` small crops; each crop gets SimCLR's flip, colour distortion, grey-scale and blur.
Built from lightly's MultiCropTranform and SwaVViewTransform.

Reproducibility: each image's crops are drawn from generators seeded by (seed, epoch, dataset index), not
from the worker's running RNG. The same image therefore gets the same crops whichever process or
worker loads it, so one process and N processes see identical batches, and a run resumed mid-epoch
sees the crops the uninterrupted run would have.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from lightly.transforms.multi_crop_transform import MultiCropTranform
from lightly.transforms.swav_transform import SwaVViewTransform
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset


def build_multicrop(cfg: DictConfig) -> MultiCropTranform:
    a, g, loc = cfg.augment, cfg.crops["global"], cfg.crops["local"]
    specs = [s for s in (g, loc) if s.n > 0]
    view = SwaVViewTransform(
        hf_prob=a.hflip_prob, cj_prob=a.color_jitter_prob, cj_strength=a.color_jitter_strength,
        random_gray_scale=a.grayscale_prob, gaussian_blur=a.blur_prob, sigmas=tuple(a.blur_sigma),
        normalize={"mean": list(cfg.dataset.mean), "std": list(cfg.dataset.std)},
    )
    return MultiCropTranform(
        crop_sizes=tuple(s.size for s in specs), crop_counts=tuple(s.n for s in specs),
        crop_min_scales=tuple(s.scale[0] for s in specs), crop_max_scales=tuple(s.scale[1] for s in specs),
        transforms=view,
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    # A simple mix that keeps (seed, epoch, index) triples apart for any realistic range.
    return (seed * 1_000_003 + epoch * 10_000_019 + index * 7_919) % (2**31 - 1)


class MultiCropDataset(Dataset):
    """Wraps an (image, label) dataset; items are {"crops": [Tensor]*n, "index": i, "label": y}."""

    def __init__(self, base: Dataset, transform: MultiCropTranform, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self.epoch = 0  # set by the loop before each epoch's loader iterator is created

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, label = self.base[index]
        s = sample_seed(self.seed, self.epoch, index)
        # torchvision draws from torch's RNG, lightly's blur from numpy's; seed both, restore torch's.
        state = torch.random.get_rng_state()
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        try:
            crops: list[Tensor] = self.transform(image)
        finally:
            torch.random.set_rng_state(state)
        return {"crops": crops, "index": index, "label": label}


def ensure_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
