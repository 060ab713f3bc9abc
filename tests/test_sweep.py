"""The Optuna sweeper: trials are ordinary runs in one SQLite study; failures, pruning, bad search spaces."""

import os
import subprocess
import sys

import optuna
import pytest
from conftest import assert_cli_error

from ssl_bench import sweep
from ssl_bench.config.cli import guarded
from ssl_bench.records import io as results
from ssl_bench.sweep import trials as sweep_trials
from ssl_bench.training.loop import TrainingStopped

States = optuna.trial.TrialState


def study_of(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'sweeps' / name}.db")


def argv(tmp_path, *extra, sweep_name="swav_prototypes_epsilon"):
    return [f"sweep={sweep_name}", "method=swav", "budget=smoke", f"results={tmp_path}", "study_name=s", *extra]


@pytest.mark.slow
def test_three_trials_write_records_and_a_study_and_running_again_adds_trials(tmp_path):
    assert guarded(sweep.main, argv(tmp_path, "n_trials=3", "eval.random_baseline=false")) == 0
    db = tmp_path / "sweeps" / "s.db"
    assert db.exists()
    study = study_of(tmp_path, "s")
    assert [t.state for t in study.trials] == [States.COMPLETE] * 3
    df = results.load(tmp_path / "runs")
    assert len(df) == 3 and set(df["tags.study"]) == {"s"} and sorted(df["tags.trial"]) == ["0", "1", "2"]
    for t in study.trials:  # the value is the record's kNN top-1; the online kNN was reported per epoch
        rec = df[df["run_id"] == t.user_attrs["run_id"]].iloc[0]
        assert t.value == rec["metrics.knn_top1"] and sorted(t.intermediate_values) == [0, 1]
        assert set(t.params) == {"method.num_prototypes", "method.epsilon"}
    figures = tmp_path / "figures" / "s"
    assert {"trials.csv", "trials.md", "metric_vs_params.png", "heatmap_num_prototypes__epsilon.png",
            "history.png"} <= {p.name for p in figures.iterdir()}
    # The same command again (here with two local worker processes) continues the same study.
    assert guarded(sweep.main, argv(tmp_path, "n_trials=2", "n_jobs=2", "pruner=none", "report=false",
                                         "eval.random_baseline=false")) == 0
    study = study_of(tmp_path, "s")
    assert len(study.trials) == 5 and all(t.state == States.COMPLETE for t in study.trials)
    assert len(results.load(tmp_path / "runs")) == 5


def fake_summary(value, **extra):
    return {"metrics": {"knn_top1": value}, "cost": {"wall_s": 1.0}, **extra}


def test_failed_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path, monkeypatch):
    calls = []

    def fake_run(cfg, epoch_callbacks=None, beside=None):
        calls.append(dict(cfg.tags))
        n = len(calls)
        if n == 2:
            raise RuntimeError("boom")
        if n == 3:
            raise TrainingStopped("loss became nan at epoch 1, step 3; stopped.", 1)
        if n == 4:
            return fake_summary(12.5, collapsed=True)
        if n == 5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fake_summary(40.0 + n)

    monkeypatch.setattr(sweep_trials, "run_experiment", fake_run)
    assert guarded(sweep.main, argv(tmp_path, "n_trials=6", "report=false")) == 0
    trials = study_of(tmp_path, "s").trials
    assert [t.state for t in trials] == [States.COMPLETE] + [States.FAIL] * 4 + [States.COMPLETE]
    assert [t.user_attrs.get("fail_kind") for t in trials] == [None, "crash", "nan", "collapse", "oom", None]
    assert trials[1].user_attrs["reason"] == "crashed: RuntimeError: boom"
    assert trials[3].user_attrs["objective_value"] == 12.5
    assert trials[5].value == 46.0
    assert calls[0] == {"sweep": "swav_prototypes_epsilon", "study": "s", "trial": "0"}


def fake_training(values_by_trial):
    """A stand-in for run_experiment that reports an online kNN per epoch, as the loop does."""
    calls = []

    def fake_run(cfg, epoch_callbacks=None, beside=None):
        values = values_by_trial[len(calls)]
        calls.append(cfg)
        for epoch, v in enumerate(values):
            reasons = [cb(epoch, {"epoch": epoch, "loss": 1.0, "monitor_knn_top1": v}) for cb in epoch_callbacks]
            if any(reasons):
                raise TrainingStopped(f"stopped after epoch {epoch + 1}: {reasons[0]}", 3, pruned=True)
        return fake_summary(values[-1])

    return fake_run


