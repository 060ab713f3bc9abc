"""The one multi-crop augmentation every method gets (SwAV, Sec. 3.2 and A.2).

``crops.global.n`` crops of ``crops.global.size`` px at RandomResizedCrop scale ``crops.global.scale``,
then ``crops.local.n`` small crops; each crop gets SimCLR's flip, colour distortion, grey-scale and blur.
Four backends compute it (``augment.backend``), with the same distributions:

- ``pil``: every stage per image in the loader workers, lightly's MultiCropTranform and SwaVViewTransform.
- ``tensor``: fixed-size images go whole to the training device, which crops and colours a batch at once.
- ``hybrid``: images of any size; workers decode and crop (uint8), the device flips, colours, blurs and
  normalises a batch at once. The colour stages are the tensor backend's code (:class:`ColourStage`).
- ``device_decode``: image files; workers only read the encoded bytes (and the size from the header), the
  device decodes the batch (nvJPEG on CUDA, libjpeg on a CPU), cuts the crops as the tensor backend does and
  runs the same :class:`ColourStage`.

Reproducibility: each image's crops are drawn from generators seeded by (seed, epoch, dataset index), not
from the worker's running RNG. The same image therefore gets the same crops whichever process or
worker loads it, so one process and N processes see identical batches, and a run resumed mid-epoch
sees the crops the uninterrupted run would have.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable

import numpy as np
import torch
from lightly.transforms.multi_crop_transform import MultiCropTranform
from lightly.transforms.swav_transform import SwaVViewTransform
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ssl_bench.data.encoded import encoded_reader
from ssl_bench.errors import ConfigError


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
# Tensor and hybrid backends: the colour stages computed for a whole batch at once, on the training device.
# Per-image PIL transforms cost ~2 ms per crop on a CPU core, which starves a small convnet (and a GPU);
# batched tensor ops cost microseconds per crop.
# - tensor: fixed-size images (dataset.image_size > 0) go to the device whole; crops are cut there too.
# - hybrid: images of any size; loader workers decode and cut the crops (PIL, uint8, the PIL backend's
#   resize), the device does flip, colour, blur and normalisation (the expensive part of the PIL backend).
# Both draw every random number per image from a generator seeded by (seed, epoch, index), in the same
# layout, so the crops do not depend on the process or worker count, nor on the rest of the batch.
# --------------------------------------------------------------------------------------------------------

_TRIES = 10  # RandomResizedCrop's rejection-sampling attempts before its centre-crop fallback
# Uniforms per crop: 4 per crop try, then flip, then the 12 of the colour stage (see ColourStage.color).
_U_FLIP = 4 * _TRIES
_U_PER_CROP = _U_FLIP + 13


def crop_specs(cfg: DictConfig) -> list[tuple[int, int, tuple[float, float]]]:
    """(count, size, scale) of each crop resolution in use, global crops first."""
    return [(s.n, s.size, tuple(s.scale)) for s in (cfg.crops["global"], cfg.crops["local"]) if s.n > 0]


def crop_uniforms(seed: int, epoch: int, indices: list[int], n_crops: int) -> Tensor:
    """[B, n_crops, _U_PER_CROP] uniforms, each image's from its own (seed, epoch, index) generator."""
    g = torch.Generator()
    out = torch.empty(len(indices), n_crops, _U_PER_CROP)
    for row, i in enumerate(indices):
        g.manual_seed(sample_seed(seed, epoch, int(i)))
        # The blur sigma (the last column) is drawn after the rest, so the other columns keep the values
        # they had when the layout had no sigma: runs without blur see the crops they always saw.
        out[row, :, :-1] = torch.rand(n_crops, _U_PER_CROP - 1, generator=g)
        out[row, :, -1] = torch.rand(n_crops, generator=g)
    return out


def crop_boxes(u: Tensor, h: int, w: int, scale: tuple[float, float] | tuple[Tensor, Tensor]) -> Tensor:
    """RandomResizedCrop.get_params, vectorised: u [N, 4 * tries] -> boxes [N, 4] (x0, y0, x1, y1).
    ``scale`` is one (min, max) for all rows, or two [N, 1] tensors (one scale range per row)."""
    u = u.reshape(-1, _TRIES, 4)
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


