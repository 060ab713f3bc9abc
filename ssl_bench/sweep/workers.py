"""Hand-off between processes: the processes of one trial under accelerate launch (the main one talks to the
study and broadcasts each trial), and n_jobs worker processes on one machine sharing the storage."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from ssl_bench.sweep.spec import WORKER_ENV, Sweep


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def share(obj: Any) -> Any:
    """Broadcast a picklable object from the main process to every process (identity on one process)."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # The process state every run's Accelerator will share (same arguments as Accelerator gives it). Its
    # process group must outlive each run: Accelerator.end_training() destroys it unless FORK_LAUNCHED is set
    # (read by every PartialState(); it changes nothing else outside TPUs).
    os.environ["FORK_LAUNCHED"] = "1"
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=state.device if dist.get_backend() == "nccl" else None)
    return box[0]


def end_processes() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()  # every process done with its collectives first: a teardown mid-flight aborts at exit
            dist.destroy_process_group()


def spawn_workers(sw: Sweep, n: int) -> int:
    """n_jobs worker processes on this machine, each a sweep with its share of the trials, one storage (a grid:
    each takes queued cells until the grid is done)."""
    drain = sw.sampler["type"] == "grid" and sw.n_trials is None
    k = min(sw.n_jobs, n)
    shares = [n // k + (i < n % k) for i in range(k)]
    keep = [a for a in sw.argv if a.split("=", 1)[0] not in ("n_jobs", "n_trials", "report", "study_name", "storage")]
    keep += [f"study_name={sw.study}", f"storage={sw.storage}", "n_jobs=1", "report=false"]
    if not any(a.startswith("train.num_threads=") for a in keep):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        keep.append(f"train.num_threads={max(1, cores // k)}")
    import torch

    gpus = torch.cuda.device_count() if "CUDA_VISIBLE_DEVICES" not in os.environ else 0
    procs = []
    for i, s in enumerate(shares):
        env = {**os.environ, WORKER_ENV: str(i)}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        share_of = [] if drain else [f"n_trials={s}"]
        procs.append(subprocess.Popen([sys.executable, "-m", "ssl_bench.sweep", *keep, *share_of], env=env))
    print(f"[sweep {sw.study}] {k} workers, " + ("until the grid is done" if drain else f"trials {shares}"), flush=True)
    return max(p.wait() for p in procs)

