"""Whole runs of every method on two processes, for tests/test_distributed.py.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/dist_run_worker.py OUT AUDIT

Trains each run of RUNS into OUT (the test trains the same configs on one process and compares), and
records every file operation each process makes under OUT (Python's audit hooks) into AUDIT/rank<k>.json,
so the test can check that only the main process writes shared files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Short runs that exercise each method's distributed state: SwAV's per-process queue (used from epoch 1),
# SimCLR's gathered negatives, DeepCluster-v2's k-means over the sharded bank, SeLa-v2's Sinkhorn labels,
# CARL's global-batch KL; SwAV also runs the linear probe at the end.
RUNS: dict[str, list[str]] = {
    "swav": ["method=swav", "method.queue_length=32", "method.queue_start_epoch=1", "eval.protocols=[knn,linear]"],
    "simclr": ["method=simclr"],
    "deepclusterv2": ["method=deepclusterv2"],
    "selav2": ["method=selav2"],
    "carl": ["method=carl"],
}


# Stopped after epoch 1 of 2 and resumed, on two processes: SwAV's queue (filled from epoch 0) and the
# DeepCluster-v2 bank come back per process from method_local_<rank>.pt.
RESUMED: dict[str, list[str]] = {
    "swav": ["method=swav", "method.queue_length=32", "method.queue_start_epoch=0", "train.checkpoint_every=1"],
    "deepclusterv2": ["method=deepclusterv2", "train.checkpoint_every=1"],
}


def overrides(name: str, out: str | Path) -> list[str]:
    # lr 0.005 (smoke: 0.05): two processes sum in another order (round-off ~1e-7), and 8 steps at the
    # smoke lr amplify that to ~1e-4 (measured), which would hide a real difference of that size.
    return ["budget=smoke", f"output_dir={out}", "eval.random_baseline=false", "optim.lr=0.005",
            *(RUNS[name] if name in RUNS else RESUMED[name.removeprefix("resumed-")])]


def audit_file_writes(root: Path, log: list[list[str]]) -> None:
    """Record (event, path) of every write-like file operation under ``root`` made by this process."""
    root_s = str(root.resolve())
    events = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "shutil.move"}

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode = args[0], args[1]
            if not isinstance(path, str | os.PathLike) or not isinstance(mode, str) or not set(mode) & set("wax+"):
                return
        elif event not in events:
            return
        paths = [os.path.abspath(a) for a in args if isinstance(a, str | os.PathLike)]
        if any(p.startswith(root_s) for p in paths):
            log.append([event, *(os.path.relpath(p, root_s) for p in paths)])

    sys.addaudithook(hook)


if __name__ == "__main__":
    import torch.distributed as dist

    from ssl_bench.config.compose import compose
    from ssl_bench.pipeline.experiment import run_experiment

    # Several runs in one process: keep the process group across them (Accelerator.end_training() destroys
    # it unless FORK_LAUNCHED is set, as ssl_bench.sweep does for its trials).
    os.environ["FORK_LAUNCHED"] = "1"
    out, audit = Path(sys.argv[1]), Path(sys.argv[2])
    log: list[list[str]] = []
    audit_file_writes(out, log)
    for name in RUNS:
        run_experiment(compose(overrides(name, out)))
    from ssl_bench.training.loop import TrainingStopped

    for name in RESUMED:
        run_experiment(compose(overrides(f"resumed-{name}", out / "resume_full")))
        try:  # the main process asks every process to stop after epoch 1 (its checkpoint is written first)
            run_experiment(compose(overrides(f"resumed-{name}", out / "resume_cut")),
                           epoch_callbacks=[lambda epoch, row: "stop after epoch 1" if epoch == 0 else None])
        except TrainingStopped:
            pass
        run_experiment(compose([*overrides(f"resumed-{name}", out / "resume_cut"), "resume=true"]))
    audit.mkdir(parents=True, exist_ok=True)
    (audit / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(log))
    if dist.is_initialized():
        dist.destroy_process_group()
    from ssl_bench.config.cli import leave

    leave(0)  # as the entry points end: Python's finalisation after gloo sometimes aborts (see leave)
