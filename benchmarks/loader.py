"""Loader benchmark: how many CPU cores does ImageNet multi-crop (2 x 224 + 6 x 96) need to feed one GPU?

Writes its own ImageNet-like JPEGs (random smooth content plus grain, about 500 x 375, quality 90, about
90 KB each, like ImageNet's average file) into a temporary folder, reads them through the real data path
(``dataset=imagefolder``), and measures images/s of each loader pipeline with 1 worker and with N workers:

- decode only: PIL open + convert to RGB (the baseline every pipeline pays; the ratios are against it);
- pil backend: the whole augmentation per image in the worker (lightly's transforms), float32 crops out;
- hybrid backend, worker half: decode + RandomResizedCrop to the 8 crop sizes, uint8 crops out;
- hybrid backend, device half (flip, colour jitter, grey-scale, blur, normalisation of a batch), timed on
  the training device: CUDA when there is one, else this CPU with ``--threads`` threads;
- device_decode backend, worker half (read the file's bytes and the size from its header) and device half
  (decode, crop, colour a batch), timed as the hybrid's halves.

It prints images/s per core, the ratio hybrid / pil, and the cores needed to feed one GPU that trains at
``--gpu-images-per-s``. That rate is an assumption, not a measurement: the default 800 is a ResNet-50 in
mixed precision on one A100-class GPU (about 2,500 images/s at 224 px, and 2 x 224 + 6 x 96 costs about
3.1 times a 224 px image); pass your own.

    .venv/bin/python -m benchmarks.loader                       # ~1 min on 2 CPU cores
    .venv/bin/python -m benchmarks.loader --images 400 --workers 8 --gpu-images-per-s 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.benchmark import cpu_name, load  # noqa: E402
from ssl_bench.config.compose import compose  # noqa: E402
from ssl_bench.data import pretrain_dataset  # noqa: E402
from ssl_bench.training.multicrop import (  # noqa: E402
    DecodeMultiCrop,
    EncodedImageDataset,
    HybridCropDataset,
    HybridMultiCrop,
    MultiCropDataset,
    build_multicrop,
)


def write_jpegs(root: Path, n: int, seed: int = 0, long: int = 500) -> float:
    """n JPEGs in root/train/<class>/; returns their mean size in KB. Smooth random colour fields with
    grain: compressed and decoded like photographs (pure noise would decode ~2x slower than ImageNet).
    ``long`` is the long side (short side 2/3 to 3/4 of it, ImageNet's typical 500 x 333..375)."""
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        folder = root / "train" / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        short = int(rng.integers(long * 2 // 3, long * 3 // 4 + 1))
        w, h = (long, short) if rng.random() < 0.8 else (short, long)  # mostly landscape, as ImageNet
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 10, (h, w, 3)).astype(np.int16)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray((smooth + grain).clip(0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total / n / 1024


class DecodeOnly(Dataset):
    """The baseline: the image folder's own loading (PIL open + convert("RGB"), which decodes)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> int:
        self.base[index]
        return index


def loader_rate(ds: Dataset, workers: int, batch_size: int) -> float:
    """Images/s of a DataLoader over ds. The clock starts once every worker has delivered its first batch,
    so process start-up (tens of ms, paid once per epoch) does not count."""
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=default_collate)
    n, t0, seen = 0, 0.0, 0
    for batch in loader:
        seen += 1
        if seen == max(1, workers):
            t0 = time.perf_counter()
        elif seen > workers:
            n += len(batch["index"]) if isinstance(batch, dict) else len(batch)
    return n / max(1e-9, time.perf_counter() - t0)


def device_rate(ds: Dataset, aug: Callable[[dict], dict], device: torch.device, batch_size: int,
                reps: int) -> float:
    """Images/s of a backend's device half (hybrid, device_decode) on a batch already on the device."""
    from accelerate.utils import send_to_device

    batch = send_to_device(default_collate([ds[i % len(ds)] for i in range(batch_size)]), device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    aug(batch)  # warm-up (kernels, allocator)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        aug(batch)
    sync()
    return batch_size * reps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p.add_argument("--images", type=int, default=200, help="synthetic JPEGs to write and read")
    p.add_argument("--workers", type=int, default=cores, help="N, the loader workers of the parallel run")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the device half when it runs on CPU")
    p.add_argument("--batch-size", type=int, default=8, help="loader batch")
    p.add_argument("--device-batch", type=int, default=32, help="batch of the device half")
    p.add_argument("--repeats", type=int, default=3, help="passes per measurement, interleaved; the best counts")
    p.add_argument("--gpu-images-per-s", type=float, default=800.0,
                   help="images/s one GPU trains at (an assumption; default: ResNet-50, A100-class, AMP)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = args.gpu_images_per_s
    print(f"machine: {cpu_name()}, {cores} cores usable; torch {torch.__version__}, PIL {Image.__version__}, "
          f"python {platform.python_version()}; device half on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {args.threads} thread(s)"))
    print(f"load average at start: {load()}")
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        kb = write_jpegs(Path(tmp), args.images)
        cfg = compose(["budget=imagenet_400ep", "dataset=imagefolder", f"dataset.root={tmp}", "data.train_subset=0"])
        base = pretrain_dataset(cfg)
        shapes = " + ".join(f"{s.n} x {s.size}" for s in (cfg.crops["global"], cfg.crops["local"]) if s.n)
        print(f"{len(base)} synthetic JPEGs, ~500 x 375, {kb:.0f} KB each; crops {shapes}; loader batch "
              f"{args.batch_size}; workers 1 and {args.workers}; best of {args.repeats} passes; GPU rate "
              f"{gpu:.0f} images/s (assumed)")
        pipelines = {
            "decode only (PIL open + RGB)": DecodeOnly(base),
            "pil backend (all in worker)": MultiCropDataset(base, build_multicrop(cfg), cfg.seed),
            "hybrid, worker half (crops)": HybridCropDataset(base, cfg),
            "device_decode, worker half (bytes)": EncodedImageDataset(base, cfg),
        }
        counts = sorted({1, args.workers})
        hybrid_ds = pipelines["hybrid, worker half (crops)"]
        assert isinstance(hybrid_ds, HybridCropDataset)
        # Repeats interleaved, best pass kept: other processes on the machine only ever slow a pass down.
        rates = {name: dict.fromkeys(counts, 0.0) for name in pipelines}
        decode_ds = pipelines["device_decode, worker half (bytes)"]
        dev, dev_decode = 0.0, 0.0
        for _ in range(args.repeats):
            for name, ds in pipelines.items():
                for w in counts:
                    rates[name][w] = max(rates[name][w], loader_rate(ds, w, args.batch_size))
            reps = 20 if device.type == "cuda" else 2
            dev = max(dev, device_rate(hybrid_ds, HybridMultiCrop(cfg), device, args.device_batch, reps))
            dev_decode = max(dev_decode, device_rate(decode_ds, DecodeMultiCrop(cfg), device, args.device_batch, reps))
        u8 = sum(g.numel() for g in hybrid_ds[0]["crops_u8"])
        encoded = statistics.mean(len(decode_ds[i]["encoded"]) for i in range(len(decode_ds)))
    n_par = args.workers
    per_core = {name: {w: r / min(w, cores) for w, r in rs.items()} for name, rs in rates.items()}
    decode_pc = per_core["decode only (PIL open + RGB)"][1]
    rows = [("pipeline", "1 worker", f"{n_par} workers", f"per core ({n_par})", "cost x decode",
             f"cores / GPU @ {gpu:.0f}")]
    for name in pipelines:
        one, par, pc = rates[name][1], rates[name][n_par], per_core[name][n_par]
        rows.append((name, f"{one:.1f} img/s", f"{par:.1f} img/s", f"{pc:.1f} img/s", f"{decode_pc / one:.2f}",
                     f"{gpu / one:.1f}"))
    for what, rate in (("hybrid", dev), ("device_decode", dev_decode)):
        if device.type == "cuda":
            rows.append((f"{what}, device half ({device.type})", f"{rate:.0f} img/s", "", "", "",
                         f"{100 * gpu / rate:.1f}% of the GPU"))
        else:
            pc = rate / args.threads
            rows.append((f"{what}, device half (cpu, {args.threads} thr)", f"{rate:.1f} img/s", "",
                         f"{pc:.1f} img/s", f"{decode_pc / pc:.2f}", "(on the GPU there)"))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
    pil1, hyb1 = rates["pil backend (all in worker)"][1], rates["hybrid, worker half (crops)"][1]
    pilN, hybN = per_core["pil backend (all in worker)"][n_par], per_core["hybrid, worker half (crops)"][n_par]
    print(f"\nhybrid / pil, worker images/s per core: {hyb1 / pil1:.2f}x with 1 worker, {hybN / pilN:.2f}x with "
          f"{n_par} workers")
    dec1 = rates["device_decode, worker half (bytes)"][1]
    print(f"cores to feed one GPU at {gpu:.0f} images/s (1-worker rate per core): pil {gpu / pil1:.1f}, "
          f"hybrid {gpu / hyb1:.1f}, device_decode {gpu / dec1:.2f} (+ the device half on the GPU); x 8 GPUs: "
          f"pil {8 * gpu / pil1:.0f}, hybrid {8 * gpu / hyb1:.0f}, device_decode {8 * gpu / dec1:.1f}")
    print(f"bytes per image from worker to device: pil {4 * u8 / 1e6:.2f} MB (float32 crops), hybrid "
          f"{u8 / 1e6:.2f} MB (uint8 crops), device_decode {encoded / 1e6:.3f} MB (the file, mean)")
    if device.type == "cpu":
        both = 1 / (1 / hyb1 + 1 / (dev / args.threads))
        print(f"on a CPU-only run the hybrid costs worker + device half = {both:.1f} images/s per core vs pil "
              f"{pil1:.1f}, and its device half runs in the training process, not in parallel workers: "
              f"augment.backend=auto picks pil there")
    print(f"\nload average at end: {load()}; benchmark took {time.time() - t_start:.0f} s")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > cores:
        print("note: other processes were competing for the cores, so the N-worker figures are pessimistic; "
              "the 1-worker figures are the steadier per-core rates.")


if __name__ == "__main__":
    main()
