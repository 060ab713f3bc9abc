"""Sweeps on many machines: several worker commands (sharing nothing but the storage URL) on one study, on a real
PostgreSQL server (a throwaway cluster), the journal file and SQLite; workers killed, interrupted, or cut off from a
database that went away. Trials are real smoke runs (a few seconds each)."""

import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.sweep_workers import grid_file, start, tally, wait_for_line, worker_command
from ssl_bench.sweep import pgserver

pytestmark = pytest.mark.slow  # integration: several processes


GRID = {"method.num_prototypes": [8, 16], "method.sinkhorn_iterations": [1, 3]}
CELLS = {(8, 1), (8, 3), (16, 1), (16, 3)}


@pytest.fixture(scope="module")
def pg_server():
    """A PostgreSQL cluster in a temporary folder (owned by the server's account), on localhost, removed after."""
    if pgserver.server_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
                    "(scripts/setup.sh does it when run as root)")
    root = Path(tempfile.mkdtemp(prefix="ssl_bench_pg_"))
    server = pgserver.create(root)
    try:
        yield server
    finally:
        server.stop("immediate")
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def postgres(pg_server):
    """The module's server, running (a test may have stopped it)."""
    if pg_server._pg_ctl("status").returncode != 0:
        pg_server.start()
    return pg_server


def run_workers(tmp_path, storage, study, n=3, extra=(), grid=GRID):
    sweep = grid_file(tmp_path, grid)
    logs = [tmp_path / f"worker{i}.log" for i in range(n)]
    procs = [start(worker_command(sweep, tmp_path / "results", study, storage, *extra), log) for log in logs]
    return sweep, logs, procs


def completed_per_cell(storage, study):
    t = tally(storage, study, list(GRID))
    return t, t["per_cell"]


def assert_every_cell_once(storage, study, records_dir):
    t, per_cell = completed_per_cell(storage, study)
    assert set(per_cell) == CELLS and set(per_cell.values()) == {1}, per_cell
    done = [x for x in t["all"] if x.state.name == "COMPLETE"]
    # Every trial its own record: one run folder per completed trial, each written.
    assert len({x.user_attrs["run_id"] for x in done}) == len(done)
    assert all(Path(x.user_attrs["record"]).exists() for x in done)
    assert len(list(records_dir.glob("*/summary.json"))) == len(CELLS)
    return t


def log_of(path):
    return path.read_text(errors="replace")


def test_three_postgres_workers_train_every_cell_once_and_report_as_one_worker_would(postgres, tmp_path):
    _, logs, procs = run_workers(tmp_path, postgres.url, "grid3")
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0, 0], [log_of(g)[-1500:] for g in logs]
    assert_every_cell_once(postgres.url, "grid3", tmp_path / "results" / "runs")
    assert all("Traceback" not in log_of(g) for g in logs)
    # One worker on the same trials (the same records, reused rather than trained again) writes the same report.
    single = subprocess.run(worker_command(tmp_path / "grid.yaml", tmp_path / "results", "grid1", postgres.url),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    figures = tmp_path / "results" / "figures"
    timing = ["duration_s", "reused_record"]
    three = pd.read_csv(figures / "grid3" / "trials.csv").drop(columns=timing)
    one = pd.read_csv(figures / "grid1" / "trials.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(three.sort_values("trial").reset_index(drop=True),
                                  one.sort_values("trial").reset_index(drop=True))


def test_tpe_postgres_workers_do_not_all_try_the_same_point(postgres, tmp_path):
    extra = ["pruner=none", "n_trials=2", "sampler.n_startup_trials=2", "report=false"]
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    cmd = worker_command("swav_prototypes_epsilon", tmp_path / "results", "tpe", postgres.url, *extra)
    procs = [start(cmd, log) for log in logs]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0], [log_of(g)[-1500:] for g in logs]
    import optuna

    from ssl_bench.sweep.storage import make_storage

    trials = optuna.load_study(study_name="tpe", storage=make_storage(postgres.url)).get_trials()
    points = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(points) == 6 and len(set(points)) == 6, points


def test_three_journal_workers_train_every_cell_once(tmp_path):
    storage = f"journal://{tmp_path / 'study.log'}"
    _, logs, procs = run_workers(tmp_path, storage, "grid")
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0], [log_of(g)[-1500:] for g in logs]
    assert_every_cell_once(storage, "grid", tmp_path / "results" / "runs")