def test_median_pruner_prunes_a_trial_reported_worse_than_the_median(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_trials, "run_experiment", fake_training([[50, 60, 70], [55, 65, 75], [10, 20, 30]]))
    code = guarded(sweep.main, argv(tmp_path, "n_trials=3", "pruner=median", "pruner.n_startup_trials=2",
                                    "pruner.n_warmup_steps=0", "report=false"))
    assert code == 0
    trials = study_of(tmp_path, "s").trials
    assert [t.state for t in trials] == [States.COMPLETE, States.COMPLETE, States.PRUNED]
    assert trials[2].intermediate_values == {0: 10.0}  # stopped after its first epoch
    assert "pruned by the median pruner" in trials[2].user_attrs["reason"]


def test_pruner_off_trains_every_trial_to_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_trials, "run_experiment", fake_training([[50, 60], [55, 65], [10, 20]]))
    assert guarded(sweep.main, argv(tmp_path, "n_trials=3", "pruner=none", "report=false")) == 0
    assert [t.state for t in study_of(tmp_path, "s").trials] == [States.COMPLETE] * 3


GRID = "sampler: grid\npruner: none\ngrid:\n  method.num_prototypes: [8, 16]\n  method.sinkhorn_iterations: [1, 3]\n"


def test_grid_runs_every_cell_once_and_interrupted_or_crashed_cells_are_trained_again(tmp_path, monkeypatch):
    spec = tmp_path / "spec" / "grid.yaml"
    spec.parent.mkdir()
    spec.write_text(GRID)
    seen = []

    def fake_run(cfg, epoch_callbacks=None, beside=None):
        seen.append((cfg.method.num_prototypes, cfg.method.sinkhorn_iterations))
        if len(seen) == 2:
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
        if len(seen) == 3:
            raise TrainingStopped("interrupted at epoch 1, batch 2; checkpoint saved", 130)
        return fake_summary(float(len(seen)))

    monkeypatch.setattr(sweep_trials, "run_experiment", fake_run)
    args = [f"sweep={spec}", "budget=smoke", f"results={tmp_path}", "study_name=g", "report=false"]
    assert guarded(sweep.main, args) == 130  # a crash is recorded and the sweep goes on; Ctrl-C stops it
    assert guarded(sweep.main, args) == 0  # the same command finishes the grid, the two failed cells included
    assert sorted(seen[3:]) == sorted({(8, 1), (8, 3), (16, 1), (16, 3)} - {seen[0]})
    trials = study_of(tmp_path, "g").trials
    assert sum(t.state == States.COMPLETE for t in trials) == 4
    assert guarded(sweep.main, args) == 0 and len(seen) == 6  # nothing left to do


BAD = [
    ("params: {method.epsilon: {type: normal, low: 0.1, high: 1}}", "unknown type 'normal'"),
    ("params: {method.epsilon: {type: float, low: 0.1, high: 0.01}}", "low (0.1) must be < high (0.01)"),
    ("params: {method.epsilon: {type: float, low: 0.1, high: 0.1}}", "must be < high"),
    ("params: {method.sinkhorn_iterations: {type: categorical, choices: []}}", "non-empty list of choices"),
    ("params: {method.num_prototypes: {type: int, low: 1.5, high: 10}}", "must be an integer"),
    ("params: {method.epsilon: {type: float, low: 0, high: 0.1, log: true}}", "log scale needs low > 0"),
    ("params: {method.nope: {type: int, low: 1, high: 10}}", "valid keys in 'method'"),
    ("params: {method.epsilon: {type: float, low: 0.0, high: 0.1}}", "method.epsilon must be > 0"),
    ("params: {data.batch_size: {type: categorical, choices: [16, abc]}}", "could not be converted"),
    ("sampler: grid\nparams: {method.epsilon: {type: float, low: 0.01, high: 0.1}}", "sampler=grid needs a list"),
    ("params: {method.epsilon: {type: float, low: 0.01, high: 0.1, lo: 3}}", "unknown field(s) lo"),
    ("parms: {method.epsilon: {type: float, low: 0.01, high: 0.1}}", "unknown key(s) parms"),
    ("pruner: {type: median, n_startup: 3}\nparams: {method.epsilon: {type: float, low: 0.01, high: 0.1}}",
     "pruner=median"),
]


