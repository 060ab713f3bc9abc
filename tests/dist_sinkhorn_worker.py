"""Run under `accelerate launch --num_processes 2`: each rank computes Sinkhorn codes on its half of a
fixed score matrix; rank 0 saves the gathered codes (the test compares them with one process)."""

import sys
from pathlib import Path

import torch
from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).parent))
from test_sinkhorn import cosine_scores  # noqa: E402

from ssl_bench.config.cli import leave  # noqa: E402
from ssl_bench.ops.distributed import all_gather  # noqa: E402
from ssl_bench.ops.sinkhorn import sinkhorn  # noqa: E402

state = PartialState(cpu=True)  # under ACCELERATE_USE_CPU=1 only Accelerator reads the flag itself
scores = cosine_scores(96, 24, seed=7)
shard = scores.chunk(state.num_processes)[state.process_index]
codes = all_gather(sinkhorn(shard, 0.05, 3))
under = scores.clone()
under[:, 3] = -50.0  # a prototype whose row underflows: every process must switch to the log domain together
codes_log = all_gather(sinkhorn(under.chunk(state.num_processes)[state.process_index], 0.05, 3))
if state.is_main_process:
    torch.save(codes, Path(sys.argv[1]) / "full.pt")
    torch.save(codes_log, Path(sys.argv[1]) / "full_log.pt")
state.wait_for_everyone()
state.destroy_process_group()
leave(0)  # as the entry points end: Python's finalisation after gloo sometimes aborts (see leave)
