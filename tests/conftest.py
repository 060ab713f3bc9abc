"""Shared test setup: tests never touch the network (the Hugging Face hub would hang offline), and two tiers.

The default run is the fast tier: every module's unit tests and a few short runs, minutes on 2 cores (the README's
test command). Tests marked ``slow`` (integration: many trainings, subprocesses, two-process runs, retraining shipped
records) run too with ``--full`` or SSL_BENCH_FULL_TESTS=1, as CI does (.ci/run).
"""

import os
import signal
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FULL_ENV = "SSL_BENCH_FULL_TESTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="also run the slow integration tests (marked slow); CI does")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: an integration test of the full tier (run with --full)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full") or os.environ.get(FULL_ENV, "") not in ("", "0"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture
def sigterm_at_step(monkeypatch):
    """``arm(n)``: the n-th training step from now sends this process SIGTERM (as a scheduler's time limit
    would); returns ``disarm()``, which restores the real step for the resumed run."""
    from ssl_bench.training.loop import Trainer

    real_step = Trainer.train_step

    def arm(n: int):
        calls = [0]

        def step_then_sigterm(self, batch):
            out = real_step(self, batch)
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
        return lambda: monkeypatch.setattr(Trainer, "train_step", real_step)

    return arm


@pytest.fixture
def stopped_and_resumed(sigterm_at_step):
    """``check(compose, tmp_path, overrides, step)``: trains the run uninterrupted (in tmp_path/full), then again with
    SIGTERM after ``step`` steps and a resume (tmp_path/cut); asserts the two end with equal checkpoint tensors and
    equal per-epoch numbers (timings aside) and returns both checkpoints' tensors (cut, full) for more checks."""
    import json

    from safetensors.torch import load_file

    from ssl_bench.pipeline.experiment import run_experiment
    from ssl_bench.records.identity import run_id
    from ssl_bench.training.loop import TrainingStopped

    def check(compose, tmp_path, overrides, step):
        run_experiment(compose(tmp_path / "full", *overrides))
        cfg = compose(tmp_path / "cut", *overrides)
        disarm = sigterm_at_step(step)
        with pytest.raises(TrainingStopped):
            run_experiment(cfg)
        disarm()
        run_experiment(compose(tmp_path / "cut", *overrides, "resume=true"))
        cut, full = (load_file(tmp_path / d / run_id(cfg) / "checkpoint" / "model.safetensors")
                     for d in ("cut", "full"))
        assert cut.keys() == full.keys()
        for k in cut:
            assert torch.equal(cut[k], full[k]), k
        rows = [[json.loads(line) for line in (tmp_path / d / run_id(cfg) / "metrics.jsonl").read_text().splitlines()]
                for d in ("full", "cut")]
        assert len(rows[0]) == len(rows[1])
        for x, y in zip(*rows, strict=True):  # every epoch's numbers, the interrupted epoch's mean loss included
            assert {k: v for k, v in x.items() if not k.endswith(("_s", "per_s"))} == \
                   {k: v for k, v in y.items() if not k.endswith(("_s", "per_s"))}
        return cut, full

    return check


def assert_cli_error(module: str, *args: str, starts: str) -> None:
    """``python -m module args`` exits 2 with one ``error: ...`` line on stderr (``starts``) and no traceback."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith(starts)
