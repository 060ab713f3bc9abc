"""The ablation options the paper claims need (issue 13): SwAV fixed random prototypes and hard codes, CARL's
pooled KL and constant / zero lambda. Each is off by default and changes what it says it changes."""

import math

import pytest
import torch

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.methods.base import Context
from ssl_bench.methods.carl import kl_weight, uniform_kl
from ssl_bench.methods.swav import round_codes, swav_loss
from ssl_bench.pipeline.experiment import build_model
from ssl_bench.training.optim import build_optimizer


def small(method: str, *over: str) -> torch.nn.Module:
    cfg = compose(["budget=smoke", f"method={method}", "method.num_prototypes=6", "crops.local.n=2", *over])
    torch.manual_seed(0)
    return build_model(cfg)


def smoke_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return build_optimizer(model, compose(["budget=smoke"]))  # the optimiser of small()'s runs


def one_step(model: torch.nn.Module) -> None:
    opt = smoke_optimizer(model)
    z = [torch.randn(8, model.method.embed_dim, requires_grad=True) for _ in range(4)]  # stands for the head
    loss, _ = model.method.loss(z, {})
    loss.backward()
    ctx = Context(epoch=0, step=10_000, dataset_size=8)  # past the prototype freeze
    model.method.after_backward(ctx)
    opt.step()
    model.method.after_step(ctx)


# -- SwAV --------------------------------------------------------------------------------------------
def test_options_are_off_by_default():
    m = compose(["method=swav"]).method
    assert (m.fixed_prototypes, m.hard_codes) == (False, False)
    assert compose(["method=carl"]).method.kl_mode == "per_view"


def test_round_codes_by_hand():
    q = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.4, 0.4, 0.2]])
    want = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # a tie goes to the first
    assert torch.equal(round_codes(q), want)


@pytest.mark.parametrize("hard", [False, True])
def test_hard_codes_feed_one_hot_targets_to_the_loss(monkeypatch, hard):
    model = small("swav", f"method.hard_codes={str(hard).lower()}")
    seen = []
    import ssl_bench.methods.swav as swav_mod

    real = swav_mod.swav_loss
    monkeypatch.setattr(swav_mod, "swav_loss", lambda s, c, t: (seen.append(c), real(s, c, t))[1])
    torch.manual_seed(1)
    model.method.loss([torch.randn(8, model.method.embed_dim) for _ in range(4)], {})
    codes = seen[0]
    assert len(codes) == 2  # global crops only
    one_hot = all(bool(((c == 0) | (c == 1)).all()) and torch.allclose(c.sum(1), torch.ones(8)) for c in codes)
    assert one_hot is hard


def test_hard_codes_loss_equals_cross_entropy_on_the_argmax():
    s = [torch.tensor([[0.3, -0.2, 0.5]]), torch.tensor([[0.1, 0.4, -0.6]])]
    q = [torch.tensor([[0.2, 0.7, 0.1]]), torch.tensor([[0.5, 0.1, 0.4]])]
    got = swav_loss(s, [round_codes(c) for c in q], 0.1).item()
    lsm = [torch.log_softmax(x / 0.1, dim=1)[0] for x in s]
    want = 0.5 * (-lsm[1][1] - lsm[0][0]).item()  # crop 1 predicts code 0's argmax (1), crop 0 code 1's (0)
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("fixed", [False, True])
def test_fixed_prototypes_never_move_learned_ones_do(fixed):
    model = small("swav", f"method.fixed_prototypes={str(fixed).lower()}", "method.freeze_prototypes_iters=0")
    before = model.method.prototypes.weight.detach().clone()
    assert torch.allclose(before.norm(dim=1), torch.ones(6))  # random, unit norm either way
    one_step(model)
    after = model.method.prototypes.weight.detach()
    assert torch.equal(before, after) is fixed
    in_optimiser = any(p is model.method.prototypes.weight
                       for g in smoke_optimizer(model).param_groups for p in g["params"])
    assert in_optimiser is not fixed


# -- CARL --------------------------------------------------------------------------------------------
def test_pooled_and_per_view_kl_by_hand():
    # K = 2, two views of 2 images: view a puts everything on prototype 0, view b on prototype 1.
    big = 30.0
    a = torch.tensor([[big, 0.0], [big, 0.0]])
    b = torch.tensor([[0.0, big], [0.0, big]])
    # Per view: each view's batch mean is (almost) one-hot, KL = log 2; pooled: the mean is uniform, KL = 0.
    assert uniform_kl([a, b]).item() == pytest.approx(math.log(2), abs=1e-6)
    assert uniform_kl([a, b], "pooled").item() == pytest.approx(0.0, abs=1e-6)
    # Views that agree: both modes give the same value, KL of p_hat = (p, 1 - p).
    x = torch.tensor([[1.0, 0.0], [0.5, 0.2]])
    p = torch.softmax(x, dim=1).mean(0)
    want = math.log(2) + sum(v * math.log(v) for v in p.tolist())
    assert uniform_kl([x, x.clone()]).item() == pytest.approx(want, rel=1e-5)
    assert uniform_kl([x, x.clone()], "pooled").item() == pytest.approx(want, rel=1e-5)


def test_pooled_kl_never_exceeds_per_view():  # convexity: KL(mean of means) <= mean of KLs
    torch.manual_seed(0)
    for _ in range(20):
        logits = [torch.randn(5, 7) * 3 for _ in range(3)]
        assert uniform_kl(logits, "pooled").item() <= uniform_kl(logits).item() + 1e-6


@pytest.mark.parametrize("mode", ["per_view", "pooled"])
def test_carl_loss_uses_the_configured_kl_mode(mode):
    model = small("carl", "crops.local.n=1", f"method.kl_mode={mode}")
    z = [torch.randn(8, model.method.embed_dim) for _ in range(3)]
    _, logs = model.method.loss(z, {})
    with torch.no_grad():
        logits = [model.method.prototypes(x) for x in z]
    assert logs["loss_kl"] == pytest.approx(uniform_kl(logits, mode).item(), rel=1e-6)
    other = "pooled" if mode == "per_view" else "per_view"
    assert logs["loss_kl"] != pytest.approx(uniform_kl(logits, other).item(), rel=1e-6)


def test_kl_mode_bad_value_names_the_choices():
    with pytest.raises(ConfigError, match="per_view, pooled"):
        compose(["method=carl", "method.kl_mode=mean"])


def test_constant_and_zero_lambda():
    assert [kl_weight(e, 4.0, 1.5, 0) for e in (0, 3, 50)] == [1.5, 1.5, 1.5]
    assert [kl_weight(e, 0.0, 0.0, 0) for e in (0, 3)] == [0.0, 0.0]
    model = small("carl", "method.lambda_end=0", "method.lambda_epochs=0")
    for epoch in (0, 2):
        model.method.on_epoch_start(Context(epoch=epoch, step=0, dataset_size=8))
        z = [torch.randn(8, model.method.embed_dim) for _ in range(4)]
        loss, logs = model.method.loss(z, {})
        assert loss.item() == pytest.approx(logs["loss_consistency"], rel=1e-6)  # no KL term at all
