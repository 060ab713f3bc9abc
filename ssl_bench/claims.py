"""Entry point: the papers' claims, tested at small scale, from the shipped records.

    python -m ssl_bench.claims --help

The library is :mod:`ssl_bench.analysis.claims`; this module is the command line and the public names users import."""

from __future__ import annotations

from ssl_bench.analysis.claims import COMMAND, main  # noqa: F401  (the public names of ``ssl_bench.claims``)
from ssl_bench.config.cli import guarded, leave

if __name__ == "__main__":
    leave(guarded(main))
