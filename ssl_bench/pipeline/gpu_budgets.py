"""The GPU budgets (experiments/budget/): which they are, the plain note that this project has not yet run them on a
GPU, and an estimate of a run's GPU hours, printed before a job is submitted (``compare cluster=slurm``,
``ssl_bench.launch``) and when a run on one starts. Imports configuration only.

The estimate is plain arithmetic: epochs x pretraining images / (images per second per GPU) / 3600. The images per
second come from a measurement when one exists (``benchmarks/device_check.sh`` on a GPU, its SwAV rows, used for a
budget whose backbone and crops are the ones it measured), else from a paper's reported training time, quoted with its
source; a budget with neither gets no number and says why. It covers pretraining only (the final kNN and linear probe
come on top) and assumes the time scales linearly with the number of GPUs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

NOT_RUN = "has not yet been run on a GPU by this project"
CPU_BUDGETS = ("demo", "smoke")  # every other budget shipped in experiments/budget/ is a GPU budget (tests check it)
# Pretraining images per dataset split, as the datasets' papers and releases count them (CARL paper, A.1: CIFAR
# 50,000 train, STL-10 100,000 unlabeled + 5,000 train, Tiny-ImageNet 100,000; ImageNet-1k's train split: 1,281,167).
SPLIT_IMAGES = {("imagenet", "train"): 1_281_167, ("cifar10", "train"): 50_000, ("cifar100", "train"): 50_000,
                ("stl10", "unlabeled"): 100_000, ("stl10", "train"): 5_000, ("tiny_imagenet", "train"): 100_000,
                ("fashion_mnist", "train"): 60_000}


@dataclass(frozen=True)
class PaperTime:
    """A training time a paper reports: ``epochs`` over ``images`` in ``hours`` on ``gpus`` GPUs."""

    epochs: int
    images: int
    hours: float
    gpus: int
    gpu: str
    source: str
    caveat: str = ""

    @property
    def images_per_s_per_gpu(self) -> float:
        return self.epochs * self.images / (self.hours * 3600 * self.gpus)


# SwAV paper, App. B.1, Table 4 (and App. A.1): SwAV with 2 x 224 + 6 x 96 crops trains 100 epochs of ImageNet in 6h15
# on 64 V100 16GB GPUs at batch 4096 (Sec. 5.3 and Fig. 3 right: "72.1% in 6h15" after 100 epochs). The same table
# times SimCLR at 2 x 224 within 4% of SwAV at 2 x 224 (4h00 vs 4h09); it times no other method at these crops.
SWAV_TABLE4 = PaperTime(100, 1_281_167, 6.25, 64, "V100 16GB",
                        "the SwAV paper's time (App. B.1, Table 4): SwAV, 2x224+6x96 crops, 100 epochs of ImageNet in "
                        "6h15 on 64 V100 16GB GPUs",
                        "it times no other method at these crops (at 2x224: SimCLR 4h00, SwAV 4h09)")


@dataclass(frozen=True)
class GpuBudget:
    name: str
    paper: PaperTime | None = None
    no_time: str = ""  # why there is no paper time
    aside: str = ""  # another of the paper's times, for comparison
    run_on_gpu: bool = False  # by this project: set it (and drop the yaml's note) once a record of it exists


_NO_CIFAR_TIME = "neither paper reports a training time at this budget"
_CARL_NO_TIME = "the CARL paper reports no training time (A.6: 4 RTX 2080 Ti, each method fitted to one GPU)"
GPU_BUDGETS = {b.name: b for b in (
    GpuBudget("imagenet_400ep", SWAV_TABLE4),
    GpuBudget("imagenet_800ep", SWAV_TABLE4),
    # Sec. 4.3 reports 102 hours on 4 GPUs for 200 epochs at batch 256 with 2x160+4x96 crops (smaller than this
    # budget's 2x224+6x96); Table 4's time is for this budget's crops, so it is the one used, and Sec. 4.3's is quoted.
    GpuBudget("imagenet_bs256", SWAV_TABLE4, aside="for comparison, Sec. 4.3: 200 epochs at batch 256 with smaller "
              "crops (2x160+4x96) took 102 h on 4 GPUs, 408 GPU-hours"),
    GpuBudget("cifar_200ep", no_time=_NO_CIFAR_TIME),
    GpuBudget("carl_cifar10", no_time=_CARL_NO_TIME),
    GpuBudget("carl_cifar100", no_time=_CARL_NO_TIME),
    GpuBudget("carl_stl10", no_time=_CARL_NO_TIME),
)}


def budget_name(cfg: DictConfig) -> str | None:
    choices = cfg.get("choices") or {}
    return choices.get("budget")


def gpu_budget(cfg: DictConfig) -> GpuBudget | None:
    """The GPU budget a composed config uses (None for a CPU budget or one of the user's own)."""
    return GPU_BUDGETS.get(budget_name(cfg) or "")


def pretraining_images(cfg: DictConfig) -> int | None:
    """How many images an epoch sees, without reading the data: data.train_subset, else the known size of the dataset's
    pretraining splits (None when unknown: an image folder, a Hugging Face dataset, a class subset)."""
    subset = int(cfg.data.train_subset or 0)
    name = str(cfg.dataset.name)
    sizes = [SPLIT_IMAGES.get((name, str(s))) for s in cfg.dataset.pretrain_splits]
    whole = None if cfg.dataset.get("classes") is not None or None in sizes else sum(sizes)  # type: ignore[arg-type]
    if subset:
        return min(subset, whole) if whole else subset
    return whole


def _crops(cfg: DictConfig) -> str:
    return " + ".join(f"{c.n}x{c.size}" for c in (cfg.crops["global"], cfg.crops["local"]) if c.n)


def measured_rate(cfg: DictConfig, processes: int, device_check: Path | None) -> tuple[float, str] | None:
    """Images/s per GPU measured by benchmarks/device_check.sh on a GPU (its device_check.json), for a config of the
    backbone and crops it measured: the eager SwAV row nearest the run's images per GPU; with its source."""
    if device_check is None or not device_check.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(device_check.read_text())
    except (OSError, ValueError):
        return None
    if data.get("mode") != "gpu":
        return None
    per_gpu = int(cfg.data.batch_size) // max(1, processes)
    rows = [r for r in data.get("sections", {}).get("swav", []) if r.get("variant") == "eager"
            and r.get("backbone") == cfg.backbone.name and r.get("crops") == _crops(cfg) and r.get("images_per_s")]
    if not rows:
        return None
    row = min(rows, key=lambda r: (abs(int(r["images_per_gpu"]) - per_gpu), -int(r["images_per_gpu"])))
    return float(row["images_per_s"]), (
        f"measured: benchmarks/device_check.sh on {data.get('device_name', 'a GPU')} ({data.get('started', '')}): "
        f"SwAV {row['backbone']} {row['crops']} at {row['images_per_gpu']} images per GPU, {row['precision']}, "
        f"a pre-built batch (no loader), {device_check.as_posix()}")


@dataclass(frozen=True)
class Estimate:
    gpu_hours: float
    epochs: int
    images: int
    images_per_s_per_gpu: float
    gpu: str
    source: str


def estimate(cfg: DictConfig, processes: int = 1, device_check: Path | None = None) -> Estimate | str | None:
    """A run's GPU hours (pretraining), or a line saying why there is none; None for a budget that is not a GPU
    budget."""
    gb = gpu_budget(cfg)
    if gb is None:
        return None
    images, epochs = pretraining_images(cfg), int(cfg.train.epochs)
    if images is None:
        return (f"no estimate: the number of pretraining images of dataset={cfg.dataset.name} is not known before it "
                "is read (data.train_subset=N states it)")
    measured = measured_rate(cfg, processes, device_check)
    if measured is not None:
        rate, source = measured
        gpu = source.split(" on ", 1)[1].split(" (", 1)[0]
    elif gb.paper is not None:
        rate, gpu = gb.paper.images_per_s_per_gpu, gb.paper.gpu
        p = gb.paper
        source = (f"{p.source}: {p.epochs} x {p.images:,} images / ({p.hours:g} h x 3600 x {p.gpus}) = {rate:.1f} "
                  f"images/s per GPU" + "".join(f"; {x}" for x in (p.caveat, gb.aside) if x))
    else:
        return (f"no estimate: no images/s measured on a GPU for budget {gb.name} (benchmarks/device_check.sh measures "
                f"the ImageNet recipe) and {gb.no_time}")
    return Estimate(epochs * images / rate / 3600, epochs, images, rate, gpu, source)


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.1f}"


