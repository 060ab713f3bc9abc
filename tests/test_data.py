"""Dataset loaders, read through the real code paths from small fixture files written into tmp_path.

Nothing here downloads: torchvision's md5 checks are patched out for the fixture files only, and the
Hugging Face libraries are forced offline (see conftest.py and the ``offline`` fixture).
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Subset

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

from ssl_bench.config.compose import compose  # noqa: E402
from ssl_bench.data import DataNotFound, load_split, num_classes, pretrain_dataset  # noqa: E402
from ssl_bench.data.sources import FASHION_MNIST_DIRS  # noqa: E402

FMNIST_DIR = Path(FASHION_MNIST_DIRS[0])


def cfg_for(dataset: str, root: Path | str | None, *extra: str):
    overrides = [f"dataset={dataset}", "budget=smoke", *extra]
    overrides.append("dataset.root=null" if root is None else f"dataset.root={root}")
    return compose(overrides)


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, repr(msg)
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def rand_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the md5 of the real release files; our fixtures are not them."""
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)
    # CIFAR's meta file is checked by the module-level function, not by _check_integrity.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)


# --------------------------------------------------------------------------------------- CIFAR

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _flat(images: np.ndarray) -> np.ndarray:
    # CIFAR rows: 1024 R, 1024 G, 1024 B values, each plane row-major.
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x, y = rand_images(rng, per_batch, 32), rng.integers(0, 10, per_batch).tolist()
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "data": _flat(x),
                                            "labels": y})
        train_x.append(x)
        train_y += y
    tx, ty = rand_images(rng, n_test, 32), rng.integers(0, 10, n_test).tolist()
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": _flat(tx), "labels": ty})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_vis": 3072})
    return {"train": (np.concatenate(train_x), train_y), "test": (tx, ty)}


def write_cifar100(root: Path, n_train: int = 7, n_test: int = 4, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = rand_images(rng, n, 32), rng.integers(0, 100, n).tolist()
        _pickle(folder / split, {"data": _flat(x), "fine_labels": y, "coarse_labels": [v // 5 for v in y]})
        out[split] = (x, y)
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                              "coarse_label_names": [f"s{i}" for i in range(20)]})
    return out


@pytest.mark.parametrize("name,writer,n_classes", [("cifar10", write_cifar10, 10),
                                                   ("cifar100", write_cifar100, 100)])
def test_cifar_round_trip(tmp_path, no_md5, name, writer, n_classes):
    truth = writer(tmp_path)
    cfg = cfg_for(name, tmp_path)
    for split in ("train", "test"):
        ds = load_split(cfg, split)
        x, y = truth[split]
        assert len(ds) == len(y)
        assert [ds[i][1] for i in range(len(ds))] == y
        img, label = ds[len(ds) - 1]
        assert isinstance(label, int)
        assert img.mode == "RGB" and img.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(img), x[-1])
    assert num_classes(cfg, ds) == n_classes
    assert len(ds.classes) == n_classes
    if name == "cifar10":
        assert ds.classes == CIFAR10_CLASSES


def test_cifar_bad_split_and_corrupt_files(tmp_path, no_md5):
    write_cifar10(tmp_path)
    cfg = cfg_for("cifar10", tmp_path)
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg, "val")
    assert_one_line(exc, "val", "train, test")


def test_cifar_incomplete_folder(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # the folder exists but holds nothing (md5 checks on)
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("cifar10", tmp_path), "train")
    assert_one_line(exc, str(tmp_path / "cifar-10-batches-py"), "corrupted")


# --------------------------------------------------------------------------------------- STL-10


