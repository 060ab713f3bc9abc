"""Every shipped objective is an nn.Module built from keyword arguments whose docstring example runs in a plain
PyTorch loop (no ssl_bench loop), and the config adapter builds exactly those arguments from a run config."""

import dataclasses
import doctest
import inspect

import pytest
import torch

from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.registry import method_kwargs, registry

SHIPPED = ["swav", "simclr", "deepclusterv2", "selav2", "carl", "dino", "byol", "barlow_twins"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_docstring_example_runs_in_a_plain_loop(name):
    cls = registry()[name].cls
    tests = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, globs={})
    assert tests and tests[0].examples, f"{cls.__name__} has no example"
    assert any("optimizer.step()" in e.source for e in tests[0].examples)  # a training loop, not just a call
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("name", SHIPPED)
def test_defaults_are_the_config_dataclass_and_the_adapter_passes_every_field(name):
    entry = registry()[name]
    params = inspect.signature(entry.cls).parameters
    for f in dataclasses.fields(entry.config):
        if f.name != "name":  # each hyperparameter is a keyword argument with the dataclass's default, once
            assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY and params[f.name].default == f.default
    cfg = compose([f"method={name}", "budget=smoke", "crops.local.n=3", "seed=7"])
    kwargs = method_kwargs(cfg, 32)
    assert {k: kwargs[k] for k in cfg.method if k != "name"} == {k: v for k, v in cfg.method.items() if k != "name"}
    assert set(kwargs) - set(cfg.method) <= set(params)  # run values only when the constructor names them
    if "num_local_crops" in params:
        assert kwargs["num_local_crops"] == 3
    if "seed" in params:
        assert kwargs["seed"] == 7


def test_swav_keyword_arguments_are_checked_in_one_line():
    from ssl_bench.methods.swav import SwAV

    swav = SwAV(embed_dim=8, num_prototypes=5, temperature=0.2, epsilon=0.03, sinkhorn_iterations=2)
    assert swav.prototypes.weight.shape == (5, 8) and swav.hp.epsilon == 0.03
    loss, stats = swav([torch.randn(4, 8), torch.randn(4, 8)])  # calling the module is calling loss
    assert torch.isfinite(loss) and stats["loss"] == loss.item()
    with pytest.raises(ConfigError, match="method.epsilon must be > 0, got -1"):
        SwAV(embed_dim=8, epsilon=-1)
    with pytest.raises(ConfigError, match="must be a multiple of data.batch_size=16"):
        SwAV(embed_dim=8, queue_length=24, batch_size=16)
    with pytest.raises(ConfigError, match="swav needs at least 2 crops"):
        SwAV(embed_dim=8, num_global_crops=1)


def test_validating_a_config_draws_no_random_number():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    compose(["method=swav", "budget=smoke"])  # builds the objective once to run its checks
    assert torch.equal(torch.get_rng_state(), before)
