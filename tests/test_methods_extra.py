"""SimCLR, DeepCluster-v2, SeLa-v2 and CARL: losses by hand, k-means, Sinkhorn equipartition on the whole
bank, two processes == one process, state across checkpoints, loss decrease, and end-to-end records."""

import json
import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from dist_methods_worker import compute, fixed_data, run
from lightly.loss import NTXentLoss

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.methods import registry
from ssl_bench.methods.base import Context
from ssl_bench.methods.carl import consistency_loss, kl_weight, uniform_kl
from ssl_bench.methods.deepcluster_v2 import spherical_kmeans
from ssl_bench.methods.memory_bank import multihead_ce
from ssl_bench.methods.sela_v2 import sela_assign
from ssl_bench.methods.simclr import multicrop_nt_xent
from ssl_bench.ops.sinkhorn import sinkhorn
from ssl_bench.pipeline.experiment import build_model, run_experiment
from ssl_bench.records.identity import run_id

METHODS = [m for m in registry() if m != "swav"]  # every other registered objective (swav has its own file)


# -- SimCLR ------------------------------------------------------------------------------------------
def nt_xent_by_hand(crops: list[list[list[float]]], tau: float) -> float:
    """Eq. 7 with plain floats: crops[v][i] is crop v of image i."""
    m, b = len(crops), len(crops[0])
    unit = [[[x / math.sqrt(sum(t * t for t in z)) for x in z] for z in crop] for crop in crops]
    e = [(v, i) for v in range(m) for i in range(b)]

    def s(a, c):
        return math.exp(sum(x * y for x, y in zip(unit[a[0]][a[1]], unit[c[0]][c[1]], strict=True)) / tau)

    total = 0.0
    for a in e:
        neg = sum(s(a, c) for c in e if c[1] != a[1])
        total += sum(math.log(s(a, p) / (s(a, p) + neg)) for p in e if p[1] == a[1] and p != a)
    return -total / (len(e) * (m - 1))


@pytest.mark.parametrize("m", [2, 4])
def test_simclr_loss_by_hand(m):
    g = torch.Generator().manual_seed(m)
    crops = [torch.randn(3, 5, generator=g) for _ in range(m)]
    got = multicrop_nt_xent(crops, 0.5)
    assert got.item() == pytest.approx(nt_xent_by_hand([c.tolist() for c in crops], 0.5), rel=1e-5)


def test_simclr_two_crops_is_simclr():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert multicrop_nt_xent([a, b], 0.1).item() == pytest.approx(NTXentLoss(0.1)(a, b).item(), rel=1e-5)


def test_simclr_needs_two_crops_and_runs_on_one_image():
    with pytest.raises(ConfigError, match="at least 2 crops"):
        compose(["method=simclr", "budget=smoke", "crops.global.n=1", "crops.local.n=0"])
    z = [torch.randn(1, 4, requires_grad=True) for _ in range(3)]
    loss = multicrop_nt_xent(z, 0.1)  # no negatives: each positive is certain
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(z[0].grad).all()


# -- CARL --------------------------------------------------------------------------------------------
def softmax(x: list[float]) -> list[float]:
    e = [math.exp(v) for v in x]
    return [v / sum(e) for v in e]


def test_carl_terms_by_hand():
    q = [[[0.2, 1.0, -0.5], [1.5, 0.1, 0.0]], [[0.0, 0.8, 0.3], [2.0, -1.0, 0.4]],
         [[1.0, 1.0, 1.0], [0.0, 0.0, 3.0]]]  # 3 crops x 2 images x 3 prototypes
    p = [[softmax(row) for row in crop] for crop in q]

    def dot(a, b, i):
        return sum(x * y for x, y in zip(p[a][i], p[b][i], strict=True))

    want_c = sum(-sum(math.log(dot(a, b, i)) for i in range(2)) / 2 for a, b in [(0, 1), (0, 2), (1, 2)]) / 3
    want_kl = 0.0
    for crop in p:
        mean = [(crop[0][k] + crop[1][k]) / 2 for k in range(3)]
        want_kl += math.log(3) + sum(x * math.log(x) for x in mean)
    logits = [torch.tensor(c) for c in q]
    assert consistency_loss(logits).item() == pytest.approx(want_c, rel=1e-5)
    assert uniform_kl(logits).item() == pytest.approx(want_kl / 3, rel=1e-5)
    # two crops: exactly Eq. 4
    two = -sum(math.log(dot(0, 1, i)) for i in range(2)) / 2
    assert consistency_loss(logits[:2]).item() == pytest.approx(two, rel=1e-5)
    # confident, agreeing views: consistency ~ 0, finite; uniform batch: KL ~ 0
    sharp = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert consistency_loss([sharp, sharp]).item() == pytest.approx(0.0, abs=1e-6)
    assert uniform_kl([sharp]).item() == pytest.approx(0.0, abs=1e-6)


