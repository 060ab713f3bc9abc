"""The multi-node command lines and SLURM script of ssl_bench.launch, and a real 2-node run on localhost."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.config.cli import guarded
from ssl_bench.launch import main


def commands(capsys, *argv: str) -> tuple[list[list[str]], str]:
    assert guarded(main, list(argv)) == 0
    out = capsys.readouterr().out
    return [shlex.split(line) for line in out.splitlines() if line.startswith("accelerate")], out


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_one_command_per_node_with_its_machine_rank(capsys):
    cmds, out = commands(capsys, "nodes=4", "gpus=8", "address=10.1.2.3", "port=29999", "method=swav",
                         "budget=imagenet_400ep", "dataset=imagenet", "dataset.root=/data/in1k")
    assert len(cmds) == 4
    for r, cmd in enumerate(cmds):
        assert cmd[:4] == ["accelerate", "launch", "-q", "--multi_gpu"]
        assert (flag(cmd, "--num_machines"), flag(cmd, "--num_processes"), flag(cmd, "--machine_rank")) == (
            "4", "32", str(r))
        assert (flag(cmd, "--main_process_ip"), flag(cmd, "--main_process_port")) == ("10.1.2.3", "29999")
        assert flag(cmd, "--rdzv_backend") == "static"
        assert cmd[cmd.index("-m") + 1] == "ssl_bench.run"
        assert cmd[-4:] == ["method=swav", "budget=imagenet_400ep", "dataset=imagenet", "dataset.root=/data/in1k"]
    assert "global batch 4096 = 128 per GPU" in out and "lr 4.8 for global batch 4096" in out


def test_one_node_rank_and_sweep_entry(capsys):
    cmds, _ = commands(capsys, "nodes=2", "gpus=2", "rank=1", "address=node-a", "entry=sweep", "budget=smoke",
                       "sweep=swav_prototypes_epsilon")
    (cmd,) = cmds
    assert flag(cmd, "--machine_rank") == "1" and cmd[cmd.index("-m") + 1] == "ssl_bench.sweep"
    assert "sweep=swav_prototypes_epsilon" in cmd


def test_sweep_entry_checks_the_sweep_and_every_batch_of_its_grid(capsys):
    cmds, _ = commands(capsys, "nodes=1", "gpus=2", "entry=sweep", "sweep=carl_batch_prototypes", "budget=demo",
                       "n_trials=4", "pruner=none")
    assert cmds[0][-4:] == ["sweep=carl_batch_prototypes", "budget=demo", "n_trials=4", "pruner=none"]
    assert guarded(main, ["nodes=1", "gpus=3", "entry=sweep", "sweep=carl_batch_prototypes", "budget=demo"]) == 2
    assert "data.batch_size=32 (the global batch) cannot be split over 1 x 3" in capsys.readouterr().err
    assert guarded(main, ["entry=sweep", "sweep=no_such_sweep"]) == 2


def test_one_gpu_needs_no_process_group(capsys):
    (cmd,), _ = commands(capsys, "nodes=1", "gpus=1", "budget=smoke")
    assert cmd == ["accelerate", "launch", "-q", "--num_processes", "1", "-m", "ssl_bench.run", "budget=smoke"]


def test_queue_per_process_is_printed(capsys):
    _, out = commands(capsys, "nodes=1", "gpus=4", "method=swav", "budget=imagenet_bs256", "dataset=imagenet")
    assert "queue 3840 features = 960 per process (from epoch 15)" in out


@pytest.mark.parametrize("argv, message", [
    (["nodes=3", "gpus=8", "address=h", "budget=imagenet_400ep", "dataset=imagenet"],
     "cannot be split over 3 x 8 = 24 processes"),
    (["nodes=0"], "nodes=0 gpus=8: both must be >= 1"),
    (["nodes=2", "rank=2"], "valid machine ranks are 0-1"),
    (["entry=train"], "valid choices: run, sweep"),
    (["nodes=two"], "nodes=two: expected an integer"),
    (["nodes=2", "gpus=1"], "nodes=2 needs address=HOST"),
    (["entry=sweep", "n_trials=x", "nodes=2", "address=h", "slurm=maybe"], "slurm=maybe: expected true or false"),
    (["method=moco"], "unknown method 'moco'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert guarded(main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_slurm_script(capsys, tmp_path):
    assert guarded(main, ["nodes=8", "gpus=8", "slurm=true", "job=swav400", "partition=gpu", "method=swav",
                          "budget=imagenet_400ep", "dataset=imagenet", "dataset.root=/data/in 1k"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --nodes=8", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --job-name=swav400", "#SBATCH --partition=gpu", "#SBATCH --signal=B:USR1@300",
                 "#SBATCH --requeue"):
        assert line in script.splitlines()
    assert '--machine_rank "$SLURM_NODEID"' in script and '--main_process_ip "$MAIN_ADDR"' in script
    assert "--num_processes 64" in script and "'dataset.root=/data/in 1k'" in script and "resume=true" in script
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0  # valid bash
    # What srun runs on node 3: the script's ARGS reach ssl_bench.run intact, the node's rank and address in place.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/bin/bash\nshift\nSLURM_NODEID=3 exec "$@"\n')
    (fake / "scontrol").write_text("#!/bin/bash\necho node-a\necho node-b\n")
    (fake / "accelerate").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node-[a-b]",
               SSL_BENCH_DIR=str(tmp_path))
    args = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    assert args[args.index("--machine_rank") + 1] == "3" and args[args.index("--main_process_ip") + 1] == "node-a"
    assert "dataset.root=/data/in 1k" in args and args[-2] == "resume=true"


@pytest.mark.slow
def test_generated_commands_run_two_nodes_on_localhost(capsys, tmp_path):
    """Both machines' commands (2 nodes x 1 process, gloo) started on this machine form one 2-process run."""
    cmds, _ = commands(capsys, "nodes=2", "gpus=1", "address=127.0.0.1", "port=29563", "budget=smoke",
                       "train.epochs=1", f"output_dir={tmp_path}")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((run / "summary.json").read_text())["cost"]["num_processes"] == 2
    assert sum(o.count("record: ") for o, _ in outs) == 1  # one main process in all


