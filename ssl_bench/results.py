"""Entry point: read run records; `python -m ssl_bench.results migrate <folder>` renames old hash-named records.

    python -m ssl_bench.results --help

The library is :mod:`ssl_bench.records.io`; this module is the command line and the public names users import."""

from __future__ import annotations

from ssl_bench.config.cli import guarded, leave
from ssl_bench.records.io import load, load_epochs, main, read_config, read_metrics, read_summary  # noqa: F401  (the public names of ``ssl_bench.results``)

if __name__ == "__main__":
    leave(guarded(main))