class ColourStage:
    """The per-crop stages after the crop, batched: horizontal flip, colour jitter with probability p in a
    random order per crop (brightness, contrast, saturation in [1 - 0.8 s, 1 + 0.8 s], hue in
    [-0.2 s, 0.2 s]), grey-scale, Gaussian blur, normalisation. Shared by the tensor and hybrid backends."""

    def __init__(self, cfg: DictConfig) -> None:
        a = cfg.augment
        self.specs = crop_specs(cfg)
        self.n_crops = sum(n for n, _, _ in self.specs)
        self.a = a
        s = a.color_jitter_strength
        self.jitter = (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        self.mean = torch.tensor(list(cfg.dataset.mean)).view(1, 3, 1, 1)
        self.std = torch.tensor(list(cfg.dataset.std)).view(1, 3, 1, 1)
        self.seed = cfg.seed
        self.epoch = 0

    def finish(self, x: Tensor, u: Tensor) -> Tensor:
        """Crops x [N, 3, s, s] in [0, 1] and their uniforms u [N, 13] (from _U_FLIP on) -> normalised."""
        flip = u[:, 0] < self.a.hflip_prob
        x = torch.where(_per(flip), x.flip(-1), x)
        x = self.color(x, u[:, 1:])
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def color(self, x: Tensor, u: Tensor) -> Tensor:
        """Jitter (random order per image), grey-scale and blur on float images [N, 3, s, s] in [0, 1]."""
        a = self.a
        apply = u[:, 0] < a.color_jitter_prob
        # Factor ranges as torchvision's ColorJitter: [max(0, 1 - j), 1 + j], hue [-j, j].
        factors = [max(0.0, 1 - j) + (1 + j - max(0.0, 1 - j)) * u[:, 1 + k] for k, j in enumerate(self.jitter[:3])]
        factors.append(self.jitter[3] * (2 * u[:, 4] - 1))
        order = torch.argsort(u[:, 5:9], dim=1)  # a random permutation of the 4 operations per image
        x = x.clone()  # updated in place below; the caller's tensor is left alone
        for pos in range(4):
            for op in range(4):
                # Each operation runs on the images that take it at this position only: 4x less work than
                # computing it for all and selecting (the hue conversion dominates the colour stage).
                idx = (apply & (order[:, pos] == op)).nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue
                xs, f = x[idx], _per(factors[op][idx])
                if op == 0:
                    y = xs * f
                elif op == 1:
                    y = f * xs + (1 - f) * _gray(xs).mean(dim=(1, 2, 3), keepdim=True)
                elif op == 2:
                    y = f * xs + (1 - f) * _gray(xs)
                else:
                    y = _adjust_hue(xs, factors[3][idx])
                x[idx] = y.clamp_(0, 1)
        gray = u[:, 9] < a.grayscale_prob
        x = torch.where(_per(gray), _gray(x).expand_as(x), x)
        if a.blur_prob > 0:
            lo, hi = a.blur_sigma
            x = self.blur(x, u[:, 10] < a.blur_prob, lo + (hi - lo) * u[:, 11], hi)
        return x

    @staticmethod
    def blur(x: Tensor, on: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
        # The kernel's radius comes from the configured largest sigma, not the batch's: a crop's blur
        # must not depend on which other crops share its batch.
        n, ch, size, _ = x.shape
        radius = min(math.ceil(3 * max_sigma), (size - 1) // 2)
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


class BatchMultiCrop(ColourStage):
    """Tensor backend: multi-crop of a batch of uint8 images [B, 3, H, W] -> list of float crops, global
    crops first. Same distributions as the PIL pipeline: RandomResizedCrop (scale from config, ratio
    3/4..4/3, 10 tries then centre crop), then :class:`ColourStage`. Resizing is roi_align (bilinear,
    averaging when shrinking)."""

    boxes = staticmethod(crop_boxes)

    def uniforms(self, index: Tensor) -> Tensor:
        return crop_uniforms(self.seed, self.epoch, index.tolist(), self.n_crops)

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
            boxes = crop_boxes(uu[:, :_U_FLIP].cpu(), h, w, scale).to(dev)
            owner = torch.arange(bsz, device=dev).repeat_interleave(n).to(x.dtype)
            y = roi_align(x, torch.cat([owner[:, None], boxes], 1), (size, size), 1.0, -1, aligned=True)
            y = self.finish(y, uu[:, _U_FLIP:])
            crops.extend(y.view(bsz, n, 3, size, size).unbind(1))
            start += n
        out = {k: v for k, v in batch.items() if k != "image"}
        out["crops"] = [c.contiguous() for c in crops]
        return out


class _PerImageBoxes:
    """Each image's uniforms and crop boxes, all crops of an image in one vectorised call (the worker halves of
    the hybrid and device_decode backends: the same boxes from the same (seed, epoch, index))."""

    def __init__(self, cfg: DictConfig) -> None:
        self.seed = cfg.seed
        self.specs = crop_specs(cfg)
        self.n_crops = sum(n for n, _, _ in self.specs)
        # Each crop's scale range as [n_crops, 1] columns.
        self.scale_lo = torch.tensor([[sc[0]] for n, _, sc in self.specs for _ in range(n)])
        self.scale_hi = torch.tensor([[sc[1]] for n, _, sc in self.specs for _ in range(n)])
        self.epoch = 0

    def draw(self, index: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(uniforms [n_crops, _U_PER_CROP], boxes [n_crops, 4] (x0, y0, x1, y1)) of image ``index``."""
        u = crop_uniforms(self.seed, self.epoch, [index], self.n_crops)[0]
        return u, crop_boxes(u[:, :_U_FLIP], h, w, (self.scale_lo, self.scale_hi))


class HybridCropDataset(_PerImageBoxes, Dataset):
    """Hybrid backend, loader-worker half: decode, then RandomResizedCrop each image to every crop size
    with PIL's bilinear resize (the PIL backend's own crop, so the crops' pixels match it).

    Items: {"crops_u8": [uint8 [n, s, s, 3] per crop size], "crop_u": float [n_crops, 13] (the flip and
    colour uniforms, drawn here so the device need not re-seed a generator per image), "index", "label"}.
    Crops stay channels-last as PIL gives them: transposing is free on the device, not in a worker.
    """

    def __init__(self, base: Dataset, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        image, label = self.base[index]
        image = ensure_rgb(image)
        w, h = image.size
        u, float_boxes = self.draw(index, h, w)
        boxes = float_boxes.int().tolist()
        groups: list[Tensor] = []
        start = 0
        for n, size, _ in self.specs:
            group = np.empty((n, size, size, 3), dtype=np.uint8)
            for k in range(n):
                # crop, then resize, as torchvision's RandomResizedCrop on PIL: resize(box=...) would let
                # the filter read pixels outside the box and give (slightly) different crops.
                crop = image.crop(tuple(boxes[start + k])).resize((size, size), Image.Resampling.BILINEAR)
                group[k] = np.asarray(crop)
            groups.append(torch.from_numpy(group))
            start += n
        return {"crops_u8": groups, "crop_u": u[:, _U_FLIP:].clone(), "index": index, "label": label}


class HybridMultiCrop(ColourStage):
    """Hybrid backend, device half: a collated batch of :class:`HybridCropDataset` items (on the training
    device) -> {"crops": list of float crops, global first, "index", "label"}."""

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        u = batch["crop_u"]
        bsz = u.shape[0]
        crops: list[Tensor] = []
        start = 0
        for (n, size, _), group in zip(self.specs, batch["crops_u8"], strict=True):
            # [B, n, s, s, 3] uint8 -> [B * n, 3, s, s] float, image-major as the tensor backend's crops.
            x = group.reshape(bsz * n, size, size, 3).permute(0, 3, 1, 2).float().div_(255).contiguous()
            y = self.finish(x, u[:, start : start + n].reshape(bsz * n, -1).to(x.device))
            crops.extend(y.view(bsz, n, 3, size, size).unbind(1))
            start += n
        out = {k: v for k, v in batch.items() if k not in ("crops_u8", "crop_u")}
        out["crops"] = [c.contiguous() for c in crops]
        return out


class EncodedImageDataset(_PerImageBoxes, Dataset):
    """device_decode backend, loader-worker half: the image file's encoded bytes, undecoded.

    Items: {"encoded": bytes, "boxes": float [n_crops, 4], "crop_u": float [n_crops, 13], "index", "label"}.
    The boxes need the image's size, which PIL reads from the file's header without decoding; drawing them
    here keeps the per-image generators out of the training process. ``encoded`` stays bytes (collated as a
    list), so the loader never copies it to the device: the decoders take their input from host memory.
    """

    def __init__(self, base: Dataset, cfg: DictConfig) -> None:
        super().__init__(cfg)
        reader = encoded_reader(base)
        if reader is None:
            raise ConfigError(f"augment.backend=device_decode reads image files, and {cfg.dataset.name} has none "
                              "(its images are held as pixels); use tensor, pil or hybrid")
        self.base, self.read = base, reader

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        data, label = self.read(index)
        with Image.open(io.BytesIO(data)) as header:
            w, h = header.size
        u, boxes = self.draw(index, h, w)
        return {"encoded": data, "boxes": boxes, "crop_u": u[:, _U_FLIP:].clone(), "index": index, "label": label}


def decode_images(encoded: list[bytes], device: torch.device) -> list[Tensor]:
    """uint8 RGB images [3, h, w] on ``device``: one batched decode_jpeg call (nvJPEG on CUDA). A file it
    refuses (a PNG among the JPEGs, a CMYK JPEG on the GPU) is decoded alone, on the CPU if need be.
    torchvision 0.29 deprecates these decoders for TorchCodec (a DeprecationWarning) but still ships them."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]  # a copy: bytes are read-only
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError):
        out = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except (RuntimeError, ValueError):
                out.append(decode_image(d, mode=ImageReadMode.RGB).to(device))
        return out


class DecodeMultiCrop(ColourStage):
    """device_decode backend, device half: a collated batch of :class:`EncodedImageDataset` items -> {"crops":
    list of float crops, global first, "index", "label"}. Decoding and cutting run per image (sizes differ);
    every crop of one image and size is one roi_align call (the tensor backend's resize), then the colour
    stage runs on the whole batch."""

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        from torchvision.ops import roi_align

        u = batch["crop_u"]
        dev = u.device
        images = decode_images(batch["encoded"], dev)
        boxes = batch["boxes"].to(dev)
        bsz = len(images)
        per_size: list[list[Tensor]] = [[] for _ in self.specs]
        for i, image in enumerate(images):
            x = image.unsqueeze(0).float()
            start = 0
            for k, (n, size, _) in enumerate(self.specs):
                per_size[k].append(roi_align(x, [boxes[i, start : start + n]], (size, size), 1.0, -1, aligned=True))
                start += n
        crops: list[Tensor] = []
        start = 0
        for (n, size, _), group in zip(self.specs, per_size, strict=True):
            x = torch.cat(group).div_(255)  # [B * n, 3, s, s], image-major as the other backends' crops
            y = self.finish(x, u[:, start : start + n].reshape(bsz * n, -1))
            crops.extend(y.view(bsz, n, 3, size, size).unbind(1))
            start += n
        out = {k: v for k, v in batch.items() if k not in ("encoded", "boxes", "crop_u")}
        out["crops"] = [c.contiguous() for c in crops]
        return out


def resolve_backend(cfg: DictConfig, device: torch.device) -> str:
    """augment.backend, with 'auto' resolved: tensor for fixed-size images; for images of varying size
    hybrid on a GPU (the colour stages are free there) and pil on a CPU (where the device part would run
    serially in the training process instead of in parallel in the loader workers)."""
    backend = cfg.augment.backend
    if backend != "auto":
        return backend
    if cfg.dataset.image_size > 0:
        return "tensor"
    return "hybrid" if device.type == "cuda" else "pil"


def build_pretrain_set(cfg: DictConfig, base: Dataset, device: torch.device
                       ) -> tuple[str, Dataset, Callable[[dict], dict] | None]:
    """(backend, training set, device-side augmentation or None) for the pretraining images ``base``."""
    backend = resolve_backend(cfg, device)
    if backend == "tensor":
        return backend, RawImageDataset(base), BatchMultiCrop(cfg)
    if backend == "hybrid":
        return backend, HybridCropDataset(base, cfg), HybridMultiCrop(cfg)
    if backend == "device_decode":
        return backend, EncodedImageDataset(base, cfg), DecodeMultiCrop(cfg)
    return backend, MultiCropDataset(base, build_multicrop(cfg), cfg.seed), None