@pytest.mark.parametrize("script", sorted((Path(__file__).parent.parent / "experiments" / "slurm").glob("*.sbatch")),
                         ids=lambda p: p.name)
def test_committed_slurm_scripts_are_what_the_generator_writes(capsys, script):
    text = script.read_text()
    argv = shlex.split(text.splitlines()[1].removeprefix("# Written by: python -m ssl_bench.launch "))
    assert guarded(main, argv) == 0
    assert capsys.readouterr().out == text


def test_sweep_on_slurm_is_a_job_array_of_workers_sharing_one_storage(capsys, tmp_path):
    url = "postgresql://me:secret@db.example/optuna"
    assert guarded(main, ["entry=sweep", "slurm=true", "workers=3", "gpus=2", "sweep=swav_prototypes_iterations",
                          "budget=smoke", f"storage={url}"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-2" in script and script.count(url) == 1  # the URL written once
    path = tmp_path / "sweep.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    # Run array task 2 with stand-ins for SLURM's srun / scontrol and for accelerate, which records its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"scontrol": 'echo node-a\n',
             "srun": 'while [[ "$1" == --* ]]; do shift; done\nSLURM_NODEID=0 exec "$@"\n',
             "accelerate": 'printf "%s\\n" "$@" > "$SUBMIT/accelerate.args"\n'}
    for name, body in fakes.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="2",
               SLURM_JOB_NODELIST="node-a", SLURM_SUBMIT_DIR=str(tmp_path), SUBMIT=str(tmp_path))
    env.pop("MAIN_PORT", None)
    ran = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    args = (tmp_path / "accelerate.args").read_text().splitlines()
    assert args[args.index("-m") + 1] == "ssl_bench.sweep" and flag(args, "--num_processes") == "2"
    assert flag(args, "--main_process_port") == "29502"  # array tasks sharing a node do not share a port
    assert f"storage={url}" in args and "study_name=swav_prototypes_iterations-swav-fashion_mnist-smoke" in args
    assert "resume=true" not in args  # the sweep resumes its own trials


def test_sweep_on_slurm_refuses_a_storage_the_nodes_cannot_share(capsys):
    assert guarded(main, ["entry=sweep", "slurm=true", "workers=2", "gpus=1", "sweep=swav_prototypes_iterations",
                          "budget=smoke"]) == 2
    err = capsys.readouterr().err
    assert "give storage= a PostgreSQL URL" in err and "\n" not in err.strip()
    assert guarded(main, ["workers=2", "gpus=1", "budget=smoke"]) == 2
