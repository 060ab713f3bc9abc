"""ImageNet-size data: ImageNet-100 by a class list, Tiny-ImageNet's release layout, and Hugging Face streaming.

Every test writes its own small fixture (a few tiny JPEGs, a parquet file or two); nothing is downloaded and the
Hugging Face libraries are forced offline.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import assert_one_line

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.data import DataNotFound, load_split, num_classes, pretrain_dataset
from ssl_bench.data.sources import CLASS_LIST_DIR
from ssl_bench.records.identity import run_id


def cfg_for(dataset: str, root: Path | str | None, *extra: str):
    return compose([f"dataset={dataset}", "budget=smoke", f"dataset.root={root}", *extra])




def colour(k: int) -> tuple[int, int, int]:
    """A flat colour per image number: survives JPEG, so an image can be recognised after loading."""
    return (40 * (k % 6) + 20, 40 * (k // 6 % 6) + 20, 40 * (k // 36 % 6) + 20)


def save_jpeg(path: Path, k: int, size: int = 8, grey: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), colour(k))
    (img.convert("L") if grey else img).save(path, "JPEG", quality=95)


def mean_colour(img: Image.Image) -> tuple[int, ...]:
    return tuple(int(round(v)) for v in np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(0))


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 3 for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------- ImageNet-100

WNIDS = ["n01000005", "n01000001", "n01000004", "n01000002", "n01000003"]  # deliberately not sorted


def write_imagenet_tree(root: Path, wnids: list[str], per_class: dict[str, int]) -> None:
    """ImageNet's layout: <split>/<wnid>/<wnid>_<j>.JPEG; image k of the whole tree gets colour(k)."""
    k = 0
    for split, n in per_class.items():
        for w in wnids:
            for j in range(n):
                save_jpeg(root / split / w / f"{w}_{j}.JPEG", k)
                k += 1


def test_imagenet100_class_list_selects_classes_and_remaps_labels(tmp_path, monkeypatch):
    write_imagenet_tree(tmp_path, WNIDS, {"train": 2, "val": 1})
    chosen = ["n01000004", "n01000001", "n01000003"]  # file order is not label order
    listing = tmp_path / "my_classes.txt"
    listing.write_text("# three of the five\n" + "\n".join(chosen[:2]) + "\n\n" + chosen[2] + "  # last\n")
    walked: list[str] = []
    import torchvision.datasets.folder as tv_folder

    real_walk = os.walk

    def spy_walk(top, *a, **k):
        walked.append(Path(top).name)
        return real_walk(top, *a, **k)

    monkeypatch.setattr(tv_folder.os, "walk", spy_walk)
    cfg = cfg_for("imagenet100", tmp_path, f"dataset.classes={listing}")
    assert cfg.dataset.num_classes == 3  # follows the list, not the yaml's 100
    for split, per_class in (("train", 2), ("val", 1)):
        walked.clear()
        ds = load_split(cfg, split)
        assert sorted(walked) == sorted(chosen)  # the other class folders are never listed
        assert ds.classes == sorted(chosen)
        labels = [ds[i][1] for i in range(len(ds))]
        assert len(ds) == 3 * per_class and labels == sorted([0, 1, 2] * per_class)
        base = 0 if split == "train" else 2 * len(WNIDS)
        for i in range(len(ds)):
            img, y = ds[i]
            wnid, j = sorted(chosen)[y], i % per_class
            assert img.mode == "RGB" and close(mean_colour(img), colour(base + WNIDS.index(wnid) * per_class + j))
    assert num_classes(cfg, ds) == 3
    # An inline list on the plain imagenet dataset: the same selection, and num_classes follows it too.
    inline = cfg_for("imagenet", tmp_path, f"dataset.classes=[{','.join(chosen)}]")
    assert inline.dataset.num_classes == 3
    assert load_split(inline, "val").classes == sorted(chosen)


def test_imagenet100_refuses_missing_classes_in_one_line(tmp_path):
    ids = (CLASS_LIST_DIR / "imagenet100_classes.txt").read_text().split()
    present = ids[2:]
    for w in present:  # empty class folders suffice: the check runs before any file is listed
        (tmp_path / "train" / w).mkdir(parents=True)
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("imagenet100", tmp_path), "train")
    msg = assert_one_line(exc, "imagenet100", "2 of the 100", ids[0], ids[1], str(tmp_path / "train"))
    assert ids[2] not in msg
    bad = tmp_path / "bad.txt"
    bad.write_text("n01000001\nn01000001\n")
    with pytest.raises(ConfigError) as cexc:
        cfg_for("imagenet", tmp_path, f"dataset.classes={bad}")
    assert_one_line(cexc, "duplicates n01000001")
    with pytest.raises(ConfigError) as cexc:
        cfg_for("cifar10", tmp_path, "dataset.classes=[n01000001]")
    assert_one_line(cexc, "dataset.classes", "cifar10")


