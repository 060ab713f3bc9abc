"""The batched tensor multi-crop: same operations as torchvision's, per-image seeding, valid boxes."""

import torch
import torchvision.transforms.v2.functional as TF

from ssl_bench.config import compose
from ssl_bench.multicrop import _TRIES, _U_PER_CROP, BatchMultiCrop


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
