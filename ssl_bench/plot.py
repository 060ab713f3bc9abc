"""Entry point: figures and a Markdown report from the run records.

    python -m ssl_bench.plot --help

The library is :mod:`ssl_bench.analysis.plot`; this module is the command line and the public names users import."""

from __future__ import annotations

from ssl_bench.analysis.plot import COMMAND, main, plot  # noqa: F401  (the public names of ``ssl_bench.plot``)
from ssl_bench.config.cli import guarded, leave

if __name__ == "__main__":
    import numpy as np

    np.seterr(all="ignore")
    leave(guarded(main))
