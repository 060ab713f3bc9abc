"""Loaders for each dataset: each returns a Dataset of (PIL RGB image, int label; -1 when unlabeled)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from ssl_bench.config.classes import CLASS_LISTS, read_class_list  # noqa: F401  (re-exported: the data layer's names)
from ssl_bench.config.searchpath import EXPERIMENTS_DIR
from ssl_bench.errors import DataNotFound

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class ArrayDataset(Dataset):
    """uint8 images [N, H, W] or [N, H, W, 3] held in memory, with integer labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str] | None = None) -> None:
        self.images, self.labels = images, labels.astype(np.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        img = Image.fromarray(self.images[i])
        return (img if img.mode == "RGB" else img.convert("RGB")), int(self.labels[i])


class RGB(Dataset):
    """Converts the images of a torchvision-style dataset to RGB (grey or palette images)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        img, label = self.base[i]
        return (img if img.mode == "RGB" else img.convert("RGB")), int(label)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not. We read it ourselves: torchvision's reader wants the
    unpacked files under its own folder layout, while the Debian package ships the .gz files as released."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


def fashion_mnist(d: DictConfig, split: str) -> Dataset:
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataNotFound(f"fashion_mnist has no split '{split}'; valid: train, test")
    candidates = [Path(d.root)] if d.root else [Path(p) for p in FASHION_MNIST_DIRS]
    for root in candidates:
        for suffix in (".gz", ""):
            img = root / f"{prefix}-images-idx3-ubyte{suffix}"
            lab = root / f"{prefix}-labels-idx1-ubyte{suffix}"
            if img.exists() and lab.exists():
                return ArrayDataset(read_idx(img), read_idx(lab), FMNIST_CLASSES)
    if d.download:
        from torchvision.datasets import FashionMNIST

        root = Path(d.root or Path.home() / ".cache" / "ssl_bench")
        try:
            return RGB(FashionMNIST(str(root), train=split == "train", download=True))
        except Exception as exc:  # no network: say so in one line
            raise DataNotFound(f"fashion_mnist: download to {root} failed ({exc})") from exc
    where = " or ".join(str(c) for c in candidates)
    raise DataNotFound(
        f"fashion_mnist not found in {where}: install it with 'apt-get install dataset-fashion-mnist', "
        f"or set dataset.root=DIR holding {prefix}-images-idx3-ubyte.gz, or dataset.download=true"
    )


def _torchvision(cls_name: str, folder: str, url_hint: str, split_arg: Callable[[str], dict]) -> Callable:
    def load(d: DictConfig, split: str) -> Dataset:
        import torchvision.datasets as tvd

        root = Path(d.root or f"data/{d.name}")
        kwargs = split_arg(split)
        if not d.download and not (root / folder).exists():
            raise DataNotFound(
                f"{d.name} not found: expected {root / folder} (set dataset.root=DIR); get it from "
                f"{url_hint} or pass dataset.download=true on a machine with internet"
            )
        try:
            return RGB(getattr(tvd, cls_name)(str(root), download=d.download, **kwargs))
        except (RuntimeError, OSError) as exc:  # bad md5, truncated file, or a download with no network
            msg = f"{d.name} at {root / folder} is incomplete or corrupted ({_first_line(exc)})"
            raise DataNotFound(f"{msg}; set dataset.root=DIR holding the release files") from exc

    return load


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _train_flag(split: str) -> dict:
    if split not in ("train", "test"):
        raise DataNotFound(f"no split '{split}'; valid: train, test")
    return {"train": split == "train"}


def _stl_split(split: str) -> dict:
    valid = ("train", "test", "unlabeled", "train+unlabeled")
    if split not in valid:
        raise DataNotFound(f"stl10 has no split '{split}'; valid: {', '.join(valid)}")
    return {"split": split}


CLASS_LIST_DIR = EXPERIMENTS_DIR / "dataset"  # the shipped class lists


def _class_index(d: DictConfig, available: Callable[[str], bool], where: str) -> tuple[list[str], dict[str, int]]:
    """The classes selected by ``dataset.classes`` (sorted: labels 0..K-1 in name order, as ImageFolder
    numbers a full tree); every one must be present, else one line naming the missing ones."""
    names = sorted(read_class_list(d.classes))
    missing = [n for n in names if not available(n)]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise DataNotFound(f"{d.name}: {len(missing)} of the {len(names)} classes of dataset.classes are not in "
                           f"{where}: {shown}")
    return names, {n: i for i, n in enumerate(names)}


class SelectedImageFolder(ImageFolder):
    """An ImageFolder over the listed class folders only: find_classes is overridden, so make_dataset walks those
    folders alone (ImageNet-100 lists the files of 100 of the 1000 folders, never the other 900's)."""

    def __init__(self, root: str, d: DictConfig) -> None:
        self._d = d  # read by find_classes, which ImageFolder.__init__ calls
        super().__init__(root)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return _class_index(self._d, lambda n: (Path(directory) / n).is_dir(), str(directory))


def image_folder(d: DictConfig, split: str) -> Dataset:
    if not d.root:
        raise DataNotFound(f"{d.name} needs dataset.root=DIR with {split}/<class>/<image> inside")
    path = Path(d.root) / split
    layout = f"expected dataset.root=DIR with {split}/<class>/<image>"
    if not path.is_dir():
        raise DataNotFound(f"{d.name}: no folder {path}; {layout}")
    try:
        return RGB(SelectedImageFolder(str(path), d) if d.classes is not None else ImageFolder(str(path)))
    except DataNotFound:
        raise
    except FileNotFoundError as exc:  # no class folders, or no images in them
        raise DataNotFound(f"{d.name}: {_first_line(exc)} ({layout})") from exc


class FileListDataset(Dataset):
    """Images read from a list of (path, label) pairs, as RGB."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str]) -> None:
        self.samples, self.classes = samples, classes
        self.targets = [label for _, label in samples]  # read by evaluation (dataset_labels) without decoding

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:  # Tiny-ImageNet has some grey images among the RGB ones
            return img.convert("RGB"), label


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def tiny_imagenet(d: DictConfig, split: str) -> Dataset:
    """Tiny-ImageNet-200 as released: wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG labelled by
    val/val_annotations.txt (file, wnid, box), test/images/*.JPEG without labels (-1). Labels are the
    indices of the sorted wnids (ImageFolder's order); dataset.classes keeps a subset."""
    if split not in ("train", "val", "test"):
        raise DataNotFound(f"tiny_imagenet has no split '{split}'; valid: train, val, test")
    root = Path(d.root or "data/tiny-imagenet-200")
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise DataNotFound(f"tiny_imagenet not found: expected {wnids_file} (set dataset.root=DIR holding the "
                           f"unpacked release, tiny-imagenet-200/); get it from {TINY_IMAGENET_URL}")
    released = {w.strip() for w in wnids_file.read_text().split() if w.strip()}
    if d.classes is not None:
        classes, index = _class_index(d, released.__contains__, str(wnids_file))
    else:
        classes = sorted(released)
        index = {w: i for i, w in enumerate(classes)}
    folder = root / split
    if not folder.is_dir():
        raise DataNotFound(f"tiny_imagenet: no folder {folder}; set dataset.root=DIR holding the unpacked release")
    samples: list[tuple[Path, int]] = []
    if split == "train":
        for w in classes:
            samples += [(p, index[w]) for p in sorted((folder / w / "images").glob("*.JPEG"))]
    elif split == "val":
        ann = folder / "val_annotations.txt"
        if not ann.is_file():
            raise DataNotFound(f"tiny_imagenet: no {ann} (the val labels); set dataset.root=DIR holding the release")
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in index:
                samples.append((folder / "images" / parts[0], index[parts[1]]))
        samples.sort()
    else:
        samples = [(p, -1) for p in sorted((folder / "images").glob("*.JPEG"))]
    if not samples:
        raise DataNotFound(f"tiny_imagenet: no images for split '{split}' under {folder}")
    return FileListDataset(samples, classes)


class HFDataset(Dataset):
    def __init__(self, ds, image_key: str, label_key: str) -> None:
        self.ds, self.image_key, self.label_key = ds, image_key, label_key
        feat = ds.features.get(label_key)
        self.classes = getattr(feat, "names", None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        row = self.ds[int(i)]
        img = row[self.image_key]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        label = row.get(self.label_key, -1)
        return (img if img.mode == "RGB" else img.convert("RGB")), int(-1 if label is None else label)


def hugging_face(d: DictConfig, split: str) -> Dataset:
    import datasets

    where = "dataset.root=<hub name or local path>"
    if not d.root:
        raise DataNotFound(f"hf needs {where} of a dataset with image and label columns")
    try:
        if os.path.isdir(d.root) and any((Path(d.root) / f).exists() for f in ("dataset_dict.json",
                                                                                 "state.json")):
            ds = datasets.load_from_disk(d.root)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataNotFound(f"hf dataset '{d.root}' has no split '{split}'; splits: "
                                       f"{', '.join(ds)} (set dataset.train_split / dataset.test_split)")
                ds = ds[split]
            elif split != d.train_split:  # one unsplit Dataset: never evaluate on the training images
                raise DataNotFound(f"hf dataset '{d.root}' is a single unsplit Dataset: it serves as "
                                   f"'{d.train_split}' only; save a DatasetDict with a '{split}' split")
        else:
            ds = datasets.load_dataset(d.root, split=split)
    except DataNotFound:
        raise
    except Exception as exc:  # hub unreachable, wrong name, unknown split, ...: one line
        raise DataNotFound(f"hf dataset '{d.root}' (split {split}) could not be loaded: {_first_line(exc)} "
                           f"(offline, {where} must be a local copy, e.g. from save_to_disk)") from exc
    for key in (d.image_key, d.label_key):
        if key not in ds.column_names:
            raise DataNotFound(f"hf dataset '{d.root}' has no column '{key}'; columns: "
                               f"{', '.join(ds.column_names)} (set dataset.image_key / dataset.label_key)")
    return HFDataset(ds, d.image_key, d.label_key)


SOURCES: dict[str, Callable[[DictConfig, str], Dataset]] = {
    "fashion_mnist": fashion_mnist,
    "cifar10": _torchvision("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar.html",
                            _train_flag),
    "cifar100": _torchvision("CIFAR100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar.html",
                             _train_flag),
    "stl10": _torchvision("STL10", "stl10_binary", "https://cs.stanford.edu/~acoates/stl10/", _stl_split),
    "imagenet": image_folder,
    "imagenet100": image_folder,
    "imagefolder": image_folder,
    "tiny_imagenet": tiny_imagenet,
    "hf": hugging_face,
}
