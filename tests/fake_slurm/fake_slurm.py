#!/usr/bin/env python3
"""SLURM stand-ins for the tests: sbatch, squeue, sacct, scontrol, scancel and srun (links to this file, which acts
as the one it is called as) run the jobs on this machine, in the background, with their state in $FAKE_SLURM_DIR.

  sbatch [--parsable] SCRIPT     a job: its #SBATCH --job-name/--output/--nodes/--open-mode; starts when a slot is free
                                 ($FAKE_SLURM_SLOTS jobs at a time, default 2; 0 holds every job PENDING)
  squeue --noheader --format=F [--name=a,b]       PENDING and RUNNING jobs; F's %i %j %T are id, name and state
  sacct --noheader --parsable2 --format=JobID,JobName,State [--name=a,b] [...]     every job
  scontrol show hostnames LIST | scontrol requeue ID     localhost per node | PENDING again when its script ends
  scancel [--signal=SIG [--batch]] ID     SIG (default TERM) to the batch shell (--batch) or to the whole job
  srun [--opt ...] CMD ARG...    CMD once per node of the job (SLURM_NODEID=0..N-1); SIGTERM is passed on

A job's state is <id>.json; the script runs with SLURM_JOB_ID, SLURM_JOB_NAME, SLURM_JOB_NODELIST, SLURM_NNODES,
SLURM_SUBMIT_DIR and SLURM_RESTART_COUNT set, in the folder sbatch was called from, as SLURM does.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIVE = ("PENDING", "RUNNING")


def state_dir() -> Path:
    d = Path(os.environ["FAKE_SLURM_DIR"])
    d.mkdir(parents=True, exist_ok=True)
    return d


class Lock:
    def __enter__(self):
        self.f = open(state_dir() / "lock", "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def load(job_id) -> dict:
    return json.loads((state_dir() / f"{job_id}.json").read_text())


def save(job: dict) -> None:
    tmp = state_dir() / f"{job['id']}.json.tmp"
    tmp.write_text(json.dumps(job))
    tmp.replace(state_dir() / f"{job['id']}.json")


def jobs() -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in state_dir().glob("*.json")), key=lambda j: j["id"])


def option(args: list[str], name: str, default=None):
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return default


def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).resolve()
    directives = [line.split(None, 1)[1].strip() for line in script.read_text().splitlines()
                  if line.startswith("#SBATCH ")]
    opts = args[:-1] + directives
    with Lock():
        counter = state_dir() / "counter"
        job_id = int(counter.read_text()) + 1 if counter.exists() else 1001
        counter.write_text(str(job_id))
        save({"id": job_id, "name": option(opts, "job-name", script.name), "state": "PENDING", "exit": None,
              "script": str(script), "cwd": os.getcwd(), "nodes": int(option(opts, "nodes", 1)),
              "output": option(opts, "output", "slurm-%j.out"), "append": option(opts, "open-mode") == "append",
              "restarts": 0, "pid": None})
    subprocess.Popen([sys.executable, str(HERE / "fake_slurm.py"), "__run__", str(job_id)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    print(job_id if "--parsable" in args else f"Submitted batch job {job_id}")
    return 0


def _take_slot(job_id: int) -> bool:
    slots = int(os.environ.get("FAKE_SLURM_SLOTS", "2"))
    with Lock():
        job = load(job_id)
        if job["state"] != "PENDING":  # cancelled while waiting
            return True
        if slots and sum(j["state"] == "RUNNING" for j in jobs()) < slots:
            job["state"] = "RUNNING"
            save(job)
            return True
    return False


def run_job(job_id: int) -> int:
    """The job's life: wait for a slot, run the script, PENDING again after a requeue, else COMPLETED / FAILED."""
    while True:
        while not _take_slot(job_id):
            time.sleep(0.2)
        job = load(job_id)
        if job["state"] != "RUNNING":
            return 0
        out = Path(job["cwd"]) / job["output"].replace("%x", job["name"]).replace("%j", str(job_id))
        out.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SLURM_JOB_ID=str(job_id), SLURM_JOB_NAME=job["name"], SLURM_JOB_NODELIST="localhost",
                   SLURM_NNODES=str(job["nodes"]), SLURM_JOB_NUM_NODES=str(job["nodes"]),
                   SLURM_SUBMIT_DIR=job["cwd"], SLURM_RESTART_COUNT=str(job["restarts"]))
        with open(out, "a" if job["append"] or job["restarts"] else "w") as log:
            proc = subprocess.Popen(["bash", job["script"]], cwd=job["cwd"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            with Lock():
                job = load(job_id)
                job["pid"] = proc.pid
                save(job)
            rc = proc.wait()
        flag = state_dir() / f"{job_id}.requeue"
        with Lock():
            job = load(job_id)
            job["pid"] = None
            if flag.exists():
                flag.unlink()
                job.update(state="PENDING", restarts=job["restarts"] + 1)
            elif job["state"] == "RUNNING":
                job.update(state="COMPLETED" if rc == 0 else "FAILED", exit=rc)
            save(job)
            if job["state"] != "PENDING":
                return 0


def _names(args: list[str]) -> set[str] | None:
    names = option(args, "name")
    return set(names.split(",")) if names else None


def squeue(args: list[str]) -> int:
    fmt, names = option(args, "format", "%i %j %T"), _names(args)
    if "--noheader" not in args and "-h" not in args:
        print("JOBID NAME STATE")
    for j in jobs():
        if j["state"] in LIVE and (names is None or j["name"] in names):
            print(fmt.replace("%i", str(j["id"])).replace("%j", j["name"]).replace("%T", j["state"]))
    return 0


def sacct(args: list[str]) -> int:
    fields = option(args, "format", "JobID,JobName,State").split(",")
    names = _names(args)
    for j in jobs():
        if names is None or j["name"] in names:
            row = {"JobID": str(j["id"]), "JobName": j["name"], "State": j["state"],
                   "ExitCode": f"{j['exit'] or 0}:0"}
            print("|".join(row[f] for f in fields))
    return 0


def scontrol(args: list[str]) -> int:
    if args[:2] == ["show", "hostnames"]:
        print("localhost")
        return 0
    if args[:1] == ["requeue"]:
        for job_id in args[1].split(","):
            (state_dir() / f"{job_id}.requeue").touch()
        return 0
    print(f"scontrol (stand-in): cannot {' '.join(args)}", file=sys.stderr)
    return 1


def scancel(args: list[str]) -> int:
    sig = getattr(signal, "SIG" + option(args, "signal", "TERM").removeprefix("SIG"))
    job_id = int([a for a in args if not a.startswith("-")][-1])
    with Lock():
        job = load(job_id)
        if job["state"] == "PENDING" and option(args, "signal") is None:
            job["state"] = "CANCELLED"
            save(job)
            return 0
        if option(args, "signal") is None and job["state"] == "RUNNING":
            job["state"] = "CANCELLED"
            save(job)
    if job["pid"] is None:
        print(f"scancel (stand-in): job {job_id} is not running", file=sys.stderr)
        return 1
    if "--batch" in args or "-b" in args:
        os.kill(job["pid"], sig)
    else:
        os.killpg(job["pid"], sig)
    return 0


def srun(args: list[str]) -> int:
    while args and args[0].startswith("-"):
        args = args[1:]
    n = int(os.environ.get("SLURM_NNODES", "1"))
    procs = [subprocess.Popen(args, env=dict(os.environ, SLURM_NODEID=str(i), SLURM_PROCID=str(i), SLURM_LOCALID="0"))
             for i in range(n)]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    name = Path(sys.argv[0]).name
    if len(sys.argv) > 2 and sys.argv[1] == "__run__":
        sys.exit(run_job(int(sys.argv[2])))
    commands = {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scontrol": scontrol, "scancel": scancel,
                "srun": srun}
    sys.exit(commands[name](sys.argv[1:]))
