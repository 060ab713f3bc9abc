"""Sinkhorn-Knopp: equipartition, agreement with the paper's pseudo-code, finiteness for any range."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

from ssl_bench.ops.sinkhorn import random_cosine_scores, sinkhorn, sinkhorn_log_reference, sinkhorn_reference


def cosine_scores(b: int, k: int, seed: int = 0) -> torch.Tensor:
    return random_cosine_scores(b, k, d=16, seed=seed)


def test_matches_paper_pseudocode():
    s = cosine_scores(64, 30)
    ours = sinkhorn(s, epsilon=0.05, iterations=3)
    ref = sinkhorn_reference(s, epsilon=0.05, iterations=3).float()
    assert ours.shape == (64, 30)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-4)


def test_matches_lightly_on_cosine_scores():
    s = cosine_scores(128, 50, seed=1)
    assert torch.allclose(sinkhorn(s, 0.05, 3), lightly_sinkhorn(s, 3, 0.05), atol=1e-5)


@pytest.mark.parametrize("iters", [1, 3, 10])
def test_rows_are_distributions_and_columns_equipartition(iters):
    b, k = 200, 20
    q = sinkhorn(cosine_scores(b, k, seed=2), epsilon=0.05, iterations=iters)
    assert torch.allclose(q.sum(1), torch.ones(b), atol=1e-5)  # each code is a distribution
    assert (q >= 0).all()
    if iters == 10:  # the prototype marginal approaches B/K each (exact in the limit, next test)
        assert torch.allclose(q.sum(0), torch.full((k,), b / k), rtol=0.05)


def test_more_iterations_tighten_equipartition():
    s = cosine_scores(300, 30, seed=3)
    err = [(sinkhorn(s, 0.05, it).sum(0) - 10).abs().max().item() for it in (1, 3, 30)]
    assert err[0] > err[1] > err[2]
    assert err[2] < 1e-3


def test_finite_and_correct_for_huge_scores():
    s = cosine_scores(64, 30, seed=4) * 1000  # scores / eps = 2e4: exp overflows float32 and float64
    assert not torch.isfinite(lightly_sinkhorn(s, 3, 0.05)).all()  # the problem we avoid
    q = sinkhorn(s, 0.05, 3)
    assert torch.isfinite(q).all()
    # logits of 2e4 carry float32 rounding of ~1e-3 in the exponent; the float64 reference agrees to that
    assert torch.allclose(q.double(), sinkhorn_log_reference(s, 0.05, 3), atol=1e-3)


def test_log_domain_fallback_when_a_prototype_underflows():
    s = cosine_scores(32, 8, seed=5)
    s[:, 3] = -50.0  # prototype 3 is exp(-1000) away from every sample: its row underflows to 0
    q = sinkhorn(s, 0.05, 3)
    assert torch.isfinite(q).all()
    assert torch.allclose(q.double(), sinkhorn_log_reference(s, 0.05, 3), atol=1e-4)  # float32 logits of 1e3
    assert q[:, 3].sum() > 1.0  # equipartition still gives it its share (about 32/8 = 4 samples)


def test_batch_of_one_and_half_precision_input():
    q = sinkhorn(cosine_scores(1, 5).half(), 0.05, 3)
    assert q.dtype == torch.float32 and torch.allclose(q.sum(), torch.tensor(1.0))


def test_rejects_bad_parameters():
    with pytest.raises(ValueError):
        sinkhorn(cosine_scores(4, 3), epsilon=0.0)
    with pytest.raises(ValueError):
        sinkhorn(cosine_scores(4, 3), iterations=0)


@pytest.mark.slow
def test_two_processes_give_the_codes_of_the_whole_batch(tmp_path):
    """accelerate launch, 2 gloo processes, each with half the batch: same codes as one process."""
    out = tmp_path / "codes"
    out.mkdir()
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    worker = Path(__file__).with_name("dist_sinkhorn_worker.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "29531", str(worker), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = torch.load(out / "full.pt")
    s = cosine_scores(96, 24, seed=7)
    one = sinkhorn(s, 0.05, 3)
    assert torch.allclose(full, one, atol=1e-6)
    assert torch.allclose(full.sum(1), torch.ones(96), atol=1e-5)
    s[:, 3] = -50.0
    assert torch.allclose(torch.load(out / "full_log.pt"), sinkhorn(s, 0.05, 3), atol=1e-5)
