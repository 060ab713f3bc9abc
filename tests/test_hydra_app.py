"""ssl_bench.run is a Hydra application: Hydra's flags, a -m grid of ordinary runs, nothing of Hydra's written."""

import pytest
from conftest import assert_cli_error

from ssl_bench.config.cli import guarded
from ssl_bench.config.help import MAIN_KEYS
from ssl_bench.config.searchpath import GROUPS, group_options
from ssl_bench.records import io as results
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


@pytest.mark.parametrize("launcher", [None, "bf16"])
def test_cfg_job_prints_exactly_what_the_run_records(tmp_path, capsys, monkeypatch, launcher):
    """--cfg job is the record's config.yaml (choices, overrides, the precision used), headed by its path."""
    import yaml

    monkeypatch.chdir(tmp_path)
    if launcher:  # as `accelerate launch --mixed_precision bf16` sets it: the record says bf16, so must --cfg job
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    else:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    args = ["budget=smoke", "method=simclr", "train.epochs=1", "eval.random_baseline=false", "seed=3"]
    assert main(["--cfg", "job", *args]) == 0
    shown = capsys.readouterr().out
    assert not any(tmp_path.iterdir())
    assert main(args) == 0
    capsys.readouterr()
    (record,) = (tmp_path / "results" / "runs").glob("*/config.yaml")
    assert shown.splitlines()[0] == f"# {record.relative_to(tmp_path)}: the config this run records"
    assert yaml.safe_load(shown) == yaml.safe_load(record.read_text())
    assert yaml.safe_load(shown)["train"]["precision"] == (launcher or "no")
    assert main(["--cfg", "job", "-p", "choices", *args]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"method": "simclr", "dataset": "fashion_mnist",
                                                       "backbone": "small_cnn", "budget": "smoke"}


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
    # ssl_bench.compare of the same methods and overrides finds the grid's records (same configs, same folders).
    from ssl_bench import api

    table = api.compare(["methods=[swav,simclr]", "seeds=[0]", "budget=smoke", "train.epochs=1",
                         "eval.random_baseline=false", f"results={tmp_path / 'results'}"], train=False)
    assert sorted(table["method"]) == ["simclr", "swav"] and list(table["knn_top1_n"]) == [1, 1]


@pytest.mark.parametrize("args, needle", [
    (["method=swav,simclr"], "add -m (--multirun)"),
    (["-m", "method=swav,nope"], "unknown method 'nope'; valid choices: "),
    (["-m", "seed=0,1", "data.batchsize=3"], "valid keys in 'data': batch_size"),
    (["+seed=3"], "already at 'seed'"),
    (["method.epsilon=[1"], "error: "),
    (["--cfg", "nope"], "invalid choice: 'nope'"),
    (["-m", "seed=0,1", "--cfg", "job"], "only one of --run, --multirun, --cfg"),
    (["eval=linear"], "eval is a section of keys, not a value; set one of them (eval.protocols"),
    (["+method_budget=nope"], "Could not find 'method_budget/nope'; valid choices: barlow_twins_carl_cifar10, "),
    (["~method"], "'~method': every run needs a method; choose one with method=<option> (valid choices: barlow_twins"),
    (["-m", "seed=0,1", "output_dir=/dev/null/runs"], "output_dir=/dev/null/runs: /dev/null is a file, not a folder"),
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


def test_completion_offers_only_real_groups_and_options(tmp_path, capsys, monkeypatch):
    """Not the schema nodes in Hydra's ConfigStore (method=swav_schema), not study/, sweep/ or slurm/ (other
    commands' inputs); a user's own config folder adds its options."""
    mine = tmp_path / "mine"
    (mine / "budget").mkdir(parents=True)
    (mine / "budget" / "my_budget.yaml").write_text("# @package _global_\ntrain: {epochs: 1}\n")
    monkeypatch.setenv("SSL_BENCH_CONFIG_PATH", str(mine))

    def complete(line: str) -> list[str]:
        monkeypatch.setenv("COMP_LINE", f"ssl-bench run {line}")
        assert main(["-sc", "query=bash"]) == 0
        return capsys.readouterr().out.split()

    assert complete("method=") == [f"method={m}" for m in group_options("method")]
    assert "budget=my_budget" in complete("budget=") and "budget=smoke" in complete("budget=")
    top = complete("")
    assert {f"{g}=" for g in GROUPS} <= set(top) and "seed=" in top and "train." in top
    assert not [w for w in top if w.startswith(("study", "sweep", "slurm", "method_budget"))]
    assert not [w for w in complete("method=") + complete("") + complete("dataset=") if "schema" in w]
    assert main(["--help"]) == 0 and "_schema" not in capsys.readouterr().out


def test_grid_jobs_are_hydras_and_keep_the_typed_overrides():
    from ssl_bench.run import expand_globs, job_overrides

    assert expand_globs(["method=glob(s*)", "seed=0,1"]) == ["method=selav2,simclr,swav", "seed=0,1"]
    jobs = job_overrides(["method=swav,simclr", "seed=0,1,2", "eval.random_baseline=false"], multirun=True)
    assert len(jobs) == 6 and jobs[0] == ["method=swav", "seed=0", "eval.random_baseline=false"]
    assert job_overrides(["seed=1", "hydra.verbose=true"], multirun=False) == [["seed=1"]]


def test_plus_adds_and_tilde_deletes(capsys):
    import yaml

    def shown(*args: str) -> dict:
        assert main(["--cfg", "job", "budget=smoke", *args]) == 0
        return yaml.safe_load(capsys.readouterr().out)

    assert shown("+tags.note=hi")["tags"] == {"note": "hi"}
    assert shown()["method"]["num_prototypes"] == 16  # experiments/method_budget/swav_smoke.yaml
    dropped = shown("~method_budget")
    assert dropped["method"]["num_prototypes"] == 3000 and "~method_budget" in dropped["overrides"]
