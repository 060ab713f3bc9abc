"""Hyperparameter studies on Optuna; every trial is an ordinary run with its own record.

    spec      the sweep file and the command line -> a validated Sweep
    storage   Optuna storages, opening or continuing a study, planning a grid's cells
    trials    one trial (an ordinary run), its objective and failure reasons; the optimisation loop
    workers   hand-off between processes: accelerate launch's processes of one trial, n_jobs local workers
    report    best trial, table and figures (drawn by plots)
    command   the entry point (python -m ssl_bench.sweep)
"""

from ssl_bench.sweep.command import main
from ssl_bench.sweep.spec import COMMAND, Param, Sweep, parse, read_sweep_file, sweep_options
from ssl_bench.sweep.storage import META, make_storage, open_study

__all__ = ["COMMAND", "META", "Param", "Sweep", "main", "make_storage", "open_study", "parse", "read_sweep_file",
           "sweep_options"]