def test_sqlite_n_jobs_3_trains_every_cell_once(tmp_path):
    sweep = grid_file(tmp_path, GRID)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.run(worker_command(sweep, tmp_path / "results", "grid", storage, "n_jobs=3"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_every_cell_once(storage, "grid", tmp_path / "results" / "runs")


@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(kind, tmp_path, request):
    storage = (request.getfixturevalue("postgres").url if kind == "postgres"
               else f"journal://{tmp_path / 'study.log'}")
    _, logs, procs = run_workers(tmp_path, storage, f"kill_{kind}")
    assert wait_for_line(logs[0], "] trial ", procs[0])
    time.sleep(0.5)
    procs[0].send_signal(signal.SIGKILL)
    codes = [p.wait(timeout=300) for p in procs]
    assert codes[0] == -9 and codes[1:] == [0, 0], [log_of(g)[-1500:] for g in logs]
    t = assert_every_cell_once(storage, f"kill_{kind}", tmp_path / "results" / "runs")
    assert len(t["lost"]) == 1, [(x.number, x.state, x.user_attrs) for x in t["all"]]
    lost = t["lost"][0]
    assert lost.state.name == "FAIL" and "stopped sending heartbeats" in lost.user_attrs["reason"]
    (again,) = [x for x in t["retries"] if x.user_attrs["retry_of"] == lost.number]
    assert again.state.name == "COMPLETE" and again.params == lost.params


def test_postgres_worker_killed_between_trials_loses_nothing(postgres, tmp_path):
    _, logs, procs = run_workers(tmp_path, postgres.url, "between", n=1)
    assert wait_for_line(logs[0], "Trial 0 finished", procs[0])
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=60)
    # A worker started again finishes the grid; trial 0 is kept (any trial the kill caught is retried).
    _, logs, procs = run_workers(tmp_path, postgres.url, "between", n=1)
    assert procs[0].wait(timeout=300) == 0, log_of(logs[0])[-2000:]
    t = assert_every_cell_once(postgres.url, "between", tmp_path / "results" / "runs")
    assert next(x for x in t["all"] if x.number == 0).state.name == "COMPLETE"


def test_postgres_ctrl_c_stops_a_worker_cleanly_and_its_trial_goes_back_in_the_queue(postgres, tmp_path):
    # Long enough that the signal lands in training (smoke's 8 steps end within 0.5 s on an idle machine).
    _, logs, procs = run_workers(tmp_path, postgres.url, "sigint", n=1, extra=("train.epochs=300",))
    assert wait_for_line(logs[0], "epoch=1 ", procs[0])
    procs[0].send_signal(signal.SIGINT)
    assert procs[0].wait(timeout=120) == 130
    out = log_of(logs[0])
    assert "Traceback" not in out and ("stopped: " in out or "interrupted; run the same command" in out), out[-2000:]
    t = tally(postgres.url, "sigint", list(GRID))
    stopped = [x for x in t["all"] if x.user_attrs.get("fail_kind") == "interrupted"]
    assert len(stopped) == 1 and stopped[0].state.name == "FAIL"
    assert [x.state.name for x in t["retries"]] == ["WAITING"] and t["retries"][0].params == stopped[0].params


def test_postgres_server_stopped_gives_one_line_and_a_restarted_worker_continues(postgres, tmp_path):
    _, logs, procs = run_workers(tmp_path, postgres.url, "outage", n=1)
    assert wait_for_line(logs[0], "] trial ", procs[0])
    postgres.stop("fast")
    try:
        code = procs[0].wait(timeout=120)
    finally:
        postgres.start()
    out = log_of(logs[0])
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert code == 1 and "Traceback" not in out, out[-3000:]
    assert len(errors) == 1 and "storage is unreachable" in errors[0], errors
    _, logs, procs = run_workers(tmp_path, postgres.url, "outage", n=1)
    assert procs[0].wait(timeout=300) == 0, log_of(logs[0])[-2000:]
    assert_every_cell_once(postgres.url, "outage", tmp_path / "results" / "runs")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_trial_of_a_worker_killed_before_its_first_heartbeat_is_retried(kind, tmp_path, request):
    """Killed between taking a trial from the queue and its first heartbeat: no heartbeat was ever written, so the
    trial's start says how long it has been silent."""
    import optuna

    from ssl_bench.sweep.storage import fail_stale, make_storage

    storage = (request.getfixturevalue("postgres").url if kind == "postgres"
               else f"journal://{tmp_path / 'study.log'}")
    study = optuna.create_study(study_name=f"silent_{kind}", storage=make_storage(storage, heartbeat=1, grace=2))
    study.enqueue_trial({"x": 1})
    taken = study.ask()  # RUNNING, and no heartbeat thread (as if its worker died right here)
    taken.suggest_int("x", 0, 3)
    fail_stale(study)
    assert study.trials[0].state.name == "RUNNING"  # not yet: within the grace period
    time.sleep(2.5)
    fail_stale(study)
    dead, again = study.trials
    assert dead.state.name == "FAIL" and dead.user_attrs["fail_kind"] == "lost"
    assert again.state.name == "WAITING" and again.params == {"x": 1} and again.user_attrs["retry_of"] == 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_trial_that_completed_before_it_was_failed_as_lost_is_not_retried(tmp_path):
    """A slow worker's result and another worker's 'lost' verdict race: the journal keeps the first (complete)."""
    import optuna

    from ssl_bench.sweep.storage import _retry_stale, make_storage, redact

    study = optuna.create_study(study_name="race", storage=make_storage(f"journal://{tmp_path / 's.log'}"))
    study.enqueue_trial({"x": 1})
    trial = study.ask()
    trial.suggest_int("x", 0, 3)
    study.tell(trial, 1.0)
    _retry_stale(study, study.trials[0])
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert redact("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_queued_cell_whose_trial_is_still_suggesting_counts_as_taken(tmp_path):
    """A worker that starts while another's trial has suggested only some of its params must not queue that cell
    again: the cell is read from the trial's fixed_params (this raced once in CI, a cell trained by two trials)."""
    import optuna

    from ssl_bench.sweep.storage import _cell, make_storage

    study = optuna.create_study(study_name="partial", storage=make_storage(f"sqlite:///{tmp_path / 's.db'}"))
    study.enqueue_trial({"a": 8, "b": 1})
    trial = study.ask()
    trial.suggest_int("a", 0, 16)  # "b" not suggested yet
    running = study.trials[0]
    assert running.state.name == "RUNNING" and running.params == {"a": 8}
    assert _cell(running, ["a", "b"]) == (8, 1)
