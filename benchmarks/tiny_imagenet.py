"""A tiny ImageNet-shaped image folder, for trying ImageNet commands where ImageNet is not (the SLURM tutorial,
docs/tutorials/compare-on-a-slurm-cluster.md, runs on it): ImageNet's layout, train/<wnid>/<wnid>_<j>.JPEG and
val/<wnid>/ILSVRC2012_val_<k>.JPEG, with made-up wnids and small JPEGs of ImageNet's shape (landscape, about 4:3).
Each class is a faint tint and a disc in a place of its own, under noise: learnable, not given away.

    python -m benchmarks.tiny_imagenet data/tiny-imagenet [--classes 10] [--train 16] [--val 4] [--size 64]

Then ``dataset=imagenet dataset.root=data/tiny-imagenet`` reads it as ImageNet (its 1000 declared classes stay: the
probe's extra outputs are never a label). Deterministic: the same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def wnid(k: int) -> str:
    return f"n{9_000_000 + k:08d}"


def image(rng: np.random.Generator, k: int, classes: int, size: int) -> Image.Image:
    """Class k: a faint tint of its own and a small disc in a corner of its own, both under strong noise and a random
    background, so neither a random network nor a few steps tell the classes apart for sure."""
    w, h = size, size * 3 // 4
    tint = 25 * np.array([np.cos(2 * np.pi * (k / classes + c / 3)) for c in range(3)])
    pixels = (rng.integers(40, 216, 3) + tint + rng.normal(0, 45, (h, w, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    cx = w * (0.2 + 0.6 * (k % 4) / 3 + 0.1 * rng.standard_normal())
    cy = h * (0.2 + 0.6 * (k // 4 % 3) / 2 + 0.1 * rng.standard_normal())
    r = size * (0.08 + 0.04 * rng.random())
    ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def write(root: Path, classes: int = 10, train: int = 16, val: int = 4, size: int = 64, seed: int = 0) -> int:
    """Write the folder; returns the number of images."""
    rng = np.random.default_rng(seed)
    n = 0
    for k in range(classes):
        for split, count in (("train", train), ("val", val)):
            folder = root / split / wnid(k)
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                name = f"{wnid(k)}_{j}.JPEG" if split == "train" else f"ILSVRC2012_val_{k * val + j + 1:08d}.JPEG"
                image(rng, k, classes, size).save(folder / name, "JPEG", quality=90)
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train", type=int, default=16, help="training images per class")
    p.add_argument("--val", type=int, default=4, help="validation images per class")
    p.add_argument("--size", type=int, default=64, help="the long side in pixels")
    a = p.parse_args(argv)
    n = write(a.root, a.classes, a.train, a.val, a.size)
    print(f"wrote {n} JPEGs to {a.root}: {a.classes} classes x ({a.train} train + {a.val} val), "
          f"{a.size} x {a.size * 3 // 4} pixels, ImageNet's layout (train/<wnid>/, val/<wnid>/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
