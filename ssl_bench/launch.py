"""The commands that run one config on N nodes x G GPUs, or a SLURM script that runs them.

    python -m ssl_bench.launch nodes=8 gpus=8 address=10.0.0.1 method=swav dataset=imagenet \\
        budget=imagenet_400ep dataset.root=/data/imagenet          # one `accelerate launch` line per node
    python -m ssl_bench.launch nodes=8 gpus=8 slurm=true ... > swav.sbatch && sbatch swav.sbatch

The run's numbers do not depend on N x G: data.batch_size is the global batch (each process gets 1/(N x G)
of it), batch norm is synchronised over all processes, Sinkhorn and the memory banks work on the global
batch, and the lr is the configured one for that global batch (never rescaled; it is printed).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from omegaconf import DictConfig

from ssl_bench.config.cli import guarded, leave
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.overrides import Command, Key, help_requested

ENTRIES = {"run": "ssl_bench.run", "sweep": "ssl_bench.sweep"}


COMMAND = Command(
    "ssl_bench.launch", __doc__.split("\n\nThe run's")[0],
    (Key("nodes", "int", 1, "machines"),
     Key("gpus", "int", 8, "processes per machine, one per GPU"),
     Key("address", "str", None, "the main node (machine rank 0), reachable from every node; required with "
         "nodes>1 (slurm=true: the allocation's first node)"),
     Key("port", "int", 29500, "its free TCP port for the rendezvous"),
     Key("rank", "int", None, "print only machine R's command (null: every node's)"),
     Key("entry", "str", "run", "the module each process runs", tuple(ENTRIES)),
     Key("slurm", "bool", False, "print an sbatch script instead (srun starts one launcher per node)"),
     Key("workers", "int", 1, "entry=sweep slurm=true: an sbatch job array of this many sweep workers, each on "
         "nodes x gpus of its own, all on one study (storage= a PostgreSQL URL or a journal file every node sees)"),
     Key("time", "str", "72:00:00", "sbatch time limit (slurm=true)"),
     Key("cpus_per_gpu", "int", 10, "sbatch CPUs per GPU (slurm=true)"),
     Key("partition", "str", None, "sbatch partition (slurm=true)"),
     Key("job", "str", None, "sbatch job name (slurm=true)")),
    overrides="Every other key=value is an ordinary run override (or, with entry=sweep, a sweep's), checked here "
              "before anything starts.",
    footer=__doc__.split("\n\n", 2)[2])


@dataclass
class Cluster:
    nodes: int = 1
    gpus: int = 8
    address: str | None = None
    port: int = 29500
    rank: int | None = None
    entry: str = "run"
    slurm: bool = False
    workers: int = 1
    time: str = "72:00:00"
    cpus_per_gpu: int = 10
    partition: str | None = None
    job: str | None = None

    @property
    def processes(self) -> int:
        return self.nodes * self.gpus


def parse(argv: list[str]) -> tuple[Cluster, list[str]]:
    """Split the launcher's keys from the run overrides; bad values raise ConfigError (one line)."""
    own, rest, _ = COMMAND.parse(argv)
    cl = Cluster(**own)
    if cl.workers < 1:
        raise ConfigError(f"workers={cl.workers}: must be >= 1")
    if cl.workers > 1 and not (cl.slurm and cl.entry == "sweep"):
        raise ConfigError("workers= is for entry=sweep slurm=true (an sbatch job array of sweep workers); without "
                          "SLURM, start the same sweep command on each machine with the same storage=")
    if cl.nodes < 1 or cl.gpus < 1:
        raise ConfigError(f"nodes={cl.nodes} gpus={cl.gpus}: both must be >= 1")
    if not 0 < cl.port < 65536:
        raise ConfigError(f"port={cl.port}: expected 1-65535")
    if cl.rank is not None and not 0 <= cl.rank < cl.nodes:
        raise ConfigError(f"rank={cl.rank}: valid machine ranks are 0-{cl.nodes - 1}")
    if cl.nodes > 1 and not cl.slurm and not cl.address:
        # No guessed default: 127.0.0.1 on another machine is that machine, and the launch would hang.
        raise ConfigError(f"nodes={cl.nodes} needs address=HOST: the main node (machine rank 0), reachable from "
                          "every node (or slurm=true, which takes the allocation's first node)")
    if cl.address is None:
        cl.address = "127.0.0.1"  # one machine: its processes meet locally
    return cl, rest


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


