"""Shared handling for the entry points: bad input is one line on stderr and exit 2, never a traceback; a failure of
the disk (full, quota, read-only) is one line naming the path and exit 1."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from ssl_bench.common import skipped
from ssl_bench.errors import ConfigError, DataNotFound, TrainingStopped, WriteFailed


def guarded(fn: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    main = int(os.environ.get("RANK", "0")) == 0
    skipped.reset()  # a new command: no run skipped yet, not strict unless it says so
    try:
        return int(fn(argv) or 0)
    except (ConfigError, DataNotFound) as exc:
        if main:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except WriteFailed as exc:
        if main:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingStopped as exc:
        if main:
            print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `... --help | head`: the reader left; stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's flush at exit does not raise again
        return 0
    except OSError as exc:
        if exc.errno is None:
            raise
        # The world around the run (a full disk, a quota, a folder that went away): one line naming the path.
        if main:
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
            print(f"error: {where + ': ' if where else ''}[Errno {exc.errno}] {exc.strerror}", file=sys.stderr)
        return 1


def leave(code: int) -> NoReturn:
    """End a command's process with ``code``. One process of several (WORLD_SIZE > 1) ends with ``os._exit`` once
    its output is flushed: after gloo's process group is destroyed, Python's own finalisation aborts the process
    ("terminate called without an active exception", SIGABRT) in about 1 of 7 two-process CPU runs — 6 of 40 measured,
    2 of 40 with a barrier before the teardown, 0 of 40 with os._exit. Every result is on disk by then (written
    atomically as it is made), so skipping finalisation loses nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing left to flush into
                pass
        os._exit(code)
    sys.exit(code)
