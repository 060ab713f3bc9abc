"""Accelerate conventions (precision from accelerate's setting unless train.precision says, trackers through
log_with) and progress bars (drawn on a terminal only, never into a redirected log)."""

import io
import json
import sys

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from ssl_bench import progress, sweep
from ssl_bench.cli import guarded
from ssl_bench.config import ConfigError, compose
from ssl_bench.experiment import make_accelerator, precision_source, run_experiment
from ssl_bench.run import main as run_main


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _progress_default(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    progress.configure(True)  # an earlier test's run may have left train.progress=false configured
    yield
    progress.configure(True)


def smoke(tmp_path, *extra):
    return compose(["budget=smoke", f"output_dir={tmp_path}", "eval.random_baseline=false", *extra])


def record(tmp_path):
    (path,) = tmp_path.glob("*/summary.json")
    return path.parent, json.loads(path.read_text())


# -- progress ---------------------------------------------------------------------------------------------------------
def test_bar_is_drawn_on_a_terminal_on_the_main_process_when_asked(monkeypatch):
    def drawn() -> str:
        monkeypatch.setattr(sys, "stderr", Terminal())
        for _ in progress.bar(range(3), desc="counting"):
            pass
        return sys.stderr.getvalue()

    assert "counting" in drawn()
    progress.configure(False)  # train.progress=false
    assert drawn() == ""
    progress.configure(True)
    monkeypatch.setenv("RANK", "1")  # not the main process
    assert drawn() == ""
    monkeypatch.delenv("RANK")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected: no tty
    assert list(progress.bar(range(3), desc="counting")) == [0, 1, 2] and sys.stderr.getvalue() == ""


def test_a_redirected_log_gets_no_bar_but_the_epoch_lines(tmp_path, capsys):
    run_experiment(smoke(tmp_path, "train.progress=true"))
    out, err = capsys.readouterr()
    assert "\r" not in err and "epoch 1/2" not in err and "features" not in err
    assert "epoch=0 " in out and "epoch=1 " in out  # the one-line summary per epoch is the log


def test_a_terminal_gets_bars_for_training_features_knn_and_the_linear_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    run_experiment(smoke(tmp_path, "train.progress=true", "eval.protocols=[knn,linear]"))
    err = sys.stderr.getvalue()
    for desc in ("epoch 1/2", "epoch 2/2", "monitor kNN train features", "pretrained train features", "kNN over",
                 "linear probe"):
        assert desc in err, desc


def test_kmeans_reports_each_iteration():
    from ssl_bench.methods.deepcluster_v2 import spherical_kmeans

    ticks = []
    x = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    spherical_kmeans(x, torch.arange(40), 40, 4, iters=3, on_iter=lambda: ticks.append(1))
    assert len(ticks) == 3


def test_sweep_announces_trial_n_of_n(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "run_experiment",
                        lambda *a, **k: {"metrics": {"knn_top1": 50.0}, "cost": {"wall_s": 1.0}})
    args = ["sweep=swav_prototypes_epsilon", "method=swav", "budget=smoke", f"results={tmp_path}", "study=s",
            "n_trials=2", "report=false"]
    assert guarded(sweep.main, args) == 0
    out = capsys.readouterr().out
    assert "trial 0 (1 of 2): " in out and "trial 1 (2 of 2): " in out


# -- precision --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, launcher, used, source", [
    ([], None, "no", "default"),
    ([], "bf16", "bf16", "accelerate config / launch"),
    (["train.precision=no"], "bf16", "no", "train.precision; accelerate config / launch said bf16"),
    (["train.precision=bf16"], None, "bf16", "train.precision"),
])
def test_precision_is_accelerates_unless_train_precision_says(tmp_path, monkeypatch, setting, launcher, used, source):
    if launcher:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    else:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    cfg = smoke(tmp_path, *setting)
    assert cfg.train.precision == (setting[0].split("=")[1] if setting else None)
    acc = make_accelerator(cfg, tmp_path)
    try:
        assert acc.mixed_precision == used
        assert precision_source(cfg, acc.mixed_precision).startswith(source)
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()


def test_bad_precision_names_the_valid_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown train.precision 'fp32'; valid choices: no, fp16, bf16"):
        smoke(tmp_path, "train.precision=fp32")
    assert compose(["budget=cifar_200ep", "dataset=cifar10"]).train.precision == "bf16"  # budgets keep theirs


# -- trackers ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, module, message", [
    ("train.trackers=[wandb]", "wandb", "tracker 'wandb' needs the wandb package: pip install 'ssl_bench[wandb]'"),
    ("train.trackers=[mlflow]", "mlflow", "tracker 'mlflow' needs the mlflow package: pip install 'ssl_bench[mlflow]'"),
    ("train.tensorboard=true", "tensorboard",
     "tracker 'tensorboard' needs the tensorboard package: pip install 'ssl_bench[tensorboard]'"),
    ("train.trackers=[neptune]", None, "unknown train.trackers entry 'neptune'; valid choices: tensorboard, wandb, "
                                       "mlflow"),
])
def test_a_missing_tracker_package_is_one_line_and_exit_2_before_training(tmp_path, monkeypatch, capsys, override,
                                                                          module, message):
    if module:
        monkeypatch.setitem(sys.modules, module, None)  # `import module` fails as if it were not installed
    assert guarded(run_main, ["budget=smoke", f"output_dir={tmp_path}", override]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_tensorboard_gets_per_step_and_per_epoch_scalars_and_the_record_the_precision(tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # as `accelerate launch --mixed_precision bf16` sets
    run_experiment(smoke(tmp_path, "train.trackers=[tensorboard]", "train.log_every=2"))
    run, summary = record(tmp_path)
    assert summary["precision"] == "bf16"
    assert "precision bf16 (accelerate config / launch" in capsys.readouterr().out
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["train/loss"] == [2, 4, 6, 8] and steps["train/lr"] == [2, 4, 6, 8]  # every 2 of 8 steps
    assert steps["epoch/loss"] == [4, 8] and steps["epoch/monitor_knn_top1"] == [4, 8]  # each epoch, same axis
