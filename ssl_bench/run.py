"""Entry point: ``accelerate launch -m ssl_bench.run method=swav dataset=fashion_mnist budget=demo [key=value]``
(``python -m ssl_bench.run ...`` for one process). Composes the config, trains, evaluates, writes the record.

A run prints one line saying what it trains and where its config.yaml is (``print_config=true`` prints the
whole resolved config), its progress, and at the end its accuracy beside the shipped reference record of the
same configuration, if there is one. A finished run is reported, not retrained (``overwrite=true``)."""

from __future__ import annotations

import sys

from ssl_bench.cli import guarded
from ssl_bench.config import compose
from ssl_bench.experiment import run_experiment


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    run_experiment(compose(argv))
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
