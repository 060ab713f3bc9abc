"""Entry point: ``accelerate launch -m ssl_bench.run method=swav dataset=fashion_mnist budget=demo [key=value]``
(``python -m ssl_bench.run ...`` for one process). Composes the config, trains, evaluates, writes the record."""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from ssl_bench.cli import guarded
from ssl_bench.config import compose
from ssl_bench.experiment import run_experiment


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    cfg = compose(argv)
    if guarded_rank0():
        print(OmegaConf.to_yaml(cfg))
    run_experiment(cfg)
    return 0


def guarded_rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


if __name__ == "__main__":
    sys.exit(guarded(main))
