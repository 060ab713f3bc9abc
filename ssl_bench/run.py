"""Entry point, a Hydra application: ``accelerate launch -m ssl_bench.run method=swav dataset=fashion_mnist
budget=demo [key=value]`` (``python -m ssl_bench.run ...`` or ``ssl-bench run ...`` for one process). Composes the
config, trains, evaluates, writes the record to <output_dir>/<run>.

Hydra's own command line: ``--help`` (groups, options and the main keys), ``--cfg job``, ``--info``,
``+key=value``, ``~key``, ``--shell-completion``, and ``-m`` / ``--multirun`` for a grid
(``-m method=swav,simclr seed=0,1,2``), whose every job is an ordinary run with its own record. Hydra writes
nothing of its own (experiments/config.yaml: no outputs/, .hydra/ or log files).

Every job's overrides are composed and validated with :func:`ssl_bench.config.compose` (the programmatic API)
before Hydra starts, so anything wrong is one ``error: ...`` line and exit 2 with nothing written, grid or not.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ssl_bench.cli import guarded
from ssl_bench.config import CONFIG_PATH_ENV, EXPERIMENTS_DIR, _register, _searchpath_override, compose, config_dirs
from ssl_bench.errors import ConfigError

# Flags after which Hydra prints something and runs nothing (no validation of the overrides needed).
_NO_JOB_FLAGS = ("help", "hydra_help", "shell_completion")


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of every job Hydra's basic sweeper will run (one job without -m); Hydra's own keys dropped."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from exc
    own = [o for o in parsed if not o.get_key_element().lstrip("+~").startswith(("hydra.", "hydra/"))]
    sweeps = [o.input_line for o in own if o.is_sweep_override()]
    if sweeps and not multirun:
        raise ConfigError(f"'{sweeps[0]}' lists several values: add -m (--multirun) to run one job per value")
    if not multirun:
        return [[o.input_line for o in own]]
    try:
        return [job for batch in BasicSweeper.split_arguments(own, None) for job in batch]
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from exc


@hydra.main(config_path=str(EXPERIMENTS_DIR), config_name="config", version_base="1.3")
def _app(_: DictConfig) -> None:
    # Hydra catches a job's exceptions and prints them its own way; ours end the job (and a grid) as one line.
    hc = HydraConfig.get()
    code = guarded(_job, list(hc.overrides.task))
    if code:
        sys.exit(code)


def _job(overrides: list[str]) -> int:
    from ssl_bench.experiment import run_experiment  # torch: only once a job runs, not for --help or --cfg

    if HydraConfig.get().mode.name == "MULTIRUN":
        print(f"ssl_bench: job #{HydraConfig.get().job.num}: {' '.join(overrides)}", flush=True)
    run_experiment(compose(overrides))
    return 0


def _argparse_error(message: str) -> None:
    raise ConfigError(f"{message} (Hydra's flags come before the overrides; --help lists them)")


def main(argv: list[str]) -> int:
    """``python -m ssl_bench.run argv``: validate every job, then hand argv to Hydra; returns the exit status."""
    _register()
    parser = get_args_parser()
    parser.error = _argparse_error  # type: ignore[method-assign]  # Hydra's parser: one line, not its usage
    args = parser.parse_args(argv)
    no_job = any(getattr(args, flag) for flag in _NO_JOB_FLAGS)
    if not no_job:
        for job in job_overrides(list(args.overrides), args.multirun):
            try:
                compose(job)
            except (HydraException, OmegaConfBaseException) as exc:  # compose turns most into ConfigError
                raise ConfigError(str(exc).strip().splitlines()[0]) from exc
    extra = _searchpath_override(config_dirs()[1:])  # $SSL_BENCH_CONFIG_PATH: Hydra's own search path too
    sweep_dir = tempfile.mkdtemp(prefix="ssl_bench_multirun_") if args.multirun else None
    if sweep_dir:  # Hydra saves multirun.yaml in the sweep dir: a temporary one, removed below
        extra.append(f"hydra.sweep.dir={sweep_dir}")
    saved, sys.argv = sys.argv, [sys.argv[0], *argv, *extra]
    try:
        _app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
        if sweep_dir:
            shutil.rmtree(sweep_dir, ignore_errors=True)
    return 0


__all__ = ["CONFIG_PATH_ENV", "job_overrides", "main"]

if __name__ == "__main__":
    sys.exit(guarded(main))
