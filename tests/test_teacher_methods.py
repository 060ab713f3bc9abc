"""DINO, BYOL and Barlow Twins, and the momentum teacher the loop keeps for an objective that asks: losses equal to
lightly's, the EMA and its cosine schedule by hand, the teacher outside the optimiser, eval.network, smoke runs,
stop-and-resume equal to an uninterrupted run."""

import copy
import math
from pathlib import Path

import pytest
import torch
from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity
from lightly.models.utils import update_momentum
from safetensors.torch import load_file

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.methods.barlow_twins import BarlowTwins, barlow_twins_loss, cross_correlation
from ssl_bench.methods.byol import BYOL, byol_loss
from ssl_bench.methods.dino import DINO, teacher_temperature
from ssl_bench.models.networks import Teacher, momentum_at
from ssl_bench.pipeline.experiment import build_model, run_experiment
from ssl_bench.records.identity import run_id
from ssl_bench.training.optim import build_optimizer

NEW = ["dino", "byol", "barlow_twins"]


def views(n: int, b: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g) for _ in range(n)]


# -- the losses against lightly's ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n_local", [0, 3])
def test_dino_loss_and_centre_equal_lightlys(n_local):
    k, d = 40, 12
    torch.manual_seed(0)
    dino = DINO(embed_dim=d, output_dim=k, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=5,
                student_temp=0.1, center_momentum=0.9, num_local_crops=n_local)
    ref = DINOLoss(output_dim=k, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=5,
                   student_temp=0.1, center_momentum=0.9)
    for epoch in (0, 2, 7):  # during the warm-up and after it; the centre carries over between steps
        z = views(2 + n_local, 6, d, seed=epoch)
        teacher = [dino.last_layer(t).detach() * 3 for t in views(2, 6, d, seed=100 + epoch)]
        dino.epoch.fill_(epoch)
        got, _ = dino.loss(z, {"teacher": teacher})
        want = ref(teacher, [dino.last_layer(x) for x in z], epoch=epoch)
        assert got.item() == pytest.approx(want.item(), abs=1e-5)
        assert torch.allclose(dino.center, ref.center.reshape(1, -1), atol=1e-6)
    assert teacher_temperature(0, 0.04, 0.07, 30) == 0.04 and teacher_temperature(29, 0.04, 0.07, 30) == 0.07
    assert teacher_temperature(10, 0.04, 0.07, 31) == pytest.approx(0.05)
    assert teacher_temperature(30, 0.04, 0.07, 30) == 0.07 == teacher_temperature(0, 0.04, 0.07, 0)


def test_byol_loss_is_the_symmetric_negative_cosine():
    p1, p2, t1, t2 = views(4, 8, 16, seed=3)
    ncs = NegativeCosineSimilarity()
    want = 4 + 2 * (ncs(p1, t2) + ncs(p2, t1))  # (2 - 2 cos(q(z1), z'2)) + (2 - 2 cos(q(z2), z'1)), batch means
    assert byol_loss([p1, p2], [t1, t2]).item() == pytest.approx(want.item(), abs=1e-5)
    byol = BYOL(embed_dim=16, predictor_hidden_dim=32)
    got, _ = byol.loss([p1, p2], {"teacher": [t1, t2]})
    q1, q2 = byol.predictor(torch.cat([p1, p2])).chunk(2)
    assert got.item() == pytest.approx((4 + 2 * (ncs(q1, t2) + ncs(q2, t1))).item(), abs=1e-5)


@pytest.mark.parametrize("lam", [5e-3, 0.1])
def test_barlow_twins_loss_equals_lightlys(lam):
    a, b = views(2, 32, 20, seed=4)
    got, _ = BarlowTwins(lambda_param=lam).loss([a, b], {})
    assert got.item() == pytest.approx(BarlowTwinsLoss(lambda_param=lam)(a, b).item(), rel=1e-5, abs=1e-5)
    c = cross_correlation(a, b)  # standardised along the batch: the diagonal of (a, a) is 1 (up to eps)
    assert torch.allclose(torch.diagonal(cross_correlation(a, a)), torch.ones(20), atol=1e-4)
    assert barlow_twins_loss(torch.eye(3), lam).item() == 0.0 and c.shape == (20, 20)


