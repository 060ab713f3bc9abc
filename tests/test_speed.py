"""Speed options of the loop (train.compile, train.channels_last, optim.fused): each gives the eager, contiguous,
unfused result within float round-off, keeps the checkpoint's keys and the run's configuration, and is refused
in one line where it does not exist (fused LARS)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from benchmarks.benchmark import _Indices, synthetic_batch
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.pipeline.experiment import build_model, make_accelerator
from ssl_bench.records.identity import configuration_id
from ssl_bench.training.loop import Trainer
from ssl_bench.training.optim import build_optimizer

# A small convnet, one thread, a tiny batch: a step is a few milliseconds.
BASE = ["budget=smoke", "train.num_threads=1", "data.batch_size=4", "backbone.width=4", "head.hidden_dim=16",
        "head.out_dim=8", "method.num_prototypes=6", "method.freeze_prototypes_iters=0"]


def loop_steps(tmp: Path, over: list[str], steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses of ``steps`` Trainer.train_step calls on one synthetic batch, and the final weights."""
    torch.set_num_threads(1)
    cfg = compose([*BASE, *over])
    torch.manual_seed(0)
    model = build_model(cfg)
    acc = make_accelerator(cfg, tmp)
    try:
        trainer = Trainer(cfg, acc, model, _Indices(64), {}, tmp, 0)
        batch = synthetic_batch(cfg)
        losses = [float(trainer.train_step(batch)[0]) for _ in range(steps)]
        state = {k: v.detach().clone().contiguous() for k, v in trainer.unwrapped.state_dict().items()}
    finally:
        acc.end_training()
        AcceleratorState._reset_state()
        GradientState._reset_state()
    return losses, state


def assert_same_run(a, b, atol: float, skip: tuple[str, ...] = ()) -> None:
    (la, sa), (lb, sb) = a, b
    assert sa.keys() == sb.keys()  # checkpoints stay interchangeable (no _orig_mod. prefix)
    # Losses relative to their size (SwAV's Sinkhorn at epsilon 0.05 magnifies round-off), weights absolute.
    assert all(abs(x - y) <= atol * max(1.0, abs(y)) for x, y in zip(la, lb, strict=True)), (la, lb)
    worst = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa if k not in skip)
    assert worst <= atol, worst


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return loop_steps(tmp_path_factory.mktemp("eager"), [])


def test_channels_last_gives_the_contiguous_result(tmp_path, eager):
    assert_same_run(loop_steps(tmp_path, ["train.channels_last=true"]), eager, atol=1e-5)


# The head's first bias feeds a BatchNorm, so its gradient is round-off noise that Adam scales to full-size steps,
# differently in each implementation (and the BN's running mean follows it).
FUSED_SKIP = {"adamw": ("head.net.0.bias", "head.net.1.running_mean")}
# Fused and unfused kernels round differently, and how much depends on the CPU kernel path: the largest weight gap
# measured over five paths (`python -m benchmarks.kernel_spread --only optim`) is 3.7e-9 for SGD and 1.04e-6 for
# AdamW (an AVX2 machine's kernels; 1.3e-7 on AVX-512). Tolerances at about ten times that; a real difference of
# update rule (weight decay, bias correction) moves weights by ~lr = 1e-2.
FUSED_ATOL = {"sgd": 1e-7, "adamw": 1e-5}


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_fused_optimiser_gives_the_default_result(tmp_path, optim):
    over = [f"optim.name={optim}", "optim.lr=0.01"]
    assert_same_run(loop_steps(tmp_path, [*over, "optim.fused=true"]), loop_steps(tmp_path, over),
                    FUSED_ATOL[optim], FUSED_SKIP.get(optim, ()))
    cfg = compose([*BASE, *over, "optim.fused=true"])
    assert all(g["fused"] for g in build_optimizer(build_model(cfg), cfg).param_groups)


def test_fused_lars_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"optim.fused=true: lars has no fused version.*sgd, adamw"):
        compose(["budget=smoke", "optim.name=lars", "optim.fused=true"])
    with pytest.raises(ConfigError, match="train.compile_backend"):
        compose(["budget=smoke", "train.compile_backend=nope"])


def test_compile_traces_the_eager_result(tmp_path, eager):
    # aot_eager: the graphs torch.compile captures (forward and backward, both crop sizes), run without code
    # generation, so this checks what compiling changes in the loop within a second.
    torch._dynamo.reset()
    assert_same_run(loop_steps(tmp_path, ["train.compile=true", "train.compile_backend=aot_eager"]), eager, atol=1e-5)


def test_compile_with_inductor_matches_eager_within_tolerance(tmp_path):
    # Inductor generates C++ kernels here: one crop size (one graph per module) keeps it to seconds, not minutes.
    over = ["crops.local.n=0"]
    ref = loop_steps(tmp_path, over, steps=2)
    torch._dynamo.reset()
    t0 = time.time()
    try:
        got = loop_steps(tmp_path, [*over, "train.compile=true"], steps=2)
    except Exception as exc:  # no C++ compiler, or an inductor that cannot build on this machine
        pytest.skip(f"inductor cannot compile on this machine: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    finally:
        torch._dynamo.reset()
    assert_same_run(got, ref, atol=1e-4)
    print(f"inductor compile + 2 steps: {time.time() - t0:.0f} s")


def test_speed_options_do_not_change_the_configuration():
    base = configuration_id(compose(["budget=smoke"]))
    for over in (["train.compile=true"], ["train.channels_last=true"], ["optim.fused=true"]):
        assert configuration_id(compose(["budget=smoke", *over])) == base, over