def write_stl10(root: Path, n_train: int = 6, n_test: int = 3, n_unlabeled: int = 12, seed: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        x = rand_images(rng, n, 96)
        # The release stores each image column-major: [N, C, W, H].
        x.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        y = rng.integers(0, 8, n)  # 8 of the 10 classes: counting the labels seen would give 8
        if split != "unlabeled":
            (y + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")  # 1-based on disk
        out[split] = (x, y.tolist() if split != "unlabeled" else [-1] * n)
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")
    return out


def test_stl10_splits(tmp_path, no_md5):
    truth = write_stl10(tmp_path)
    cfg = cfg_for("stl10", tmp_path)
    for split in ("train", "test", "unlabeled"):
        ds = load_split(cfg, split)
        x, y = truth[split]
        assert len(ds) == len(y)
        assert [ds[i][1] for i in range(len(ds))] == y
        img, _ = ds[1]
        assert img.mode == "RGB" and img.size == (96, 96)
        np.testing.assert_array_equal(np.asarray(img), x[1])
    assert set(truth["unlabeled"][1]) == {-1}


def test_stl10_pretrain_concat_and_fixed_subset(tmp_path, no_md5):
    truth = write_stl10(tmp_path)
    n_unl, n_train = len(truth["unlabeled"][1]), len(truth["train"][1])
    cfg = cfg_for("stl10", tmp_path, "data.train_subset=0")
    assert list(cfg.dataset.pretrain_splits) == ["unlabeled", "train"]
    ds = pretrain_dataset(cfg)
    assert isinstance(ds, ConcatDataset) and len(ds) == n_unl + n_train
    labels = [ds[i][1] for i in range(len(ds))]
    assert labels == truth["unlabeled"][1] + truth["train"][1]
    np.testing.assert_array_equal(np.asarray(ds[n_unl][0]), truth["train"][0][0])
    assert num_classes(cfg, ds) == 10
    # Undeclared, the count comes from the parts' class names (not from the labels seen, all < 10 here).
    assert num_classes(cfg_for("stl10", tmp_path, "dataset.num_classes=0"), ds) == 10

    def subset(n: int, seed: int) -> list[int]:
        cfg = cfg_for("stl10", tmp_path, f"data.train_subset={n}", f"data.subset_seed={seed}")
        sub = pretrain_dataset(cfg)
        assert isinstance(sub, Subset) and len(sub) == n
        return list(sub.indices)

    a, b = subset(7, 0), subset(7, 0)
    assert a == b and len(set(a)) == 7 and all(0 <= i < n_unl + n_train for i in a)
    assert subset(7, 1) != a
    # A subset as large as the data is the data itself.
    assert len(pretrain_dataset(cfg_for("stl10", tmp_path, f"data.train_subset={n_unl + n_train}"))) == \
        n_unl + n_train


def test_stl10_bad_split(tmp_path, no_md5):
    write_stl10(tmp_path)
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("stl10", tmp_path), "val")
    assert_one_line(exc, "stl10", "unlabeled")


# ------------------------------------------------------------------------- ImageFolder / ImageNet

FOLDER_CLASSES = ["cat", "dog", "elk"]


def write_image_tree(root: Path, seed: int = 3) -> dict:
    """train/<class>/*.png (2 per class, one of them grey) and val/<class>/*.png (1 per class)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for split, per_class in (("train", 2), ("val", 1)):
        items = []
        for label, cls in enumerate(FOLDER_CLASSES):
            (root / split / cls).mkdir(parents=True)
            for j in range(per_class):
                arr = rand_images(rng, 1, 20)[0]
                img = Image.fromarray(arr)
                if j == 1:
                    img = img.convert("L")
                img.save(root / split / cls / f"{j}.png")
                items.append((np.asarray(img.convert("RGB")), label))
        out[split] = items
    return out


@pytest.mark.parametrize("name", ["imagefolder", "imagenet"])
def test_image_folder(tmp_path, name):
    truth = write_image_tree(tmp_path)
    cfg = cfg_for(name, tmp_path)
    assert cfg.dataset.test_split == "val"
    for split in (cfg.dataset.train_split, cfg.dataset.test_split):
        ds = load_split(cfg, split)
        assert ds.classes == FOLDER_CLASSES
        assert len(ds) == len(truth[split])
        for i, (arr, label) in enumerate(truth[split]):
            img, y = ds[i]
            assert y == label
            assert img.mode == "RGB" and img.size == (20, 20)
            np.testing.assert_array_equal(np.asarray(img), arr)
    train = load_split(cfg, "train")
    if name == "imagenet":
        assert num_classes(cfg, train) == 1000  # declared by the config
        cfg = cfg_for(name, tmp_path, "dataset.num_classes=0")
    assert num_classes(cfg, train) == len(FOLDER_CLASSES)
    assert num_classes(cfg, Subset(train, [0, 1])) == len(FOLDER_CLASSES)  # counted from the classes
    assert num_classes(cfg, pretrain_dataset(cfg)) == len(FOLDER_CLASSES)


def test_image_folder_without_classes(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("imagefolder", tmp_path), "train")
    assert_one_line(exc, str(tmp_path / "train"))


# ------------------------------------------------------------------------------- Hugging Face

HF_CLASSES = ["ant", "bee", "cow", "dog"]


@pytest.fixture
def offline(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    return datasets


def write_hf(datasets, root: Path, seed: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=HF_CLASSES)})
    parts, truth = {}, {}
    for split, n in (("train", 5), ("test", 3)):
        x = rand_images(rng, n, 12)
        x[0] = x[0].mean(axis=-1, keepdims=True).astype(np.uint8)  # stored grey below
        images = [Image.fromarray(a[..., 0]).convert("L") if i == 0 else Image.fromarray(a)
                  for i, a in enumerate(x)]
        y = rng.integers(0, len(HF_CLASSES), n).tolist()
        parts[split] = datasets.Dataset.from_dict({"image": images, "label": y}, features=features)
        truth[split] = (x, y)
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return truth


def test_hf_save_to_disk(tmp_path, offline):
    root = tmp_path / "hfdata"
    truth = write_hf(offline, root)
    cfg = cfg_for("hf", root)
    for split in ("train", "test"):
        ds = load_split(cfg, split)
        x, y = truth[split]
        assert len(ds) == len(y)
        assert ds.classes == HF_CLASSES
        assert [ds[i][1] for i in range(len(ds))] == y
        for i in (0, 1):  # the grey one and a colour one
            img, _ = ds[i]
            assert img.mode == "RGB" and img.size == (12, 12)
            np.testing.assert_array_equal(np.asarray(img), x[i])
    assert num_classes(cfg, ds) == len(HF_CLASSES)


def test_hf_wrong_columns_and_split(tmp_path, offline):
    root = tmp_path / "hfdata"
    write_hf(offline, root)
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("hf", root, "dataset.label_key=fine_label"), "train")
    assert_one_line(exc, "fine_label", "columns: image, label", "dataset.label_key")
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("hf", root, "dataset.image_key=img"), "train")
    assert_one_line(exc, "'img'", "columns: image, label")
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("hf", root), "validation")
    assert_one_line(exc, "validation", str(root), "splits: train, test")


# ------------------------------------------------------------------------------- Fashion-MNIST


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_fashion_mnist_idx_fixture(tmp_path, suffix):
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), rng.integers(0, 10, 4).astype(np.uint8)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y)
    ds = load_split(cfg_for("fashion_mnist", tmp_path), "test")
    assert len(ds) == 4 and [ds[i][1] for i in range(4)] == y.tolist()
    img = ds[2][0]
    assert img.mode == "RGB" and img.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(img), np.repeat(x[2][..., None], 3, axis=-1))


@pytest.mark.skipif(not FMNIST_DIR.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files():
    cfg = cfg_for("fashion_mnist", None)
    for split, n in (("train", 60000), ("test", 10000)):
        ds = load_split(cfg, split)
        assert len(ds) == n
        # Fashion-MNIST is balanced: n / 10 images of each class.
        assert np.bincount(ds.labels, minlength=10).tolist() == [n // 10] * 10
        img, label = ds[0]
        assert img.mode == "RGB" and img.size == (28, 28) and 0 <= label < 10
        arr = np.asarray(img)
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all() and arr.max() > 0
    assert num_classes(cfg, ds) == 10 and len(ds.classes) == 10


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("fashion_mnist", tmp_path), "train")
    assert_one_line(exc, "apt-get install dataset-fashion-mnist", "dataset.root", str(tmp_path))
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("fashion_mnist", tmp_path), "val")
    assert_one_line(exc, "val", "train, test")


# ------------------------------------------------------------------------------- Missing data


@pytest.mark.parametrize("name,expect", [
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("stl10", "stl10_binary"),
    ("imagefolder", "train"), ("imagenet", "train"), ("hf", ""),
])
def test_missing_data_is_one_line(tmp_path, offline, name, expect):
    root = tmp_path / "nowhere"
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for(name, root), "train")
    assert_one_line(exc, str(root / expect) if expect else str(root), "dataset.root")


@pytest.mark.parametrize("name", ["imagefolder", "imagenet", "hf"])
def test_no_root_is_one_line(name):
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for(name, None), "train")
    assert_one_line(exc, "dataset.root")


def test_unknown_dataset_name():
    cfg = cfg_for("cifar10", None)
    cfg.dataset.name = "mnist3d"
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg, "train")
    assert_one_line(exc, "mnist3d", "cifar10", "fashion_mnist")


# ------------------------------------------------------------------------------- Multi-crop


def test_multicrop_on_fixture(tmp_path, no_md5):
    from ssl_bench.training.multicrop import MultiCropDataset, build_multicrop

    write_cifar10(tmp_path)
    cfg = cfg_for("cifar10", tmp_path)
    g, loc = cfg.crops["global"], cfg.crops["local"]
    assert (g.size, loc.size) == (32, 16) and g.n > 0 and loc.n > 0
    base = load_split(cfg, "train")
    ds = MultiCropDataset(base, build_multicrop(cfg), seed=7)
    assert len(ds) == len(base)

    torch_state = torch.random.get_rng_state()
    item = ds[3]
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # the loader's RNG is left alone
    assert set(item) >= {"crops", "index", "label"}
    assert item["index"] == 3 and item["label"] == base[3][1]
    crops = item["crops"]
    assert len(crops) == g.n + loc.n
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * g.n + [(3, 16, 16)] * loc.n
    assert all(c.dtype == torch.float32 for c in crops)

    def same(a: list, b: list) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    assert same(ds[3]["crops"], crops)  # same (seed, epoch, index): identical crops
    assert not same(ds[4]["crops"], crops)
    ds.epoch = 1
    assert not same(ds[3]["crops"], crops)
    again = MultiCropDataset(base, build_multicrop(cfg), seed=7)
    again.epoch = 1
    assert same(again[3]["crops"], ds[3]["crops"])  # a fresh wrapper (another worker) agrees
    other_seed = MultiCropDataset(base, build_multicrop(cfg), seed=8)
    assert not same(other_seed[3]["crops"], crops)