# -- the momentum teacher: schedule, update, optimiser, cost ------------------------------------------------------
def test_momentum_schedule_by_hand():
    assert momentum_at(0, 100, 0.996) == pytest.approx(0.996)
    assert momentum_at(50, 100, 0.996) == pytest.approx(0.998)  # 1 - 0.004 (cos(pi / 2) + 1) / 2
    assert momentum_at(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert momentum_at(100, 100, 0.996) == 1.0 and momentum_at(150, 100, 0.996) == 1.0


def test_ema_update_by_hand_and_as_lightlys():
    student = torch.nn.Linear(2, 1)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[3.0, -1.0]]))
        student.bias.fill_(2.0)
    teacher = Teacher(student, torch.nn.Identity(), torch.nn.Module(), _spec(0.9))
    with torch.no_grad():
        teacher.backbone.weight.copy_(torch.tensor([[1.0, 1.0]]))
        teacher.backbone.bias.fill_(0.0)
    reference = copy.deepcopy(teacher.backbone)
    teacher.update([student, torch.nn.Identity()], 0.9)
    assert torch.allclose(teacher.backbone.weight, torch.tensor([[1.2, 0.8]]))  # 0.9 * 1 + 0.1 * 3, 0.9 - 0.1
    assert torch.allclose(teacher.backbone.bias, torch.tensor([0.2]))
    update_momentum(student, reference, 0.9)
    assert all(torch.allclose(p, q) for p, q in zip(teacher.backbone.parameters(), reference.parameters(),
                                                    strict=True))


def _spec(m):
    from ssl_bench.methods.base import MomentumTeacher

    return MomentumTeacher(m)


@pytest.mark.parametrize("name", ["dino", "byol"])
def test_teacher_is_outside_the_optimiser_and_gets_no_gradient(name):
    cfg = compose([f"method={name}", "budget=smoke"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.teacher is not None
    teacher_params = list(model.teacher.parameters())
    assert teacher_params and not any(p.requires_grad for p in teacher_params)
    groups = build_optimizer(model, cfg).param_groups
    in_optimiser = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in in_optimiser for p in teacher_params)
    assert {id(p) for p in model.parameters() if p.requires_grad} == in_optimiser
    # starts equal to the student; a step leaves it without gradient
    for s, t in zip(model.backbone.parameters(), model.teacher.backbone.parameters(), strict=True):
        assert torch.equal(s, t)
    crops = [torch.randn(16, 3, 28, 28) for _ in range(2)] + [torch.randn(16, 3, 14, 14) for _ in range(2)]
    loss, _ = model({"crops": crops, "index": torch.arange(16)})
    loss.backward()
    assert all(p.grad is None for p in teacher_params)
    if name == "dino":  # its last layer is copied into the teacher
        assert [type(m).__name__ for m in model.teacher.tail] == ["PrototypeLayer"]


@pytest.mark.parametrize("name", ["swav", "simclr", "barlow_twins"])
def test_a_method_that_asks_for_no_teacher_pays_nothing(name):
    model = build_model(compose([f"method={name}", "budget=smoke"]))
    assert model.teacher is None and not any(k.startswith("teacher.") for k in model.state_dict())
    assert model.network() is model.backbone and model.update_teacher(0, 10) is None


def test_eval_network_default_is_the_papers_and_is_checked():
    assert build_model(compose(["method=dino", "budget=smoke"])).network_name() == "teacher"
    assert build_model(compose(["method=byol", "budget=smoke"])).network_name() == "student"
    model = build_model(compose(["method=dino", "budget=smoke", "eval.network=student"]))
    assert model.network(model.network_name("student")) is model.backbone
    assert model.network("teacher") is model.teacher.backbone
    with pytest.raises(ConfigError, match="has no momentum teacher"):
        compose(["method=swav", "budget=smoke", "eval.network=teacher"])
    with pytest.raises(ConfigError, match="unknown eval.network 'both'"):
        compose(["method=dino", "budget=smoke", "eval.network=both"])


# -- in the loop ------------------------------------------------------------------------------------------------
def smoke(tmp_path, *extra):
    return compose(["budget=smoke", "dataset=fashion_mnist", f"output_dir={tmp_path}", "eval.random_baseline=false",
                    "train.num_threads=1", "data.num_workers=0", *extra])


@pytest.mark.parametrize("name", NEW)
def test_smoke_run_finishes_with_finite_loss(tmp_path, name):
    cfg = smoke(tmp_path, f"method={name}", "health.samples=0")
    summary = run_experiment(cfg)
    assert summary["status"] == "complete" and math.isfinite(summary["metrics"]["final_loss"])
    weights = load_file(tmp_path / run_id(cfg) / "checkpoint" / "model.safetensors")
    assert any(k.startswith("teacher.") for k in weights) == (name != "barlow_twins")
    if name != "barlow_twins":  # the teacher follows the student, at a distance
        k = "backbone.features.0.0.weight"
        assert not torch.equal(weights[k], weights[f"teacher.{k}"])


@pytest.mark.parametrize("name", NEW)
def test_stopped_mid_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, stopped_and_resumed, name):
    """SIGTERM mid-epoch 1 of 2: the teacher, DINO's centre and its epoch (teacher temperature) come back from the
    checkpoint, and the resumed run ends with the uninterrupted run's tensors (teacher included) and numbers."""
    cut, _ = stopped_and_resumed(smoke, tmp_path, [f"method={name}", "eval.monitor_train_subset=0", "health.samples=0"],
                                 3)
    assert ("teacher.backbone.features.0.0.weight" in cut) == (name != "barlow_twins")
    assert ("method.center" in cut) == (name == "dino")


