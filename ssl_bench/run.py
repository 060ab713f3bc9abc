"""Entry point, a Hydra application: ``accelerate launch -m ssl_bench.run method=swav dataset=fashion_mnist
budget=demo [key=value]`` (``python -m ssl_bench.run ...`` or ``ssl-bench run ...`` for one process). Composes the
config, trains, evaluates, writes the record to <output_dir>/<run>.

Hydra's own command line: ``--help`` (groups, options and the main keys), ``--cfg job``, ``--info``,
``+key=value``, ``~key``, ``--shell-completion``, and ``-m`` / ``--multirun`` for a grid
(``-m method=swav,simclr seed=0,1,2``), whose every job is an ordinary run with its own record. Hydra writes
nothing of its own (experiments/config.yaml: no outputs/, .hydra/ or log files).

Every job's overrides are composed and validated with :func:`ssl_bench.config.compose.compose` (the programmatic API)
before Hydra starts, so anything wrong is one ``error: ...`` line and exit 2 with nothing written, grid or not.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_bench.config.cli import guarded, leave
from ssl_bench.config.compose import _register, _searchpath_override, compose
from ssl_bench.config.help import register_help
from ssl_bench.config.overrides import help_requested, writable_folder
from ssl_bench.config.searchpath import CONFIG_PATH_ENV, EXPERIMENTS_DIR, config_dirs
from ssl_bench.errors import ConfigError

# Flags after which Hydra prints something and runs nothing (no validation of the overrides needed).
_NO_JOB_FLAGS = ("help", "hydra_help", "shell_completion")
# The overrides of every job of this command, validated before Hydra starts.
_JOBS: list[list[str]] = []


def expand_globs(overrides: list[str]) -> list[str]:
    """``group=glob(...)`` as the list of the group's options it matches (on the whole search path; Hydra's own
    expansion would also match the schema nodes in its ConfigStore), so Hydra runs exactly the validated jobs."""
    from ssl_bench.config.searchpath import GROUPS, group_options

    out = []
    for text in overrides:
        try:
            o = OverridesParser.create().parse_override(text)
        except HydraException as exc:
            raise ConfigError(str(exc).strip().splitlines()[0]) from exc
        key = o.get_key_element().lstrip("+")
        if isinstance(o.value(), Glob) and key in GROUPS:
            names = o.value().filter(group_options(key))
            if not names:
                raise ConfigError(f"'{text}' matches no {key}; valid choices: {', '.join(group_options(key))}")
            text = f"{o.get_key_element()}={','.join(names)}"
        out.append(text)
    return out


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
    # The basic sweeper's grid, in its order (one list per key, the last of a repeated key wins, itertools.product),
    # but with each fixed override as the user typed it (Hydra re-renders them: false -> False), so that a job's
    # recorded overrides are those of the same single run.
    axes: dict[str, list[str]] = {}
    for o in own:
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [o.input_line]
        elif o.is_discrete_sweep():
            try:
                axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            except HydraException as exc:  # glob() of something that is not a config group
                raise ConfigError(f"'{o.input_line}': {str(exc).strip().splitlines()[0]}") from exc
        else:
            raise ConfigError(f"'{o.input_line}': Hydra's basic sweeper runs lists of values (a,b,c), "
                              "range(...) and glob(...), not intervals")
    return [list(job) for job in itertools.product(*axes.values())]


@hydra.main(config_path=str(EXPERIMENTS_DIR), config_name="config", version_base="1.3")
def _app(_: DictConfig) -> None:
    # Hydra catches a job's exceptions and prints them its own way; ours end the job (and a grid) as one line.
    hc = HydraConfig.get()
    code = guarded(_job, list(hc.overrides.task))
    if code:
        sys.exit(code)


def _job(overrides: list[str]) -> int:
    from ssl_bench.analysis.against_reference import reference_lines
    from ssl_bench.pipeline.experiment import run_experiment  # torch: only once a job runs, not for --help or --cfg

    hc = HydraConfig.get()
    if hc.mode.name == "MULTIRUN":
        if len(_JOBS) > hc.job.num:  # the same job as validated, spelled as typed (see job_overrides)
            overrides = _JOBS[hc.job.num]
        print(f"ssl_bench: job #{hc.job.num + 1} of {len(_JOBS) or '?'}: {' '.join(overrides)}", flush=True)
    run_experiment(compose(overrides), beside=reference_lines)
    return 0


def recorded_config(overrides: list[str]) -> DictConfig:
    """The config a run of ``overrides`` records in <run>/config.yaml: composed and validated as the job does (with
    the ``choices`` and ``overrides`` it keeps), and ``train.precision`` as the run will use it (null: what
    ``accelerate launch`` / ``accelerate config`` said, else no)."""
    cfg = compose(overrides)
    if cfg.train.precision is None:
        cfg.train.precision = os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    return cfg


def _show_job_config(overrides: list[str], package: str | None) -> None:
    """``--cfg job [-p package]``: what the run would record (Hydra's own view lacks the choices and overrides the
    record keeps, and the precision the run uses); ``--cfg hydra`` and ``--cfg all`` stay Hydra's."""
    from ssl_bench.records.identity import run_id
    from ssl_bench.records.io import portable

    cfg = recorded_config(overrides)
    header = f"# {Path(cfg.output_dir) / run_id(cfg) / 'config.yaml'}: the config this run records"
    cfg = portable(cfg)  # as config.yaml keeps it: paths relative to the results folder
    if package:
        node = OmegaConf.select(cfg, package)
        if node is None:
            raise ConfigError(f"--package {package}: no such key in the config; valid keys: {', '.join(cfg.keys())}")
        header += f"\n# @package {package}"
        text = OmegaConf.to_yaml(node) if isinstance(node, DictConfig | ListConfig) else f"{node}\n"
    else:
        text = OmegaConf.to_yaml(cfg)
    print(f"{header}\n{text}", end="")


