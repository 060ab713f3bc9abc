"""A run on two processes whose second process sees another output folder (a node-local disk), for
tests/test_distributed.py::test_a_run_folder_one_process_cannot_see_stops_every_process_in_one_line.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/dist_shared_worker.py OUT SAID

Process 0 trains into OUT, process 1 into OUT_node1; each writes what stopped it into SAID/rank<k>.txt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    from ssl_bench.config.compose import compose
    from ssl_bench.errors import ConfigError
    from ssl_bench.pipeline.experiment import run_experiment

    rank = int(os.environ["RANK"])
    out, said = Path(sys.argv[1]), Path(sys.argv[2])
    mine = out if rank == 0 else out.with_name(out.name + "_node1")
    try:
        run_experiment(compose(["budget=smoke", f"output_dir={mine}", "eval.random_baseline=false"]))
        text = "trained"
    except ConfigError as exc:
        text = str(exc)
    said.mkdir(parents=True, exist_ok=True)
    (said / f"rank{rank}.txt").write_text(text)
    from ssl_bench.config.cli import leave

    leave(0)  # as the entry points end: Python's finalisation after gloo sometimes aborts (see leave)
