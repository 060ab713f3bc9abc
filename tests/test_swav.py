"""SwAV: the swapped-prediction loss by hand, codes from global crops only, the queue, prototypes."""

import math

import pytest
import torch
import torch.nn.functional as F

import ssl_bench.methods.swav as swav_mod
from ssl_bench.config.compose import compose
from ssl_bench.methods.base import Context
from ssl_bench.methods.swav import swav_loss
from ssl_bench.pipeline.experiment import build_model


def ce(q: list[float], x: list[float], tau: float) -> float:
    """-sum_k q_k log softmax(x / tau)_k, with plain floats."""
    lse = math.log(sum(math.exp(v / tau) for v in x))
    return -sum(qk * (v / tau - lse) for qk, v in zip(q, x, strict=True))


def test_loss_two_crops_by_hand():
    s0, s1 = [0.3, -0.2, 0.5], [0.1, 0.4, -0.6]
    q0, q1 = [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]
    got = swav_loss([torch.tensor([s0]), torch.tensor([s1])], [torch.tensor([q0]), torch.tensor([q1])], 0.1)
    want = 0.5 * (ce(q0, s1, 0.1) + ce(q1, s0, 0.1))  # Eq. 1: l(z_t, q_s) + l(z_s, q_t), averaged
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_loss_multicrop_by_hand():
    # 2 global + 1 local crop, batch of 2: mean over coded crops i of mean over the other crops (Eq. 6).
    s = [[[0.3, -0.2], [0.1, 0.9]], [[0.5, 0.5], [-0.3, 0.2]], [[0.0, 0.8], [0.6, -0.6]]]
    q = [[[0.6, 0.4], [0.2, 0.8]], [[0.5, 0.5], [0.9, 0.1]]]
    got = swav_loss([torch.tensor(x) for x in s], [torch.tensor(x) for x in q], 0.5)
    want = 0.0
    for i in range(2):
        per_crop = [sum(ce(q[i][n], s[v][n], 0.5) for n in range(2)) / 2 for v in range(3) if v != i]
        want += sum(per_crop) / 2
    assert got.item() == pytest.approx(want / 2, rel=1e-5)


def small_swav(**over) -> torch.nn.Module:
    args = ["budget=smoke", "method.num_prototypes=6", "crops.local.n=2"]
    args += [f"method.{k}={v}" for k, v in over.items()]
    cfg = compose(args)
    torch.manual_seed(0)
    return build_model(cfg).method


def test_codes_come_from_global_crops_only(monkeypatch):
    method = small_swav()
    seen = []
    real = swav_mod.sinkhorn

    def spy(scores, eps, iters):
        seen.append(scores.clone())
        return real(scores, eps, iters)

    monkeypatch.setattr(swav_mod, "sinkhorn", spy)
    z = [torch.randn(4, method.embed_dim) for _ in range(4)]  # 2 global + 2 local
    method.loss(z, {})
    assert len(seen) == 2
    for i in range(2):
        assert torch.allclose(seen[i], method.prototypes(F.normalize(z[i], dim=1)))
    # Changing the local crops changes the loss but not the codes.
    seen.clear()
    method.loss(z[:2] + [torch.randn(4, method.embed_dim) for _ in range(2)], {})
    assert all(torch.allclose(a, method.prototypes(F.normalize(z[i], dim=1))) for i, a in enumerate(seen))


def test_queue_fills_then_joins_sinkhorn(monkeypatch):
    method = small_swav(queue_length=32, queue_start_epoch=2)
    sizes = []
    real = swav_mod.sinkhorn
    monkeypatch.setattr(swav_mod, "sinkhorn", lambda s, e, i: (sizes.append(s.shape[0]), real(s, e, i))[1])
    method.on_epoch_start(Context(epoch=1))
    assert method.queue is None  # not before queue_start_epoch
    method.on_epoch_start(Context(epoch=2))
    assert method.queue.shape == (2, 32, method.embed_dim)
    batches = [[torch.randn(16, method.embed_dim) for _ in range(4)] for _ in range(3)]
    for z in batches:
        loss, _ = method.loss(z, {})
        assert torch.isfinite(loss)
    # batch 1 and 2: queue not yet full -> 16 rows; batch 3: 32 queued + 16 -> 48 rows
    assert sizes == [16, 16, 16, 16, 48, 48]
    # the queue holds the last two batches' normalised global projections, newest first
    assert torch.allclose(method.queue[0, :16], F.normalize(batches[2][0], dim=1))
    assert torch.allclose(method.queue[1, 16:], F.normalize(batches[1][1], dim=1))
    state = method.local_state_dict()
    fresh = small_swav(queue_length=32, queue_start_epoch=2)
    fresh.load_local_state_dict(state)
    assert torch.equal(fresh.queue, method.queue)


def test_prototypes_frozen_then_renormalised():
    method = small_swav(freeze_prototypes_iters=3)
    loss, _ = method.loss([torch.randn(4, method.embed_dim, requires_grad=True) for _ in range(4)], {})
    loss.backward()
    assert method.prototypes.weight.grad is not None
    method.after_backward(Context(step=2))
    assert method.prototypes.weight.grad is None  # frozen for steps 0, 1, 2
    method.prototypes.weight.grad = torch.ones_like(method.prototypes.weight)
    method.after_backward(Context(step=3))
    assert method.prototypes.weight.grad is not None
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.after_step(Context(step=3))
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(6))


def test_batch_of_one():
    method = small_swav()
    loss, stats = method.loss([torch.randn(1, method.embed_dim) for _ in range(4)], {})
    assert torch.isfinite(loss) and stats["loss"] > 0


def test_config_rejects_queue_not_multiple_of_batch():
    from ssl_bench.config.compose import ConfigError

    with pytest.raises(ConfigError, match="multiple of data.batch_size"):
        compose(["budget=smoke", "method.queue_length=20"])
