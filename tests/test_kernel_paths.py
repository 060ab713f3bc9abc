"""The suite's exactness checks pass on another CPU kernel path, as they must on a user's or CI's machine with another
CPU (ssl_bench.common.kernels): the fused-optimiser comparison and the shipped-sample verification run in a child pytest
with the portable ATen kernels and MKL's reproducible mode, where every shipped record is checked approximately
(within ssl_bench.analysis.verify.SPREAD) instead of exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.common.kernels import KERNEL_ENV, kernel_path, other_path_environ

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

EXACTNESS_CHECKS = [
    "tests/test_speed.py::test_fused_optimiser_gives_the_default_result",
    "tests/test_verify.py::test_the_shipped_sample_reproduces_with_todays_code",
]


def child(code_or_args: list[str]) -> subprocess.CompletedProcess:
    env = {**other_path_environ(), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1500)


def test_the_other_path_is_another_kernel_path():
    p = child(["-c", "from ssl_bench.common.kernels import kernel_path; print(kernel_path())"])
    assert p.returncode == 0, p.stderr
    other = p.stdout.strip()
    assert other != kernel_path()
    if not any(os.environ.get(k) for k in KERNEL_ENV):  # this process on the machine's own path: the child not
        assert "aten DEFAULT" in other and "MKL_CBWR=COMPATIBLE" in other


def test_a_forced_path_gives_the_machine_its_own_path_back():
    assert "ATEN_CPU_CAPABILITY" not in other_path_environ({"ATEN_CPU_CAPABILITY": "default", "PATH": "/bin"})
    assert other_path_environ({"PATH": "/bin"})["MKL_CBWR"] == "COMPATIBLE"


def test_the_exactness_checks_pass_on_another_kernel_path():
    p = child(["-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--full", *EXACTNESS_CHECKS])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "3 passed" in p.stdout, p.stdout[-1000:]
