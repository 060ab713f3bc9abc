"""SIGTERM and SIGINT during a run: inside the training loop a flag the loop polls (it saves a checkpoint and stops
cleanly), outside it an immediate one-line stop. A SLURM job's SIGUSR1 goes to its batch shell, which turns it into
SIGTERM for the run (ssl_bench.pipeline.launching). Imports only the errors.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Self

from ssl_bench.errors import TrainingStopped

# Tests: SSL_BENCH_PAUSE_AT_STEP=<n>:<file> makes the first process of any run to reach optimiser step n create
# <file> (holding the run's folder) and wait there, up to 5 minutes, for a stop signal; a test can then stop that
# run mid-epoch at a known step, however long the run took to start.
PAUSE_ENV = "SSL_BENCH_PAUSE_AT_STEP"


class _OnSignal:
    """While inside, SIGTERM and SIGINT go to ``_handle``; the previous handlers come back on exit. Both replace an
    inherited SIG_IGN (a script's background job), so a run obeys ``kill -INT`` the same way in every phase."""

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)


class Interrupt(_OnSignal):
    """Turns SIGTERM/SIGINT into a flag the loop polls, so it can save a checkpoint and stop cleanly."""

    def __init__(self) -> None:
        super().__init__()
        self.flag = False

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        self.flag = True


class StopOnSignal(_OnSignal):
    """Outside the training loop (the random-init baseline, the final evaluation, the record) there is no state to
    checkpoint, so SIGTERM/SIGINT stop at once: TrainingStopped(``message``, 130), which the entry points print as
    one line (Ctrl-C here used to print a KeyboardInterrupt traceback). ``message`` says what is kept; set it as
    the run moves on."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        raise TrainingStopped(self.message, 130)


def pause_if_asked(step: int, interrupt: Interrupt, where: str) -> None:
    """The test hook of PAUSE_ENV (a no-op without it): at optimiser step ``step`` == n, the first process to
    create the file waits for ``interrupt``'s flag."""
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec or int(spec.split(":", 1)[0]) != step:
        return
    try:
        fd = os.open(spec.split(":", 1)[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another run (or this one before a resume) took it
    os.write(fd, where.encode())
    os.close(fd)
    deadline = time.monotonic() + 300
    while not interrupt.flag and time.monotonic() < deadline:
        time.sleep(0.05)