def test_imagenet100_committed_list_is_cmc_100_wnids(tmp_path):
    ids = (CLASS_LIST_DIR / "imagenet100_classes.txt").read_text().split()
    assert len(ids) == 100 and len(set(ids)) == 100 and all(re.fullmatch(r"n\d{8}", w) for w in ids)
    assert ids[:3] == ["n02869837", "n01749939", "n02488291"] and ids[-1] == "n02090622"  # CMC's imagenet100.txt
    for w in ids:
        save_jpeg(tmp_path / "val" / w / "a.JPEG", 0)
    (tmp_path / "val" / "n09999999").mkdir()  # a class outside the list: ignored
    cfg = cfg_for("imagenet100", tmp_path)
    assert cfg.dataset.num_classes == 100 and cfg.dataset.test_split == "val"
    ds = load_split(cfg, "val")
    assert ds.classes == sorted(ids) and [ds[i][1] for i in range(len(ds))] == list(range(100))


# ------------------------------------------------------------------------------------------- Tiny-ImageNet

TINY_WNIDS = ["n02000003", "n02000001", "n02000002"]


def write_tiny_imagenet(root: Path) -> dict:
    """The release layout: wnids.txt, train/<wnid>/images + <wnid>_boxes.txt, val/images + val_annotations.txt,
    test/images. Returns the expected (colour, label) per split, labels = index in the sorted wnids."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    order = sorted(TINY_WNIDS)
    truth: dict[str, list] = {"train": [], "val": [], "test": []}
    k = 0
    for w in order:
        for j in range(2):
            save_jpeg(root / "train" / w / "images" / f"{w}_{j}.JPEG", k, size=64, grey=(j == 1))
            truth["train"].append((colour(k), order.index(w), j == 1))
            k += 1
        (root / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t10\t10\n")
    lines = []
    for j, w in enumerate(["n02000002", "n02000003", "n02000001", "n02000002"]):
        save_jpeg(root / "val" / "images" / f"val_{j}.JPEG", k, size=64)
        lines.append(f"val_{j}.JPEG\t{w}\t1\t2\t30\t40")
        truth["val"].append((colour(k), order.index(w), False))
        k += 1
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    for j in range(2):
        save_jpeg(root / "test" / "images" / f"test_{j}.JPEG", k, size=64)
        truth["test"].append((colour(k), -1, False))
        k += 1
    return truth


def test_tiny_imagenet_release_layout_and_labels(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    truth = write_tiny_imagenet(root)
    cfg = cfg_for("tiny_imagenet", root)
    d = cfg.dataset
    assert (d.image_size, d.num_classes, d.test_split) == (64, 200, "val")
    assert cfg.crops["global"].size == 64 and cfg.crops["local"].size == 32
    for split, expect in truth.items():
        ds = load_split(cfg, split)
        assert ds.classes == sorted(TINY_WNIDS) and len(ds) == len(expect)
        for i, (rgb, label, grey) in enumerate(expect):
            img, y = ds[i]
            assert y == label and img.mode == "RGB" and img.size == (64, 64)
            want = (round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]),) * 3 if grey else rgb
            assert close(mean_colour(img), want), (split, i)
    assert [y for _, y in (load_split(cfg, "val")[i] for i in range(4))] == [1, 2, 0, 1]  # from the annotations
    # A class subset of Tiny-ImageNet, relabelled 0..K-1.
    sub = cfg_for("tiny_imagenet", root, "dataset.classes=[n02000003,n02000001]")
    val = load_split(sub, "val")
    assert sub.dataset.num_classes == 2 and val.classes == ["n02000001", "n02000003"]
    assert [val[i][1] for i in range(len(val))] == [1, 0]


def test_tiny_imagenet_missing_is_one_line(tmp_path):
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("tiny_imagenet", tmp_path / "nowhere"), "train")
    assert_one_line(exc, str(tmp_path / "nowhere" / "wnids.txt"), "dataset.root", "tiny-imagenet-200.zip")
    write_tiny_imagenet(tmp_path / "t")
    with pytest.raises(DataNotFound) as exc:
        load_split(cfg_for("tiny_imagenet", tmp_path / "t"), "validation")
    assert_one_line(exc, "validation", "train, val, test")


# ------------------------------------------------------------------------------------------- streaming


@pytest.fixture
def hf(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    # The evaluation splits are still loaded map-style: keep their Arrow cache in the test's folder.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    # datasets waits 5 s for pyarrow's reader threads each time a parquet stream is closed (apache/arrow#45214);
    # these tests close a stream dozens of times, on files of a few kB.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.05)
    datasets.disable_progress_bars()
    return datasets


def write_parquet(datasets, root: Path, n_train: int = 48, n_test: int = 16, train_files: int = 2,
                  class_label: bool = True) -> None:
    """<split>-<i>-of-<n>.parquet files (the hub's naming); train image u is flat grey u, its label u % 4 (or u
    itself with class_label=False, to tell the examples apart)."""
    root.mkdir(parents=True)
    label = datasets.ClassLabel(names=["a", "b", "c", "d"]) if class_label else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label})
    for split, n, files in (("train", n_train, train_files), ("test", n_test, 1)):
        uids = np.array_split(np.arange(n), files)
        for f, part in enumerate(uids):
            images = [Image.new("RGB", (16, 16), (int(u), int(u), int(u))) for u in part]
            labels = [int(u) % 4 if class_label else int(u) for u in part]
            ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
            ds.to_parquet(str(root / f"{split}-{f:05d}-of-{files:05d}.parquet"))


def stream_cfg(root: Path, *extra: str):
    return compose(["budget=smoke", "dataset=hf", f"dataset.root={root}", "dataset.streaming=true",
                    "dataset.num_examples=48", "data.train_subset=0", "dataset.shuffle_buffer=8", *extra])


@pytest.mark.parametrize("train_files", [2, 3])  # whole files per process; every 2nd example of 3 files
def test_stream_processes_read_disjoint_parts_with_unique_indices(tmp_path, hf, train_files):
    from ssl_bench.data.streaming import HFStream

    root = tmp_path / "pq"
    write_parquet(hf, root, train_files=train_files, class_label=False)
    cfg = stream_cfg(root)
    one = pretrain_dataset(cfg)
    assert len(one) == 48 and one.max_workers == train_files
    full = list(itertools.islice(iter(one), 48))
    assert sorted(i for i, _, _ in full) == list(range(48)) and sorted(y for _, _, y in full) == list(range(48))
    # Each image is the one its label says (image u is grey u).
    assert all(np.asarray(img)[0, 0, 0] == y for _, img, y in full)

    base = hf.load_dataset(str(root), split="train", streaming=True)
    # 3 files for 2 processes: each reads all and keeps every 2nd example, which costs twice the reads: said.
    with pytest.warns(UserWarning, match="do not divide") if train_files % 2 else contextlib.nullcontext():
        parts = [HFStream(base, 48, "image", "label", seed=0, buffer_size=8, process_index=r, num_processes=2)
                 for r in range(2)]
    steps, local_batch = 48 // 16, 16 // 2
    seen = []
    for r, part in enumerate(parts):
        # Enough for the epoch's steps on every process (a part that is short is read again).
        items = list(itertools.islice(iter(part), steps * local_batch))
        assert len(items) == steps * local_batch
        assert all(i % 2 == r for i, _, _ in items)  # indices never collide across processes
        seen.append({y for _, _, y in items})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(48))  # different data, all of it


def test_stream_order_is_seeded_by_epoch_and_crops_by_index(tmp_path, hf):
    from ssl_bench.data.streaming import StreamedItems
    from ssl_bench.training.multicrop import MultiCropDataset, build_multicrop

    root = tmp_path / "pq"
    write_parquet(hf, root)
    cfg = stream_cfg(root, "crops.global.size=16", "crops.local.size=8")

    def labels(epoch: int, seed: int = 0) -> list[int]:
        s = pretrain_dataset(stream_cfg(root, f"seed={seed}"))
        s.epoch = epoch
        return [int(np.asarray(img)[0, 0, 0]) for _, img, _ in itertools.islice(iter(s), 48)]

    assert labels(0) == labels(0) and sorted(labels(0)) == list(range(48))
    assert labels(1) != labels(0) and labels(0, seed=1) != labels(0)
    stream = pretrain_dataset(cfg)
    items = MultiCropDataset(stream, build_multicrop(cfg), seed=7)
    items.epoch = 3
    got = list(itertools.islice(iter(StreamedItems(items)), 5))
    triples = list(itertools.islice(iter(stream), 5))  # the stream itself, at epoch 3 (set by StreamedItems)

    class Fixed(torch.utils.data.Dataset):  # map-style data holding the same images at the same indices
        def __len__(self) -> int:
            return 48

        def __getitem__(self, i: int):
            return next((img, y) for j, img, y in triples if j == i)

    ref = MultiCropDataset(Fixed(), build_multicrop(cfg), seed=7)
    ref.epoch = 3
    for item, (index, _, label) in zip(got, triples, strict=True):
        assert item["index"] == index and item["label"] == label
        assert all(torch.equal(a, b) for a, b in zip(item["crops"], ref[index]["crops"], strict=True))


def test_streaming_smoke_run_completes(tmp_path, hf):
    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records import io as results

    root = tmp_path / "pq"
    write_parquet(hf, root)
    cfg = stream_cfg(root, f"output_dir={tmp_path / 'runs'}", "train.epochs=1", "crops.global.size=16",
                     "crops.local.size=8", "eval.random_baseline=false")
    summary = run_experiment(cfg)
    assert summary["status"] == "complete" and summary["dataset"] == "hf"
    assert summary["cost"]["images_seen"] == 48  # 48 // 16 = 3 steps of the global batch
    rows = results.read_metrics(tmp_path / "runs" / run_id(cfg))
    assert [r["step"] for r in rows] == [3] and np.isfinite(rows[0]["loss"])
    assert 0 <= summary["metrics"]["knn_top1"] <= 100


def test_streaming_resume_mid_epoch_matches_uninterrupted_run(tmp_path, hf, sigterm_at_step):
    """Two loader workers and an interruption after an odd number of batches: the stream skips whole rounds,
    the loop drops the rest of a round, and the resumed run ends with the uninterrupted run's weights."""
    from safetensors.torch import load_file

    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.training.loop import TrainingStopped

    root = tmp_path / "pq"
    write_parquet(hf, root)
    extra = ["data.batch_size=8", "data.num_workers=2", "dataset.image_size=16", "crops.global.size=16",
             "crops.local.size=8", "eval.random_baseline=false", "eval.monitor_train_subset=0"]
    full = stream_cfg(root, f"output_dir={tmp_path / 'full'}", *extra)
    run_experiment(full)
    disarm = sigterm_at_step(7)  # epoch 2, batch 3 of 4
    cut = stream_cfg(root, f"output_dir={tmp_path / 'cut'}", *extra)
    with pytest.raises(TrainingStopped):
        run_experiment(cut)
    run = tmp_path / "cut" / run_id(cut)
    assert json.loads((run / "checkpoint" / "loop.json").read_text())["batch"] == 3
    disarm()
    run_experiment(stream_cfg(root, f"output_dir={tmp_path / 'cut'}", *extra, "resume=true"))
    a = load_file(str(run / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "full" / run_id(full) / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra, needle", [
    (["method=deepclusterv2"], "method deepclusterv2 needs every pretraining image by index"),
    (["method=selav2"], "method selav2 needs every pretraining image by index"),
    (["dataset.pretrain_splits=[train,test]"], "one pretraining split"),
])
def test_streaming_refusals_are_one_line(tmp_path, extra, needle):
    with pytest.raises(ConfigError) as exc:
        stream_cfg(tmp_path, *extra)
    assert_one_line(exc, needle)
    with pytest.raises(ConfigError) as exc:
        compose(["budget=smoke", "dataset=cifar10", "dataset.streaming=true"])
    assert_one_line(exc, "dataset=hf")