def test_evaluating_a_dino_run_later_reads_the_teacher_by_default(tmp_path):
    """The run's final kNN read the teacher (DINO's default); ssl_bench.evaluate of its folder reads the same network
    (the same number), and eval.network=student the student's backbone."""
    from ssl_bench.evaluate import evaluate
    from ssl_bench.evaluation.checkpoint import backbone_state

    cfg = smoke(tmp_path, "method=dino", "health.samples=0", "eval.monitor_train_subset=0")
    summary = run_experiment(cfg)
    run = tmp_path / run_id(cfg)
    again = evaluate([f"checkpoint={run}", "eval=knn", "train.num_threads=1"])
    assert again["knn"]["top1"] == pytest.approx(summary["metrics"]["knn_top1"])
    state = load_file(run / "checkpoint" / "model.safetensors")
    teacher, student = backbone_state(state, "teacher"), backbone_state(state)
    assert teacher.keys() == student.keys() and any(not torch.equal(teacher[k], student[k]) for k in teacher)
    with pytest.raises(ConfigError, match="holds no momentum teacher"):
        backbone_state({k: v for k, v in state.items() if not k.startswith("teacher.")}, "teacher")


def test_global_batch_norm_keeps_the_teacher_frozen():
    """Several processes convert batch norm to GlobalBatchNorm (CPU): the teacher's layers must stay without
    gradient there too (else DDP finds unused parameters and the optimiser gets the teacher's)."""
    from ssl_bench.training.syncbn import convert_global_batchnorm

    model = convert_global_batchnorm(build_model(compose(["method=byol", "budget=smoke"])))
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_the_loop_names_no_method():
    """Method-agnostic: the training loop's source (code, comments and docstrings) names no registered objective, so
    a method's behaviour can only come from its own file."""
    import ssl_bench.training.loop as loop
    from ssl_bench.methods import registry

    text = Path(loop.__file__).read_text().lower()
    names = {n.lower() for n in registry()} | {"swav", "simclr", "deepcluster", "sela", "barlow", "carl", "dino",
                                                "byol"}
    assert len(registry()) >= 8 and not [n for n in names if n in text]
