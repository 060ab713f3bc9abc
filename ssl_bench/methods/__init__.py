"""Source checkout only: ``ssl_bench.methods`` is the top-level methods/ folder (its __init__ runs here)."""

from pathlib import Path

# One copy of the objectives under one name: the wheel maps methods/ to ssl_bench/methods (pyproject package-dir, so
# this file is never installed), and a checkout (python -m in the repo root, editable install, tests) imports it here.
__path__ = [str(Path(__file__).resolve().parent.parent.parent / "methods")]
_init = Path(__path__[0]) / "__init__.py"
exec(compile(_init.read_text(), str(_init), "exec"))
