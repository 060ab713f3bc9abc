"""Entry point: does an objective behave? ``ssl-bench check-method <name>`` (loss, gradients, resume, one process =
two, same seed = same numbers).

    python -m ssl_bench.check_method swav

The library is :mod:`ssl_bench.analysis.conformance`."""

from __future__ import annotations

from ssl_bench.analysis.conformance import check_method, main  # noqa: F401  (the public names)
from ssl_bench.config.cli import guarded, leave

if __name__ == "__main__":
    leave(guarded(main))
