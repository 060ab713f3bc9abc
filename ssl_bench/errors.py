"""The user-facing exceptions, in one leaf module that every layer imports (it imports nothing of its own), so
that raising or catching one never pulls in the config schema, the methods, the training loop or torch.

:func:`ssl_bench.cli.guarded` turns ConfigError and DataNotFound into one ``error: ...`` line and exit 2, and
TrainingStopped into one ``stopped: ...`` line and its exit code. The old homes (ssl_bench.config, ssl_bench.data,
ssl_bench.train) still export them.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line."""


class DataNotFound(FileNotFoundError):
    """The data is not where the config says; the message (one line) says how to get it."""


class TrainingStopped(RuntimeError):
    """Training ended early: diverged (NaN loss) or interrupted (a checkpoint was saved)."""

    def __init__(self, message: str, exit_code: int, pruned: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.pruned = pruned  # stopped on purpose by an epoch callback (e.g. a sweep's pruner)
