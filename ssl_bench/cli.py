"""Shared handling for the entry points: bad input is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ssl_bench.errors import ConfigError, DataNotFound, TrainingStopped


def guarded(fn: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        return int(fn(argv) or 0)
    except (ConfigError, DataNotFound) as exc:
        if main:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        if main:
            print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `... --help | head`: the reader left; stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's flush at exit does not raise again
        return 0
