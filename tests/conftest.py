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


def assert_cli_error(module: str, *args: str, starts: str) -> None:
    """``python -m module args`` exits 2 with one ``error: ...`` line on stderr (``starts``) and no traceback."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith(starts)