def _argparse_error(message: str) -> None:
    raise ConfigError(f"{message} (--help lists Hydra's flags)")


def _completion_for_ssl_bench() -> None:
    """Hydra's completion knows `python script.py` and installed apps, not `python -m`: install it for the
    `ssl-bench` command (which hands -sc to this app), and read `ssl-bench run ...` / `python -m ssl_bench.run ...`
    lines as the app's own."""
    line = os.environ.get("COMP_LINE")
    if line is not None:
        os.environ["COMP_LINE"] = re.sub(r"^\s*(\S*ssl-bench\s+run|\S*python[\d.]*\s+-m\s+ssl_bench\.run)\b",
                                         "ssl-bench", line)


@contextlib.contextmanager
def _real_options_only() -> Iterator[None]:
    """While Hydra completes a command line: the groups a user sets (method, dataset, backbone, budget; hydra/ for
    Hydra's own) and, for each, its options on the search path, the user's folders ($SSL_BENCH_CONFIG_PATH)
    included. Hydra's config loader alone would offer the schema nodes registered in its ConfigStore
    (method=swav_schema) and every other folder of experiments/ (study/, sweep/, slurm/: inputs of other commands,
    not options of a run), and would not see the user's folders (the completion query reads COMP_LINE, not argv)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    from ssl_bench.config.searchpath import GROUPS, group_options

    searchpath = _searchpath_override(config_dirs()[1:])
    hydras_options, hydras_load = ConfigLoaderImpl.get_group_options, ConfigLoaderImpl.load_configuration

    def options(self: Any, group_name: str, results_filter: Any = ObjectType.CONFIG, config_name: Any = None,
                overrides: list[str] | None = None) -> list[str]:
        found = hydras_options(self, group_name, results_filter, config_name, [*(overrides or []), *searchpath])
        if group_name == "" and results_filter == ObjectType.GROUP:
            return [g for g in found if g in (*GROUPS, "hydra")]
        if group_name in GROUPS:
            return group_options(group_name) if results_filter == ObjectType.CONFIG else []
        return found

    def load(self: Any, config_name: Any, overrides: list[str], *args: Any, **kw: Any) -> Any:
        return hydras_load(self, config_name, [*overrides, *searchpath], *args, **kw)

    ConfigLoaderImpl.get_group_options = options  # type: ignore[method-assign]
    ConfigLoaderImpl.load_configuration = load  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConfigLoaderImpl.get_group_options = hydras_options  # type: ignore[method-assign]
        ConfigLoaderImpl.load_configuration = hydras_load  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """``python -m ssl_bench.run argv``: validate every job, then hand argv to Hydra; returns the exit status."""
    _register()
    if help_requested(argv):
        register_help()
    parser = get_args_parser()
    parser.error = _argparse_error  # type: ignore[method-assign]  # Hydra's parser: one line, not its usage
    args = parser.parse_intermixed_args(argv)
    # Hydra's own parse wants its flags first: keep their order, the overrides after them.
    flags = list(argv)
    for o in args.overrides:
        flags.remove(o)
    args.overrides = expand_globs(args.overrides)
    argv = [*flags, *args.overrides]
    if sum(bool(getattr(args, m)) for m in ("run", "multirun", "cfg", "info", "shell_completion")) > 1:
        raise ConfigError("only one of --run, --multirun, --cfg, --info and --shell-completion at a time")
    no_job = any(getattr(args, flag) for flag in _NO_JOB_FLAGS)
    _JOBS.clear()
    if not no_job:
        _JOBS.extend(job_overrides(list(args.overrides), args.multirun))
        for job in _JOBS:
            try:
                cfg = compose(job)
            except (HydraException, OmegaConfBaseException) as exc:  # compose turns most into ConfigError
                raise ConfigError(str(exc).strip().splitlines()[0]) from exc
            writable_folder(cfg.output_dir, "output_dir")
    if args.cfg == "job":
        _show_job_config(_JOBS[0], args.package)
        return 0
    if args.shell_completion:
        _completion_for_ssl_bench()
    extra = _searchpath_override(config_dirs()[1:])  # $SSL_BENCH_CONFIG_PATH: Hydra's own search path too
    sweep_dir = tempfile.mkdtemp(prefix="ssl_bench_multirun_") if args.multirun else None
    if sweep_dir:  # Hydra saves multirun.yaml in the sweep dir: a temporary one, removed below
        extra.append(f"hydra.sweep.dir={sweep_dir}")
    # Hydra names the program after argv[0]; for completion it is the command that calls the app back.
    argv0 = "ssl-bench" if args.shell_completion or args.help else sys.argv[0]
    saved, sys.argv = sys.argv, [argv0, *argv, *extra]
    # --info / --cfg set up stdout logging; it must not outlive this call (a notebook, the tests, a later job).
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with _real_options_only() if args.shell_completion else contextlib.nullcontext():
            _app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        sys.argv = saved
        root.handlers[:], root.level = handlers, level
        if sweep_dir:
            shutil.rmtree(sweep_dir, ignore_errors=True)
    return 0


__all__ = ["CONFIG_PATH_ENV", "job_overrides", "main"]

if __name__ == "__main__":
    leave(guarded(main))
