"""The GPU budgets a user can trust (issue 32 item 4): every one composes for every method with the papers' settings
and the linear probe, says in its yaml and when it is used that this project has not yet run it on a GPU, and prints
an estimate of a run's GPU hours with its source before a job is submitted."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from ssl_bench.config.cli import guarded
from ssl_bench.config.compose import compose
from ssl_bench.config.searchpath import group_options
from ssl_bench.methods import registry
from ssl_bench.pipeline import gpu_budgets
from ssl_bench.pipeline.gpu_budgets import CPU_BUDGETS, GPU_BUDGETS, NOT_RUN

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
METHODS = list(registry())
DATASET = {"carl_cifar10": "cifar10", "carl_cifar100": "cifar100", "carl_stl10": "stl10", "cifar_200ep": "cifar10"}
FAKE_SLURM = Path(__file__).parent / "fake_slurm"


def dataset(budget: str) -> str:
    return DATASET.get(budget, "imagenet")


def test_every_shipped_budget_is_a_cpu_or_a_gpu_budget():
    shipped = sorted(p.stem for p in (EXPERIMENTS / "budget").glob("*.yaml"))
    assert sorted([*CPU_BUDGETS, *GPU_BUDGETS]) == shipped
    assert set(GPU_BUDGETS) >= {"imagenet_400ep", "imagenet_800ep", "imagenet_bs256", "cifar_200ep", "carl_cifar10",
                                "carl_cifar100", "carl_stl10"}


@pytest.mark.parametrize("budget", list(GPU_BUDGETS))
@pytest.mark.parametrize("method", METHODS)
def test_every_gpu_budget_composes_for_every_method_with_the_linear_probe(method, budget):
    cfg = compose([f"method={method}", f"budget={budget}", f"dataset={dataset(budget)}"])
    assert cfg.choices.budget == budget and cfg.method.name == method
    assert list(cfg.eval.protocols) == ["knn", "linear"]
    assert gpu_budgets.note(cfg) is not None and NOT_RUN in gpu_budgets.note(cfg)


@pytest.mark.parametrize("budget", list(GPU_BUDGETS))
def test_every_gpu_budget_yaml_carries_the_note(budget):
    text = " ".join(line.lstrip("# ") for line in (EXPERIMENTS / "budget" / f"{budget}.yaml").read_text().splitlines())
    assert f"This budget {NOT_RUN}" in text


@pytest.mark.parametrize("budget", list(GPU_BUDGETS))
@pytest.mark.parametrize("method", group_options("method"))
def test_every_method_x_gpu_budget_has_its_settings_file_with_a_source_on_every_value(method, budget):
    """A file for every pair: each value it sets names its source (a paper and where in it, or the authors' reference
    code: repository, file and argument); a file that sets nothing says why (no paper gives settings for the pair) and
    that the suite default is kept."""
    path = EXPERIMENTS / "method_budget" / f"{method}_{budget}.yaml"
    lines = path.read_text().splitlines()
    assert lines[0] == "# @package method"
    values = [line for line in lines if re.match(r"^[a-z_]+:", line)]
    for line in values:
        comment = line.partition("#")[2]
        assert re.search(r"(SwAV|CARL|DINO|BYOL|Barlow Twins) paper, (App\. |Sec\. )?[A-Z0-9]"
                         r"|[\w-]+/[\w-]+ [\w/]+\.py --\w+", comment), f"{path.name}: {line}"
    if not values:
        text = " ".join(lines)
        assert "no paper gives" in text or "gives no" in text, path.name
        assert "default" in text and "kept" in text, path.name


# Spot checks: a method_budget value equals the paper's number.
@pytest.mark.parametrize("method, budget, key, value", [
    ("simclr", "carl_cifar100", "temperature", 0.2),  # CARL A.5.3
    ("selav2", "imagenet_bs256", "num_heads", 3),  # SwAV paper, App. D: 3 sets of 3000 prototypes
    ("deepclusterv2", "imagenet_800ep", "num_prototypes", 3000),  # the same
    ("selav2", "imagenet_400ep", "epsilon", 0.05),  # SwAV paper, App. A.1 (App. D: SwAV's hyperparameters)
    ("swav", "imagenet_800ep", "freeze_prototypes_iters", 313),  # SwAV A.1: the first epoch at batch 4096
    ("swav", "imagenet_bs256", "queue_length", 3840),  # SwAV A.6
    ("carl", "imagenet_400ep", "num_prototypes", 3000),  # CARL A.4 (downsampled ImageNet)
    ("carl", "cifar_200ep", "lambda_end", 1.5),  # CARL Sec. 4.2
    ("dino", "imagenet_800ep", "warmup_teacher_temp_epochs", 30),  # DINO paper, Sec. 3.2: the first 30 epochs
    ("dino", "carl_cifar10", "base_momentum", 0.9995),  # main_dino.py --momentum_teacher: 0.9995 at batch 256
    ("byol", "imagenet_400ep", "base_momentum", 0.996),  # BYOL paper, Sec. 3.3 (batch 4096)
    ("byol", "imagenet_bs256", "base_momentum", 0.9995),  # BYOL paper, App. G (its smaller batch, 512)
    ("barlow_twins", "carl_stl10", "lambda_param", 5.0e-3),  # Barlow Twins paper, Sec. 2.2
])
def test_method_budget_values_are_the_papers(method, budget, key, value):
    assert compose([f"method={method}", f"budget={budget}", f"dataset={dataset(budget)}"]).method[key] == value


def test_the_estimate_is_epochs_times_images_over_the_papers_throughput():
    """By hand: SwAV paper Table 4, 100 epochs of 1,281,167 images in 6.25 h on 64 GPUs, so 400 epochs take
    4 x 6.25 x 64 = 1600 GPU-hours; 200 epochs (imagenet_bs256) 800; a 100,000-image subset of 400 epochs 124.9."""
    cfg = compose(["method=swav", "budget=imagenet_400ep", "dataset=imagenet"])
    est = gpu_budgets.estimate(cfg, 64)
    assert est.gpu_hours == pytest.approx(1600) and est.images == 1_281_167 and est.epochs == 400
    assert est.images_per_s_per_gpu == pytest.approx(100 * 1_281_167 / (6.25 * 3600 * 64))  # 88.97
    lines = gpu_budgets.lines(cfg, 64, runs=15)
    assert lines[0].startswith(f"budget imagenet_400ep {NOT_RUN}")
    assert lines[1].startswith("estimate: 1,600 GPU-hours per run (V100 16GB) = 400 epochs x 1,281,167 images / "
                               "89.0 images/s per GPU / 3600; 15 runs: 24,000 GPU-hours; 25 h per run on 64 GPU(s)")
    assert lines[2].startswith("  source: the SwAV paper's time (App. B.1, Table 4)") and "6h15 on 64 V100" in lines[2]
    bs256 = gpu_budgets.estimate(compose(["method=carl", "budget=imagenet_bs256", "dataset=imagenet"]), 4)
    assert bs256.gpu_hours == pytest.approx(800)
    sub = gpu_budgets.estimate(compose(["budget=imagenet_400ep", "dataset=imagenet", "data.train_subset=100000"]))
    assert sub.gpu_hours == pytest.approx(400 * 100_000 * 6.25 * 3600 * 64 / (100 * 1_281_167) / 3600)


def test_without_a_time_or_a_count_the_line_says_why():
    carl = gpu_budgets.lines(compose(["method=carl", "budget=carl_cifar10", "dataset=cifar10"]))
    assert len(carl) == 2 and carl[1].startswith("no estimate: no images/s measured on a GPU for budget carl_cifar10")
    assert "the CARL paper reports no training time" in carl[1]
    folder = gpu_budgets.lines(compose(["budget=imagenet_800ep", "dataset=imagefolder"]))
    assert "no estimate: the number of pretraining images of dataset=imagefolder is not known" in folder[1]
    assert gpu_budgets.lines(compose(["budget=smoke"])) == [] and gpu_budgets.note(compose(["budget=demo"])) is None


def test_a_gpu_measurement_wins_over_the_paper(tmp_path):
    """benchmarks/device_check.sh's SwAV rows on a GPU, for the budget's backbone and crops: the row nearest the run's
    images per GPU; a CPU-mode file is ignored."""
    rows = [{"backbone": "resnet50", "crops": "2x224 + 6x96", "images_per_gpu": b, "variant": "eager",
             "precision": "bf16", "images_per_s": rate} for b, rate in ((64, 250.0), (128, 300.0))]
    check = tmp_path / "results" / "device_check" / "device_check.json"
    check.parent.mkdir(parents=True)
    check.write_text(json.dumps({"mode": "gpu", "device_name": "NVIDIA H100", "started": "2027-01-01",
                                 "sections": {"swav": rows}}))
    cfg = compose(["budget=imagenet_400ep", "dataset=imagenet", f"output_dir={tmp_path / 'results' / 'runs'}"])
    est = gpu_budgets.estimate(cfg, 64, gpu_budgets.device_check_file(cfg))  # 64 images per GPU
    assert est.images_per_s_per_gpu == 250.0 and est.gpu_hours == pytest.approx(400 * 1_281_167 / 250 / 3600)
    assert est.source.startswith("measured: benchmarks/device_check.sh on NVIDIA H100") and est.gpu == "NVIDIA H100"
    assert "569 GPU-hours per run (NVIDIA H100)" in gpu_budgets.lines(cfg, 64)[1]
    assert gpu_budgets.estimate(cfg, 32, check).images_per_s_per_gpu == 300.0  # 128 per GPU
    carl = compose(["budget=carl_cifar10", "dataset=cifar10"])  # another backbone: not what was measured
    assert isinstance(gpu_budgets.estimate(carl, 1, check), str)
    check.write_text(json.dumps({"mode": "cpu (tiny sizes)", "sections": {"swav": rows}}))
    assert gpu_budgets.estimate(cfg, 64, check).source.startswith("the SwAV paper's time")


def test_launch_prints_the_note_and_the_estimate_beside_the_script(capsys):
    from ssl_bench import launch

    argv = ["nodes=8", "gpus=8", "slurm=true", "method=swav", "budget=imagenet_400ep", "dataset=imagenet"]
    assert guarded(launch.main, argv) == 0
    out, err = capsys.readouterr()
    assert f"# budget imagenet_400ep {NOT_RUN}" in out and "# estimate: 1,600 GPU-hours per run" in out
    assert f"budget imagenet_400ep {NOT_RUN}" in err and "25 h per run on 64 GPU(s)" in err
    assert "# source: the SwAV paper's time" in out.replace("#   source", "# source")
    assert guarded(launch.main, ["nodes=1", "gpus=1", "slurm=true", "budget=smoke"]) == 0
    out, err = capsys.readouterr()
    assert NOT_RUN not in out + err and "estimate" not in out + err


def test_compare_cluster_slurm_prints_the_estimate_before_submitting(tmp_path, monkeypatch, capsys):
    from ssl_bench.analysis import compare as cmp

    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "slurm"))
    monkeypatch.chdir(tmp_path)
    argv = ["methods=[swav,simclr]", "seeds=[0]", "budget=imagenet_400ep", "dataset=imagenet", "cluster=slurm",
            "nodes=8", "gpus=8", "train=false"]
    assert guarded(cmp.main, argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == gpu_budgets.note(compose(["budget=imagenet_400ep", "dataset=imagenet"]))
    assert out[1].startswith("estimate: 1,600 GPU-hours per run") and "2 runs: 3,200 GPU-hours" in out[1]
    assert out[2].startswith("  source: the SwAV paper's time") and out[3].startswith("comparison ")
    assert not (tmp_path / "slurm").exists() or not list((tmp_path / "slurm").glob("*.json"))  # nothing submitted


def test_a_run_on_a_gpu_budget_starts_with_the_note(tmp_path, capsys):
    """The carl_cifar10 budget shrunk to one step of a tiny convnet (on the CPU, seconds): its first lines say it is
    untried on a GPU here."""
    from ssl_bench.pipeline.experiment import run_experiment

    cfg = compose(["method=swav", "budget=carl_cifar10", "dataset=fashion_mnist", "backbone=small_cnn",
                   "backbone.width=8", "data.train_subset=64", "data.batch_size=16", "data.num_workers=0",
                   "train.epochs=1", "train.max_steps_per_epoch=1", "train.num_threads=1", "train.progress=false",
                   "train.precision=no", "eval.protocols=[knn]", "eval.knn_train_subset=64", "eval.knn_test_subset=32",
                   "eval.monitor_train_subset=0", "health.samples=0", "method.num_prototypes=16",
                   f"output_dir={tmp_path / 'runs'}"])
    run_experiment(cfg)
    head = capsys.readouterr().out.split("kNN of the randomly initialised backbone")[0]
    assert f"  note: budget carl_cifar10 {NOT_RUN}" in head
