"""python -m ssl_bench.sweep / accelerate launch -m ssl_bench.sweep (see ssl_bench.sweep.spec.DOC, or --help)."""

from ssl_bench.config.cli import leave
from ssl_bench.sweep.command import entry

if __name__ == "__main__":
    leave(entry())
