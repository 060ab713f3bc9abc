"""Three sweep workers on one grid study, one of them killed (SIGKILL) in the middle of a trial: what becomes of
the study on PostgreSQL and on the journal file. Each worker is a separate command (as on three machines) that
shares nothing with the others but the storage URL; the trials are tiny (budget=smoke).

    .venv/bin/python -m benchmarks.sweep_workers                    # both storages, ~3 min on 2 shared cores
    .venv/bin/python -m benchmarks.sweep_workers --storage journal --out /tmp/issue14_demo.txt

Printed per storage: cells, trials by state, trials whose worker died (failed with the heartbeat's reason) and
their retries, completed trials per cell (must be exactly 1), run records, wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

GRID = {"method.num_prototypes": [8, 16, 32], "method.sinkhorn_iterations": [1, 3]}


def grid_file(folder: Path, grid: dict[str, list] = GRID) -> Path:
    """A sweep file: the grid, no pruning."""
    path = folder / "grid.yaml"
    path.write_text("sampler: grid\npruner: none\ngrid:\n" + "".join(f"  {k}: {v}\n" for k, v in grid.items()))
    return path


def worker_command(sweep: Path | str, results: Path, study: str, storage: str, *extra: str) -> list[str]:
    """One worker: an ordinary sweep command (``sweep``: a file or a shipped sweep's name); heartbeats every second,
    a silent trial is stale after 5 (a few seconds of slack for 2 cores shared by three workers and more)."""
    return [sys.executable, "-m", "ssl_bench.sweep", f"sweep={sweep}", "budget=smoke", f"results={results}",
            f"study_name={study}", f"storage={storage}", "heartbeat=1", "grace_period=5", "eval.random_baseline=false",
            "train.num_threads=1", *extra]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # its own group: a signal here reaches no one else


def wait_for_line(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Wait until ``needle`` appears in the worker's log (False if it ended or the time ran out first)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def tally(storage: str, study: str, names: list[str]) -> dict[str, Any]:
    """What the study holds: trials by state, completed trials per cell, the dead workers' trials, the retries."""
    import optuna

    from ssl_bench.sweep.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = [t for t in optuna.load_study(study_name=study, storage=make_storage(storage)).get_trials()
              if t.user_attrs.get("fail_kind") != "idle"]
    done = Counter(tuple(t.params[n] for n in names) for t in trials if t.state.name == "COMPLETE")
    return {"trials": len(trials), "states": dict(Counter(t.state.name.lower() for t in trials)),
            "per_cell": done, "lost": [t for t in trials if t.user_attrs.get("fail_kind") == "lost"],
            "retries": [t for t in trials if "retry_of" in t.user_attrs], "all": trials}


def killed_worker_demo(storage: str, folder: Path, study: str) -> list[str]:
    """Three workers, the first killed with SIGKILL once it has started a trial; the report of the result."""
    sweep = grid_file(folder)
    results = folder / "results"
    t0 = time.monotonic()
    logs = [folder / f"{study}-worker{i}.log" for i in range(3)]
    procs = [start(worker_command(sweep, results, study, storage), log) for log in logs]
    victim_started = wait_for_line(logs[0], "] trial ", procs[0])
    time.sleep(1.0)  # well inside the trial (a smoke trial takes several seconds with three workers on 2 cores)
    procs[0].send_signal(signal.SIGKILL)
    codes = [p.wait(timeout=600) for p in procs]
    wall = time.monotonic() - t0
    t = tally(storage, study, list(GRID))
    cells = 1
    for values in GRID.values():
        cells *= len(values)
    records = len(list((results / "runs").glob("*/summary.json")))
    once = len(t["per_cell"]) == cells and set(t["per_cell"].values()) == {1}
    verdict = "every cell exactly once" if once else "NOT once per cell"
    shown = worker_command(Path("grid.yaml"), Path("results"), study, storage)
    kind = storage.split(":", 1)[0].split("+")[0]
    lines = [f"{kind}: {cells} cells, 3 workers, worker 0 killed (SIGKILL) in a trial"
             f"{'' if victim_started else ' (it had not started one)'}",
             "  each worker: python " + " ".join(shown[1:]),
             f"  exit codes {codes} (-9: the killed worker)",
             f"  trials {t['trials']}: " + ", ".join(f"{v} {k}" for k, v in sorted(t["states"].items())),
             *(f"  trial {x.number} failed: {x.user_attrs.get('reason')}" for x in t["lost"]),
             *(f"  trial {x.number} retried trial {x.user_attrs['retry_of']}" for x in t["retries"]),
             f"  completed trials per cell: {sorted(t['per_cell'].values())} ({verdict})",
             f"  run records: {records}", f"  wall time: {wall:.0f} s"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", choices=("postgres", "journal", "both"), default="both")
    ap.add_argument("--out", type=Path, help="also write the report here")
    ap.add_argument("--keep", type=Path, help="work in this (new) folder and keep it: logs, records, the journal")
    args = ap.parse_args(argv)
    from ssl_bench.sweep import pgserver

    lines = [f"$ {' '.join([Path(sys.executable).name, '-m', 'benchmarks.sweep_workers', *(argv or sys.argv[1:])])}",
             f"grid {GRID}, budget=smoke, heartbeat=1 s, grace_period=5 s, {os.cpu_count()} CPU cores", ""]
    with tempfile.TemporaryDirectory(prefix="sweep_workers_") as tmp:
        folder = Path(tmp)
        if args.keep:
            folder = args.keep
            folder.mkdir(parents=True)
        if args.storage in ("postgres", "both"):
            # The cluster's folder is the server account's; this one (0700, ours) would keep it out.
            pg = Path(tempfile.mkdtemp(prefix="sweep_workers_pg_"))
            server = pgserver.create(pg)
            try:
                (folder / "postgres").mkdir()
                lines += killed_worker_demo(server.url, folder / "postgres", "grid")
            finally:
                server.stop("immediate")
                shutil.rmtree(pg, ignore_errors=True)
            lines.append("")
        if args.storage in ("journal", "both"):
            (folder / "journal").mkdir()
            lines += killed_worker_demo(f"journal://{folder / 'journal' / 'study.log'}", folder / "journal", "grid")
    text = "\n".join(lines).rstrip() + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
