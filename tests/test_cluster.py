"""A comparison as SLURM jobs (compare cluster=slurm) and a job's stop, requeue and resume, through the stand-ins
of tests/fake_slurm (sbatch, squeue, sacct, scontrol, scancel, srun run the jobs here, in the background, with
their state in $FAKE_SLURM_DIR)."""

import json
import os
import socket
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.analysis import compare as cmp
from ssl_bench.analysis.compare.jobs import PREFIX
from ssl_bench.config.cli import guarded
from ssl_bench.training.signals import PAUSE_ENV

TESTS = Path(__file__).parent
FAKE = TESTS / "fake_slurm"
ARGS = ["methods=[swav,simclr]", "seeds=[0,1]", "budget=smoke", "dataset=fashion_mnist"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED")


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The stand-ins first on PATH, their state in tmp_path/slurm, the test in tmp_path; every job still alive at
    the end is cancelled."""
    state = tmp_path / "slurm"
    monkeypatch.setenv("PATH", f"{FAKE}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    yield state
    for job in jobs(state):
        if job["state"] not in ENDED:
            os.system(f"{FAKE / 'scancel'} {job['id']} 2>/dev/null")


def jobs(state: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in state.glob("*.json")), key=lambda j: j["id"]) \
        if state.exists() else []


def submit(capsys, *extra: str) -> tuple[int, str, str]:
    rc = guarded(cmp.main, [*ARGS, "cluster=slurm", "results=results", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def states(out: str) -> dict[str, str]:
    """'<method> s<seed>' -> its state, from the status lines."""
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and " seed " in line]
    return {f"{r[0]} s{r[2]}": r[3] for r in rows}


def test_help_lists_the_cluster_keys(capsys):
    assert guarded(cmp.main, ["--help"]) == 0
    text = capsys.readouterr().out
    for key in ("cluster=none", "nodes=1", "gpus=1", "partition=null", "time=72:00:00", "cpus_per_gpu=10",
                "signal_before=300", "train=true"):
        assert f"  {key} " in text


@pytest.mark.parametrize("extra, message", [
    (["cluster=pbs"], "unknown cluster 'pbs'; valid choices: none, slurm"),
    (["nodes=0"], "nodes=0 gpus=1 cpus_per_gpu=10: each must be >= 1"),
    (["gpus=3"], "data.batch_size=16 (the global batch) cannot be split over 1 x 3 = 3 processes"),
    (["simclr:data.batch_size=32"], "runs have different budgets: data.batch_size"),
])
def test_bad_input_and_a_differing_budget_are_refused_before_anything_is_submitted(slurm, capsys, extra, message):
    rc, out, err = submit(capsys, *extra)
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not jobs(slurm) and not (Path("results") / "compare").exists()


def test_cluster_keys_without_cluster_slurm_are_refused(capsys):
    assert guarded(cmp.main, [*ARGS, "nodes=2"]) == 2
    assert "nodes=2 is a key of cluster=slurm" in capsys.readouterr().err


def test_without_slurm_on_path_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    monkeypatch.chdir(tmp_path)
    rc, _, err = submit(capsys)
    assert rc == 2 and "cluster=slurm needs SLURM's commands on PATH" in err and err.count("\n") == 1


def test_status_and_only_missing_or_failed_runs_resubmitted(slurm, monkeypatch, capsys):
    """Held jobs (no free slot): queued; a cancelled job's run is failed and is the only one submitted again; a run
    with a record is done, one with a checkpoint and no job failed."""
    monkeypatch.setenv("FAKE_SLURM_SLOTS", "0")  # every job stays PENDING
    plan = cmp.plan(**cmp.plan_arguments([*ARGS, "results=results"])[0])
    done, stopped = plan.runs[0].run_dir, plan.runs[3].run_dir
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    (stopped / "checkpoint").mkdir(parents=True)
    rc, out, _ = submit(capsys, "train=false")  # report only: nothing submitted
    assert rc == 0 and not jobs(slurm)
    assert states(out) == {"swav s0": "done", "swav s1": "missing", "simclr s0": "missing", "simclr s1": "failed"}
    assert "1 done, 0 running, 0 queued, 1 failed, 2 missing" in out and "a checkpoint and no job" in out
    rc, out, _ = submit(capsys)
    assert rc == 0 and out.count("submitted ") == 3 and len(jobs(slurm)) == 3
    rc, out, _ = submit(capsys)  # again: all queued, nothing new
    assert rc == 0 and "submitted" not in out and len(jobs(slurm)) == 3
    assert states(out) == {"swav s0": "done", "swav s1": "queued", "simclr s0": "queued", "simclr s1": "queued"}
    cancelled = jobs(slurm)[1]
    os.system(f"{FAKE / 'scancel'} {cancelled['id']}")
    rc, out, _ = submit(capsys)
    assert states(out)["simclr s0"] == "failed" and f"job {cancelled['id']} CANCELLED without a record" in out
    assert out.count("submitted ") == 1 and "submitted simclr seed 0 (failed)" in out and len(jobs(slurm)) == 4
    script = (plan.out_dir / "jobs" / f"{plan.runs[1].run_id}.sbatch").read_text()
    assert f"#SBATCH --job-name={PREFIX}{plan.runs[1].run_id}" in script and "#SBATCH --signal=B:USR1@300" in script
    assert "resume=true" in script and "scontrol requeue" in script


def test_a_run_id_with_a_comma_is_found_by_its_job(slurm, monkeypatch, capsys):
    """A run whose id names two keys (``...-final_lr=0.001,lr=0.04-s0-...``): its job's name has no comma, so squeue's
    and sacct's comma-separated --name lists find it (it was reported missing and submitted again)."""
    monkeypatch.setenv("FAKE_SLURM_SLOTS", "0")
    extra = ("optim.lr=0.04", "optim.final_lr=0.001")
    rc, out, _ = submit(capsys, *extra)
    assert rc == 0 and out.count("submitted ") == 4
    assert not any("," in j["name"] for j in jobs(slurm))
    rc, out, _ = submit(capsys, *extra)
    assert rc == 0 and "submitted" not in out and set(states(out).values()) == {"queued"}
    assert "lr=0.04" in out and "," in out  # the run ids keep their comma; the job names do not


def wait_for(what, timeout: float = 300, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def numbers(table: Path) -> pd.DataFrame:
    """The table's numbers that do not depend on the machine's speed or the folders' names."""
    df = pd.read_csv(table)
    timing = ("wall_s", "images_per_s", "peak_mem_mb", "matched")
    return df[[c for c in df.columns if not c.startswith(timing) and c not in ("run_ids", "commits")]]


@pytest.mark.slow
def test_a_comparison_as_jobs_one_preempted_gives_the_table_compare_trains(slurm, tmp_path, monkeypatch, capsys):
    """2 methods x 2 seeds as jobs; one stopped mid-epoch by SIGUSR1 to its batch shell (what SLURM sends before the
    time limit), checkpointed, requeued and resumed; the table gathered from the jobs' records equals the one compare
    writes when it trains the same runs itself."""
    paused = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_ENV, f"6:{paused}")  # the first run at step 6 (epoch 2, batch 2) waits for the signal
    rc, before, _ = submit(capsys)
    assert rc == 0 and set(states(before).values()) == {"missing"} and before.count("submitted ") == 4
    run_dir = wait_for(lambda: paused.exists() and paused.read_text())
    rc, during, _ = submit(capsys, "train=false")
    assert rc == 0 and "running" in states(during).values()
    (job,) = [j for j in jobs(slurm) if j["name"] == PREFIX + Path(run_dir).name]
    os.system(f"{FAKE / 'scancel'} --signal=USR1 --batch {job['id']}")
    wait_for(lambda: all(j["state"] in ENDED for j in jobs(slurm)) and jobs(slurm))
    assert [j["state"] for j in jobs(slurm)] == ["COMPLETED"] * 4
    job = [j for j in jobs(slurm) if j["id"] == job["id"]][0]
    log = Path(job["output"].replace("%j", str(job["id"]))).read_text()
    assert job["restarts"] == 1 and "interrupted at epoch 2, batch 2; checkpoint saved" in log
    assert "resumed at epoch 2, batch 2" in log and log.count("record: ") == 1
    rc, after, _ = submit(capsys)  # all done: nothing submitted, the table written
    assert rc == 0 and set(states(after).values()) == {"done"} and "submitted" not in after
    rc, report, _ = submit(capsys, "train=false")  # report-only: the same table from the records
    assert rc == 0 and "4 done" in report
    gathered = numbers(Path("results/compare/compare-fashion_mnist-smoke/table.csv"))
    monkeypatch.delenv(PAUSE_ENV)
    assert guarded(cmp.main, [*ARGS, "results=trained"]) == 0  # compare trains the same runs itself, here
    trained = numbers(Path("trained/compare/compare-fashion_mnist-smoke/table.csv"))
    pd.testing.assert_frame_equal(gathered, trained)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_two_node_job_stops_requeues_and_resumes(slurm, tmp_path, monkeypatch, capsys):
    """nodes=2 gpus=1: srun starts a launcher per node (here both on localhost, gloo); SIGUSR1 stops both processes
    at one step with one checkpoint, the job requeues itself and the resumed run finishes on 2 processes."""
    paused = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_ENV, f"6:{paused}")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    monkeypatch.setenv("MAIN_PORT", str(free_port()))
    argv = ["methods=[swav]", "seeds=[0]", "budget=smoke", "dataset=fashion_mnist", "cluster=slurm", "nodes=2",
            "results=results"]
    assert guarded(cmp.main, argv) == 0
    wait_for(paused.exists)
    (job,) = jobs(slurm)
    os.system(f"{FAKE / 'scancel'} --signal=USR1 --batch {job['id']}")
    wait_for(lambda: jobs(slurm)[0]["state"] in ENDED)
    (job,) = jobs(slurm)
    log = Path(job["output"].replace("%j", str(job["id"]))).read_text()
    assert job["state"] == "COMPLETED" and job["restarts"] == 1, log[-3000:]
    assert "resumed at epoch 2, batch 2" in log
    (run,) = (tmp_path / "results" / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["cost"]["num_processes"] == 2