def test_carl_lambda_schedule_and_total():
    assert [kl_weight(e, 4.0, 1.5, 100) for e in (0, 50, 100, 150)] == pytest.approx([4.0, 2.75, 1.5, 1.5])
    assert kl_weight(3, 4.0, 1.5, 0) == 1.5
    method = small_method("carl")
    method.on_epoch_start(Context(epoch=1))  # smoke: E = 1 -> a from the second epoch
    assert float(method.lambda_e) == pytest.approx(1.5)
    method.on_epoch_start(Context(epoch=0))
    z = [torch.randn(4, method.embed_dim) for _ in range(4)]
    loss, stats = method.loss(z, {})
    logits = [method.prototypes(x) for x in z]
    want = consistency_loss(logits) + 4.0 * uniform_kl(logits)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert stats["loss_kl"] == pytest.approx(uniform_kl(logits).item(), rel=1e-5)


# -- k-means and SeLa assignments --------------------------------------------------------------------
def test_kmeans_nearest_centroid_and_unit_norm_means():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    x = F.normalize(centers.repeat(25, 1) + 0.15 * torch.randn(100, 8, generator=g), dim=1)
    c, a = spherical_kmeans(x, torch.arange(100), 100, 4, iters=10, seed=1)
    assert torch.equal(a, (x @ c.t()).argmax(1))  # nearest centroid
    assert torch.allclose(c.norm(dim=1), torch.ones(4))
    for k in range(4):  # converged: each centroid is the normalised mean of its members
        assert torch.allclose(c[k], F.normalize(x[a == k].mean(0), dim=0), atol=1e-6)
    assert sorted(torch.bincount(a).tolist()) == [25, 25, 25, 25]


def test_kmeans_init_from_seed_and_empty_clusters():
    x = F.normalize(torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5), dim=1)
    c0, a0 = spherical_kmeans(x, torch.arange(10), 10, 3, iters=0, seed=4)
    chosen = torch.randperm(10, generator=torch.Generator().manual_seed(4))[:3]
    assert torch.equal(c0, x[chosen])  # iters=0: the seeded samples
    c, a = spherical_kmeans(x, torch.arange(10), 10, 3, iters=5, seed=4)
    assert torch.isfinite(c).all() and torch.allclose(c.norm(dim=1), torch.ones(3))
    with pytest.raises(ConfigError, match="larger than the 10 pretraining images"):
        spherical_kmeans(x, torch.arange(10), 10, 11)


def test_sela_equipartition_on_the_whole_bank():
    g = torch.Generator().manual_seed(0)
    n, k = 3000, 30
    z = F.normalize(torch.randn(n, 16, generator=g), dim=1)
    c = F.normalize(torch.randn(k, 16, generator=g), dim=1)
    q = sinkhorn(z @ c.t(), 0.05, 10)
    assert torch.allclose(q.sum(0), torch.full((k,), n / k), rtol=0.01)  # soft codes: equal partition
    counts = torch.bincount(sela_assign(z, c, 0.05, 10), minlength=k)
    assert counts.min() >= 0.6 * n / k and counts.max() <= 1.4 * n / k  # hard labels: about equal


@pytest.mark.parametrize("k, eps", [(2000, 0.05), (100, 0.002)])
def test_sela_finite_for_tens_of_thousands(k, eps):
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(20000, 32, generator=g), dim=1)
    c = F.normalize(torch.randn(k, 32, generator=g), dim=1)
    labels = sela_assign(z, c, eps, 10)  # eps = 0.002: exp(+-500) overflows, the log domain takes over
    counts = torch.bincount(labels, minlength=k)
    assert labels.min() >= 0 and labels.max() < k and (counts > 0).sum() >= 0.95 * k


# -- two processes == one process --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    mp.spawn(run, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "dist.pt")
    one = compute(0, 1)
    assert two.keys() == one.keys()
    for key in one:
        if one[key].dtype == torch.long:
            assert torch.equal(two[key], one[key]), key
        else:
            assert torch.allclose(two[key], one[key], atol=1e-5), key
    d = fixed_data()
    # the gathered bank rows of the batch are its global crops, normalised
    stored = one["deepclusterv2_bank"][:, d["index"]]
    assert torch.allclose(stored, F.normalize(d["crops"][:2], dim=2), atol=1e-6)


# -- memory-bank state and checkpoints -----------------------------------------------------------------
def small_method(name: str, *extra: str):
    cfg = compose([f"method={name}", "budget=smoke", "crops.local.n=2", *extra])
    torch.manual_seed(0)
    return build_model(cfg).method


def bank_ctx(n: int, d: int, seed: int = 0, epoch: int = 0) -> Context:
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return Context(epoch=epoch, dataset_size=n, embed_dataset=lambda: (torch.arange(n), z))


