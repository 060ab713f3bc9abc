"""The prepared GPU check (issue 15): one script, one GPU, under 8 minutes, a markdown table and a JSON file.

1. methods:  every registered method for a few steps on the device in bf16 (loss finite, record written);
2. sinkhorn: ssl_bench.ops.sinkhorn vs lightly's on 4096 x 3000 scores, 3 iterations (time, same codes);
3. swav:     SwAV ResNet-50, 2 x 224 + 6 x 96, images/s and peak memory at 64 and 128 images per GPU, eager
             vs channels-last vs compiled, on a pre-built batch (no loader);
4. loader:   the loader alone (16 workers, the device half included) on synthetic ImageNet-size JPEGs the
             script writes, for the pil, hybrid and device_decode backends;
5. fed:      the same SwAV step fed by each of those loaders (Trainer.train_step on real batches).

    bash benchmarks/device_check.sh                   # on one GPU
    bash benchmarks/device_check.sh --cpu             # the same steps, tiny, on the CPU (about a minute)
    python -m benchmarks.device_check --only sinkhorn,swav --budget-s 120

Results go to $OUT (when set) else --out (results/device_check): device_check.md and device_check.json,
rewritten after every measurement, so a run stopped at its time limit still leaves what it measured.
Measurements that would not fit in --budget-s are skipped and listed as such; the slowest (compiling) come last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from accelerate.utils import send_to_device  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from benchmarks.benchmark import _Indices, bench_sinkhorn, cpu_name, synthetic_batch  # noqa: E402
from benchmarks.loader import write_jpegs  # noqa: E402
from ssl_bench.config.compose import compose  # noqa: E402
from ssl_bench.data import pretrain_dataset  # noqa: E402
from ssl_bench.pipeline.experiment import build_model, make_accelerator  # noqa: E402
from ssl_bench.training.loop import Trainer, peak_memory_mb  # noqa: E402
from ssl_bench.training.multicrop import build_pretrain_set  # noqa: E402

SECTIONS = ("methods", "sinkhorn", "swav", "loader", "fed")
BACKENDS = ("pil", "hybrid", "device_decode")


@dataclass
class Sizes:
    """How big each measurement is: the GPU check, or its tiny CPU twin (same code, same steps)."""

    device: str
    jpegs: int  # synthetic training JPEGs (the loaders cycle over them)
    val_jpegs: int
    jpeg_long: int  # long side in pixels (ImageNet's average image is about 500 x 375)
    workers: int
    method_over: list[str]  # the methods' few steps: smoke budget, these sizes
    swav_over: list[str]  # the SwAV recipe at the measured sizes
    swav_batches: tuple[int, ...]
    swav_warmup: int
    swav_steps: int
    compile_backend: str
    loader_seconds: float
    fed_warmup: int
    fed_steps: int
    sinkhorn: tuple[int, int]
    sinkhorn_repeats: int
    budget_s: float
    # Seconds a compiled SwAV measurement is assumed to need (compiling both crop sizes, forward and backward).
    compile_estimate_s: float = 180.0


def sizes(cpu: bool) -> Sizes:
    if not cpu:
        return Sizes(
            device="cuda", jpegs=1536, val_jpegs=64, jpeg_long=500, workers=16,
            method_over=["crops.global.size=96", "crops.local.size=48", "data.num_workers=4"],
            swav_over=[], swav_batches=(64, 128), swav_warmup=3, swav_steps=10, compile_backend="inductor",
            loader_seconds=8.0, fed_warmup=3, fed_steps=15, sinkhorn=(4096, 3000), sinkhorn_repeats=15,
            budget_s=420.0)  # + imports and writing the JPEGs: under 8 minutes
    tiny = ["backbone=small_cnn", "backbone.width=4", "head.hidden_dim=16", "head.out_dim=8",
            "method.num_prototypes=12", "crops.global.size=32", "crops.local.size=16", "crops.local.n=2"]
    return Sizes(
        device="cpu", jpegs=32, val_jpegs=8, jpeg_long=64, workers=2,
        method_over=["crops.global.size=32", "crops.local.size=16", "data.num_workers=0", "train.num_threads=1"],
        # aot_eager: the same torch.compile capture of both graphs without generating kernels (inductor needs
        # minutes on two cores; tests/test_speed.py checks it).
        swav_over=tiny, swav_batches=(4, 8), swav_warmup=1, swav_steps=2, compile_backend="aot_eager",
        loader_seconds=1.0, fed_warmup=1, fed_steps=2, sinkhorn=(256, 100), sinkhorn_repeats=3, budget_s=240.0,
        compile_estimate_s=10.0)


class Report:
    """Rows per section, written as JSON and markdown after every measurement."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta = out, meta
        self.sections: dict[str, list[dict[str, Any]]] = {s: [] for s in SECTIONS}
        self.skipped: list[str] = []
        self.errors: list[str] = []
        self.t0 = time.time()

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.sections[section].append(row)
        print(f"[{section}] " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        self.write()

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"skipped: {what}", flush=True)
        self.write()

    def error(self, what: str, exc: BaseException) -> None:
        line = f"{what}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        self.errors.append(line)
        print(f"ERROR {line}\n{traceback.format_exc()}", flush=True)
        self.write()

    def as_dict(self) -> dict[str, Any]:
        return {**self.meta, "wall_s": round(time.time() - self.t0, 1), "sections": self.sections,
                "skipped": self.skipped, "errors": self.errors}

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = self.as_dict()
        tmp = self.out / "device_check.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.out / "device_check.json")
        (self.out / "device_check.md").write_text(markdown(data))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) and abs(v) < 1e5 else f"{v:.0f}" if math.isfinite(v) else str(v)
    return str(v)


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# Device check ({data['mode']})", "",
             f"{data['device_name']}; torch {data['torch']}, torchvision {data['torchvision']}, "
             f"python {data['python']}; {data['cores']} cores; {data['started']}; {data['wall_s']:.0f} s in all", ""]
    for section, rows in data["sections"].items():
        if not rows:
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines += [f"## {section}", "", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
        lines.append("")
    for title, items in (("Skipped", data["skipped"]), ("Errors", data["errors"])):
        if items:
            lines += [f"## {title}", "", *[f"- {x}" for x in items], ""]
    return "\n".join(lines)


# -- helpers ------------------------------------------------------------------------------------------
def _write_some(job: tuple[str, int, int, int]) -> float:
    root, n, seed, long = job
    return write_jpegs(Path(root), n, seed=seed, long=long)


def write_data(root: Path, n: int, n_val: int, long: int, procs: int) -> float:
    """train/ and val/ folders of synthetic photos (4 classes), written by ``procs`` processes; mean KB."""
    per = max(1, math.ceil(n / procs))
    jobs = [(str(root / f"part{p}"), min(per, n - p * per), p, long) for p in range(procs) if n - p * per > 0]
    with Pool(len(jobs)) as pool:
        kb = pool.map(_write_some, jobs)
    for job in jobs:  # one tree: part<p>/train/c<k>/<i>.jpg -> train/c<k>/p<p>_<i>.jpg
        for f in Path(job[0]).glob("train/*/*.jpg"):
            dest = root / "train" / f.parent.name / f"{Path(job[0]).name}_{f.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
    write_jpegs(root / "valpart", n_val, seed=10_000, long=long)
    (root / "valpart" / "train").rename(root / "val")
    return statistics.mean(kb)


def _reset_accelerate() -> None:
    AcceleratorState._reset_state()
    GradientState._reset_state()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _cycled(base: torch.utils.data.Dataset, n: int) -> Subset:
    """``n`` items cycling over ``base`` (a loader measured for longer than one pass over the files)."""
    return Subset(base, [i % len(base) for i in range(n)])  # type: ignore[arg-type]


# -- 1. every method ----------------------------------------------------------------------------------
def check_methods(rep: Report, sz: Sizes, data: Path, work: Path, precision: str) -> None:
    from ssl_bench.methods import registry
    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records.io import read_metrics

    for name in registry():
        t0 = time.time()
        try:
            cfg = compose([f"method={name}", "budget=smoke", "dataset=imagefolder", f"dataset.root={data}",
                           f"output_dir={work / 'runs'}", f"train.precision={precision}", "train.epochs=1",
                           "train.max_steps_per_epoch=3", "eval.random_baseline=false", "train.progress=false",
                           *sz.method_over])
            summary = run_experiment(cfg)
            run_dir = Path(cfg.output_dir) / summary["run_id"]
            losses = [r["loss"] for r in read_metrics(run_dir)]
            finite = bool(losses) and all(math.isfinite(x) for x in losses)
            rep.add("methods", {"method": name, "device": summary["cost"]["device"],
                                "precision": summary["precision"], "images": summary["cost"]["images_seen"],
                                "loss": losses[-1] if losses else float("nan"), "loss_finite": finite,
                                "record_written": (run_dir / "summary.json").is_file(),
                                "knn_top1": summary["metrics"].get("knn_top1"), "seconds": time.time() - t0})
            if not finite:
                rep.errors.append(f"methods: {name} loss not finite: {losses}")
        except Exception as exc:  # one method's failure must not hide the others'
            rep.error(f"methods: {name}", exc)


# -- 2. Sinkhorn --------------------------------------------------------------------------------------
def check_sinkhorn(rep: Report, sz: Sizes, device: torch.device) -> None:
    b, k = sz.sinkhorn
    s = bench_sinkhorn(b, k, 0.05, 3, sz.sinkhorn_repeats, device)
    rep.add("sinkhorn", {"scores": f"{b} x {k}", "iterations": 3, "device": s["device"],
                         "ours_ms": s["ours_ms"], "lightly_ms": s["lightly_ms"], "speedup": s["speedup"],
                         "max_code_diff": s["max_diff"], "same_codes": s["max_diff"] <= 1e-5,
                         "lightly_nonfinite_x10": s["lightly_big_nonfinite"],
                         "ours_nonfinite_x10": s["ours_big_nonfinite"]})


# -- 3. SwAV step on a pre-built batch ----------------------------------------------------------------
def swav_cfg(sz: Sizes, batch: int, precision: str, extra: list[str]):
    # An image-folder dataset (varying sizes): any crop size composes; the batch is synthetic, nothing is read.
    return compose(["budget=imagenet_400ep", "dataset=imagefolder", f"data.batch_size={batch}",
                    f"train.precision={precision}", "train.progress=false", *sz.swav_over, *extra])


def time_steps(step: Callable[[], object], warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds of the warm-up steps, median seconds of the timed steps)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return warm, statistics.median(times)


def swav_rate(sz: Sizes, batch: int, precision: str, variant: str, extra: list[str], work: Path) -> dict[str, Any]:
    cfg = swav_cfg(sz, batch, precision, extra)
    torch.manual_seed(0)
    model = build_model(cfg)
    acc = make_accelerator(cfg, work)
    device = acc.device  # read before the state is reset below
    try:
        trainer = Trainer(cfg, acc, model, _Indices(batch * 100), {}, work, 0)
        data = send_to_device(synthetic_batch(cfg), acc.device)
        losses: list[float] = []
        warm, step_s = time_steps(lambda: losses.append(float(trainer.train_step(data)[0])), sz.swav_warmup,
                                  sz.swav_steps, acc.device)
        shapes = " + ".join(f"{s.n}x{s.size}" for s in (cfg.crops["global"], cfg.crops["local"]) if s.n)
        return {"backbone": cfg.backbone.name, "crops": shapes, "images_per_gpu": batch, "variant": variant,
                "precision": acc.mixed_precision, "images_per_s": batch / step_s, "step_ms": step_s * 1e3,
                "peak_mem_mb": peak_memory_mb(acc.device), "warmup_s": warm,
                "loss_finite": all(math.isfinite(x) for x in losses)}
    finally:
        acc.end_training()
        _reset_accelerate()
        del model
        _free(device)


def check_swav(rep: Report, sz: Sizes, precision: str, work: Path, left: Callable[[], float], compiled: bool) -> None:
    """eager and channels-last (compiled=False), or the compiled variants (compiled=True: minutes on a GPU, so
    they run last, each only where it still fits in the time budget)."""
    compile_over = ["train.compile=true", f"train.compile_backend={sz.compile_backend}"]
    variants = {"compile": compile_over, "compile+channels_last": [*compile_over, "train.channels_last=true"]} \
        if compiled else {"eager": [], "channels_last": ["train.channels_last=true"]}
    for variant, batch in [(v, b) for v in variants for b in sz.swav_batches]:
        need = sz.compile_estimate_s if "compile" in variant else 20.0
        if left() < need:
            rep.skip(f"swav {variant} at {batch} images per GPU: {left():.0f} s left, needs ~{need:.0f} s")
            continue
        try:
            rep.add("swav", swav_rate(sz, batch, precision, variant, variants[variant], work))
        except Exception as exc:
            rep.error(f"swav {variant} at {batch}", exc)


# -- 4. the loader alone ------------------------------------------------------------------------------
def loader_cfg(sz: Sizes, data: Path, backend: str, extra: list[str] | None = None):
    return compose(["budget=imagenet_400ep", "dataset=imagefolder", f"dataset.root={data}", "data.train_subset=0",
                    f"augment.backend={backend}", f"data.num_workers={sz.workers}", "train.progress=false",
                    *sz.swav_over, *(extra or [])])


def loader_rate(sz: Sizes, data: Path, backend: str, batch: int, device: torch.device) -> dict[str, Any]:
    """Images/s of the whole data path without the model: workers, transfer, and the device half (decode, crop,
    colour) where the backend has one. The clock starts once every worker has delivered a batch."""
    cfg = loader_cfg(sz, data, backend)
    base = pretrain_dataset(cfg)
    n = int(batch * max(4 * sz.workers, sz.loader_seconds * 4000 / batch))  # never runs dry at 4000 images/s
    _, ds, augment = build_pretrain_set(cfg, _cycled(base, n), device)
    loader = DataLoader(ds, batch_size=batch, num_workers=sz.workers, shuffle=False, drop_last=True,
                        pin_memory=device.type == "cuda")
    seen, images, t0 = 0, 0, 0.0
    t_start = time.perf_counter()
    for b in loader:
        b = send_to_device(b, device, non_blocking=True)
        if augment is not None:
            b = augment(b)
        seen += 1
        if seen == max(1, sz.workers):
            _sync(device)
            t0 = time.perf_counter()
        elif seen > sz.workers:
            images += batch
            if time.perf_counter() - t0 > sz.loader_seconds:
                break
    _sync(device)
    dt = time.perf_counter() - t0
    return {"backend": backend, "workers": sz.workers, "batch": batch, "images_timed": images,
            "images_per_s": images / max(dt, 1e-9), "per_worker": images / max(dt, 1e-9) / max(1, sz.workers),
            "device_half": augment is not None, "startup_s": t0 - t_start}


def check_loader(rep: Report, sz: Sizes, data: Path, device: torch.device, left: Callable[[], float]) -> None:
    for backend in BACKENDS:
        if left() < sz.loader_seconds + 20:
            rep.skip(f"loader {backend}: {left():.0f} s left")
            continue
        try:
            rep.add("loader", loader_rate(sz, data, backend, sz.swav_batches[0], device))
        except Exception as exc:
            rep.error(f"loader {backend}", exc)


# -- 5. the SwAV step fed by each loader --------------------------------------------------------------
def fed_rate(sz: Sizes, data: Path, backend: str, batch: int, precision: str, work: Path) -> dict[str, Any]:
    cfg = loader_cfg(sz, data, backend, [f"data.batch_size={batch}", f"train.precision={precision}"])
    acc = make_accelerator(cfg, work)
    device = acc.device
    try:
        need = batch * (sz.fed_warmup + sz.fed_steps + 1)
        name, train_set, augment = build_pretrain_set(cfg, _cycled(pretrain_dataset(cfg), need), acc.device)
        torch.manual_seed(0)
        trainer = Trainer(cfg, acc, build_model(cfg), train_set, {}, work, sz.workers, augment)
        it = iter(trainer.loader)

        def step() -> None:
            b = next(it)
            trainer.train_step(augment(b) if augment is not None else b)

        warm, step_s = time_steps(step, sz.fed_warmup, sz.fed_steps, acc.device)
        return {"backend": name, "workers": sz.workers, "images_per_gpu": batch, "precision": acc.mixed_precision,
                "images_per_s": batch / step_s, "step_ms": step_s * 1e3, "warmup_s": warm,
                "peak_mem_mb": peak_memory_mb(acc.device)}
    finally:
        acc.end_training()
        _reset_accelerate()
        _free(device)


def check_fed(rep: Report, sz: Sizes, data: Path, precision: str, work: Path, left: Callable[[], float]) -> None:
    bare = {r["images_per_gpu"]: r["images_per_s"] for r in rep.sections["swav"] if r["variant"] == "eager"}
    for backend in BACKENDS:
        if left() < 30:
            rep.skip(f"fed {backend}: {left():.0f} s left")
            continue
        try:
            row = fed_rate(sz, data, backend, sz.swav_batches[0], precision, work)
            if row["images_per_gpu"] in bare:  # the loader keeps up when this is close to 1
                row["vs_prebuilt_batch"] = row["images_per_s"] / bare[row["images_per_gpu"]]
            rep.add("fed", row)
        except Exception as exc:
            rep.error(f"fed {backend}", exc)


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="the same steps, tiny, on the CPU (the test of this script)")
    p.add_argument("--out", default="results/device_check", help="results folder when $OUT is not set")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run: {', '.join(SECTIONS)}")
    p.add_argument("--budget-s", type=float, default=0.0, help="time budget in seconds (0: 420 on a GPU, 240 --cpu)")
    p.add_argument("--precision", default="bf16", help="train.precision of every step (bf16: the GPU recipes')")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        p.error(f"unknown section {', '.join(bad)}; valid: {', '.join(SECTIONS)}")
    sz = sizes(args.cpu)
    budget = args.budget_s or sz.budget_s
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device; run with --cpu for the tiny CPU version", file=sys.stderr)
        return 2
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # Accelerate would pick a GPU otherwise
        os.environ["ACCELERATE_USE_CPU"] = "1"
    device = torch.device(sz.device)
    out = Path(os.environ.get("OUT") or args.out)
    import torchvision

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    meta = {"mode": "cpu (tiny sizes)" if args.cpu else "gpu", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
            "cores": cores, "precision": args.precision, "sizes": asdict(sz), "budget_s": budget}
    rep = Report(out, meta)
    deadline = time.time() + budget

    def left() -> float:
        return deadline - time.time()

    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        work, data = Path(tmp) / "work", Path(tmp) / "data"
        work.mkdir()
        t0 = time.time()
        kb = write_data(data, sz.jpegs, sz.val_jpegs, sz.jpeg_long, min(cores, 16))
        rep.meta["jpegs"] = f"{sz.jpegs} train + {sz.val_jpegs} val, long side {sz.jpeg_long} px, {kb:.0f} KB mean, " \
                            f"written in {time.time() - t0:.1f} s"
        # Cheapest and most certain first; the fed steps compare with the eager rate on a pre-built batch; compiling,
        # the slowest and least certain (minutes on a GPU), comes last.
        steps: list[tuple[str, Callable[[], None]]] = [
            ("methods", lambda: check_methods(rep, sz, data, work, args.precision)),
            ("sinkhorn", lambda: check_sinkhorn(rep, sz, device)),
            ("swav", lambda: check_swav(rep, sz, args.precision, work, left, compiled=False)),
            ("loader", lambda: check_loader(rep, sz, data, device, left)),
            ("fed", lambda: check_fed(rep, sz, data, args.precision, work, left)),
            ("swav", lambda: check_swav(rep, sz, args.precision, work, left, compiled=True)),
        ]
        for name, run in steps:
            if name not in only:
                continue
            if left() <= 0:
                rep.skip(f"{name}: out of time")
                continue
            try:
                run()
            except Exception as exc:
                rep.error(name, exc)
    rep.write()
    print(f"\n{markdown(rep.as_dict())}\nwritten: {out / 'device_check.md'}, {out / 'device_check.json'}")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
