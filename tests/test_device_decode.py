"""The device_decode backend: workers read encoded bytes, the device (here the CPU, the same code path as CUDA)
decodes a batch, cuts the crops and colours them. Its crops are the hybrid backend's on the same JPEGs (same boxes,
same colour uniforms; only the resize differs: roi_align vs PIL's bilinear), with the same per-image seeding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Subset, default_collate

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.data import pretrain_dataset
from ssl_bench.data.encoded import encoded_reader
from ssl_bench.training.multicrop import (
    DecodeMultiCrop,
    EncodedImageDataset,
    HybridCropDataset,
    HybridMultiCrop,
    decode_images,
)


def write_jpegs(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Smooth JPEGs of varying size (36..90 px) in root/<split>/c<k>/, one of them grey."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(2):
            (root / split / f"c{c}").mkdir(parents=True)
            for j in range(n):
                w, h = (int(v) for v in rng.integers(36, 90, 2))
                base = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3), dtype=np.uint8)
                img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
                if c == 1 and j == 0:
                    img = img.convert("L")  # decoded to RGB by both backends
                img.save(root / split / f"c{c}" / f"{j}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_jpegs(tmp_path_factory.mktemp("jpegs"), {"train": 4, "val": 2})


def backends(folder: Path, *over: str):
    cfg = compose(["budget=smoke", "dataset=imagefolder", f"dataset.root={folder}", "data.train_subset=0",
                   "crops.global.size=32", "crops.local.size=16", "augment.blur_prob=0.5", *over])
    base = pretrain_dataset(cfg)
    return cfg, (HybridCropDataset(base, cfg), HybridMultiCrop(cfg)), (EncodedImageDataset(base, cfg),
                                                                       DecodeMultiCrop(cfg))


def test_workers_read_bytes_and_the_device_decodes_what_pil_decodes(folder):
    cfg, (hyb, _), (enc, _) = backends(folder)
    item = enc[3]
    assert isinstance(item["encoded"], bytes) and item["boxes"].shape == (4, 4) and item["crop_u"].shape == (4, 13)
    batch = default_collate([enc[i] for i in range(len(enc))])
    assert isinstance(batch["encoded"], list)  # bytes stay on the host: the decoders read them from there
    for i, image in enumerate(decode_images(batch["encoded"], torch.device("cpu"))):
        assert np.array_equal(image.permute(1, 2, 0).numpy(), np.asarray(hyb.base[i][0]))
    # Boxes from the header's size are the hybrid worker's boxes (same generator, same image size).
    for i in range(len(enc)):
        w, h = hyb.base[i][0].size
        assert torch.equal(enc[i]["boxes"], hyb.draw(i, h, w)[1])


def test_crops_match_the_hybrid_backend_on_the_same_images(folder):
    _, (hyb, hyb_aug), (enc, dec_aug) = backends(folder)
    for epoch in (0, 2):
        hyb.epoch = enc.epoch = epoch
        n = len(enc)
        got = dec_aug(default_collate([enc[i] for i in range(n)]))
        want = hyb_aug(default_collate([hyb[i] for i in range(n)]))
        assert set(got) == set(want) == {"crops", "index", "label"}
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["label"], want["label"])
        for a, b in zip(got["crops"], want["crops"], strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
            # Same boxes, flips, jitter, grey-scale and blur; the resize alone differs (roi_align averages where
            # PIL's bilinear filter weighs a triangle): about half a grey level on average, in [0, 1] units.
            diff = (a - b).abs() * hyb_aug.std
            assert diff.mean() < 4 / 255 and diff.max() < 0.25, (diff.mean(), diff.max())


def test_same_crops_whatever_the_batch_or_worker(folder):
    _, _, (enc, aug) = backends(folder)

    def crops_of(indices):
        out = aug(default_collate([enc[i] for i in indices]))["crops"]
        return {i: [c[row] for c in out] for row, i in enumerate(indices)}

    ref = crops_of(range(len(enc)))
    for indices in ([5, 2, 7, 0], [3]):
        for i, crops in crops_of(indices).items():
            assert all(torch.equal(a, b) for a, b in zip(crops, ref[i], strict=True)), i
    loader = DataLoader(enc, batch_size=4, num_workers=2, shuffle=False)
    got = torch.cat([aug(b)["crops"][0] for b in loader])
    assert torch.equal(got, torch.stack([ref[i][0] for i in range(len(enc))]))


def test_a_png_among_the_jpegs_is_decoded_too():
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(2)]
    files = []
    for arr, fmt in zip(arrays, ("PNG", "JPEG"), strict=True):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        files.append(buf.getvalue())
    png, jpg = decode_images(files, torch.device("cpu"))
    assert np.array_equal(png.permute(1, 2, 0).numpy(), arrays[0]) and jpg.shape == (3, 20, 30)


def test_reader_follows_subsets_and_concatenations(folder):
    cfg, _, (enc, _) = backends(folder)
    base = enc.base
    files = encoded_reader(ConcatDataset([Subset(base, [5, 1]), base]))
    assert files is not None and files(0) == enc.read(5) and files(3) == enc.read(1)


def test_pixel_datasets_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="device_decode decodes image files; fashion_mnist is held as pixels"):
        compose(["budget=smoke", "augment.backend=device_decode"])
    cfg = compose(["budget=smoke"])
    with pytest.raises(ConfigError, match="reads image files"):
        EncodedImageDataset(torch.utils.data.TensorDataset(torch.zeros(2)), cfg)


def test_smoke_run_with_device_decode(tmp_path, folder, capsys):
    from ssl_bench.pipeline.experiment import run_experiment

    cfg = compose(["budget=smoke", f"output_dir={tmp_path / 'runs'}", "dataset=imagefolder", f"dataset.root={folder}",
                   "data.batch_size=4", "data.train_subset=0", "crops.global.size=32", "crops.local.size=16",
                   "augment.backend=device_decode", "data.num_workers=0", "train.epochs=1",
                   "train.max_steps_per_epoch=2", "eval.random_baseline=false"])
    summary = run_experiment(cfg)
    assert "device_decode multi-crop" in capsys.readouterr().out
    assert summary["status"] == "complete" and summary["cost"]["images_per_s"] > 0


def test_hugging_face_images_are_read_undecoded(folder):
    import datasets

    from ssl_bench.data.sources import HFDataset

    files = sorted((folder / "train").glob("*/*.jpg"))[:3]
    ds = datasets.Dataset.from_dict({"image": [str(f) for f in files], "label": [0, 1, 1]})
    ds = ds.cast_column("image", datasets.Image())
    read = encoded_reader(HFDataset(ds, "image", "label"))
    assert read is not None and read(2) == (files[2].read_bytes(), 1)
    pixels = datasets.Dataset.from_dict({"image": [[[0, 0, 0]]], "label": [0]})  # arrays, not encoded images
    assert encoded_reader(HFDataset(pixels, "image", "label")) is None
