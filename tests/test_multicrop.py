"""The batched tensor and hybrid multi-crop: same operations as torchvision's, per-image seeding, valid boxes,
one colour stage for both, the backend auto picks, and a hybrid run on a folder of JPEGs of varying size."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF1
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.training.multicrop import (
    _TRIES,
    _U_FLIP,
    _U_PER_CROP,
    BatchMultiCrop,
    ColourStage,
    HybridCropDataset,
    HybridMultiCrop,
    crop_boxes,
    crop_uniforms,
    resolve_backend,
)


def make(*over):
    return BatchMultiCrop(compose(["budget=smoke", *over]))


def images(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, 28, 28), dtype=torch.uint8, generator=g)


def normalised(x, aug):
    return (x.float() / 255 - aug.mean) / aug.std


def test_full_scale_crop_without_colour_is_the_normalised_image():
    aug = make("crops.global.scale=[1.0,1.0]", "crops.local.n=0", "augment.hflip_prob=0",
               "augment.color_jitter_prob=0", "augment.grayscale_prob=0")
    x = images()
    out = aug({"image": x, "index": torch.arange(6), "label": torch.zeros(6)})
    assert len(out["crops"]) == 2 and "image" not in out and torch.equal(out["label"], torch.zeros(6))
    for c in out["crops"]:
        assert torch.allclose(c, normalised(x, aug), atol=1e-5)


def test_flip_and_grayscale_when_certain():
    aug = make("crops.global.scale=[1.0,1.0]", "crops.local.n=0", "augment.hflip_prob=1",
               "augment.color_jitter_prob=0", "augment.grayscale_prob=1")
    x = images()
    out = aug({"image": x, "index": torch.arange(6)})["crops"][0]
    gray = TF.rgb_to_grayscale(x.float() / 255, num_output_channels=3).flip(-1)
    assert torch.allclose(out, (gray - aug.mean) / aug.std, atol=1e-5)


def test_colour_jitter_matches_torchvision_in_each_images_order():
    aug = make()
    x = torch.rand(5, 3, 8, 8)
    g = torch.Generator().manual_seed(3)
    u = torch.rand(5, _U_PER_CROP - 4 * _TRIES - 1, generator=g)
    u[:, 0] = 0.0  # jitter applied to every image
    u[:, 9] = 1.0  # no grey-scale
    got = aug.color(x.clone(), u)
    b, c, s, h = aug.jitter
    for i in range(5):
        y = x[i]
        factors = [1 - b + 2 * b * u[i, 1], 1 - c + 2 * c * u[i, 2], 1 - s + 2 * s * u[i, 3], -h + 2 * h * u[i, 4]]
        ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for op in torch.argsort(u[i, 5:9]).tolist():
            y = ops[op](y, float(factors[op]))
        assert torch.allclose(got[i], y, atol=1e-4), i


def test_crops_depend_on_seed_epoch_and_index_not_on_the_batch():
    aug = make()
    x = images(8)
    a = aug({"image": x, "index": torch.arange(8)})["crops"]
    perm = torch.tensor([5, 2, 7, 0, 1, 3, 6, 4])
    b = aug({"image": x[perm], "index": perm})["crops"]
    for ca, cb in zip(a, b, strict=True):
        assert torch.equal(ca[perm], cb)  # the same image gets the same crops wherever it sits
    aug.epoch = 1
    c = aug({"image": x, "index": torch.arange(8)})["crops"]
    assert not torch.equal(a[0], c[0])
    assert [t.shape[-1] for t in a] == [28, 28, 14, 14]


def test_boxes_stay_inside_and_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2000, 4 * _TRIES, generator=g)
    boxes = BatchMultiCrop.boxes(u, 28, 32, (0.2, 0.6))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 28).all()
    area = w * h / (28 * 32)
    assert area.min() > 0.15 and area.max() < 0.7  # scale range, up to rounding
    assert ((w / h) > 0.6).all() and ((w / h) < 1.6).all()
    assert area.std() > 0.05  # not degenerate



# ------------------------------------------------------------------------- hybrid backend
# Workers decode and crop (uint8); the device flips, colours, blurs and normalises with the tensor backend's code.

def pil_images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


class PILSet(Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3


VARYING = [(40, 30), (25, 50), (64, 64), (33, 47), (50, 20), (30, 30), (45, 36), (28, 60)]  # (w, h)


def hybrid(*over):
    # Blur on (the smoke budget's Fashion-MNIST turns it off), as on ImageNet.
    cfg = compose(["budget=smoke", "crops.global.size=24", "crops.local.size=12", "augment.blur_prob=0.5", *over])
    return cfg, HybridCropDataset(PILSet(pil_images(VARYING)), cfg), HybridMultiCrop(cfg)


def test_hybrid_worker_cuts_uint8_crops_as_torchvision_does():
    cfg, ds, _ = hybrid()
    ds.epoch = 2
    for i in (0, 1, 4, 7):
        item = ds[i]
        assert [g.shape for g in item["crops_u8"]] == [(2, 24, 24, 3), (2, 12, 12, 3)]  # channels-last
        assert all(g.dtype == torch.uint8 for g in item["crops_u8"])
        assert item["crop_u"].shape == (4, 13) and item["index"] == i
        # The same boxes through torchvision's RandomResizedCrop on PIL (the PIL backend) give the same pixels.
        u = crop_uniforms(cfg.seed, 2, [i], 4)[0]
        img = ds.base[i][0]
        for g, (n, size, scale), start in zip(item["crops_u8"], ds.specs, (0, 2), strict=True):
            boxes = crop_boxes(u[start : start + n, :_U_FLIP], img.height, img.width, scale).int().tolist()
            for k, (x0, y0, x1, y1) in enumerate(boxes):
                ref = TF1.resized_crop(img, y0, x0, y1 - y0, x1 - x0, [size, size])
                assert np.array_equal(g[k].numpy(), np.asarray(ref))


def test_hybrid_device_stage_gives_normalised_float_crops_global_first():
    _, ds, aug = hybrid()
    batch = default_collate([ds[i] for i in range(8)])
    out = aug(batch)
    assert set(out) == {"crops", "index", "label"} and torch.equal(out["index"], torch.arange(8))
    assert [tuple(c.shape) for c in out["crops"]] == [(8, 3, 24, 24)] * 2 + [(8, 3, 12, 12)] * 2
    assert all(c.dtype == torch.float32 and torch.isfinite(c).all() for c in out["crops"])
    lo, hi = (0 - aug.mean) / aug.std, (1 - aug.mean) / aug.std
    assert all(((c >= lo - 1e-5) & (c <= hi + 1e-5)).all() for c in out["crops"])  # normalised [0, 1] values


def test_hybrid_crops_depend_on_seed_epoch_and_index_not_on_batch_or_workers():
    _, ds, aug = hybrid()

    def crops_of(indices, epoch=0):
        ds.epoch = epoch
        out = aug(default_collate([ds[i] for i in indices]))["crops"]
        return {i: [c[row] for c in out] for row, i in enumerate(indices)}

    ref = crops_of(range(8))
    # Other batch compositions and orders (so another largest blur sigma in the batch): the same crops.
    for indices in ([5, 2, 7, 0], [6, 1, 3, 4], [3]):
        for i, crops in crops_of(indices).items():
            assert all(torch.equal(a, b) for a, b in zip(crops, ref[i], strict=True)), i
    # Loader workers: the same crops as in the training process.
    ds.epoch = 0
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got = torch.cat([aug(b)["crops"][0] for b in loader])
    assert torch.equal(got, torch.stack([ref[i][0] for i in range(8)]))
    other = crops_of(range(8), epoch=1)
    assert not torch.equal(other[0][0], ref[0][0])
    cfg2, ds2, aug2 = hybrid("seed=1")
    assert not torch.equal(aug2(default_collate([ds2[0]]))["crops"][0][0], ref[0][0])


def test_hybrid_and_tensor_backends_share_one_colour_stage():
    assert HybridMultiCrop.finish is BatchMultiCrop.finish is ColourStage.finish
    assert HybridMultiCrop.color is BatchMultiCrop.color
    # Full-image crops (scale 1, square images at the crop size): both backends cut the identical crop, and
    # with the same per-image uniforms they must give identical flipped, jittered, grey, blurred crops.
    over = ["crops.global.size=24", "crops.global.scale=[1.0,1.0]", "crops.local.n=0", "augment.hflip_prob=0.5",
            "augment.color_jitter_prob=0.8", "augment.grayscale_prob=0.2", "augment.blur_prob=0.5"]
    cfg = compose(["budget=smoke", *over])
    images = pil_images([(24, 24)] * 16, seed=4)
    ds, aug = HybridCropDataset(PILSet(images), cfg), HybridMultiCrop(cfg)
    tensor = BatchMultiCrop(cfg)
    for epoch in (0, 3):
        ds.epoch = tensor.epoch = epoch
        got = aug(default_collate([ds[i] for i in range(16)]))["crops"]
        raw = torch.stack([TF1.pil_to_tensor(im) for im in images])
        want = tensor({"image": raw, "index": torch.arange(16)})["crops"]
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_auto_backend_picks_tensor_for_fixed_sizes_hybrid_on_gpu_pil_on_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    fixed = compose(["budget=smoke"])
    varying = compose(["budget=smoke", "dataset=imagefolder", "crops.global.size=32", "crops.local.size=16"])
    assert resolve_backend(fixed, cpu) == resolve_backend(fixed, gpu) == "tensor"
    assert resolve_backend(varying, gpu) == "hybrid" and resolve_backend(varying, cpu) == "pil"
    assert resolve_backend(compose(["budget=smoke", "augment.backend=hybrid"]), cpu) == "hybrid"
    with pytest.raises(ConfigError, match="use pil or hybrid"):
        compose(["budget=smoke", "dataset=imagefolder", "augment.backend=tensor"])


def write_jpeg_tree(root, per_class, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            for j in range(n):
                w, h = (int(v) for v in rng.integers(36, 72, 2))
                base = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3), dtype=np.uint8)
                img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
                img.save(root / split / f"c{c}" / f"{j}.jpg", quality=90)
    return root


def test_smoke_run_with_hybrid_backend_on_a_folder_of_jpegs(tmp_path, capsys):
    from ssl_bench.pipeline.experiment import run_experiment

    root = write_jpeg_tree(tmp_path / "data", {"train": 8, "val": 4})
    cfg = compose(["budget=smoke", f"output_dir={tmp_path / 'runs'}", "dataset=imagefolder", f"dataset.root={root}",
                   "crops.global.size=32", "crops.local.size=16", "augment.backend=hybrid", "data.num_workers=0"])
    summary = run_experiment(cfg)
    assert "hybrid multi-crop" in capsys.readouterr().out
    assert summary["status"] == "complete" and summary["dataset"] == "imagefolder"
    assert summary["cost"]["images_per_s"] > 0 and 0 <= summary["metrics"]["knn_top1"] <= 100
