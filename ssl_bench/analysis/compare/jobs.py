"""A comparison as cluster jobs (``cluster=slurm``): every run without a record becomes its own sbatch job, an
ordinary run started by ``accelerate launch`` on nodes x gpus, and every run's state is read from its folder and
the scheduler, never from a list of our own. Plain sbatch scripts, not submitit: they are the scripts
``ssl_bench.launch slurm=true`` writes (srun + one accelerate launcher per node, which multi-node runs need),
readable and resubmittable by hand, with nothing more to install. Imports the plan and the launcher's script;
calls sbatch, squeue and sacct.

A run's state: **done** (its folder has summary.json), else what the scheduler says of the job named
``ssl_bench-<run id>``: **running** or **queued** (squeue), **failed** (its last job ended without a record, as
sacct says, or a checkpoint and no job), else **missing**. Submitting again submits only the missing and failed
runs; an interrupted run resumes from its checkpoint (every job runs with resume=true).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ssl_bench.analysis.compare.planning import Plan, PlannedRun
from ssl_bench.config.compose import ConfigError
from ssl_bench.pipeline import gpu_budgets
from ssl_bench.pipeline.launching import Cluster, check_scale, slurm_script

STATES = ("done", "running", "queued", "failed", "missing")
PREFIX = "ssl_bench-"  # a job's name: PREFIX + the run's id (one job per run, whichever comparison asks for it)
# squeue's states of a job that holds its nodes; every other state squeue lists is waiting (PENDING, REQUEUED, ...).
HOLDING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
SUBMITTABLE = ("missing", "failed")


@dataclass(frozen=True)
class Job:
    id: str
    state: str  # the scheduler's word: PENDING, RUNNING, FAILED, TIMEOUT, ...
    live: bool  # listed by squeue (else only by sacct: it has ended)


@dataclass(frozen=True)
class RunState:
    run: PlannedRun
    state: str  # one of STATES
    job: Job | None
    detail: str = ""


def job_name(run: PlannedRun) -> str:
    """PREFIX + the run's id, each character other than letters, digits and ``_.=+-`` as ``_``: squeue and sacct take
    a comma-separated list of names (a run id that names two keys, ``...-epsilon=0.02,num_prototypes=300-s0-...``,
    would be two names), and the id's configuration hash keeps the name unique."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_.=+-]", "_", run.run_id)


def cluster(keys: dict[str, Any], run_overrides: Sequence[str] = ()) -> Cluster:
    """The job shape from compare's cluster keys (planning.CLUSTER_KEYS); bad values: ConfigError."""
    cl = Cluster(nodes=keys["nodes"], gpus=keys["gpus"], port=None, slurm=True, time=keys["time"],
                 cpus_per_gpu=keys["cpus_per_gpu"], partition=keys["partition"], signal_before=keys["signal_before"])
    if cl.nodes < 1 or cl.gpus < 1 or cl.cpus_per_gpu < 1:
        raise ConfigError(f"nodes={cl.nodes} gpus={cl.gpus} cpus_per_gpu={cl.cpus_per_gpu}: each must be >= 1")
    if cl.signal_before < 0:
        raise ConfigError(f"signal_before={cl.signal_before}: seconds before the time limit, must be >= 0")
    return cl


class Slurm:
    """The scheduler's view and submission, through its commands (the tests put stand-ins first on PATH)."""

    def _call(self, args: list[str], env: dict[str, str] | None = None) -> str:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        except FileNotFoundError as exc:
            raise ConfigError(f"cluster=slurm needs SLURM's commands on PATH (sbatch, squeue, sacct): {args[0]} not "
                              "found; run it on the cluster's login node") from exc
        if proc.returncode:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
            raise ConfigError(f"{shlex.join(args[:2])} ... failed: {why}")
        return proc.stdout

    def jobs(self, names: Sequence[str]) -> dict[str, Job]:
        """Each name's newest job: squeue's (queued or running), else sacct's newest (ended)."""
        if not names:
            return {}
        found: dict[str, Job] = {}
        past = self._call(["sacct", "--noheader", "--parsable2", "--allocations", "--starttime=2000-01-01",
                           f"--name={','.join(names)}", "--format=JobID,JobName,State"])
        for line in past.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[1] in names and _newer(parts[0], found.get(parts[1])):
                found[parts[1]] = Job(parts[0], parts[2].split()[0] if parts[2] else "UNKNOWN", False)
        live = self._call(["squeue", "--noheader", "--format=%i|%j|%T", f"--name={','.join(names)}"])
        for line in live.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[1] in names:
                found[parts[1]] = Job(parts[0], parts[2], True)
        return found

    def submit(self, script: Path) -> str:
        # The job works where this command runs (the runs' folders are read from here), whatever SSL_BENCH_DIR says.
        out = self._call(["sbatch", "--parsable", str(script)], env=dict(os.environ, SSL_BENCH_DIR=os.getcwd()))
        return out.strip().split(";")[0]


