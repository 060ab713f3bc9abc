"""A new user's first minutes: on a copy of the tracked files alone (no results/runs, nothing trained), every
read-only command works on the shipped records: plot, compare's report (train=false), claims and the API's record
loader. The other tests always train first, so only here does a reader meet a results folder without runs of yours
beside the shipped records and their copies (results/health/runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """The files a clone would have (tracked, plus new ones not ignored), copied; symlinks kept as links."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    dst = tmp_path_factory.mktemp("clone")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst / rel)
        else:
            shutil.copy2(src, dst / rel)
    assert not (dst / "results" / "runs").exists()
    return dst


def run(clone: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(clone)}
    env.pop("SSL_BENCH_REFERENCE", None)
    return subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_plot_on_a_fresh_clone_draws_the_shipped_records_and_says_so(fresh):
    p = run(fresh, "-m", "ssl_bench.plot")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no runs of yours under results/runs yet" in p.stderr and "results/reference/runs" in p.stderr
    report = (fresh / "results" / "figures" / "report.md").read_text()
    assert "## Budget `demo`" in report
    assert not (fresh / "results" / "runs").exists()  # nothing trained, nothing written as a run


def test_compare_report_claims_and_the_api_loader_on_a_fresh_clone(fresh):
    p = run(fresh, "-m", "ssl_bench.compare", "study=methods", "dataset=fashion_mnist", "budget=demo", "seeds=auto",
            "results=results/reference", "train=false", "name=fresh")
    assert p.returncode == 0, p.stderr[-2000:]
    table = (fresh / "results" / "reference" / "compare" / "fresh" / "table.md").read_text()
    shipped = (ROOT / "results" / "reference" / "compare" / "methods-fashion_mnist-demo" / "table.md").read_text()
    assert table.split("\n", 2)[2] == shipped.split("\n", 2)[2]  # the same table (its title names the folder)

    p = run(fresh, "-m", "ssl_bench.claims", "out=claims_fresh.md", "figures=false")
    assert p.returncode == 0, p.stderr[-2000:]
    assert (fresh / "claims_fresh.md").read_text() == (ROOT / "results" / "claims.md").read_text()

    code = ("from ssl_bench import api\n"
            "df = api.load('results/reference')\n"
            "print(len(df), df['run_id'].nunique(), df['path'].str.contains('health').sum())\n"
            "try:\n    api.load('results')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    p = run(fresh, "-c", code)
    assert p.returncode == 0, p.stderr[-2000:]
    counts, error = p.stdout.splitlines()[:2]
    n, unique, health = map(int, counts.split())
    assert n == unique and n > 100 and health == 0  # every shipped record once, no copy of one
    # results/ alone holds no runs of the user yet: one line that names where the shipped ones are
    assert error.startswith("ConfigError: no run records") or error.startswith("ConfigError no run records")
    assert "results/reference" in error
