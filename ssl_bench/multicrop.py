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


# --------------------------------------------------------------------------------------------------------
# Tensor backend: the same augmentations computed for a whole batch at once, on the training device.
# Per-image PIL transforms cost ~2 ms per crop on a CPU core, which starves a small convnet (and a GPU);
# batched tensor ops cost microseconds per crop. Used for datasets of fixed-size images
# (augment.backend=auto picks it when dataset.image_size > 0). The random parameters are still drawn per
# image from generators seeded by (seed, epoch, index), so the crops do not depend on the process count.
# --------------------------------------------------------------------------------------------------------

_TRIES = 10  # RandomResizedCrop's rejection-sampling attempts before its centre-crop fallback
_U_PER_CROP = 4 * _TRIES + 12


class RawImageDataset(Dataset):
    """Items {"image": uint8 [3, H, W], "index": i, "label": y} for the batched tensor augmentation."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, label = self.base[index]
        arr = torch.from_numpy(np.asarray(ensure_rgb(image), dtype=np.uint8).copy())
        return {"image": arr.permute(2, 0, 1), "index": index, "label": label}


def _gray(x: Tensor) -> Tensor:
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _per(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + shift.view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


class BatchMultiCrop:
    """Multi-crop of a batch of uint8 images [B, 3, H, W] -> list of float crops, global crops first.

    Same distributions as the PIL pipeline: RandomResizedCrop (scale from config, ratio 3/4..4/3, 10
    tries then centre crop), horizontal flip, colour jitter with probability p in a random order per
    image (brightness, contrast, saturation in [1 - 0.8 s, 1 + 0.8 s], hue in [-0.2 s, 0.2 s]),
    grey-scale, Gaussian blur, normalisation. Resizing is roi_align (bilinear, averaging when shrinking).
    """

    def __init__(self, cfg: DictConfig) -> None:
        a = cfg.augment
        self.specs = [(s.n, s.size, tuple(s.scale)) for s in (cfg.crops["global"], cfg.crops["local"]) if s.n > 0]
        self.n_crops = sum(n for n, _, _ in self.specs)
        self.a = a
        s = a.color_jitter_strength
        self.jitter = (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        self.mean = torch.tensor(list(cfg.dataset.mean)).view(1, 3, 1, 1)
        self.std = torch.tensor(list(cfg.dataset.std)).view(1, 3, 1, 1)
        self.seed = cfg.seed
        self.epoch = 0

    def uniforms(self, index: Tensor) -> Tensor:
        """[B, n_crops, _U_PER_CROP] uniforms, each image's from its own (seed, epoch, index) generator."""
        g = torch.Generator()
        out = torch.empty(len(index), self.n_crops, _U_PER_CROP)
        for row, i in enumerate(index.tolist()):
            g.manual_seed(sample_seed(self.seed, self.epoch, int(i)))
            out[row] = torch.rand(self.n_crops, _U_PER_CROP, generator=g)
        return out

    @staticmethod
    def boxes(u: Tensor, h: int, w: int, scale: tuple[float, float]) -> Tensor:
        """RandomResizedCrop.get_params, vectorised: u [N, 4 * tries] -> boxes [N, 4] (x0, y0, x1, y1)."""
        u = u.view(-1, _TRIES, 4)
        area = h * w * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
        log_r = torch.log(torch.tensor(3 / 4)) + (torch.log(torch.tensor(4 / 3 * 4 / 3))) * u[..., 1]
        ratio = torch.exp(log_r)
        cw = torch.sqrt(area * ratio).round()
        ch = torch.sqrt(area / ratio).round()
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        top = torch.floor(u[..., 2] * (h - ch + 1))
        left = torch.floor(u[..., 3] * (w - cw + 1))
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(ok[:, 0], -1, dtype=torch.long))
        rows = torch.arange(len(u))
        pick = first.clamp_min(0)
        cw, ch, top, left = cw[rows, pick], ch[rows, pick], top[rows, pick], left[rows, pick]
        # Fallback as torchvision: centre crop at the ratio clamped to [3/4, 4/3].
        fb = first < 0
        in_ratio = w / h
        fw, fh = (w, round(w / (4 / 3))) if in_ratio > 4 / 3 else ((round(h * 3 / 4), h) if in_ratio < 3 / 4
                                                                      else (w, h))
        cw = torch.where(fb, torch.tensor(float(fw)), cw)
        ch = torch.where(fb, torch.tensor(float(fh)), ch)
        top = torch.where(fb, torch.tensor(float((h - fh) // 2)), top)
        left = torch.where(fb, torch.tensor(float((w - fw) // 2)), left)
        return torch.stack((left, top, left + cw, top + ch), dim=1)

    def color(self, x: Tensor, u: Tensor) -> Tensor:
        """Jitter (random order per image), grey-scale and blur on float images [N, 3, s, s] in [0, 1]."""
        a = self.a
        apply = u[:, 0] < a.color_jitter_prob
        b, c, s, hmax = self.jitter
        factors = [1 - b + 2 * b * u[:, 1], 1 - c + 2 * c * u[:, 2], 1 - s + 2 * s * u[:, 3],
                   -hmax + 2 * hmax * u[:, 4]]
        factors = [torch.where(apply, f, torch.full_like(f, 0.0 if k == 3 else 1.0)).clamp_min(0 if k < 3 else -1)
                   for k, f in enumerate(factors)]
        order = torch.argsort(u[:, 5:9], dim=1)  # a random permutation of the 4 operations per image
        for pos in range(4):
            for op in range(4):
                sel = apply & (order[:, pos] == op)
                if not sel.any():
                    continue
                f = factors[op]
                if op == 0:
                    y = x * _per(f)
                elif op == 1:
                    y = _per(f) * x + (1 - _per(f)) * _gray(x).mean(dim=(1, 2, 3), keepdim=True)
                elif op == 2:
                    y = _per(f) * x + (1 - _per(f)) * _gray(x)
                else:
                    y = _adjust_hue(x, f)
                x = torch.where(_per(sel), y.clamp(0, 1), x)
        gray = u[:, 9] < a.grayscale_prob
        x = torch.where(_per(gray), _gray(x).expand_as(x), x)
        if a.blur_prob > 0:
            x = self.blur(x, u[:, 10] < a.blur_prob, a.blur_sigma[0] + (a.blur_sigma[1] - a.blur_sigma[0]) * u[:, 11])
        return x

    @staticmethod
    def blur(x: Tensor, on: Tensor, sigma: Tensor) -> Tensor:
        n, ch, size, _ = x.shape
        radius = min(int(torch.ceil(3 * sigma.max()).item()), (size - 1) // 2)
        if radius < 1:
            return x
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None].to(x) ** 2))
        k = k / k.sum(1, keepdim=True)
        delta = (t == 0).to(x.dtype).expand_as(k)
        k = torch.where(on[:, None], k, delta).repeat_interleave(ch, 0)  # [n * ch, taps]
        y = torch.nn.functional.pad(x.reshape(1, n * ch, size, size), (radius,) * 4, mode="reflect")
        y = torch.nn.functional.conv2d(y, k[:, None, :, None], groups=n * ch)
        y = torch.nn.functional.conv2d(y, k[:, None, None, :], groups=n * ch)
        return y.view(n, ch, size, size)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        from torchvision.ops import roi_align

        images = batch["image"]
        dev = images.device
        x = images.float().div_(255)
        bsz, _, h, w = x.shape
        u = self.uniforms(batch["index"].cpu()).to(dev)
        crops: list[Tensor] = []
        start = 0
        for n, size, scale in self.specs:
            uu = u[:, start : start + n].reshape(bsz * n, _U_PER_CROP)  # image-major: [img0 c0, img0 c1, ..]
            boxes = self.boxes(uu[:, : 4 * _TRIES].cpu(), h, w, scale).to(dev)
            owner = torch.arange(bsz, device=dev).repeat_interleave(n).to(x.dtype)
            y = roi_align(x, torch.cat([owner[:, None], boxes], 1), (size, size), 1.0, -1, aligned=True)
            rest = uu[:, 4 * _TRIES :]
            flip = rest[:, 0] < self.a.hflip_prob
            y = torch.where(_per(flip), y.flip(-1), y)
            y = self.color(y, rest[:, 1:])
            y = (y - self.mean.to(dev)) / self.std.to(dev)
            crops.extend(y.view(bsz, n, 3, size, size).unbind(1))
            start += n
        out = {k: v for k, v in batch.items() if k != "image"}
        out["crops"] = [c.contiguous() for c in crops]
        return out