def slurm_script(cl: Cluster, overrides: list[str], about: list[str], argv: list[str],
                 sweep: tuple[str, str] | None = None) -> str:
    """The sbatch script. ``sweep`` (study, storage URL): a job array of cl.workers sweep workers instead, each
    array task one worker on its own nodes x gpus, all on that study, the URL written once."""
    job = cl.job or "ssl_bench"
    array = sweep is not None
    sbatch = [f"--job-name={job}", f"--nodes={cl.nodes}", "--ntasks-per-node=1", f"--gpus-per-node={cl.gpus}",
              f"--cpus-per-task={cl.gpus * cl.cpus_per_gpu}", f"--time={cl.time}",
              "--output=%x-%A_%a.out" if array else "--output=%x-%j.out",
              # SIGTERM 5 minutes before the time limit: the loop checkpoints; a requeued job resumes.
              "--signal=TERM@300", "--requeue"]
    if array:
        sbatch.insert(1, f"--array=0-{cl.workers - 1}")
    if cl.partition:
        sbatch.append(f"--partition={cl.partition}")
    launch = shlex.join(accelerate_args(cl, "$SLURM_NODEID", "$MAIN_ADDR", "$MAIN_PORT"))
    for var in ("$SLURM_NODEID", "$MAIN_ADDR", "$MAIN_PORT"):  # expanded by each node's shell, not here
        launch = launch.replace(f"'{var}'", f'"{var}"')
    if sweep is None:
        args = "ARGS=(" + " ".join(shlex.quote(o) for o in [*overrides, "resume=true"]) + ")"
        port = f"export MAIN_PORT=${{MAIN_PORT:-{cl.port}}}"
        what = ["# One launcher per node (srun sets SLURM_NODEID), each starting one process per GPU; resume=true",
                "# continues from the run's checkpoint after a requeue or a time-limit stop."]
    else:
        study, storage = sweep
        kept = [o for o in overrides if o.split("=", 1)[0] not in ("storage", "study_name", "n_jobs")]
        args = (f"STORAGE={shlex.quote(storage)}\n"
                "ARGS=(" + " ".join(shlex.quote(o) for o in [*kept, f"study_name={study}"]) + ' "storage=$STORAGE")')
        # Two array tasks may share a node: each its own rendezvous port.
        port = f"export MAIN_PORT=${{MAIN_PORT:-$(({cl.port} + SLURM_ARRAY_TASK_ID % 1000))}}"
        what = [f"# Each array task is one of {cl.workers} sweep workers on study {study}: it takes the next",
                "# trial from the storage, trains it on its nodes' GPUs, and so on until the study is done. A",
                "# worker that dies has its trial failed by the heartbeat and retried by another; a requeued task",
                "# (time limit) continues the study, its interrupted trial resumed from the run's checkpoint."]
    if sweep is not None:  # the URL (perhaps with a password) once, in STORAGE below
        argv = ["storage=$STORAGE" if a.startswith("storage=") else a for a in argv]
    lines = ["#!/bin/bash", "# Written by: python -m ssl_bench.launch " + shlex.join(argv),
             *(f"# {a}" for a in about), *(f"#SBATCH {s}" for s in sbatch), "set -euo pipefail",
             "# The first node of the allocation hosts the rendezvous.",
             'export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             port, 'cd "${SSL_BENCH_DIR:-$SLURM_SUBMIT_DIR}"', args, *what,
             f"srun --kill-on-bad-exit=1 bash -c '{launch} \"$@\"' _ \"${{ARGS[@]}}\""]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if help_requested(argv):
        print(COMMAND.help())
        return 0
    cl, overrides = parse(argv)
    sweep = None
    if cl.entry == "sweep":
        from ssl_bench.sweep import parse as parse_sweep

        sw = parse_sweep(overrides)  # the sweep's own checks: its keys, the search space, every end composed
        if cl.slurm:
            sweep = (sw.study, sw.storage)
            if not any(o.startswith("storage=") for o in overrides) or sw.storage.startswith("sqlite"):
                raise ConfigError("entry=sweep slurm=true: the workers run on several nodes, so give storage= a "
                                  "PostgreSQL URL (postgresql://user:pass@host/db) or a journal file on a filesystem "
                                  "every node sees (journal:///shared/path/study.log); SQLite over a network "
                                  "filesystem breaks")
        cfg = compose(sw.base)
        batch = sw.params.get("data.batch_size")
        for value in batch.choices if batch is not None else []:  # a grid over the batch: every cell must split
            check_scale(compose([*sw.base, f"data.batch_size={value}"]), cl)
    else:
        cfg = compose(overrides)
    about = check_scale(cfg, cl)
    if cl.slurm:
        print(slurm_script(cl, overrides, about, argv, sweep), end="")
        return 0
    print("\n".join(f"# {a}" for a in about))
    for r, line in zip(range(cl.nodes) if cl.rank is None else [cl.rank], node_commands(cl, overrides), strict=True):
        print(f"# machine {r}{' (main: ' + cl.address + ':' + str(cl.port) + ')' if r == 0 else ''}:\n{line}")
    return 0


if __name__ == "__main__":
    leave(guarded(main))