@pytest.mark.parametrize("name, dtype", [("deepclusterv2", "float32"), ("selav2", "float16")])
def test_bank_state_survives_checkpoint(name, dtype, tmp_path):
    from safetensors.torch import load_model, save_file

    method = small_method(name, f"method.bank_dtype={dtype}")
    method.on_epoch_start(bank_ctx(40, method.embed_dim))
    assert method.assignments.shape == (3, 40) and method.bank.shape == (2, 40, method.embed_dim)
    names = dict(method.named_buffers())
    assert "assignments" not in names and "bank" not in names  # DDP would broadcast them every step
    z = [torch.randn(4, method.embed_dim) for _ in range(4)]
    index = torch.tensor([3, 7, 11, 39])
    loss, _ = method.loss(z, {"index": index})
    assert method.bank.dtype == getattr(torch, dtype)
    assert torch.allclose(method.bank[1, index].float(), F.normalize(z[1], dim=1), atol=1e-3)  # global crops
    save_file(method.state_dict(), tmp_path / "m.safetensors")  # the path of accelerator.save_state
    local = method.local_state_dict()
    fresh = small_method(name, f"method.bank_dtype={dtype}")
    load_model(fresh, tmp_path / "m.safetensors")  # strict
    fresh.load_local_state_dict(local)
    for key in method._global_state:
        assert torch.equal(getattr(fresh, key), getattr(method, key)), key
    assert torch.equal(fresh.bank, method.bank)
    batch = {"index": index}
    assert fresh.loss(z, batch)[0].item() == pytest.approx(method.loss(z, batch)[0].item())
    # another number of processes: the bank is refilled by one pass at the next epoch start
    fresh.load_local_state_dict({**local, "world_size": 4})
    assert fresh.bank is None
    fresh.on_epoch_start(bank_ctx(40, method.embed_dim, epoch=1))
    assert fresh.bank.shape == (2, 40, method.embed_dim)
    stats = fresh.epoch_stats()
    assert {"assign_entropy", "prototypes_used", "prototypes_used_h2"} <= set(stats)


def test_bank_config_errors():
    with pytest.raises(ConfigError, match="larger than the data.train_subset=128"):
        compose(["method=deepclusterv2", "budget=smoke", "method.num_prototypes=200"])
    with pytest.raises(ConfigError, match="valid choices: float32, float16, bfloat16"):
        compose(["method=selav2", "budget=smoke", "method.bank_dtype=int8"])


def test_multihead_ce_by_hand():
    z = [F.normalize(torch.randn(2, 3), dim=1) for _ in range(2)]
    c = [F.normalize(torch.randn(4, 3), dim=1) for _ in range(3)]
    t = torch.tensor([[0, 1], [2, 3], [1, 1]])
    want = sum(-torch.log_softmax(zv @ c[h].t() / 0.1, 1)[i, t[h, i]]
               for h in range(3) for zv in z for i in range(2))
    assert multihead_ce(z, c, t, 0.1).item() == pytest.approx(want.item() / 12, rel=1e-5)


# -- every method learns on a fixed batch -------------------------------------------------------------
@pytest.mark.parametrize("name", ["swav", *METHODS])
def test_loss_decreases_on_a_fixed_batch(name):
    cfg = compose([f"method={name}", "budget=smoke"])
    torch.manual_seed(0)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    batch = {"crops": [torch.randn(16, 3, 28, 28, generator=g) for _ in range(2)]
             + [torch.randn(16, 3, 14, 14, generator=g) for _ in range(2)], "index": torch.arange(16)}
    with torch.no_grad():
        z = model.project(batch["crops"])[0]
    model.method.on_epoch_start(Context(dataset_size=16, embed_dataset=lambda: (torch.arange(16), z)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.method.after_step(Context())
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


# -- end to end ----------------------------------------------------------------------------------------
def smoke(tmp_path, *extra):
    return compose(["budget=smoke", f"output_dir={tmp_path}", "eval.random_baseline=false", *extra])


@pytest.mark.parametrize("args", [[f"method={m}"] for m in METHODS] + [["method=simclr", "crops.local.n=0"]],
                         ids=[*METHODS, "simclr-no-multicrop"])
def test_end_to_end_writes_a_record(tmp_path, args):
    cfg = smoke(tmp_path, *args)
    summary = run_experiment(cfg)
    assert summary["status"] == "complete" and summary["method"] == cfg.method.name
    assert json.loads((tmp_path / run_id(cfg) / "summary.json").read_text())["run_id"] == run_id(cfg)
    rows = [json.loads(line) for line in (tmp_path / run_id(cfg) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all(math.isfinite(r["loss"]) for r in rows)
    if "num_prototypes" in cfg.method:  # collapse diagnostics of every clustering method
        assert {"assign_entropy", "prototypes_used"} <= set(rows[-1])
        assert "final_assign_entropy" in summary["metrics"]


def test_deepcluster_resume_matches_uninterrupted_run(tmp_path, stopped_and_resumed):
    """SIGTERM mid-epoch 1 of 2: bank (per process), assignments and centroids come back from the
    checkpoint, epoch 2 clusters the restored bank, and the resumed run ends with the uninterrupted
    run's weights, centroids and pseudo-labels."""
    extra = ["method=deepclusterv2", "data.num_workers=0", "eval.monitor_train_subset=0"]
    cut, _ = stopped_and_resumed(smoke, tmp_path, extra, 2)
    assert "method.assignments" in cut and "method.centroids" in cut
