"""ssl_bench.run is a Hydra application: Hydra's flags, a -m grid of ordinary runs, nothing of Hydra's written."""

import pytest
from conftest import assert_cli_error

from ssl_bench import results
from ssl_bench.cli import guarded
from ssl_bench.config import GROUPS, MAIN_KEYS, group_options
from ssl_bench.run import main


def test_help_lists_groups_options_and_main_keys(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group in GROUPS:
        assert f"  {group:<13} {', '.join(group_options(group))}" in out
    for key in MAIN_KEYS:
        assert f"\n  {key}=" in out
    assert "train.precision=null" in out and "--multirun,-m" in out and "$" not in out.split("--shell")[0]


def test_cfg_job_prints_the_config_without_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Hydra's flags may come after the overrides too.
    assert main(["budget=smoke", "--cfg", "job", "method=simclr", f"output_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "name: simclr" in out and "max_steps_per_epoch: 4" in out
    assert not any(tmp_path.iterdir())


def test_multirun_grid_writes_one_ordinary_record_per_job_and_nothing_else(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "results" / "runs"
    assert main(["-m", "budget=smoke", "method=swav,simclr", "train.epochs=1", "eval.random_baseline=false"]) == 0
    df = results.load(runs)
    assert sorted(df["method"]) == ["simclr", "swav"]
    assert {p.name for p in tmp_path.iterdir()} <= {"results"}  # no outputs/, multirun/, .hydra or log files
    assert {p.name for p in (tmp_path / "results").iterdir()} <= {"runs", "baselines"}
    record = next(runs.glob("simclr-*")) / "config.yaml"
    text = record.read_text()
    assert "choices:" in text and "method=simclr" in text  # the same record as a single run's


@pytest.mark.parametrize("args, needle", [
    (["method=swav,simclr"], "add -m (--multirun)"),
    (["-m", "method=swav,nope"], "unknown method 'nope'; valid choices: "),
    (["-m", "seed=0,1", "data.batchsize=3"], "valid keys in 'data': batch_size"),
    (["+seed=3"], "already at 'seed'"),
    (["method.epsilon=[1"], "error: "),
    (["--cfg", "nope"], "invalid choice: 'nope'"),
    (["-m", "seed=0,1", "--cfg", "job"], "only one of --run, --multirun, --cfg"),
    (["eval=linear"], "eval is a section of keys, not a value; set one of them (eval.protocols"),
])
def test_bad_grid_or_hydra_error_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    assert guarded(main, [*args, "budget=smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
    assert not any(tmp_path.iterdir())


def test_hydra_flags_from_the_command_line(tmp_path):
    assert_cli_error("ssl_bench.run", "-m", "method=swav,nope", f"output_dir={tmp_path}",
                     starts="error: unknown method")


def test_info_and_shell_completion(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--info", "searchpath"]) == 0
    assert "experiments" in capsys.readouterr().out
    monkeypatch.setenv("COMP_LINE", "python -m ssl_bench.run budget=sm")
    assert main(["-sc", "query=bash"]) == 0
    assert "budget=smoke" in capsys.readouterr().out.split()
    assert not any(tmp_path.iterdir())


def test_grid_jobs_are_hydras_and_keep_the_typed_overrides():
    from ssl_bench.run import expand_globs, job_overrides

    assert expand_globs(["method=glob(s*)", "seed=0,1"]) == ["method=selav2,simclr,swav", "seed=0,1"]
    jobs = job_overrides(["method=swav,simclr", "seed=0,1,2", "eval.random_baseline=false"], multirun=True)
    assert len(jobs) == 6 and jobs[0] == ["method=swav", "seed=0", "eval.random_baseline=false"]
    assert job_overrides(["seed=1", "hydra.verbose=true"], multirun=False) == [["seed=1"]]
