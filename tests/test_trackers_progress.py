"""Accelerate conventions (precision from accelerate's setting unless train.precision says, trackers through
log_with) and progress bars (drawn on a terminal only, never into a redirected log)."""

import io
import json
import sys

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from ssl_bench import sweep
from ssl_bench.common import progress
from ssl_bench.config.cli import guarded
from ssl_bench.config.compose import ConfigError, compose
from ssl_bench.pipeline.experiment import make_accelerator, precision_source, run_experiment
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


def test_a_terminal_gets_bars_for_fine_tuning_and_the_supervised_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    run_experiment(smoke(tmp_path, "train.progress=true", "eval.protocols=[finetune,supervised]",
                         "eval.finetune_fractions=[0.1]", "eval.finetune_lr_backbone=[0.01]",
                         "eval.finetune_lr_head=[0.1]", "eval.knn_train_subset=128"))
    err = sys.stderr.getvalue()
    for desc in ("fine-tuning epoch 1/1", "supervised reference epoch 1/2", "supervised reference epoch 2/2",
                 "test predictions"):
        assert desc in err, desc


def test_kmeans_reports_each_iteration():
    from ssl_bench.methods.deepcluster_v2 import spherical_kmeans

    ticks = []
    x = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    spherical_kmeans(x, torch.arange(40), 40, 4, iters=3, on_iter=lambda: ticks.append(1))
    assert len(ticks) == 3


def test_sweep_announces_trial_n_of_n(tmp_path, monkeypatch, capsys):
    from ssl_bench.sweep import trials

    monkeypatch.setattr(trials, "run_experiment",
                        lambda *a, **k: {"metrics": {"knn_top1": 50.0}, "cost": {"wall_s": 1.0}})
    args = ["sweep=swav_prototypes_epsilon", "method=swav", "budget=smoke", f"results={tmp_path}", "study_name=s",
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


class FakeTracker:
    """Stands in for Accelerate's WandBTracker / MLflowTracker (no package, no network): records what it is given."""

    made: list["FakeTracker"] = []

    @classmethod
    def named(cls, tracker_name: str) -> type:
        from accelerate.tracking import GeneralTracker

        def init(self, project: str, /, **kwargs) -> None:  # as Accelerate calls a tracker without a logging dir
            GeneralTracker.__init__(self)
            self.project, self.kwargs, self.config, self.logged, self.finished = project, kwargs, None, [], False
            FakeTracker.made.append(self)

        return type(f"Fake{tracker_name}", (GeneralTracker,), {
            "name": tracker_name, "requires_logging_directory": False, "main_process_only": True,
            "__init__": init, "tracker": property(lambda self: self),
            "store_init_configuration": lambda self, values: setattr(self, "config", values),
            "log": lambda self, values, step=None, **kw: self.logged.append((step, dict(values))),
            "finish": lambda self: setattr(self, "finished", True)})


def test_wandb_and_mlflow_go_to_accelerates_log_with_per_step_and_per_epoch(tmp_path, monkeypatch):
    """train.trackers=[wandb,mlflow] with stand-ins registered as Accelerate's wandb and mlflow trackers: the names
    reach Accelerator(log_with=...), each tracker is started with the run's name and config, gets train/loss and
    train/lr every train.log_every optimiser steps and every epoch's metrics, all on the optimiser-step axis."""
    import accelerate.tracking as at
    from accelerate.utils import LoggerType

    from ssl_bench.common import tracking
    from ssl_bench.pipeline import experiment

    FakeTracker.made.clear()
    for name in ("wandb", "mlflow"):
        monkeypatch.setitem(at.LOGGER_TYPE_TO_CLASS, name, FakeTracker.named(name))
    monkeypatch.setattr(at, "_available_trackers", [*at._available_trackers, LoggerType.WANDB, LoggerType.MLFLOW])
    monkeypatch.setattr(tracking, "_installed", lambda module: True)  # as if `pip install 'ssl_bench[wandb]'`
    given = []
    real_accelerator = experiment.Accelerator
    monkeypatch.setattr(experiment, "Accelerator", lambda **kw: given.append(kw.get("log_with")) or
                        real_accelerator(**kw))

    run_experiment(smoke(tmp_path, "train.trackers=[wandb,mlflow]", "train.log_every=3"))
    run, summary = record(tmp_path)
    assert given == [["wandb", "mlflow"]]
    assert [t.name for t in FakeTracker.made] == ["wandb", "mlflow"]
    wandb, mlflow = FakeTracker.made
    assert wandb.project == mlflow.project == "ssl_bench"  # wandb's project, mlflow's experiment
    assert wandb.kwargs == {"name": run.name, "dir": str(run)} and mlflow.kwargs == {"run_name": run.name}
    for t in FakeTracker.made:
        assert t.config["method.name"] == "swav" and t.config["train.log_every"] == 3 and t.finished
        steps = {}
        for step, values in t.logged:
            for key in values:
                steps.setdefault(key, []).append(step)
        # smoke: 2 epochs x 4 optimiser steps; per step every 3rd, per epoch at its last step.
        assert steps["train/loss"] == [3, 6] and steps["train/lr"] == [3, 6]
        assert steps["epoch/loss"] == [4, 8] and steps["epoch/monitor_knn_top1"] == [4, 8]
        assert all(isinstance(v, float | int) for _, values in t.logged for v in values.values())
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert wandb.logged[-1][1]["epoch/loss"] == final["loss"]
