"""The ``ssl-bench`` command: ``ssl-bench <command> [key=value ...]`` is ``python -m ssl_bench.<command> ...``.

    ssl-bench run budget=smoke          ssl-bench compare study=methods        ssl-bench <command> --help
    ssl-bench check-method swav         (python -m ssl_bench.check_method swav)
"""

from __future__ import annotations

import runpy
import sys

COMMANDS = {
    "run": "train, evaluate and record one run",
    "evaluate": "evaluate a trained checkpoint with the shared protocols",
    "compare": "run every method under one budget and write the comparison table",
    "sweep": "a hyperparameter study on Optuna (every trial an ordinary run)",
    "plot": "figures and a Markdown report from the run records",
    "launch": "the commands (or a SLURM script) that run a config on many GPUs and nodes",
    "reference": "regenerate or check the shipped reference tables and figures",
    "claims": "the papers' claims tested at small scale: results/claims.md from the records",
    "check-method": "does an objective behave? loss, gradients, resume, 1 = 2 processes, seed "
                    "(ssl_bench.analysis.conformance)",
}
# Commands whose module is not named like the command.
MODULES = {"check-method": "check_method"}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    return "\n".join(["usage: ssl-bench <command> [key=value ...]", "", "commands:", *lines, "",
                      "ssl-bench <command> --help lists the keys of a command."])


def main(argv: list[str] | None = None) -> int:
    """Run ``ssl_bench.<command>`` exactly as ``python -m`` does; returns its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv and argv[0] in ("-sc", "--shell-completion"):  # Hydra's completion script calls `ssl-bench -sc ...`
        argv = ["run", *argv]
    if not argv or argv[0] not in COMMANDS:
        what = f"unknown command '{argv[0]}'" if argv else "a command is required"
        print(f"error: {what}; valid commands: {', '.join(COMMANDS)} (ssl-bench --help)", file=sys.stderr)
        return 2
    # Run the module as __main__ rather than call its main() here: its own `guarded(main)` block (and whatever else
    # it sets up: sweep's interrupt message, plot's numpy settings, an argv-reading Hydra app) is then the one code
    # path of both forms.
    saved, sys.argv = sys.argv, [sys.argv[0], *argv[1:]]
    try:
        runpy.run_module(f"ssl_bench.{MODULES.get(argv[0], argv[0])}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
