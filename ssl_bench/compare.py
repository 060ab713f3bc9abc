"""Entry point: run every method under one identical budget and write the comparison table.

    python -m ssl_bench.compare --help

The library is :mod:`ssl_bench.analysis.compare`; this module is the command line and the public names users import."""

from __future__ import annotations

from ssl_bench.analysis.compare import COMMAND, Plan, arguments, compare, main, plan, plan_arguments  # noqa: F401  (the public names of ``ssl_bench.compare``)
from ssl_bench.config.cli import guarded, leave

if __name__ == "__main__":
    leave(guarded(main))