@pytest.mark.parametrize("text, needle", BAD)
def test_invalid_search_space_exits_2_before_any_trial(tmp_path, capsys, monkeypatch, text, needle):
    monkeypatch.setattr(sweep_trials, "run_experiment", lambda *a, **k: pytest.fail("a trial ran"))
    spec = tmp_path / "spec" / "bad.yaml"
    spec.parent.mkdir()
    spec.write_text(text + "\n")
    out = tmp_path / "out"
    code = guarded(sweep.main, [f"sweep={spec}", "budget=smoke", f"results={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()  # no study, no record


@pytest.mark.parametrize("args, needle", [
    (["sweep=nope"], "unknown sweep 'nope'; valid choices: carl_batch_prototypes"),
    (["sweep=swav_prototypes_epsilon", "sampler=nope"], "unknown sampler 'nope'"),
    (["sweep=swav_prototypes_epsilon", "method.epsilon=0.03"], "method.epsilon is swept"),
    (["sweep=swav_prototypes_epsilon", "n_trials=-1"], "n_trials must be an integer >= 0"),
    (["sweep=swav_prototypes_epsilon", "storage=nowhere"], "expected an Optuna storage URL"),
    (["n_trials=3"], "sweep=<name> is required"),
    (["sweep=swav_prototypes_epsilon", "objective=linear"], "add eval.protocols=[knn,linear]"),
    (["sweep=swav_prototypes_epsilon", "study=methods"], "study_name=<name>; study= is a study file"),
])
def test_bad_command_line_exits_2(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.setattr(sweep_trials, "run_experiment", lambda *a, **k: pytest.fail("a trial ran"))
    code = guarded(sweep.main, [*args, "budget=smoke", f"results={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and needle in err, err
    assert not (tmp_path / "out" / "runs").exists()


def test_objective_missing_from_the_record_stops_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep_trials, "run_experiment", lambda *a, **k: fake_summary(50.0))
    code = guarded(sweep.main, argv(tmp_path, "n_trials=3", "objective=linear_top1", "report=false"))
    assert code == 2 and "objective 'linear_top1' is not in the run record" in capsys.readouterr().err
    assert [t.state for t in study_of(tmp_path, "s").trials] == [States.FAIL]


def test_linear_probe_objective_reads_the_nested_metric(tmp_path, monkeypatch):
    summary = {"metrics": {"knn_top1": 50.0, "linear": {"top1": 61.5}}, "cost": {}}
    monkeypatch.setattr(sweep_trials, "run_experiment", lambda *a, **k: summary)
    args = argv(tmp_path, "n_trials=1", "objective=linear", "eval.protocols=[knn,linear]", "report=false")
    assert guarded(sweep.main, args) == 0
    assert study_of(tmp_path, "s").trials[0].value == 61.5


def test_continuing_a_study_with_another_base_config_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep_trials, "run_experiment", lambda *a, **k: fake_summary(50.0))
    assert guarded(sweep.main, argv(tmp_path, "n_trials=1", "report=false")) == 0
    assert guarded(sweep.main, argv(tmp_path, "n_trials=1", "report=false", "train.epochs=3")) == 2
    assert "study 's' was made with base" in capsys.readouterr().err


def test_journal_storage_and_report_only(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_trials, "run_experiment", lambda *a, **k: fake_summary(50.0))
    storage = f"journal://{tmp_path / 'j.log'}"
    assert guarded(sweep.main, argv(tmp_path, "n_trials=2", "report=false", f"storage={storage}")) == 0
    assert (tmp_path / "j.log").stat().st_size > 0
    assert guarded(sweep.main, ["study_name=s", "n_trials=0", f"storage={storage}", f"results={tmp_path}"]) == 0
    assert (tmp_path / "figures" / "s" / "trials.csv").exists()


def test_cli_bad_search_space_exit_code_without_traceback(tmp_path):
    assert_cli_error("ssl_bench.sweep", "sweep=nope", f"results={tmp_path}", starts="error: unknown sweep 'nope'")


@pytest.mark.slow
def test_two_processes_per_trial_only_the_main_one_talks_to_the_study(tmp_path):
    """accelerate launch: the main process asks the study and broadcasts each trial's parameters; the process
    group survives from one trial to the next."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "29547", "-m", "ssl_bench.sweep", *argv(tmp_path, "n_trials=2", "report=false")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = study_of(tmp_path, "s").trials
    assert [t.state for t in trials] == [States.COMPLETE] * 2
    df = results.load(tmp_path / "runs")
    assert len(df) == 2 and set(df["cost.num_processes"]) == {2}


def test_workers_sharing_a_sampler_seed_draw_different_points(monkeypatch):
    """sampler.seed=S on several workers (n_jobs children, a SLURM array): each offsets S by its index, so they do
    not all try the same points; a lone worker keeps S (reproducible)."""
    from ssl_bench.sweep.spec import WORKER_ENV, make_sampler

    def first_points(index: str | None) -> list[float]:
        if index is None:
            monkeypatch.delenv(WORKER_ENV, raising=False)
        else:
            monkeypatch.setenv(WORKER_ENV, index)
        monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
        study = optuna.create_study(sampler=make_sampler({"type": "tpe", "seed": 7}, {}))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert first_points(None) == first_points("0") == first_points(None)
    assert first_points("1") != first_points("0")
