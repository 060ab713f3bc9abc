"""End to end on the smoke budget: the record, bad input, resume == uninterrupted, NaN handling."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_cli_error
from safetensors.torch import load_file

from ssl_bench.config.cli import guarded
from ssl_bench.config.compose import compose
from ssl_bench.pipeline.experiment import run_experiment
from ssl_bench.records import io as results
from ssl_bench.records.identity import run_id
from ssl_bench.run import main
from ssl_bench.training.loop import Trainer, TrainingStopped


def smoke(tmp_path, *extra):
    return compose(["budget=smoke", f"output_dir={tmp_path}", *extra])


def test_end_to_end_writes_a_complete_record(tmp_path):
    cfg = smoke(tmp_path)
    summary = run_experiment(cfg)
    run = tmp_path / run_id(cfg)
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint"}
    for key in ("method", "dataset", "budget", "seed", "epochs", "versions"):
        assert key in summary
    assert summary["method"] == "swav" and summary["budget"] == "smoke" and summary["epochs"] == 2
    m, c = summary["metrics"], summary["cost"]
    assert 0 <= m["knn_top1"] <= 100 and "random_knn_top1" in m and "knn_top1_k20" in m
    assert c["wall_s"] > 0 and c["images_per_s"] > 0 and c["peak_mem_mb"] > 0
    rows = results.read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"loss", "lr", "monitor_knn_top1", "assign_entropy", "prototypes_used"} <= set(rows[0])
    df = results.load(tmp_path)
    assert len(df) == 1 and df.loc[0, "metrics.knn_top1"] == m["knn_top1"]
    # Same command again: the finished record is reused, not retrained.
    mtime = (run / "summary.json").stat().st_mtime_ns
    assert run_experiment(smoke(tmp_path)) == json.loads((run / "summary.json").read_text())
    assert (run / "summary.json").stat().st_mtime_ns == mtime


def test_a_run_is_quiet_and_ends_beside_the_shipped_reference(tmp_path, capsys, monkeypatch):
    """One line says what runs and where its config is; the end shows yours next to the reference record of the
    same configuration; the same command again reports the finished run with its numbers."""
    ref = tmp_path / "reference"
    shipped = run_experiment(smoke(ref / "runs"))  # a 'shipped' record of this configuration, seed 0
    monkeypatch.setattr(results, "REFERENCE_DIR", ref)
    capsys.readouterr()
    assert main(["budget=smoke", f"output_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    assert "ssl_bench: SwAV on fashion_mnist, budget smoke: small_cnn backbone, batch 16" in out
    assert "config.yaml (print_config=true prints it)" in out and "head:" not in out  # not the whole config
    k = shipped["metrics"]["knn_top1"]
    assert f"kNN top-1 (k=20): yours {k:.2f} | reference, same seed {k:.2f} (difference +0.00)" in out
    assert main(["budget=smoke", f"output_dir={tmp_path / 'runs'}"]) == 0
    again = capsys.readouterr().out
    assert "already complete" in again and f"kNN top-1 (k=20) {k:.2f}%" in again and "yours" in again


def test_missing_data_is_the_first_thing_said(tmp_path, capsys):
    assert guarded(main, ["budget=smoke", f"output_dir={tmp_path}", "dataset.root=/nonexistent"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1


@pytest.mark.parametrize("args, needle", [
    (["method=nope"], "valid choices: "),
    (["dataset=nope"], "valid choices: cifar10, cifar100, fashion_mnist"),
    (["budget=nope"], "valid choices: "),
    (["method.nope=1"], "valid keys in 'method': "),
    (["data.batchsize=3"], "valid keys in 'data': batch_size"),
    (["method.epsilon=0"], "method.epsilon must be > 0"),
    (["method.epsilon=-0.1"], "method.epsilon must be > 0"),
    (["method.num_prototypes=0"], "method.num_prototypes must be > 0"),
    (["method.sinkhorn_iterations=0"], "method.sinkhorn_iterations must be > 0"),
    (["data.batch_size=0"], "data.batch_size must be > 0"),
    (["data.batch_size=abc"], "could not be converted to Integer"),
    (["crops.global.size=64"], "larger than the fashion_mnist images"),
    (["dataset.root=/nonexistent"], "apt-get install dataset-fashion-mnist"),
    (["dataset=cifar10", "dataset.root=/nonexistent"], "cifar10 not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    code = guarded(main, ["budget=smoke", f"output_dir={tmp_path}", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and needle in err
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_cli_exit_code_without_traceback(tmp_path):
    assert_cli_error("ssl_bench.run", "method=nope", f"output_dir={tmp_path}", starts="error: unknown method 'nope'")


def final_weights(run_dir):
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def test_a_signal_after_the_last_step_still_stops_the_run_before_evaluation(tmp_path, monkeypatch):
    """Ctrl-C during the last epoch's end (monitor, checkpoint), after the loop's last poll, is not lost: the run
    stops with 130 before its evaluation, and resume=true evaluates from the final checkpoint."""
    import signal

    from ssl_bench.training.hooks import EpochCallbacks

    real = EpochCallbacks.after
    cfg = smoke(tmp_path, "data.num_workers=0")

    def callbacks_then_sigint(self, epoch, row):
        if epoch == cfg.train.epochs - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, epoch, row)

    monkeypatch.setattr(EpochCallbacks, "after", callbacks_then_sigint)
    with pytest.raises(TrainingStopped) as stop:
        run_experiment(cfg)
    assert stop.value.exit_code == 130 and "after the last training step" in str(stop.value)
    run = tmp_path / run_id(cfg)
    assert not (run / "summary.json").exists()
    monkeypatch.setattr(EpochCallbacks, "after", real)
    assert run_experiment(smoke(tmp_path, "data.num_workers=0", "resume=true"))["status"] == "complete"


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_during_the_final_evaluation_is_one_line_and_130(tmp_path, monkeypatch, capsys, inherited):
    """SIGINT while the trained backbone is evaluated stops the run with one ``stopped:`` line and 130 (it used to
    print a KeyboardInterrupt traceback), also when the process started with SIGINT ignored (a script's background
    job, where it used to be ignored and the run went on); no record is written, and resume=true evaluates the
    finished training without training again."""
    import signal

    from ssl_bench.evaluation import protocols

    real = protocols.extract_features
    calls = []

    def features_then_sigint(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(protocols, "extract_features", features_then_sigint)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN if inherited == "ignored" else signal.default_int_handler)
    try:
        args = ["budget=smoke", f"output_dir={tmp_path}", "data.num_workers=0", "eval.random_baseline=false"]
        assert guarded(main, args) == 130
    finally:
        assert signal.getsignal(signal.SIGINT) == (signal.SIG_IGN if inherited == "ignored"
                                                   else signal.default_int_handler)  # given back
        signal.signal(signal.SIGINT, old)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [line for line in err.splitlines() if line.startswith("stopped:")] == [
        "stopped: interrupted during the final evaluation; training is finished and its checkpoint saved; "
        "resume=true evaluates it"]
    run = tmp_path / run_id(smoke(tmp_path, "data.num_workers=0", "eval.random_baseline=false"))
    assert not (run / "summary.json").exists()
    trained = json.loads((run / "checkpoint" / "loop.json").read_text())
    assert guarded(main, [*args, "resume=true"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and "knn_top1" in summary["metrics"]
    assert json.loads((run / "checkpoint" / "loop.json").read_text()) == trained  # evaluated, not trained again


@pytest.mark.parametrize("backend", ["tensor", "pil"])
def test_resume_after_sigterm_matches_uninterrupted_run(tmp_path, sigterm_at_step, backend):
    """SIGTERM in the middle of epoch 2 of 3 (with a SwAV queue in use): the resumed run ends with the
    same weights as an uninterrupted one, with either multi-crop backend."""
    extra = ["train.epochs=3", "method.queue_length=32", "method.queue_start_epoch=0", "data.num_workers=0",
             f"augment.backend={backend}"]
    full_cfg = smoke(tmp_path / "full", *extra)
    run_experiment(full_cfg)
    cfg = smoke(tmp_path / "cut", *extra)
    disarm = sigterm_at_step(6)  # epoch 2, batch 2 of 4
    with pytest.raises(TrainingStopped) as stop:
        run_experiment(cfg)
    assert stop.value.exit_code == 130
    run = tmp_path / "cut" / run_id(cfg)
    assert json.loads((run / "checkpoint" / "loop.json").read_text())["batch"] == 2
    assert not (run / "summary.json").exists()
    disarm()
    # Without resume=true an unfinished run is not clobbered.
    assert guarded(main, ["budget=smoke", f"output_dir={tmp_path / 'cut'}", *extra]) == 2
    summary = run_experiment(smoke(tmp_path / "cut", *extra, "resume=true"))
    assert summary["status"] == "complete"
    a, b = final_weights(run), final_weights(tmp_path / "full" / run_id(full_cfg))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # every epoch's numbers too: the interrupted epoch's loss is the mean over all its steps, not over the 2 after
    # the resume (a retrained shipped record found that: 3.705 for 3.797)
    timing = ("wall_s", "images_per_s")
    rows_cut = [{k: v for k, v in r.items() if k not in timing} for r in results.read_metrics(run)]
    rows_full = [{k: v for k, v in r.items() if k not in timing}
                 for r in results.read_metrics(tmp_path / "full" / run_id(full_cfg))]
    assert [r["epoch"] for r in rows_cut] == [0, 1, 2]
    assert rows_cut == rows_full


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = smoke(tmp_path, "train.epochs=3")
    real_step = Trainer.train_step
    calls = {"n": 0}

    def nan_in_epoch_2(self, batch):
        loss, stats = real_step(self, batch)
        calls["n"] += 1
        return (loss, {"loss": float("nan")}) if calls["n"] == 6 else (loss, stats)

    monkeypatch.setattr(Trainer, "train_step", nan_in_epoch_2)
    with pytest.raises(TrainingStopped, match="loss became nan") as stop:
        run_experiment(cfg)
    assert stop.value.exit_code == 1
    loop = json.loads((tmp_path / run_id(cfg) / "checkpoint" / "loop.json").read_text())
    assert loop["epoch"] == 1 and loop["batch"] == 0  # the end-of-epoch-1 checkpoint is intact


@pytest.mark.parametrize("extra", [["train.precision=bf16"], ["train.grad_accum=2", "optim.name=lars"],
                                   ["optim.name=adamw", "optim.lr=0.001", "train.tensorboard=true"]])
def test_precision_accumulation_optimisers_and_tensorboard(tmp_path, extra):
    cfg = smoke(tmp_path, *extra)
    summary = run_experiment(cfg)
    assert summary["status"] == "complete" and summary["metrics"]["final_loss"] > 0
    steps = [r["step"] for r in results.read_metrics(tmp_path / run_id(cfg))]
    assert steps == ([2, 4] if "train.grad_accum=2" in extra else [4, 8])  # optimiser steps, not batches
    if "train.tensorboard=true" in extra:
        assert list((tmp_path / run_id(cfg)).rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_two_processes_run_end_to_end_and_only_rank0_writes(tmp_path):
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "29533", "-m", "ssl_bench.run", "budget=smoke", f"output_dir={tmp_path}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("record: ") == 1  # only the main process reports
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cost"]["num_processes"] == 2
    assert sorted(p.name for p in (run / "checkpoint").glob("method_local_*.pt")) == [
        "method_local_0.pt", "method_local_1.pt"]  # per-process method state (queues)
    assert not list(tmp_path.rglob("*.tmp"))


def test_epoch_callback_sees_each_epoch_and_can_stop_the_run(tmp_path):
    seen = []

    def cb(epoch, row):
        seen.append((epoch, round(row["loss"], 6)))
        return "monitor below the median" if epoch == 0 else None

    with pytest.raises(TrainingStopped, match="monitor below the median") as stop:
        run_experiment(smoke(tmp_path, "train.epochs=3"), epoch_callbacks=[cb])
    assert stop.value.pruned and len(seen) == 1
    rows = results.read_metrics(next(tmp_path.iterdir()))
    assert [(r["epoch"], round(r["loss"], 6)) for r in rows] == seen


def test_cpu_threads_use_all_cores_when_launcher_set_one(monkeypatch):
    from types import SimpleNamespace

    from ssl_bench.pipeline.experiment import set_threads

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what `accelerate launch` leaves on a CPU
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        set_threads(compose(["budget=smoke", "train.num_threads=0"]), SimpleNamespace(device=torch.device("cpu")))
        assert torch.get_num_threads() == cores
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        set_threads(compose(["budget=smoke", "train.num_threads=0"]), SimpleNamespace(device=torch.device("cpu")))
        assert torch.get_num_threads() == max(1, cores // 2)
        set_threads(compose(["budget=smoke", "train.num_threads=1"]), SimpleNamespace(device=torch.device("cpu")))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
