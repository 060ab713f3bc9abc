"""The house keeps its plan: import-linter's contracts in pyproject.toml (the layers, top to bottom, and what an
objective may import) hold for the package, and an import that runs up a layer breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = ("import sys\nfrom importlinter.cli import lint_imports\n"
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def lint(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under ``root`` (its pyproject.toml, its ssl_bench first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_contract_holds():
    p = lint(ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout and "BROKEN" not in p.stdout


def copy_package(dst: Path) -> None:
    shutil.copytree(ROOT / "ssl_bench", dst / "ssl_bench", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))  # ssl_bench/methods: the files, not the link
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")


def test_an_import_up_a_layer_breaks_the_contract(tmp_path):
    copy_package(tmp_path)
    loop = tmp_path / "ssl_bench" / "training" / "loop.py"
    loop.write_text(loop.read_text() + "\nfrom ssl_bench.analysis.report import t_interval  # noqa: E402,F401\n")
    p = lint(tmp_path)
    assert p.returncode == 1 and "BROKEN" in p.stdout
    assert "ssl_bench.training.loop -> ssl_bench.analysis.report" in p.stdout


def test_an_objective_importing_the_records_breaks_its_contract(tmp_path):
    copy_package(tmp_path)
    swav = tmp_path / "ssl_bench" / "methods" / "swav.py"
    swav.write_text(swav.read_text() + "\nfrom ssl_bench.records.io import read_json  # noqa: E402,F401\n")
    p = lint(tmp_path)
    assert p.returncode == 1
    assert "ssl_bench.methods.swav -> ssl_bench.records.io" in p.stdout