def _newer(job_id: str, than: Job | None) -> bool:
    def key(j: str) -> tuple[int, ...]:
        return tuple(int(p) for p in j.replace("_", ".").split(".") if p.isdigit())
    return than is None or key(job_id) > key(than.id)


def run_state(run: PlannedRun, job: Job | None) -> RunState:
    """One run's state from its folder and its newest job (see the module's docstring)."""
    folder = run.state()  # complete | interrupted | new
    if folder == "complete":
        return RunState(run, "done", job)
    kept = " (its checkpoint is kept: a new job resumes it)" if folder == "interrupted" else ""
    if job is not None and job.live:
        return RunState(run, "running" if job.state in HOLDING else "queued", job, f"job {job.id} {job.state}")
    if job is not None:
        return RunState(run, "failed", job, f"job {job.id} {job.state} without a record{kept}")
    if folder == "interrupted":
        return RunState(run, "failed", None, f"a checkpoint and no job{kept}")
    return RunState(run, "missing", None)


def states(plan: Plan, slurm: Slurm) -> list[RunState]:
    names = [job_name(r) for r in plan.runs]
    jobs = slurm.jobs(names)
    return [run_state(r, jobs.get(n)) for r, n in zip(plan.runs, names, strict=True)]


def status_lines(plan: Plan, found: list[RunState], cl: Cluster) -> list[str]:
    """The comparison's state: one line of counts, then one line per run."""
    counts = ", ".join(f"{sum(s.state == k for s in found)} {k}" for k in STATES)
    lines = [f"comparison {plan.name} on SLURM ({cl.nodes} node(s) x {cl.gpus} GPU(s) per run): {len(found)} runs: "
             f"{counts}"]
    multi = len(plan.variants) > 1
    width = max(len(s.run.method) for s in found)
    for s in found:
        variant = f"[{s.run.variant}] " if multi else ""
        detail = f"  {s.detail}" if s.detail else ""
        lines.append(f"  {variant}{s.run.method:<{width}} seed {s.run.seed:<3} {s.state:<8} {s.run.run_id}{detail}")
    return lines


def job_script(plan: Plan, run: PlannedRun, cl: Cluster, written_by: str) -> Path:
    """Write the run's sbatch script into <comparison>/jobs/ (its log beside it); returns its path."""
    folder = plan.out_dir.resolve() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    shape = replace(cl, job=job_name(run))
    about = check_scale(run.cfg, shape) + gpu_budgets.lines(run.cfg, shape.processes)
    path = folder / f"{run.run_id}.sbatch"
    text = slurm_script(shape, [str(o) for o in run.cfg.overrides], about, written_by,
                        output=str(folder / f"{run.run_id}-%j.out"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def submit(plan: Plan, keys: dict[str, Any], written_by: str, send: bool = True,
           slurm: Slurm | None = None) -> list[RunState]:
    """Print every run's state and (``send``) submit a job for each missing or failed one; returns the states, the
    submitted runs as queued. Everything is checked before the first job is submitted: the budgets (by
    :func:`~ssl_bench.analysis.compare.planning.plan`), the split of each run's batch over the processes."""
    if plan.auto:
        raise ConfigError("seeds=auto decides its seeds from the pilot's results: with cluster=slurm give the seeds "
                          "(seeds=[..]), run the pilot first, or run seeds=auto without cluster=")
    cl = cluster(keys)
    for run in plan.runs:
        check_scale(run.cfg, cl)
    slurm = slurm or Slurm()
    found = states(plan, slurm)
    todo = [s for s in found if s.state in SUBMITTABLE]
    if todo:  # before anything is submitted: a GPU budget's note and what its runs will cost
        print("\n".join(gpu_budgets.lines(plan.runs[0].cfg, cl.processes, len(todo))), flush=True)
    print("\n".join(status_lines(plan, found, cl)), flush=True)
    if not send or not todo:
        return found
    scripts = {id(s): job_script(plan, s.run, cl, written_by) for s in todo}  # every script before any job
    out: list[RunState] = []
    for s in found:
        if id(s) in scripts:
            job = Job(slurm.submit(scripts[id(s)]), "PENDING", True)
            print(f"submitted {s.run.method} seed {s.run.seed} ({s.state}): job {job.id}", flush=True)
            s = RunState(s.run, "queued", job, f"job {job.id} PENDING")
        out.append(s)
    print(f"{len(todo)} job(s) submitted; scripts and logs in {plan.out_dir / 'jobs'}; the same command again "
          "shows their state and submits only what is missing or failed")
    return out
