"""Evaluation protocols: kNN against brute force, the linear probe, label splits, one vs two processes, the
end-of-run record, and the evaluate entry point (record, seeds, transfer, export, bad input)."""

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dist_eval_worker import compute
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from ssl_bench.config.cli import guarded
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.data import load_split
from ssl_bench.evaluate import main
from ssl_bench.evaluation import extract_features, knn_eval, knn_predict, load_backbone
from ssl_bench.evaluation.linear import evaluate_linear, train_linear_augmented, train_linear_cached
from ssl_bench.evaluation.splits import dataset_labels, label_subset, stratified_indices
from ssl_bench.models.networks import build_backbone
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records import io as results
from ssl_bench.records.identity import run_id

# End-of-run protocols of the module's smoke run: kNN (always) + a 2-epoch linear probe on cached features.
# One torch thread: these models are tiny, and on a busy 2-core machine a second thread only spins.
SMOKE_EVAL = ["eval.protocols=[knn,linear]", "eval.linear_mode=cached", "eval.linear_epochs=2", "train.num_threads=1"]
ONE = "train.num_threads=1"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = compose(["budget=smoke", f"output_dir={out}", *SMOKE_EVAL])
    summary = run_experiment(cfg)
    return out / run_id(cfg), summary


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the smoke run (the evaluate entry point writes into its summary.json)."""
    dst = tmp_path / "runs" / trained[0].name
    shutil.copytree(trained[0], dst)
    return dst


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------ kNN


def brute_force_knn(train_f, train_y, test_f, k, temperature, num_classes):
    """The weighted kNN by its definition, one test point at a time."""
    preds = []
    for q in test_f:
        pairs = zip(train_f, train_y, strict=True)
        sims = sorted(((float(F.cosine_similarity(q, t, dim=0)), int(y)) for t, y in pairs),
                      key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for s, y in sims[:k]:
            votes[y] += math.exp(s / temperature)
        preds.append(max(range(num_classes), key=votes.__getitem__))
    return torch.tensor(preds)


def test_knn_matches_brute_force_for_every_k(tmp_path):
    g = torch.Generator().manual_seed(0)
    train_f, train_y = torch.randn(60, 6, generator=g), torch.randint(0, 4, (60,), generator=g)
    test_f = torch.randn(25, 6, generator=g)
    ks = [1, 5, 20, 200]  # 200 > 60 training features: capped
    pred = knn_predict(train_f, train_y, test_f, ks, 0.07, 4, chunk=7, bank_chunk=11)  # ragged chunks
    for k in ks:
        assert torch.equal(pred[k], brute_force_knn(train_f, train_y, test_f, min(k, 60), 0.07, 4)), k
    test_y = brute_force_knn(train_f, train_y, test_f, 5, 0.07, 4)
    flat = knn_eval((train_f, train_y, test_f, test_y), [5, 20], 0.07, 4)
    assert flat["knn_top1"] == flat["knn_top1_k5"] == 100.0 and set(flat) == {"knn_top1", "knn_top1_k5",
                                                                              "knn_top1_k20"}
    # Streamed to disk (float16, memory-mapped): the kNN of the float16-rounded features.
    feats, labels = extract_features(nn.Identity(), TensorDataset(train_f, train_y), None, batch_size=16,
                                     spill_path=tmp_path / "f.npy", max_memory_bytes=0)
    assert feats.dtype == torch.float16 and torch.equal(feats, train_f.half()) and torch.equal(labels, train_y)
    pred16 = knn_predict(feats, labels, test_f, [5], 0.07, 4, bank_chunk=13)
    assert torch.equal(pred16[5], brute_force_knn(train_f.half().float(), train_y, test_f, 5, 0.07, 4))


# ------------------------------------------------------------------------------------------- linear


def separable(n, seed, num_classes=5, dim=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    y = torch.arange(n) % num_classes
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_linear_probe_on_separable_features():
    (xtr, ytr), (xte, yte) = separable(500, 0), separable(200, 1)
    opts = dict(epochs=20, lr=0.3, weight_decay=1e-6, momentum=0.9, batch_size=64, seed=3)
    clf = train_linear_cached(xtr * 50 + 7, ytr, 5, **opts)  # any feature scale: the probe's BN standardises
    res = evaluate_linear(clf, xte * 50 + 7, yte)
    assert res["top1"] >= 99.0 and res["top5"] == 100.0
    again = train_linear_cached(xtr * 50 + 7, ytr, 5, **opts)
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values(), strict=True))


def test_linear_probe_augmented_mode_trains_through_a_frozen_backbone():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    class Frozen(nn.Module):  # a "backbone": images [N, 16] -> features, with BN that must stay frozen
        out_dim = 16

        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(16)

        def forward(self, x):
            return self.bn(x)

    (xtr, ytr), (xte, yte) = separable(300, 0), separable(100, 1)
    backbone = Frozen()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    acc = Accelerator(cpu=True)
    try:
        clf = train_linear_augmented(backbone, TensorDataset(xtr, ytr), 5, acc, epochs=15, lr=0.3,
                                     weight_decay=1e-6, momentum=0.9, batch_size=64, seed=0)
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
    assert evaluate_linear(clf, backbone.eval()(xte), yte)["top1"] >= 99.0
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # frozen, BN included


# -------------------------------------------------------------------------------------- label splits


def test_label_subsets_are_stratified_reproducible_saved_and_disjoint_from_test(tmp_path):
    cfg = compose(["budget=smoke"])
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    labels = dataset_labels(train)
    assert len(labels) == len(train) and np.array_equal(labels[:5], [train[i][1] for i in range(5)])
    idx, path = label_subset(labels, "fashion_mnist", "train", 0.01, 0, tmp_path)
    assert path == tmp_path / "fashion_mnist" / "0.01_seed0.json" and path.exists()
    assert np.array_equal(np.bincount(labels[idx], minlength=10), [60] * 10)  # 1% of 6000 per class
    assert len(set(idx.tolist())) == len(idx) and idx.max() < len(train)
    # Reproducible and reused: the file is read back (not redrawn), and a fresh draw gives the same indices.
    rec = json.loads(path.read_text())
    assert rec["indices"] == idx.tolist() and rec["per_class"] == {str(c): 60 for c in range(10)}
    mtime = path.stat().st_mtime_ns
    again, _ = label_subset(labels, "fashion_mnist", "train", 0.01, 0, tmp_path)
    assert np.array_equal(again, idx) and path.stat().st_mtime_ns == mtime
    assert np.array_equal(stratified_indices(labels, 0.01, 0), idx)
    other, _ = label_subset(labels, "fashion_mnist", "train", 0.01, 1, tmp_path)
    assert not np.array_equal(other, idx) and np.array_equal(np.bincount(labels[other], minlength=10), [60] * 10)
    # Disjoint from the test set: none of the labeled images is a test image.
    test_hashes = {hashlib.md5(x.tobytes()).hexdigest() for x in test.images}
    assert not any(hashlib.md5(train.images[i].tobytes()).hexdigest() in test_hashes for i in idx)
    # Unbalanced classes keep at least one image each; the whole set at fraction 1.
    small = np.array([0] * 100 + [1] * 10 + [2])
    assert np.array_equal(np.bincount(small[stratified_indices(small, 0.1, 0)]), [10, 1, 1])
    assert np.array_equal(stratified_indices(small, 1.0, 0), np.arange(len(small)))
    with pytest.raises(ConfigError, match="different"):
        label_subset(labels[:100], "fashion_mnist", "train", 0.01, 0, tmp_path)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            stratified_indices(small, bad, 0)


# --------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_evaluation(trained, tmp_path):
    one, two = tmp_path / "one" / trained[0].name, tmp_path / "two" / trained[0].name
    shutil.copytree(trained[0], one)
    shutil.copytree(trained[0], two)
    compute(str(one), str(tmp_path))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    worker = Path(__file__).with_name("dist_eval_worker.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(free_port()), str(worker), str(two), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"features_{n}.pt") for n in (1, 2))
    for key in ("train_y", "test_y"):
        assert torch.equal(a[key], b[key])  # gathered in dataset order, padding dropped
    for key in ("train_f", "test_f"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert a["knn"] == b["knn"]
    assert b["spill_dtype"] == "torch.float16" and torch.equal(b["spill_f"], b["train_f"].half())
    assert torch.equal(b["spill_y"], b["train_y"])
    s1, s2 = summary(one), summary(two)
    assert {k: v for k, v in s1["metrics"]["knn"].items() if k != "settings"} == \
           {k: v for k, v in s2["metrics"]["knn"].items() if k != "settings"}
    assert abs(s1["metrics"]["linear"]["top1"] - s2["metrics"]["linear"]["top1"]) <= 1.0
    assert [e["num_processes"] for e in s2["evaluations"]] == [2]
    assert 0 <= s2["metrics"]["finetune_1pct"]["top1"] <= 100  # DDP fine-tuning on the same split file
    assert s1["metrics"]["finetune_1pct"]["settings"]["split_files"] == \
           s2["metrics"]["finetune_1pct"]["settings"]["split_files"]
    assert not list(two.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------- records


def test_end_of_run_record_has_flat_and_structured_metrics(trained):
    run_dir, s = trained
    m = s["metrics"]
    # knn_top1 is k=20 in every record (smoke lists knn_k [5, 20]); the other k carries its k in the name.
    assert m["knn_top1"] == m["knn_top1_k20"] == m["knn"]["top1"] == m["knn"]["top1_k20"] != m["knn_top1_k5"]
    assert m["knn_top1_k20"] == m["knn"]["top1_k20"]
    assert m["random"]["knn"]["top1"] == m["random_knn_top1"]  # the baseline before training
    settings = m["knn"]["settings"]
    assert settings["protocol"] == "knn" and settings["evaluation"] == "offline" and settings["k"] == [20, 5]
    assert settings["train_images"] == 256 and settings["test_images"] == 128 and settings["temperature"] == 0.07
    assert {"top1", "top5", "settings"} <= set(m["linear"]) and m["linear"]["settings"]["mode"] == "cached"
    assert m["linear"]["settings"]["epochs"] == 2 and {"top1", "top5"} <= set(m["random"]["linear"])
    df = results.load(run_dir)
    assert df.loc[0, "metrics.linear.top1"] == m["linear"]["top1"]
    assert df.loc[0, "metrics.random.linear.top1"] == m["random"]["linear"]["top1"]
    assert not (run_dir / "features.tmp").exists()


def test_evaluate_a_checkpoint_with_seeds_writes_the_record(run, tmp_path):
    before = summary(run)["metrics"]
    splits = tmp_path / "splits"
    args = [f"checkpoint={run}", "eval=[knn,linear,finetune]", "seeds=[0,1]", "eval.linear_mode=augmented",
            "eval.linear_epochs=1", "eval.linear_batch_size=64", "eval.finetune_epochs=1",
            "eval.finetune_fractions=[0.01]", "eval.finetune_lr_backbone=[0.02]", "eval.finetune_lr_head=[0.5]",
            "eval.finetune_batch_size=64", f"eval.splits_dir={splits}", ONE]
    assert guarded(main, args) == 0
    s = summary(run)
    m = s["metrics"]
    for key in ("knn_top1", "knn_top1_k5", "knn_top1_k20", "random_knn_top1", "random_knn_top1_k20", "final_loss"):
        assert m[key] == before[key], key  # the flat keys of the run stay
    knn = m["knn"]
    assert {"top1", "top1_k5", "top1_k20", "top1_std", "top1_k20_std", "per_seed", "settings"} <= set(knn)
    assert knn["settings"]["seeds"] == [0, 1] and len(knn["per_seed"]["top1"]) == 2
    assert knn["top1"] == pytest.approx(sum(knn["per_seed"]["top1"]) / 2)
    # Seed 0 is the run's own final kNN, and the random backbone is the run's initialisation.
    assert knn["per_seed"]["top1"][0] == before["knn_top1"]
    assert m["random"]["knn"]["per_seed"]["top1"][0] == before["random_knn_top1"]
    lin = m["linear"]
    assert lin["settings"]["mode"] == "augmented" and "RandomResizedCrop" in lin["settings"]["augmentation"]
    assert {"top1", "top5", "top1_std", "top5_std"} <= set(lin)
    ft = m["finetune_1pct"]
    assert ft["settings"]["fraction"] == 0.01 and ft["settings"]["labeled_images"] == [600, 600]
    assert ft["settings"]["split_files"] == [str(splits / "fashion_mnist" / f"0.01_seed{k}.json") for k in (0, 1)]
    assert all(Path(p).exists() for p in ft["settings"]["split_files"])
    assert ft["settings"]["lr_head"] == 0.5 and ft["settings"]["milestones"] == [12, 16]
    assert {"knn", "linear", "finetune_1pct"} <= set(m["random"])
    assert s["evaluations"][-1]["protocols"] == ["knn", "linear", "finetune"]
    assert not (run / "features.tmp").exists()
    # Evaluating one protocol again replaces its record and keeps the others.
    assert guarded(main, [f"checkpoint={run}", "eval=knn", "eval.random_baseline=false", ONE]) == 0
    s2 = summary(run)
    m2 = s2["metrics"]
    assert m2["knn"]["settings"]["seeds"] == [0] and "top1_std" not in m2["knn"]
    assert m2["linear"] == lin and m2["random"] == m["random"] and len(s2["evaluations"]) == 2


def test_supervised_reference_is_the_ceiling_record(run):
    args = [f"checkpoint={run}", "eval=[knn,supervised]", "eval.random_baseline=false", ONE]
    assert guarded(main, args) == 0
    sup = summary(run)["metrics"]["supervised"]
    assert {"top1", "top5", "knn", "settings"} <= set(sup) and {"top1", "top1_k5"} <= set(sup["knn"])
    st = sup["settings"]
    assert st["protocol"] == "supervised" and st["epochs"] == 2 and st["batch_size"] == 16  # the smoke budget
    assert st["train_images"] == 128 and sup["knn"]["settings"]["backbone"] == "supervised"


def write_image_folder(root: Path, per_class: dict[str, int]) -> Path:
    from PIL import Image

    cfg = compose(["budget=smoke"])
    train = load_split(cfg, "train")
    for split, n in per_class.items():
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in np.flatnonzero(train.labels == c)[:n] if split == "train" else \
                    np.flatnonzero(train.labels == c)[-n:]:
                Image.fromarray(train.images[i]).save(folder / f"{i}.png")
    return root


def test_transfer_export_and_bare_weights(run, tmp_path):
    root = write_image_folder(tmp_path / "folder", {"train": 8, "val": 4})
    args = [f"checkpoint={run}", "dataset=imagefolder", f"dataset.root={root}", "crops.global.size=28", "eval=knn",
            "eval.knn_k=[3]", "eval.batch_size=16", ONE]
    assert guarded(main, args) == 0
    m = summary(run)["metrics"]
    t = m["transfer"]["imagefolder"]
    assert t["knn"]["settings"]["dataset"] == "imagefolder" and t["knn"]["settings"]["train_images"] == 24
    assert t["knn"]["settings"]["num_classes"] == 3 and "knn" in t["random"]
    assert m["knn"]["settings"]["dataset"] == "fashion_mnist"  # the run's own record is untouched
    # Export: a plain state_dict that loads strictly into the architecture, same tensors as the checkpoint.
    out = tmp_path / "export" / "backbone.safetensors"
    assert guarded(main, [f"checkpoint={run}", f"export={out}"]) == 0
    exported = load_file(str(out))
    ckpt = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert exported.keys() == {k.removeprefix("backbone.") for k in ckpt if k.startswith("backbone.")}
    assert all(torch.equal(v, ckpt[f"backbone.{k}"]) for k, v in exported.items())
    build_backbone(compose(["budget=smoke"])).load_state_dict(exported)
    # The bare file (.pt) evaluates to the run's numbers; the record goes beside it.
    pt = tmp_path / "backbone.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in exported.items()}}, pt)
    assert guarded(main, [f"checkpoint={pt}", "budget=smoke", "eval=knn", "eval.random_baseline=false", ONE]) == 0
    rec = json.loads((tmp_path / "backbone.pt.evaluation.json").read_text())
    assert rec["metrics"]["fashion_mnist"]["knn"]["top1"] == m["knn"]["top1"]
    # A torchvision classifier's state_dict (with fc) loads into our ResNet-18 backbone.
    import torchvision

    tv = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), tv)
    load_backbone(build_backbone(compose(["budget=smoke", "backbone=resnet18"])), tv)
    with pytest.raises(ConfigError, match="does not fit"):
        load_backbone(build_backbone(compose(["budget=smoke"])), tv)


def write_stl10(root: Path, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in ("train", "test", "unlabeled"):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")


def test_labeled_protocol_on_unlabeled_split_is_one_line(run, tmp_path, capsys, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)
    write_stl10(tmp_path / "stl")
    before = (run / "summary.json").read_text()
    code = guarded(main, [f"checkpoint={run}", "dataset=stl10", f"dataset.root={tmp_path / 'stl'}",
                          "dataset.train_split=unlabeled", "eval=linear"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert "needs labels" in err and "'unlabeled'" in err
    assert (run / "summary.json").read_text() == before


@pytest.mark.parametrize("args, needle", [
    ([], "checkpoint=<run folder or weights file> is required"),
    (["checkpoint=/nonexistent/run"], "checkpoint /nonexistent/run not found"),
    (["eval=nope"], "unknown eval protocol 'nope'"),
    (["eval.nope=1"], "unknown key 'eval.nope'; valid keys in 'eval': "),
    (["eval=finetune", "eval.finetune_fractions=[0,0.1]"], "must be in (0, 1]"),
    (["eval=finetune", "eval.finetune_fractions=[1.5]", "eval.finetune_lr_backbone=[0.1]",
      "eval.finetune_lr_head=[0.1]"], "must be in (0, 1]"),
    (["eval.finetune_fractions=[0.1]"], "one lr per fraction"),
    (["eval.linear_mode=fast"], "valid choices: cached, augmented"),
    (["eval.seeds=[]"], "at least one seed"),
    (["seeds=[]"], "at least one seed"),  # the old spelling: a deprecation note, then the same error
    (["eval.linear_epochs=abc"], "eval.linear_epochs"),
    (["method=simclr"], "cannot change for a trained checkpoint"),
    (["dataset=nope"], "valid choices: "),
])
def test_bad_input_is_one_line_and_exit_2(trained, capsys, args, needle):
    run_dir = trained[0]
    argv = args if not args or args[0].startswith("checkpoint=") else [f"checkpoint={run_dir}", *args]
    before = (run_dir / "summary.json").read_text()
    code = guarded(main, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    if err.startswith("note: evaluate's seeds= is now eval.seeds="):  # the deprecation note of the old spelling
        err = err.split("\n", 1)[1]
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert (run_dir / "summary.json").read_text() == before


def test_cli_exit_code_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ssl_bench.evaluate", f"checkpoint={tmp_path / 'nope'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: checkpoint ") and "not found" in proc.stderr


def test_random_init_floor_is_computed_once_and_reused_by_identical_evaluations(tmp_path, monkeypatch):
    """A second method with the same dataset, backbone, seed and eval settings reuses the first run's floor
    (kNN before training and the linear probe); another seed or eval.baseline_cache=false computes its own."""
    from ssl_bench.evaluation.protocols import Evaluator

    calls: list[tuple[str, tuple[str, ...]]] = []
    real = Evaluator.evaluate

    def spy(self, backbone, which, protocols, seeds):
        calls.append((which, tuple(protocols)))
        return real(self, backbone, which, protocols, seeds)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    base = ["budget=smoke", f"output_dir={tmp_path / 'runs'}", "eval.protocols=[knn,linear]",
            "eval.monitor_train_subset=0"]
    first = run_experiment(compose([*base, "method=swav"]))
    assert ("random_init", ("linear",)) in calls  # the kNN floor came from before training
    (cache,) = (tmp_path / "baselines").iterdir()
    calls.clear()
    second = run_experiment(compose([*base, "method=simclr"]))
    assert [c for c in calls if c[0] == "random_init"] == []
    r1, r2 = first["metrics"]["random"], second["metrics"]["random"]
    for protocol in ("knn", "linear"):
        assert r2[protocol]["top1"] == r1[protocol]["top1"]
        assert r2[protocol]["settings"]["source"] == f"cache baselines/{cache.name}"  # relative: portable
    assert second["metrics"]["random_knn_top1"] == first["metrics"]["random_knn_top1"]
    calls.clear()
    run_experiment(compose([*base, "method=simclr", "seed=1"]))
    assert ("random_init", ("linear",)) in calls and len(list((tmp_path / "baselines").iterdir())) == 2
    calls.clear()
    run_experiment(compose([*base, "method=carl", "eval.baseline_cache=false"]))
    assert ("random_init", ("linear",)) in calls
