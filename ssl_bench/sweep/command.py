"""The sweep command: parse, open the study, plan, run the trials (here, in worker processes, or with the other
processes of an accelerate launch), report."""

from __future__ import annotations

import sys

from ssl_bench.config.cli import guarded
from ssl_bench.config.overrides import help_requested
from ssl_bench.errors import ConfigError
from ssl_bench.sweep.report import report_only, summarize
from ssl_bench.sweep.spec import COMMAND, Sweep, parse, split_argv
from ssl_bench.sweep.storage import StorageUnavailable, is_storage_error, open_study, plan_trials, redact, unavailable
from ssl_bench.sweep.trials import follow, optimize
from ssl_bench.sweep.workers import end_processes, rank, share, spawn_workers, world_size


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    if any(a.split("=", 1)[0] == "study" for a in argv):  # compare and plot's study= is a study file
        raise ConfigError("sweep names its Optuna study with study_name=<name>; study= is a study file of compare "
                          "and plot (experiments/study/)")
    own, _, _ = split_argv(argv)
    if "sweep" not in own and own.get("n_trials") == 0 and "study_name" in own:
        return report_only(own)
    sw = parse(argv)
    if rank() != 0:
        try:
            follow(sw)
        finally:
            end_processes()
        return 0
    try:
        return _main(sw)
    except Exception as exc:
        if is_storage_error(exc):  # the server stopped, the network or the journal's filesystem went away
            raise unavailable(sw.storage, exc) from None
        raise


def _main(sw: Sweep) -> int:
    code = 0
    try:
        study = open_study(sw)
        n = plan_trials(study, sw)
        print(f"[sweep {sw.study}] {sw.meta['description'] or sw.name}: {n} trial(s) now, sampler "
              f"{sw.sampler['type']}, pruner {sw.pruner['type'] if sw.prunes else 'off'}, objective "
              f"{sw.objective} ({sw.direction}), storage {redact(sw.storage)}", flush=True)
        if sw.pruner["type"] != "none" and not sw.prunes:
            print("  (pruning reports the online kNN, higher is better: off with direction=minimize)")
        if n and sw.n_jobs > 1:
            code = spawn_workers(sw, n)
        elif n:
            optimize(study, sw, n)
    finally:
        if world_size() > 1:
            share(("stop",))
            end_processes()
    if sw.report:
        summarize(study, sw.meta, sw.results, sw.storage, sw.plot_params)
    return code


def entry() -> int:
    """`python -m ssl_bench.sweep`: bad input is one line and exit 2; Ctrl-C says how to continue."""
    try:
        return guarded(main)
    except StorageUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the study", file=sys.stderr)
        return 130