def test_streaming_unknown_size_is_one_line(tmp_path, hf):
    root = tmp_path / "pq"
    write_parquet(hf, root)
    with pytest.raises(DataNotFound) as exc:
        pretrain_dataset(stream_cfg(root, "dataset.num_examples=0"))
    assert_one_line(exc, "dataset.num_examples=N", str(root))
    with pytest.raises(DataNotFound) as exc:
        pretrain_dataset(stream_cfg(tmp_path / "nowhere"))
    assert_one_line(exc, str(tmp_path / "nowhere"), "could not be streamed")


def test_new_dataset_keys_at_defaults_leave_run_ids_alone():
    """The keys added here change nothing at their defaults, so runs recorded before them keep their ids."""
    from omegaconf import OmegaConf

    from ssl_bench.records.identity import configuration_id as fingerprint

    cfg = compose(["method=swav", "dataset=fashion_mnist", "budget=demo"])
    data = OmegaConf.to_container(cfg)
    for key in ("classes", "streaming", "shuffle_buffer", "num_examples"):
        del data["dataset"][key]
    assert fingerprint(cfg) == fingerprint(OmegaConf.create(data))
    assert fingerprint(compose(["method=swav", "dataset=hf", "budget=demo", "dataset.root=x",
                                "dataset.streaming=true"])) != fingerprint(
        compose(["method=swav", "dataset=hf", "budget=demo", "dataset.root=x"]))
