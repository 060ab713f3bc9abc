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
import sys

from ssl_bench.config.cli import guarded, leave
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.config.overrides import Command, Key, help_requested
from ssl_bench.pipeline import gpu_budgets
from ssl_bench.pipeline.launching import (  # noqa: F401  (the names ssl_bench.launch has always had)
    ENTRIES,
    Cluster,
    accelerate_args,
    check_scale,
    node_commands,
    slurm_script,
)

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
     Key("job", "str", None, "sbatch job name (slurm=true)"),
     Key("signal_before", "int", 300, "slurm=true: seconds before the time limit SLURM sends SIGUSR1; the job saves "
         "a checkpoint, requeues itself and resumes")),
    overrides="Every other key=value is an ordinary run override (or, with entry=sweep, a sweep's), checked here "
              "before anything starts.",
    footer=__doc__.split("\n\n", 2)[2])


def parse(argv: list[str]) -> tuple[Cluster, list[str]]:
    """Split the launcher's keys from the run overrides; bad values raise ConfigError (one line)."""
    own, rest, _ = COMMAND.parse(argv)
    cl = Cluster(**own)
    if cl.workers < 1:
        raise ConfigError(f"workers={cl.workers}: must be >= 1")
    if cl.workers > 1 and not (cl.slurm and cl.entry == "sweep"):
        raise ConfigError("workers= is for entry=sweep slurm=true (an sbatch job array of sweep workers); without "
                          "SLURM, start the same sweep command on each machine with the same storage=")
    if cl.signal_before < 0:
        raise ConfigError(f"signal_before={cl.signal_before}: seconds before the time limit, must be >= 0")
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
    gpu = gpu_budgets.lines(cfg, cl.processes)  # a GPU budget: the note that it is untried here, the GPU hours
    about += gpu
    if cl.slurm:
        if gpu:  # the script goes to stdout (a file, usually): the same lines on the terminal too
            print("\n".join(gpu), file=sys.stderr)
        shown = argv if sweep is None else ["storage=$STORAGE" if a.startswith("storage=") else a for a in argv]
        print(slurm_script(cl, overrides, about, "python -m ssl_bench.launch " + shlex.join(shown), sweep), end="")
        return 0
    print("\n".join(f"# {a}" for a in about))
    for r, line in zip(range(cl.nodes) if cl.rank is None else [cl.rank], node_commands(cl, overrides), strict=True):
        print(f"# machine {r}{' (main: ' + cl.address + ':' + str(cl.port) + ')' if r == 0 else ''}:\n{line}")
    return 0


if __name__ == "__main__":
    leave(guarded(main))