def device_check_file(cfg: DictConfig) -> Path:
    """Where benchmarks/device_check.sh leaves its measurements by default, beside the runs folder:
    <results>/device_check/device_check.json."""
    return Path(str(cfg.output_dir)).parent / "device_check" / "device_check.json"


def note(cfg: DictConfig) -> str | None:
    """The plain note on a GPU budget this project has not run on a GPU (None otherwise)."""
    gb = gpu_budget(cfg)
    if gb is None or gb.run_on_gpu:
        return None
    return (f"budget {gb.name} {NOT_RUN}: its settings come from the papers (sources in "
            f"experiments/budget/{gb.name}.yaml and experiments/method_budget/), untried here")


def lines(cfg: DictConfig, processes: int = 1, runs: int = 1) -> list[str]:
    """What a job script and its submission say of a GPU budget: the note, the estimate and its source ([] for a CPU
    budget). ``runs``: how many runs of this budget are about to be submitted (a comparison's total is added)."""
    est = estimate(cfg, processes, device_check_file(cfg))
    out = [n for n in [note(cfg)] if n]
    if est is None:
        return out
    if isinstance(est, str):
        return [*out, est]
    total = f"; {runs} runs: {_hours(est.gpu_hours * runs)} GPU-hours" if runs > 1 else ""
    wall = est.gpu_hours / processes
    out.append(f"estimate: {_hours(est.gpu_hours)} GPU-hours per run ({est.gpu}) = {est.epochs} epochs x "
               f"{est.images:,} images / {est.images_per_s_per_gpu:.1f} images/s per GPU / 3600{total}; "
               f"{_hours(wall)} h per run on {processes} GPU(s) if it scales linearly; pretraining only")
    out.append(f"  source: {est.source}")
    return out
