"""The user-facing exceptions, in one leaf module that every layer imports (it imports nothing of its own), so
that raising or catching one never pulls in the config schema, the methods, the training loop or torch.

:func:`ssl_bench.config.cli.guarded` turns ConfigError and DataNotFound into one ``error: ...`` line and exit 2, and
TrainingStopped into one ``stopped: ...`` line and its exit code. The old homes (ssl_bench.config.compose,
ssl_bench.data,
ssl_bench.training.loop) still export them.
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


class UnreadableRecord(ConfigError):
    """A run folder's record (summary.json, config.yaml, metrics.jsonl) cannot be read: cut short, not JSON/YAML,
    or not a record. The message is one line naming the file and what is wrong. Readers of many records skip
    the folder with a warning instead (ssl_bench.common.skipped); with strict=true it is an error (exit 2)."""

    def __init__(self, path: object, problem: str) -> None:
        import os

        path = os.path.abspath(str(path))  # named whole: readers may hold it relative to another folder
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class WriteFailed(RuntimeError):
    """Writing a file failed in the world around the suite (a full disk, a quota, a read-only or vanished folder).
    The message is one line naming the path and the error; nothing half-written is left. Exit 1."""
