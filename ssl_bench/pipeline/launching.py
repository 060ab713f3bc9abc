"""How one run starts on N nodes x G GPUs: the ``accelerate launch`` line of each node, and the sbatch script that
starts them under SLURM (:func:`slurm_script`), written by ``python -m ssl_bench.launch`` and, one job per run, by a
comparison's ``cluster=slurm``. Imports configuration only.

A job stops and comes back by itself: SLURM sends the batch shell SIGUSR1 ``signal_before`` seconds before the time
limit (``--signal=B:USR1@N``; ``scancel --signal=USR1 --batch <job>`` does the same by hand), the script sends its
step SIGTERM (every process saves a checkpoint and stops: ssl_bench.training.signals), then requeues the job
(``scontrol requeue``), whose next start resumes from that checkpoint (``resume=true``). A preemption that requeues
the job (SLURM's PreemptMode=REQUEUE) sends SIGTERM to every process, which checkpoints the same way.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from omegaconf import DictConfig

from ssl_bench.errors import ConfigError

ENTRIES = {"run": "ssl_bench.run", "sweep": "ssl_bench.sweep"}
# Without a fixed port (port=None), each job's own: two jobs sharing a node must not share a rendezvous port.
JOB_PORT = "$((20000 + SLURM_JOB_ID % 20000))"


@dataclass
class Cluster:
    nodes: int = 1
    gpus: int = 8
    address: str | None = None
    port: int | None = 29500  # None: each job's own (JOB_PORT)
    rank: int | None = None
    entry: str = "run"
    slurm: bool = False
    workers: int = 1
    time: str = "72:00:00"
    cpus_per_gpu: int = 10
    partition: str | None = None
    job: str | None = None
    signal_before: int = 300  # seconds before the time limit: SIGUSR1, a checkpoint, a requeue

    @property
    def processes(self) -> int:
        return self.nodes * self.gpus


def check_scale(cfg: DictConfig, cl: Cluster) -> list[str]:
    """Refuse what cannot split over the processes; return the lines that describe the split."""
    n, batch = cl.processes, int(cfg.data.batch_size)
    if batch % n:
        fits = [k for k in range(1, batch + 1) if batch % k == 0 and k <= 4 * n]
        raise ConfigError(f"data.batch_size={batch} (the global batch) cannot be split over {cl.nodes} x {cl.gpus} = "
                          f"{n} processes; process counts that divide it: {', '.join(map(str, fits[-6:]))}")
    lines = [f"{cl.nodes} node(s) x {cl.gpus} GPU(s) = {n} processes; global batch {batch} = {batch // n} per GPU",
             f"optimiser {cfg.optim.name}: lr {cfg.optim.lr} for global batch {batch} (as configured, never rescaled)"]
    queue = int(cfg.method.get("queue_length", 0) or 0)
    if queue:
        lines.append(f"queue {queue} features = {queue // n} per process (from epoch "
                     f"{cfg.method.get('queue_start_epoch', 0)})")
    return lines


def accelerate_args(cl: Cluster, machine_rank: str, address: str, port: str) -> list[str]:
    """`accelerate launch` flags for one machine (rank/address/port may be shell variables)."""
    # -q: our one-line errors stay one line (without it accelerate wraps them in its own traceback)
    if cl.processes == 1:  # one GPU: no process group to set up
        return ["accelerate", "launch", "-q", "--num_processes", "1", "-m", ENTRIES[cl.entry]]
    args = ["accelerate", "launch", "-q", "--multi_gpu", "--num_machines", str(cl.nodes), "--num_processes",
            str(cl.processes), "--machine_rank", machine_rank, "--main_process_ip", address,
            "--main_process_port", port]
    if cl.nodes > 1:  # static rendezvous at the main node: every node names the same address and port
        args += ["--rdzv_backend", "static", "--same_network"]
    return args + ["-m", ENTRIES[cl.entry]]


def node_commands(cl: Cluster, overrides: list[str]) -> list[str]:
    """One shell command line per machine, machine rank 0 first."""
    ranks = range(cl.nodes) if cl.rank is None else [cl.rank]
    return [shlex.join(accelerate_args(cl, str(r), cl.address, str(cl.port)) + overrides) for r in ranks]


def slurm_script(cl: Cluster, overrides: list[str], about: list[str], written_by: str,
                 sweep: tuple[str, str] | None = None, output: str | None = None) -> str:
    """The sbatch script; ``written_by``: the command that wrote it, for its first comment. ``sweep`` (study,
    storage URL): a job array of cl.workers sweep workers instead, each array task one worker on its own nodes x
    gpus, all on that study, the URL written once. ``output``: the log's path (default %x-%j.out)."""
    job = cl.job or "ssl_bench"
    array = sweep is not None
    sbatch = [f"--job-name={job}", f"--nodes={cl.nodes}", "--ntasks-per-node=1", f"--gpus-per-node={cl.gpus}",
              f"--cpus-per-task={cl.gpus * cl.cpus_per_gpu}", f"--time={cl.time}",
              f"--output={output or ('%x-%A_%a.out' if array else '%x-%j.out')}", "--open-mode=append",
              # SIGUSR1 to the batch shell before the time limit: it checkpoints the step and requeues the job.
              f"--signal=B:USR1@{cl.signal_before}", "--requeue"]
    if array:
        sbatch.insert(1, f"--array=0-{cl.workers - 1}")
    if cl.partition:
        sbatch.append(f"--partition={cl.partition}")
    launch = shlex.join(accelerate_args(cl, "$SLURM_NODEID", "$MAIN_ADDR", "$MAIN_PORT"))
    for var in ("$SLURM_NODEID", "$MAIN_ADDR", "$MAIN_PORT"):  # expanded by each node's shell, not here
        launch = launch.replace(f"'{var}'", f'"{var}"')
    port = f"export MAIN_PORT=${{MAIN_PORT:-{cl.port if cl.port is not None else JOB_PORT}}}"
    if sweep is None:
        args = "ARGS=(" + " ".join(shlex.quote(o) for o in [*overrides, "resume=true"]) + ")"
        what = ["# One launcher per node (srun sets SLURM_NODEID), each starting one process per GPU; resume=true",
                "# continues from the run's checkpoint after a requeue or a time-limit stop."]
    else:
        study, storage = sweep
        kept = [o for o in overrides if o.split("=", 1)[0] not in ("storage", "study_name", "n_jobs")]
        args = (f"STORAGE={shlex.quote(storage)}\n"
                "ARGS=(" + " ".join(shlex.quote(o) for o in [*kept, f"study_name={study}"]) + ' "storage=$STORAGE")')
        # Two array tasks may share a node: each its own rendezvous port.
        if cl.port is not None:
            port = f"export MAIN_PORT=${{MAIN_PORT:-$(({cl.port} + SLURM_ARRAY_TASK_ID % 1000))}}"
        what = [f"# Each array task is one of {cl.workers} sweep workers on study {study}: it takes the next",
                "# trial from the storage, trains it on its nodes' GPUs, and so on until the study is done. A",
                "# worker that dies has its trial failed by the heartbeat and retried by another; a requeued task",
                "# (time limit) continues the study, its interrupted trial resumed from the run's checkpoint."]
    lines = ["#!/bin/bash", f"# Written by: {written_by}", *(f"# {a}" for a in about),
             *(f"#SBATCH {s}" for s in sbatch), "set -euo pipefail",
             "# The first node of the allocation hosts the rendezvous.",
             'export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             port, 'cd "${SSL_BENCH_DIR:-$SLURM_SUBMIT_DIR}"', args, *what, *REQUEUE,
             f"srun --kill-on-bad-exit=1 bash -c '{launch} \"$@\"' _ \"${{ARGS[@]}}\" &",
             'STEP=$!', 'wait "$STEP"']
    return "\n".join(lines) + "\n"


# The batch shell's part of a stop before the time limit (or a preemption announced with SIGUSR1).
REQUEUE = [
    "# SIGUSR1 (--signal above, or scancel --signal=USR1 --batch <job>): SIGTERM to the step, whose processes save a",
    "# checkpoint and stop; then the job requeues itself and its next start resumes from that checkpoint.",
    "requeue() {",
    '  echo "ssl_bench: SIGUSR1: checkpointing, then requeueing job $SLURM_JOB_ID" >&2',
    '  kill -TERM "$STEP" 2>/dev/null || true',
    '  wait "$STEP" || true',
    '  scontrol requeue "$SLURM_JOB_ID"',
    "  exit 0",
    "}",
    "trap requeue USR1",
]
